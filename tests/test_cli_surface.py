"""The command line as users meet it: `cmrprior --help` without torch, defaults from the config dataclasses,
a help text on every option, distinct exit codes for bad data and bad usage."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmrprior import cli

SRC = Path(__file__).resolve().parents[1] / "src"


def _run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("module", cli.COMMAND_MODULES)
def test_registering_a_command_imports_no_torch(module):
    code = ("import argparse, importlib, sys\n"
            f"importlib.import_module({module!r}).register(argparse.ArgumentParser().add_subparsers())\n"
            "print(sorted(m for m in ('torch', 'monai', 'scipy', 'matplotlib') if m in sys.modules))")
    assert _run_python(code) == "[]"


def test_help_imports_no_torch():
    code = "import sys; from cmrprior.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert _run_python(code) == "False"


def _parser(*path: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _defaults(*path: str) -> dict:
    return {a.dest: a.default for a in _parser(*path)._actions}


def test_saliency_defaults_are_the_study_settings():
    from cmrprior.saliency.config import SaliencyConfig

    d, c = _defaults("saliency"), SaliencyConfig()
    assert d["ig_steps"] == c.ig_steps == 8  # the study's; the CLI said 16
    assert tuple(d["methods"].split(",")) == c.methods
    for name in ("target", "margin_mm", "overlay_patients", "overlay_splits", "seed"):
        assert d[name] == getattr(c, name), name


def test_pretrain_segment_prepare_defaults_are_the_dataclass_fields():
    from cmrprior.data.prepare import PrepareConfig
    from cmrprior.segmentation.inference import SegInference
    from cmrprior.segmentation.train import SegTrainConfig
    from cmrprior.ssl.config import PretrainConfig

    d, c = _defaults("pretrain"), PretrainConfig()
    for name in ("backbone", "weights", "batch_size", "epochs", "patience", "lr", "temperature", "precision", "device",
                 "seed"):
        assert d[name] == getattr(c, name), name
    assert d["checkpoint_every"] == c.checkpoint_every_steps
    d, c = _defaults("segment", "train"), SegTrainConfig()
    assert (d["seed"], d["epochs"], d["patience"], d["batch_size"], d["lr"]) == (
        c.seed, c.max_epochs, c.patience, c.batch_size, c.lr)
    assert (d["channels"], d["res_units"], d["context_slices"]) == (
        ",".join(map(str, c.unet.channels)), c.unet.num_res_units, c.unet.in_channels)
    d = _defaults("segment", "predict")
    assert (d["backend"], tuple(d["rotations"])) == (SegInference().backend, SegInference().rotations)
    d, c = _defaults("prepare"), PrepareConfig()
    assert (d["size"], d["spacing"], not d["all_slices"]) == (c.size, c.pixel_spacing_mm, c.heart_slices_only)


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaves(child, (*path, name))


def test_every_option_has_help_and_shows_its_default():
    leaves = list(_leaves(cli.build_parser()))
    assert len(leaves) >= 15
    for path, parser in leaves:
        assert parser.description, path  # `cmrprior X --help` says what X does
        text = " ".join(parser.format_help().split())
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            where = f"cmrprior {' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
            assert a.help and a.help.strip(), f"{where}: no help text"
            d = a.default
            if d is None or d is False or d in ([], ()) or a.required:
                continue
            shown = str(",".join(map(str, d)) if isinstance(d, (list, tuple)) else d)
            if "default" in a.help.lower():
                continue  # the text says it in words ("default: CPU count, at most 4")
            assert f"(default: {shown})" in text, f"{where}: default {shown} not in the help"


def test_quiet_cli_logging_shows_no_progress_bar_on_a_terminal(monkeypatch):
    import io
    import logging

    from cmrprior.utils.logs import cli_logging
    from cmrprior.utils.progress import track

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for quiet in (False, True):
        err = Terminal()
        monkeypatch.setattr(sys, "stderr", err)
        with cli_logging(quiet=quiet):
            assert list(track(range(5), "stage", 5, logging.getLogger("cmrprior.test"), unit="items")) == list(range(5))
        assert ("stage" in err.getvalue()) is not quiet, err.getvalue()  # a bar and the last line, or nothing


def test_figures_leave_the_users_matplotlib_backend_alone(tmp_path):
    """A notebook user's backend (here "svg", chosen before cmrprior draws) is the same after saliency overlays,
    report figures and mask overlays are drawn (they used to call matplotlib.use("Agg"))."""
    code = f"""
import matplotlib
matplotlib.use("svg")
import numpy as np
from cmrprior.report.plots import robustness_png
from cmrprior.saliency.overlays import OverlayPanel, grid_png
from cmrprior.segmentation.overlay import save_overlay
img = np.random.default_rng(0).random((16, 16))
heart = np.zeros((16, 16), bool); heart[4:12, 4:12] = True
pngs = [grid_png([[OverlayPanel(img, img, heart, "ED")]]), robustness_png({{"noise": [(0.0, 0.8), (0.1, 0.7)]}}, 0.8)]
labels = np.zeros((2, 16, 16), np.uint8); labels[:, 4:12, 4:12] = 3
path = save_overlay({{"ED": (np.stack([img, img]), labels)}}, {str(tmp_path / "overlay.png")!r}, n_slices=2)
pngs.append(path.read_bytes())
assert all(p[:8] == b"\\x89PNG\\r\\n\\x1a\\n" for p in pngs)
print(matplotlib.get_backend())
"""
    assert _run_python(code) == "svg"


def test_bad_data_exits_3_bad_usage_2(tmp_path, capsys):
    assert cli.main(["cohort", "--data", str(tmp_path / "no_such_cohort")]) == 3  # DataError
    assert "no_such_cohort" in capsys.readouterr().err
    assert cli.main(["saliency", "--run", str(tmp_path), "--methods", "nonsense"]) == 2  # ConfigError
    assert "nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage error
        cli.main(["cohort", "--no-such-option"])
    assert usage.value.code == 2
