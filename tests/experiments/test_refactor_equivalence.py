"""The tables of a phantom study are those the code wrote before the run-folder/config refactor.

The golden files (`golden/`, made by `golden/make_golden.py` at the commit named in `golden/meta.json`)
are compared byte for byte on a CPU with the same kernels (`torch.backends.cpu.get_cpu_capability()`).
Elsewhere float kernels may differ in their last bits, so numbers are compared to 1e-9 relative and every
string (including formatted table cells) exactly.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"
NAMES = ("table1", "table2", "table3", "metrics", "comparisons")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _close(a, b, where="") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                                                or (math.isnan(a) and math.isnan(b))), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def tables(tmp_path_factory, one_torch_thread):
    return _load_script().run_golden_study(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", NAMES)
def test_tables_equal_the_pre_refactor_ones(tables, name):
    new, old = (tables / f"{name}.json").read_bytes(), (GOLDEN / f"{name}.json").read_bytes()
    meta = json.loads((GOLDEN / "meta.json").read_text())
    if torch.backends.cpu.get_cpu_capability() == meta["cpu_capability"]:
        assert new == old
    else:
        _close(json.loads(old), json.loads(new), name)
