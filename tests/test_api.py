"""The Python API: every public name resolves to the function the CLI uses, and `import cmrprior` stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import cmrprior


def test_every_public_name_resolves_to_a_documented_object():
    for name in cmrprior.__all__:
        obj = getattr(cmrprior, name)
        if name != "__version__":
            assert inspect.getdoc(obj), name
            assert name in cmrprior.__doc__ or name in ("StudyResult", "SaliencyConfig"), name
    from cmrprior.experiments.study import run_study
    from cmrprior.segmentation.cohort_predict import predict_cohort

    assert cmrprior.run_study is run_study and cmrprior.segment is predict_cohort
    assert set(dir(cmrprior)) >= set(cmrprior.__all__)
    try:
        cmrprior.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_import_does_not_import_torch():
    code = ("import sys, cmrprior; assert 'run_study' in cmrprior.__all__; "
            "print(sorted(m for m in ('torch', 'numpy', 'matplotlib', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
