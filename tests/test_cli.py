"""The CLI turns every error a user can meet into one line naming the path, and a non-zero exit code.

Tests run as root, where `chmod` does not make a folder read-only; a read-only file system and a full disk
are simulated where the system call fails (the temporary file of an atomic write, its fsync)."""

from __future__ import annotations

import errno
import os
import types

import numpy as np
import pytest

import cmrprior.cli
from cmrprior.cli import main
from cmrprior.io.acdc import write_acdc_patient


@pytest.fixture(autouse=True)
def _few_commands(monkeypatch):
    """The real CLI with the data and phantom subcommands only (the others import torch and friends)."""
    monkeypatch.setattr(cmrprior.cli, "COMMAND_MODULES", ["cmrprior.data.commands", "cmrprior.data.phantom_commands",
                                                         "cmrprior.segmentation.commands",
                                                         "cmrprior.experiments.prepare_command"])


def _acdc(root, n=3):
    for i in range(n):
        m = np.zeros((4, 30, 28), np.uint8)
        m[1:3, 10:18, 9:17] = 3
        img = (np.random.default_rng(i).random((4, 30, 28)) * 300).astype(np.int16)
        write_acdc_patient(root, f"patient{i + 1:03d}", ed=img, es=img, ed_frame=1, es_frame=6,
                           spacing_zyx=(10.0, 1.8, 1.8), group="NOR", ed_mask=m, es_mask=m)
    return root


def _one_line(capsys, *needles):
    """The last line of stderr (progress lines come before it) is the error; no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    for n in needles:
        assert n in last, err
    return last


def _read_only_fs(monkeypatch):
    """mkstemp (the first write of every atomic output) fails as on a read-only mount."""
    import cmrprior.utils.atomic as atomic

    def mkstemp(prefix="", suffix="", dir=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, prefix + "abc" + suffix))

    monkeypatch.setattr(atomic, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))


def test_prepare_out_naming_a_file(tmp_path, capsys):
    data = _acdc(tmp_path / "data")
    f = tmp_path / "out.txt"
    f.write_text("x")
    assert main(["prepare", "--data", str(data), "--out", str(f), "--size", "16"]) == 2
    _one_line(capsys, f"{f}: --out is an existing file")
    assert main(["prepare", "--data", str(data), "--out", str(f / "sub"), "--size", "16"]) == 2
    _one_line(capsys, str(f), "cannot write the run folder there")  # a path through a file


def test_prepare_into_a_read_only_folder(tmp_path, monkeypatch, capsys):
    data = _acdc(tmp_path / "data")
    _read_only_fs(monkeypatch)
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "out"), "--size", "16"]) == 2
    _one_line(capsys, "cmrprior prepare: error: ", str(tmp_path / "out"), "Read-only file system")


def test_prepare_on_a_full_disk_names_the_file_it_was_writing(tmp_path, monkeypatch, capsys):
    data = _acdc(tmp_path / "data")

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write/fsync report it: no file name

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "out"), "--size", "16"]) == 2
    err = _one_line(capsys, "No space left on device", str(tmp_path / "out"))
    assert ".tmp" not in err  # the output's own name, not the temporary file's
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_phantom_into_a_read_only_folder_or_below_a_file(tmp_path, monkeypatch, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["phantom", "--out", str(f / "ph"), "--patients", "1", "--workers", "1"]) == 2
    _one_line(capsys, "cmrprior phantom: error: ", str(f))
    _read_only_fs(monkeypatch)
    assert main(["phantom", "--out", str(tmp_path / "ph"), "--patients", "1", "--workers", "1"]) == 2
    _one_line(capsys, "cmrprior phantom: error: ", str(tmp_path / "ph"), "Read-only file system")


@pytest.mark.parametrize("argv", [
    ["segment", "predict", "--data", "D", "--out", "R", "--threads", "-2"],
    ["segment", "predict", "--data", "D", "--out", "R", "--threads", "0"],
    ["prepare", "--data", "D", "--out", "R", "--workers", "-1"],
    ["phantom", "--out", "R", "--patients", "0"],
])
def test_counts_below_one_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "must be at least 1" in err


def test_report_and_saliency_on_a_read_only_run_folder(tmp_path, monkeypatch, capsys):
    """A finished run folder on a read-only mount: one line naming the file, exit 2, for both readers."""
    from cmrprior.runs import LAYOUT_VERSION, MasksOrigin, RunFolder, RunInfo
    from cmrprior.vocab import ImageSpec

    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    run.write_info(RunInfo(LAYOUT_VERSION, ("NOR", "DCM"), MasksOrigin("segmenter"), (ImageSpec("full", "full", 0.0),), 32, 1.5))
    run.tables.mkdir()
    monkeypatch.setattr(cmrprior.cli, "COMMAND_MODULES", ["cmrprior.report.commands", "cmrprior.saliency.commands"])
    _read_only_fs(monkeypatch)
    assert main(["report", str(run.root)]) == 2
    _one_line(capsys, "cmrprior report: error:", str(run.root), "Read-only file system")
    assert main(["saliency", "--run", str(run.root)]) == 2
    _one_line(capsys, "cmrprior saliency: error:", str(run.root), "Read-only file system")


def test_a_closed_output_pipe_ends_quietly(tmp_path):
    """`cmrprior ... | head`: the reader closes the pipe before the command prints; the command ends with 141
    (a shell's SIGPIPE status) and writes no error line or traceback (before: 'error: [Errno 32] Broken pipe', 2)."""
    import subprocess
    import sys

    data = _acdc(tmp_path / "data", n=2)
    proc = subprocess.Popen([sys.executable, "-m", "cmrprior", "cohort", "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads what the command prints
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "error" not in err.lower() and "Traceback" not in err, err
