"""Tables 1-3, comparisons and Figure 1 from synthetic cell results."""

import json

import numpy as np
import pytest
from scipy import stats

from cmrprior.evaluate.curves import write_figure1
from cmrprior.evaluate.metrics import classification_metrics, macro_auc
from cmrprior.evaluate.config import EvaluationConfig
from cmrprior.evaluate.tables import TableSetup, format_cell, summarise_cells, write_tables
from cmrprior.runs import CellResult

CLASSES = ["NOR", "DCM", "HCM", "MINF", "RV"]


def fake_result(init, images, split, strength, rng, backbone="vgg16"):
    y = np.repeat(np.arange(5), 4)
    logits = rng.normal(size=(20, 5)) + strength * np.eye(5)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {**_base(backbone, init, images, split), "status": "ok",
            "test": {"patient_ids": [f"p{i}" for i in range(20)], "labels": y.tolist(), "probabilities": p.tolist(),
                     "metrics": classification_metrics(y, p, CLASSES)},
            "history": [{"epoch": e, "train_loss": 1.0, "val_auc": 0.5 + 0.05 * e, "val_loss": 1.5 - 0.1 * e} for e in range(1, 6)]}


def _base(backbone, init, images, split):
    return {"backbone": backbone, "init": init, "images": images, "split": str(split), "classes": CLASSES, "seed": 0,
            "masks_source": "ground_truth", "masks_note": "", "image_mode": "full" if images == "full" else "mask",
            "input_size": 32, "mode": "linear"}


@pytest.fixture()
def results():
    rng = np.random.default_rng(0)
    out = []
    for split in range(3):
        for init, s in (("none", 0.2), ("full_sscl", 2.0), ("segmented_sscl", 2.5)):
            for images in ("full", "segmented"):
                out.append(fake_result(init, images, split, s, rng))
        for images in ("full", "segmented"):
            out.append({**_base("vgg16", "imagenet", images, split), "status": "unavailable",
                        "reason": "ImageNet weights for vgg16 not found at /x/vgg16.pth"})
    return [CellResult.from_json(d) for d in out]


def test_summary_mean_and_intervals(results):
    s = summarise_cells(results, test_train_ratio=0.3 / 0.7, n_boot=100, seed=0)
    cell = s[("vgg16", "full_sscl", "full")]
    aucs = [r.test.metrics.macro_auc for r in results if (r.key.init, r.key.images) == ("full_sscl", "full")]
    assert cell["macro_auc"] == pytest.approx(np.mean(aucs))
    assert cell["t_low"] < cell["macro_auc"] < cell["t_high"]
    assert cell["boot_low"] is None  # several splits: the corrected t interval only
    one = summarise_cells([r for r in results if r.key.split == "0"], test_train_ratio=0.3 / 0.7, n_boot=100, seed=0)
    c1 = one[("vgg16", "full_sscl", "full")]  # one split (a held-out cohort): its model's patient bootstrap
    assert c1["t_low"] is None and c1["boot_low"] <= c1["macro_auc"] <= c1["boot_high"]
    assert s[("vgg16", "imagenet", "full")]["status"] == "unavailable"
    assert format_cell(s[("vgg16", "imagenet", "full")]).startswith("n/a: ImageNet weights")


def test_write_tables_layout(results, tmp_path):
    written = write_tables(results, tmp_path, setup=_setup())
    assert {"table1", "table2", "table3", "metrics", "comparisons"} <= set(written)
    t1 = (tmp_path / "table1.md").read_text()
    assert "| Backbone | None | ImageNet | Full-SSCL | Segmented-SSCL |" in t1
    assert "n/a: ImageNet weights" in t1 and "vgg16 (paper, ACDC) | 0.542 | 0.532 | 0.849 | 0.738" in t1
    t3 = json.loads((tmp_path / "table3.json").read_text())
    cols = [r["column"] for r in t3["rows"]]
    assert cols == ["Full-Full", "Full-Segmented", "Segmented-Full", "Segmented-Segmented"]
    s = summarise_cells(results, test_train_ratio=0.3 / 0.7, n_boot=50, seed=0)
    ff = next(r for r in t3["rows"] if r["column"] == "Segmented-Full")
    assert ff["macro_auc"] == pytest.approx(s[("vgg16", "segmented_sscl", "full")]["macro_auc"])
    csv_text = (tmp_path / "table2.csv").read_text().splitlines()
    assert csv_text[0].startswith("backbone,column,init,images,macro_auc") and len(csv_text) == 5
    comps = json.loads((tmp_path / "comparisons.json").read_text())
    c = next(c for c in comps if c["a"] == "vgg16/full_sscl/full" and c["b"] == "vgg16/none/full")
    assert c["difference"] > 0.2 and c["paired_test"]["p_value"] < 0.05
    assert c["paired_test"]["method"] == "corrected_paired_t_over_splits"
    diffs = []
    by = {(r.key.init, r.key.images, r.key.split): r for r in results if r.ok}
    for sp in "012":
        a, b = by[("full_sscl", "full", sp)].test, by[("none", "full", sp)].test
        diffs.append(macro_auc(np.array(a.labels), np.array(a.probabilities)) - macro_auc(np.array(b.labels), np.array(b.probabilities)))
    assert c["difference"] == pytest.approx(np.mean(diffs))
    # the tables' paired test: t over the splits' differences, overlap term 0.2 x n_test/n_train (default protocol)
    t = np.mean(diffs) / np.sqrt((1 / 3 + 0.2 * 0.3 / 0.7) * np.var(diffs, ddof=1))
    assert c["paired_test"]["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 2))


def test_tables_state_protocol_counts_and_holm(results, tmp_path):
    from cmrprior.data.splits import ProtocolConfig
    from cmrprior.utils.intervals import t_interval
    from cmrprior.evaluate.compare import holm_adjust

    protocol = ProtocolConfig(scheme="kfold", folds=4, repeats=1)
    write_tables(results, tmp_path, setup=_setup(protocol=protocol))
    t1 = json.loads((tmp_path / "table1.json").read_text())
    notes = "\n".join(t1["notes"])
    assert "repeated stratified 4-fold CV, 1 repeat(s) x 4 folds = 4 split(s)" in notes
    assert "Test patients per class and split: NOR 4, DCM 4, HCM 4, MINF 4, RV 4 (20 per split, 3 split(s))" in notes
    assert "corrected resampled t" in notes and "n_test/n_train = 0.333" in notes
    # the cell's intervals are the corrected t (ratio 1/(k-1)) and the pooled patient bootstrap
    row = next(r for r in t1["rows"] if r["init"] == "full_sscl")
    ok = sorted([r for r in results if r.ok and (r.key.init, r.key.images) == ("full_sscl", "full")], key=lambda r: r.key.split)
    _, lo, hi = t_interval([r.test.metrics.macro_auc for r in ok], 1 / 3, bounds=(0.0, 1.0))
    assert (row["t_low"], row["t_high"]) == pytest.approx((lo, hi))
    assert "boot_low" not in row or row["boot_low"] is None  # several splits: the corrected t only
    assert "clipped to" in notes and "bench/coverage_retrain.py" in notes
    comps = json.loads((tmp_path / "comparisons.json").read_text())
    assert [c["p_holm"] for c in comps] == pytest.approx(holm_adjust([c["paired_test"]["p_value"] for c in comps]))
    md = (tmp_path / "comparisons.md").read_text()
    assert "p (Holm)" in md and f"over the {len(comps)} comparison(s)" in md
    assert (tmp_path / "comparisons.csv").read_text().splitlines()[0]== "a,b,n_splits,difference,ci_low,ci_high,p,p_holm"


def test_figure1_png(results, tmp_path):
    path = write_figure1(results, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert write_figure1([r for r in results if not r.ok], tmp_path / "g.png") is None


def _setup(**over):
    base = dict(classes=tuple(CLASSES), backbones=("vgg16",), inits=("none", "imagenet", "full_sscl", "segmented_sscl"),
                images=("full", "segmented"), evaluation=EvaluationConfig(n_boot=50), seed=0)
    return TableSetup(**{**base, **over})


def test_default_comparisons_add_the_seg_teacher_pairs_only_when_it_is_in_the_grid():
    from cmrprior.evaluate.tables import default_comparisons

    study = default_comparisons(["tiny"], ["none", "imagenet", "full_sscl", "segmented_sscl"], ["full", "segmented"])
    assert len(study) == 2 * 5 + 4 + 1  # per images the 5 init pairs, each init segmented vs full, SSCL across
    grid = default_comparisons(["tiny"], ["none", "imagenet", "full_sscl", "segmented_sscl", "seg_teacher"],
                               ["full", "segmented"])
    added = [pair for pair in grid if pair not in study]
    assert sorted(added) == sorted([(("tiny", "seg_teacher", im), ("tiny", other, im))
                                    for im in ("full", "segmented") for other in ("none", "segmented_sscl")]
                                   + [(("tiny", "seg_teacher", "segmented"), ("tiny", "seg_teacher", "full"))])


def test_comparison_records_name_their_test_paired_test(results, tmp_path):
    """The record's test is under `paired_test` (it is a paired t over splits, not a bootstrap); readers take
    the old key of earlier run folders too."""
    from cmrprior.runs import paired_test_of

    write_tables(results, tmp_path, setup=_setup())
    comps = json.loads((tmp_path / "comparisons.json").read_text())
    assert comps and all("paired_test" in c and "paired_bootstrap" not in c for c in comps)
    old = {"paired_bootstrap": {"low": -0.1, "high": 0.2, "p_value": 0.3}}
    assert paired_test_of(old) == old["paired_bootstrap"] and paired_test_of({}) == {}
