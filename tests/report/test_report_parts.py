"""Report building blocks against hand-computed values and scikit-learn."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cmrprior.report.html import Section, markdown_to_html, render_page, table_html
from cmrprior.report.plots import confusion_grid_png, pooled_predictions, roc_grid_png, roc_points, summed_confusion
from cmrprior import runs


def test_markdown_table_heading_list_and_escaping():
    md = "## Table 1: AUC\n\n| Backbone | None |\n|---|---|\n| tiny | 0.5 [0.4, 0.6] |\n| <b> | a & b |\n\n- note **x**\n- `y`\n"
    out = markdown_to_html(md)
    assert "<h3>Table 1: AUC</h3>" in out
    assert "<thead><tr><th>Backbone</th><th>None</th></tr></thead>" in out
    assert "<tr><td>tiny</td><td>0.5 [0.4, 0.6]</td></tr>" in out
    assert "<td>&lt;b&gt;</td><td>a &amp; b</td>" in out
    assert "<ul><li>note <strong>x</strong></li><li><code>y</code></li></ul>" in out
    assert out.count("<tr>") == 3  # header + 2 rows; the separator line is not a row


def test_page_marks_missing_sections_and_escapes():
    page = render_page("T <1>", "sub", [Section("a", "A", "<p>body</p>"), Section("b", "B & C", missing="no <file>")])
    assert "<title>T &lt;1&gt;</title>" in page
    assert '<section id="b">' in page and "Not available: no &lt;file&gt;" in page
    assert "<p>body</p>" in page
    assert "data-render-check" in page
    t = table_html(["x"], [[1], ["<y>"]], caption="c")
    assert t == "<table><caption>c</caption><thead><tr><th>x</th></tr></thead><tbody><tr><td>1</td></tr><tr><td>&lt;y&gt;</td></tr></tbody></table>"


def _result(labels, probs, cm=True) -> runs.TestOutputs:
    matrix = []
    if cm:
        k = len(probs[0])
        m = np.zeros((k, k), int)
        for y, p in zip(labels, probs):
            m[y, int(np.argmax(p))] += 1
        matrix = m.tolist()
    metrics = runs.TestMetrics(None, {}, None, None, matrix, len(labels))
    return runs.TestOutputs([f"p{i}" for i in range(len(labels))], [int(y) for y in labels], [list(p) for p in probs], metrics)


def test_roc_legend_auc_is_the_tables_auc_to_the_bit():
    from cmrprior.evaluate.metrics import per_class_auc

    rng = np.random.default_rng(3)
    for n in (7, 19, 40, 101):
        y = rng.integers(0, 4, n)
        p = np.round(rng.dirichlet(np.ones(4), n), 1)  # ties
        tables = per_class_auc(y, p)
        for k in range(4):
            pts = roc_points(y, p, k)
            assert (pts is None and np.isnan(tables[k])) or pts[2] == tables[k]


def test_roc_points_and_confusion_against_references():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    p = rng.dirichlet(np.ones(3), 40)
    a, b = _result(y[:20], p[:20]), _result(y[20:], p[20:], cm=False)
    yy, pp = pooled_predictions([a, b])
    np.testing.assert_array_equal(yy, y)
    for k in range(3):
        fpr, tpr, auc = roc_points(yy, pp, k)
        assert auc == pytest.approx(roc_auc_score(y == k, p[:, k]))
        assert np.trapezoid(tpr, fpr) == pytest.approx(auc)
    assert roc_points(np.zeros(5, int), p[:5], 0) is None
    cm = summed_confusion([a, b], 3)
    expected = np.zeros((3, 3), int)
    for t, q in zip(y, p):
        expected[t, q.argmax()] += 1
    np.testing.assert_array_equal(cm, expected)
    for png in (roc_grid_png([("a", [a]), ("b", [b])], ["X", "Y", "Z"]), confusion_grid_png([("a", [a, b])], ["X", "Y", "Z"])):
        img = mpimg.imread(io.BytesIO(png), format="png")
        assert img.ndim == 3 and img.shape[0] > 100


def test_compact_dice_and_flag_tables(tmp_path):
    """segmentation_summary.csv -> structures x (metric, phase); mask_flags.csv -> per flag and phase counts."""
    from cmrprior.report.qc import dice_table, flags_table

    summary = tmp_path / "summary.csv"
    summary.write_text("phase,metric,mean,ci_low,ci_high,n\n"
                       "ED,dice_LV,0.91234,0.9,0.92,30\nES,dice_LV,0.8,0.7,0.9,30\nall,dice_LV,0.85,0.8,0.9,60\n"
                       "ED,hd95_RV,4.5,3.0,6.0,30\nES,hd95_RV,nan,nan,nan,0\n")
    t = dice_table(summary)
    assert "<th>Structure</th><th>Dice ED</th><th>Dice ES</th><th>HD95 (mm) ED</th><th>HD95 (mm) ES</th>" in t
    assert "<tr><td>RV</td><td></td><td></td><td>4.500 [3.000, 6.000]</td><td>n/a</td></tr>" in t
    assert "<tr><td>LV cavity</td><td>0.912 [0.900, 0.920]</td><td>0.800 [0.700, 0.900]</td><td></td><td></td></tr>" in t
    assert "over 30 patients" in t and "0.850" not in t  # the pooled phase is left out
    assert dice_table(tmp_path / "absent.csv") is None

    flags = tmp_path / "mask_flags.csv"
    flags.write_text("patient_id,label,phase,n_slices,empty_heart,volume_jump,details\n"
                     "a,NOR,ED,8,False,True,x\na,NOR,ES,8,True,False,y\nb,DCM,ED,9,False,True,z\nb,DCM,ES,9,False,False,\n")
    f = flags_table(flags)
    assert "<tr><td>No heart label on any slice</td><td>0 / 2</td><td>1 / 2</td><td>a ES</td></tr>" in f
    assert "<tr><td>Heart area jumps between neighbouring slices</td><td>2 / 2</td><td>0 / 2</td><td>a ED, b ED</td></tr>" in f
    assert flags_table(tmp_path / "absent.csv") is None


def test_pretraining_section_says_how_each_encoder_was_computed(tmp_path):
    """Runs found in every layout the folder uses (the grid's `simclr_bs<B>`, an older study's `bs<B>`, the
    teacher's, the held-out model's), grouped with their precision; a record from before records held it says so."""
    from cmrprior.report.sections import pretraining_section

    folder = runs.RunFolder(tmp_path)

    def write(split, pretext, batch, wall, epochs, precision=None, channels_last=None, name=None):
        path = folder.pretrain_dir(split, "segmented", "tiny", pretext, batch)
        path = path.parent / name if name else path
        path.mkdir(parents=True)
        folder.write_pretrain(path, runs.PretrainRecord(
            checkpoint="x.pt", backbone="tiny", batch_size=batch or 8, images="segmented", patient_ids=[],
            val_patient_ids=[], n_train_images=0, n_val_images=0, seed=0, wall_s=wall, epochs_run=epochs,
            precision=precision, channels_last=channels_last), {})

    write("0", "simclr", 16, 60.0, 5, "bf16", True)
    write("1", "simclr", 16, 120.0, 7, "bf16", True)
    write("holdout", "simclr", 16, 30.0, 6, "fp32", True)
    write("0", "simclr", 32, 6.0, 2, name="bs32")  # an older study's folder, and record
    write("0", "masks", None, 90.0, 3, "fp32", False)
    found = sorted((p, r.batch_size, r.wall_s) for p, r in folder.pretrain_runs())
    assert found == [("masks", 8, 90.0), ("simclr", 16, 30.0), ("simclr", 16, 60.0), ("simclr", 16, 120.0),
                     ("simclr", 32, 6.0)]
    section = pretraining_section(folder)
    assert section.missing is None
    rows = section.body.split("<tbody>")[1].split("</tr>")
    assert "<td>SimCLR</td><td>segmented</td><td>tiny</td><td>16</td><td>2</td><td>bf16, channels-last</td>" \
           "<td>5-7</td><td>3.0</td>" in section.body  # two splits: 60 + 120 s
    assert "<td>16</td><td>1</td><td>float32, channels-last</td><td>6</td><td>0.5</td>" in section.body
    assert "<td>32</td><td>1</td><td>not recorded</td><td>2</td><td>0.1</td>" in section.body
    assert "<td>1</td><td>float32</td><td>3</td><td>1.5</td>" in section.body
    assert len(rows) == 5  # four groups and the closing tag
    assert "Computed in more than one way:</strong> SimCLR on segmented images (tiny, batch 16)." in section.body
    write("2", "masks", None, 80.0, 3, "fp32", False)  # the same way as the other teacher run: nothing said of it
    assert "Seg-teacher" not in pretraining_section(folder).body.split("more than one way")[1]
    assert pretraining_section(runs.RunFolder(tmp_path / "empty")).missing
