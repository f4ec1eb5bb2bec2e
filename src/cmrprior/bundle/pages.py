"""The pages of `cmrprior diagnose`: one self-contained HTML file per patient and one for the cohort, readable
without cmrprior (inline styles, images embedded). They render what `diagnose` decided; they compute
nothing but the overlay pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmrprior.bundle.diagnose import OK, DiagnosisTable, PatientDiagnosis
from cmrprior.bundle.model import Bundle
from cmrprior.report.html import Section, esc, figure, render_page, table_html
from cmrprior.segmentation.overlay import save_overlay
from cmrprior.utils import atomic
from cmrprior.utils.filenames import patient_filename

USE = ("Research use only: a suggestion from a statistical model with the reasons below, not a clinical "
       "decision. Check the masks before reading the measures.")


def _bar(p: float) -> str:
    return (f'<span style="display:inline-block;width:{p * 200:.0f}px;height:10px;background:#3572b0"></span> '
            f"{p:.3f}")


def _overlay_png(shown: dict[str, tuple[np.ndarray, np.ndarray]], tmp: Path) -> bytes:
    save_overlay(shown, tmp, n_slices=4)
    try:
        return tmp.read_bytes()
    finally:
        tmp.unlink()


def patient_page(bundle: Bundle, d: PatientDiagnosis, overlay: bytes | None) -> str:
    if d.status == OK:
        verdict = f"<p><b>Suggested: {esc(d.predicted_label)}</b></p>" + table_html(
            ["Class", "Probability"], [[esc(c), _bar(d.probabilities[c])] for c in bundle.classes], trusted_cells=True)
        if d.parts:
            verdict += "<p>The hybrid's parts, fused as its card says:</p>" + table_html(
                ["Class", *d.parts], [[c, *(f"{q[c]:.3f}" for q in d.parts.values())] for c in bundle.classes])
        if d.drivers:
            push = table_html(["Measure", "Value", "Training percentile", "Effect on the call"],
                              [(x.feature, f"{x.value:.4g}", f"{x.percentile:.0f}", f"{x.effect:+.3f}")
                               for x in d.drivers])
            verdict += ("<p>The measures that pushed the call most (the suggested class's probability minus its "
                        "probability with that measure set to the training median):</p>" + push)
    else:
        verdict = f'<p class="missing"><b>Not judged.</b> {esc(d.reason)}</p>'
    if d.warnings:
        verdict += "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in d.warnings) + "</ul>"
    rows = []
    for f, v in d.measures.items():
        if v is None or not np.isfinite(v):
            continue
        rng = bundle.domain.features.get(f)
        rows.append((f, f"{v:.4g}", "" if rng is None else f"{rng.percentile(v):.0f}",
                     "" if rng is None else f"{rng.minimum:.4g}-{rng.maximum:.4g}", "yes" if f in bundle.features else ""))
    sections = [Section("call", "Diagnosis", verdict),
                Section("masks", "Heart masks", figure(overlay, "RV blue, myocardium green, LV red", photo=True)
                        if overlay else "", missing=None if overlay else "no masks")]
    if bundle.image is not None:
        share = d.saliency_in_heart
        note = ("Grad-CAM of the suggested class on slices from base to apex, ED left, ES right; cyan: the heart "
                "mask dilated by 5 mm. Share of positive saliency inside it: "
                + ("n/a" if share is None or not np.isfinite(share) else f"{share:.2f}")
                + ". Where the image model's evidence lies, not why; evidence outside the heart is a reason to "
                  "distrust the call.")
        sections.append(Section("saliency", "Where the image model looked",
                                figure(d.saliency, note, photo=True) if d.saliency else "",
                                missing=None if d.saliency else "no saliency (not judged)"))
    sections += [
                Section("measures", "Measures", table_html(
                    ["Measure", "Value", "Training percentile", "Training range", "Used by the model"], rows)
                        if rows else "", missing=None if rows else "not measured"),
                Section("about", "About", f"<p>{esc(USE)}</p><p>Bundle <code>{esc(bundle.name)}</code> "
                        f"({esc(bundle.kind)}, sha256 <code>{esc(bundle.sha256[:16])}</code>...), segmenter "
                        f"{esc(d.segmenter)}, ED frame {esc(d.ed_frame or '-')}, ES frame {esc(d.es_frame or '-')}.</p>")]
    return render_page(f"Patient {d.patient_id}", f"{bundle.name}: {d.status}", sections)


def cohort_page(bundle: Bundle, table: DiagnosisTable) -> str:
    rows = []
    for d in table.patients:
        link = f'<a href="pages/{esc(patient_filename(d.patient_id))}.html">{esc(d.patient_id)}</a>'
        probs = [f"{d.probabilities[c]:.3f}" if d.probabilities else "" for c in bundle.classes]
        rows.append([link, esc(d.status), esc(d.predicted_label), *probs, esc(d.reason)])
    body = table_html(["Patient", "Status", "Suggested", *bundle.classes, "Reason"], rows, trusted_cells=True)
    n_ok = sum(d.status == OK for d in table.patients)
    counts = {}
    for d in table.patients:
        if d.status == OK:
            counts[d.predicted_label] = counts.get(d.predicted_label, 0) + 1
    summary = (f"<p>{n_ok} of {len(table.patients)} patients judged; "
               + ", ".join(f"{c}: {n}" for c, n in sorted(counts.items())) + f".</p><p>{esc(USE)}</p>")
    return render_page(f"Diagnoses: {bundle.name}", f"{len(table.patients)} patients",
                       [Section("summary", "Summary", summary), Section("patients", "Patients", body),
                        Section("model", "The model", f"<pre>{esc(bundle.card)}</pre>")])


def write_pages(bundle: Bundle, table: DiagnosisTable, out: Path) -> Path:
    """`out/pages/<patient>.html` for every patient and `out/index.html`; returns the index."""
    for d in table.patients:
        name = patient_filename(d.patient_id)
        overlay = _overlay_png(d.shown, out / "pages" / f".{name}.png") if d.shown else None
        atomic.write_text(out / "pages" / f"{name}.html", patient_page(bundle, d, overlay))
    return atomic.write_text(out / "index.html", cohort_page(bundle, table))
