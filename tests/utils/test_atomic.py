import json
import os
import stat

import numpy as np
import pytest

from cmrprior.utils import atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    atomic.write_json(target, {"auc": 0.5})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"auc": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_written_files_follow_the_umask_not_mkstemp_0600(tmp_path):
    target = atomic.write_text(tmp_path / "a.txt", "x")
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode == 0o666 & ~atomic._UMASK


def test_npz_and_jsonl_round_trip(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    atomic.save_npz(tmp_path / "x.npz", a=a)
    with np.load(tmp_path / "x.npz") as z:
        np.testing.assert_array_equal(z["a"], a)
    atomic.append_jsonl(tmp_path / "m.jsonl", {"epoch": 1, "loss": np.float32(0.25)})
    atomic.append_jsonl(tmp_path / "m.jsonl", {"epoch": 2, "loss": 0.125})
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "loss": 0.25}, {"epoch": 2, "loss": 0.125}]
