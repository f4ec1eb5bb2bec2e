"""A K-fold cross-validation trained one fold at a time (`cross_validate(only_fold=k)`, `segment train
--only-fold K`): each piece is the full run's fold (same held-out patients, same weights bit for bit), resumes
after a kill, and the pieces, run in any order and in different folders later merged, give the full run's folder."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from cmrprior.errors import ConfigError
from cmrprior.segmentation.cv import FOLD_SPLIT_FILE, cross_validate
from cmrprior.segmentation.train import SegTrainConfig
from seg_doubles import TINY, make_cohort

CFG = SegTrainConfig(unet=TINY, max_epochs=1, batch_size=8, train_crop=None, warmup_steps=1, val_fraction=0.25,
                     num_threads=1)


def _same_weights(a, b) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def _log(path) -> list[tuple]:
    """The per-epoch losses and validation Dice of a fold's log.jsonl (its timings differ from run to run)."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [(r["epoch"], r["train_loss"], r["val_dice"]) for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A full 3-fold cross-validation of an 8-patient cohort."""
    out = tmp_path_factory.mktemp("full") / "cv"
    cross_validate(make_cohort(n_patients=8), CFG, out, folds=3)
    return out


def test_one_fold_alone_is_the_full_runs_fold(full_run, tmp_path):
    cohort = make_cohort(n_patients=8)
    rows = cross_validate(cohort, CFG, tmp_path / "cv", folds=3, only_fold=2)
    piece, ref = tmp_path / "cv" / "fold_2", full_run / "fold_2"
    assert json.loads((piece / FOLD_SPLIT_FILE).read_text()) == json.loads((ref / FOLD_SPLIT_FILE).read_text())
    assert _same_weights(piece / "model.safetensors", ref / "model.safetensors")
    assert _log(piece / "log.jsonl") == _log(ref / "log.jsonl")
    assert (piece / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert {r["fold"] for r in rows} == {2}
    # the other folds are not trained, and no summary is written while they are missing
    assert not (tmp_path / "cv" / "fold_0").exists() and not (tmp_path / "cv" / "fold_1").exists()
    assert not (tmp_path / "cv" / "cv_summary.csv").exists() and not (tmp_path / "cv" / "final").exists()


def test_pieces_in_any_order_and_folders_merge_into_the_full_run(full_run, tmp_path):
    cohort = make_cohort(n_patients=8)
    cross_validate(cohort, CFG, tmp_path / "a" / "cv", folds=3, only_fold=2)  # session 1
    cross_validate(cohort, CFG, tmp_path / "b" / "cv", folds=3, only_fold=0)  # session 2, another run folder
    shutil.copytree(tmp_path / "b" / "cv" / "fold_0", tmp_path / "a" / "cv" / "fold_0")  # merged
    assert not (tmp_path / "a" / "cv" / "cv_summary.csv").exists()
    rows = cross_validate(cohort, CFG, tmp_path / "a" / "cv", folds=3, only_fold=1)  # session 3: the last fold
    merged = tmp_path / "a" / "cv"
    assert {r["fold"] for r in rows} == {0, 1, 2}
    for name in ("cv_metrics.csv", "cv_summary.csv", "cv.json"):
        assert (merged / name).read_text() == (full_run / name).read_text(), name
    for k in range(3):
        assert _same_weights(merged / f"fold_{k}" / "model.safetensors", full_run / f"fold_{k}" / "model.safetensors")


def test_a_killed_fold_resumes_to_the_full_runs_fold(full_run, tmp_path):
    cohort = make_cohort(n_patients=8)
    cross_validate(cohort, dataclasses.replace(CFG, max_steps=1), tmp_path / "cv", folds=3, only_fold=1)
    fold = tmp_path / "cv" / "fold_1"
    assert (fold / "checkpoint.pt").exists() and not (fold / "model.safetensors").exists()
    cross_validate(cohort, CFG, tmp_path / "cv", folds=3, only_fold=1)  # the same command again, without the cap
    assert _same_weights(fold / "model.safetensors", full_run / "fold_1" / "model.safetensors")
    assert _log(fold / "log.jsonl") == _log(full_run / "fold_1" / "log.jsonl")


def test_a_finished_fold_of_another_recipe_is_refused_and_bad_fold_numbers_too(full_run, tmp_path):
    cohort = make_cohort(n_patients=8)
    shutil.copytree(full_run / "fold_0", tmp_path / "cv" / "fold_0")
    with pytest.raises(ConfigError, match=r"fold_0/model.json.*\(lr\)"):
        cross_validate(cohort, dataclasses.replace(CFG, lr=0.01), tmp_path / "cv", folds=3, only_fold=1)
    with pytest.raises(ConfigError, match="only_fold must be one of 0..2"):
        cross_validate(cohort, CFG, tmp_path / "cv", folds=3, only_fold=3)


def test_a_fold_from_before_a_setting_existed_counts_as_its_default(full_run, tmp_path):
    """A fold trained before `dice_over` and `ce_boundary` were settings (its stored config lacks the keys) is the
    default recipe's fold: reused under the defaults, refused under per-slice Dice or boundary weights."""
    cohort = make_cohort(n_patients=8)
    fold = tmp_path / "cv" / "fold_0"
    shutil.copytree(full_run / "fold_0", fold)
    meta = json.loads((fold / "model.json").read_text())
    assert meta["config"].pop("dice_over") == "batch" and meta["config"].pop("ce_boundary") == 0.0
    (fold / "model.json").write_text(json.dumps(meta))
    cross_validate(cohort, CFG, tmp_path / "cv", folds=3, only_fold=1)  # fold 0 checked and kept, fold 1 trained
    assert _same_weights(fold / "model.safetensors", full_run / "fold_0" / "model.safetensors")
    with pytest.raises(ConfigError, match=r"fold_0/model.json.*\(dice_over\)"):
        cross_validate(cohort, dataclasses.replace(CFG, dice_over="slice"), tmp_path / "cv", folds=3, only_fold=2)
    with pytest.raises(ConfigError, match=r"fold_0/model.json.*\(ce_boundary\)"):
        cross_validate(cohort, dataclasses.replace(CFG, ce_boundary=2.0), tmp_path / "cv", folds=3, only_fold=2)


def test_segment_train_only_fold_command(tmp_path, capsys):
    from cmrprior.cli import main
    from cmrprior.data.phantom import generate_phantom

    phantom = generate_phantom(tmp_path / "cohort", n_patients=4, seed=3)
    args = ["segment", "train", "--data", str(phantom), "--epochs", "1", "--channels", "4,8", "--res-units", "0",
            "--batch-size", "8", "--threads", "1", "--train-crop", "64", "--folds", "2"]
    run = tmp_path / "run"
    assert main([*args, "--out", str(run), "--only-fold", "1", "--max-steps", "1"]) == 0
    assert "fold 1: not finished" in capsys.readouterr().out
    assert main([*args, "--out", str(run), "--only-fold", "1"]) == 0
    assert "fold 1: finished" in capsys.readouterr().out
    assert (run / "cv" / "fold_1" / "model.safetensors").exists() and (run / "cv" / "fold_1" / "log.jsonl").exists()
    assert not (run / "cv" / "fold_0").exists() and not (run / "final").exists()
    assert main([*args, "--out", str(tmp_path / "bad"), "--only-fold", "2"]) == 2
    assert "--only-fold 2 is not a fold of --folds 2" in capsys.readouterr().err


def test_segment_train_boundary_weight_reaches_the_config():
    from cmrprior.cli import build_parser
    from cmrprior.segmentation.commands import _config

    base = ["segment", "train", "--data", "D", "--out", "R"]
    args = build_parser().parse_args([*base, "--ce-boundary", "2.5"])
    assert _config(args, 60).ce_boundary == 2.5
    assert _config(build_parser().parse_args(base), 60).ce_boundary == SegTrainConfig().ce_boundary == 0.0


def test_training_uses_the_boundary_weight(tmp_path):
    """The same one-epoch run with and without boundary weights: same split and steps, a larger training loss
    (boundary pixels count more in its cross-entropy), and the weight stored with the model."""
    from cmrprior.segmentation.train import train_segmenter

    cohort = make_cohort(n_patients=4)
    plain = train_segmenter(cohort, CFG, tmp_path / "plain")
    weighted = train_segmenter(cohort, dataclasses.replace(CFG, ce_boundary=3.0), tmp_path / "weighted")
    loss = lambda run: json.loads((run.parent / "log.jsonl").read_text().splitlines()[0])["train_loss"]  # noqa: E731
    assert loss(weighted) > loss(plain) + 1e-3
    assert json.loads(weighted.with_suffix(".json").read_text())["config"]["ce_boundary"] == 3.0


def test_another_draw_keeps_the_patients_and_changes_the_training(tmp_path):
    """`draw_seed` equal to `seed` is the training of `seed` bit for bit; another draw seed trains the same fold on
    the same training and validation patients to other weights."""
    cohort = make_cohort(n_patients=8)
    runs = {name: tmp_path / name for name in ("plain", "same", "other")}
    cross_validate(cohort, CFG, runs["plain"], folds=3, only_fold=0)
    cross_validate(cohort, dataclasses.replace(CFG, draw_seed=CFG.seed), runs["same"], folds=3, only_fold=0)
    cross_validate(cohort, dataclasses.replace(CFG, draw_seed=7), runs["other"], folds=3, only_fold=0)
    fold = lambda run: run / "fold_0"  # noqa: E731
    split = lambda run: json.loads((fold(run) / "split.json").read_text())  # noqa: E731
    held_out = lambda run: json.loads((run / "fold_0" / FOLD_SPLIT_FILE).read_text())  # noqa: E731
    assert _same_weights(fold(runs["same"]) / "model.safetensors", fold(runs["plain"]) / "model.safetensors")
    assert not _same_weights(fold(runs["other"]) / "model.safetensors", fold(runs["plain"]) / "model.safetensors")
    assert split(runs["other"])["train"] == split(runs["plain"])["train"]
    assert split(runs["other"])["val"] == split(runs["plain"])["val"]
    assert held_out(runs["other"]) == held_out(runs["plain"])


def test_draw_seed_in_the_recipe_and_the_flag():
    from cmrprior.cli import build_parser
    from cmrprior.segmentation.commands import _config
    from cmrprior.segmentation.config import recipe_digest

    as_json = lambda c: json.loads(json.dumps(c.to_json()))  # noqa: E731
    assert recipe_digest(as_json(dataclasses.replace(CFG, draw_seed=None))) != recipe_digest(as_json(dataclasses.replace(CFG, draw_seed=3)))
    base = ["segment", "train", "--data", "D", "--out", "R"]
    assert _config(build_parser().parse_args([*base, "--draw-seed", "3"]), 60).draw_seed == 3
    assert _config(build_parser().parse_args(base), 60).draw_seed is None
