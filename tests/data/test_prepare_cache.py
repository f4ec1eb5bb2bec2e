"""prepare_cohort on small cohorts the tests write: cache by hash, skip_bad, input folder untouched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import cmrprior.data.prepare as prep
from cmrprior.data.prepare import PrepareConfig, cache_key, load_prepared, prepare_cohort
from cmrprior.data.prepared import PreparedCohort
from cmrprior.errors import DataError
from cmrprior.io.acdc import read_acdc, write_acdc_patient
from cmrprior.io.records import Cohort

CFG = PrepareConfig(pixel_spacing_mm=1.5, size=32)


def _cohort_folder(root: Path, n: int = 4, masks: bool = True) -> Path:
    groups = ["NOR", "DCM", "HCM", "MINF", "RV"]
    for i in range(n):
        rng = np.random.default_rng(i)
        shape = (5, 40 + i, 36)
        yy, xx = np.mgrid[: shape[1], : shape[2]]
        disc = (yy - 18 - i) ** 2 + (xx - 20) ** 2 <= 36
        ed = (rng.random(shape) * 100 + 300 * disc).astype(np.int16)
        es = (rng.random(shape) * 100 + 300 * disc).astype(np.int16)
        m = np.zeros(shape, np.uint8)
        m[1:4] = 3 * disc
        write_acdc_patient(root, f"patient{i + 1:03d}", ed=ed, es=es, ed_frame=1, es_frame=8,
                           spacing_zyx=(9.0, 1.7, 1.6), group=groups[i % 5],
                           ed_mask=m if masks else None, es_mask=m if masks else None, n_frames=20)
    return root


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{f.is_file()}|{st.st_mtime_ns}".encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def test_prepare_cohort_assembles_patients(tmp_path):
    data = _cohort_folder(tmp_path / "data")
    cohort = read_acdc(data)
    out = prepare_cohort(cohort, CFG, None)
    assert out.patient_ids == ["patient001", "patient002", "patient003", "patient004"]
    assert [p.label for p in out.patients] == ["NOR", "DCM", "HCM", "MINF"]
    assert out.classes == ("NOR", "DCM", "HCM", "MINF")
    assert len(out) == 12 and out.ed.shape == (12, 32, 32) and out.ed_mask.shape == (12, 32, 32)
    np.testing.assert_array_equal(out.patient_index, np.repeat(np.arange(4), 3))
    np.testing.assert_array_equal(out.slice_index, np.tile([1, 2, 3], 4))
    np.testing.assert_allclose(out.slice_position, np.tile([0, 0.5, 1], 4))
    assert all(p.n_slices == 3 and p.slice_thickness_mm == 9.0 for p in out.patients)
    assert out.pixel_spacing_mm == 1.5 and out.skipped == ()
    # the same result as preparing each patient alone
    alone = prep.prepare_patient(cohort.patients[2], CFG)
    np.testing.assert_array_equal(out.es[6:9], alone.es)
    np.testing.assert_array_equal(out.ed_mask[6:9], alone.ed_mask)


def test_cache_hit_miss_and_input_untouched(tmp_path, monkeypatch):
    data = _cohort_folder(tmp_path / "data")
    before = _tree_digest(data)
    cache = tmp_path / "cache"
    first = prepare_cohort(read_acdc(data), CFG, cache)
    folder = cache / first.config_hash
    assert (folder / "cohort.json").is_file() and (folder / "arrays.npz").is_file()
    assert len(first.config_hash) == 64
    assert _tree_digest(data) == before  # nothing written into the input folder

    # second call: loaded from the cache, nothing recomputed
    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(prep, "prepare_patient", boom)
    second = prepare_cohort(read_acdc(data), CFG, cache)
    for name in ("ed", "es", "ed_mask", "es_mask", "patient_index", "slice_index", "slice_position"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.patients == first.patients and second.classes == first.classes
    np.testing.assert_array_equal(load_prepared(folder).ed, first.ed)
    monkeypatch.undo()

    # another config -> another key; a touched source file -> another key
    assert cache_key(read_acdc(data), PrepareConfig(size=64)) != first.config_hash
    f = data / "patient002" / "patient002_frame08.nii.gz"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_key(read_acdc(data), CFG) != first.config_hash


def test_skip_bad_continues_and_lists(tmp_path):
    data = _cohort_folder(tmp_path / "data")
    bad = data / "patient003" / "patient003_frame01.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    cohort = read_acdc(data)
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        prepare_cohort(cohort, CFG, None)
    assert info.value.path == bad
    out = prepare_cohort(cohort, CFG, tmp_path / "cache", skip_bad=True)
    assert out.patient_ids == ["patient001", "patient002", "patient004"]
    assert [s[0] for s in out.skipped] == ["patient003"]
    assert str(bad) in out.skipped[0][1]
    reloaded = PreparedCohort.load(tmp_path / "cache" / out.config_hash)
    assert reloaded.skipped == out.skipped


def test_duplicate_patient_ids(tmp_path):
    data = _cohort_folder(tmp_path / "data", n=2)
    c = read_acdc(data)
    dup = Cohort(source=c.source, patients=c.patients + (c.patients[0],), classes=c.classes)
    with pytest.raises(DataError, match="duplicate patient id 'patient001'"):
        prepare_cohort(dup, CFG, None)
    out = prepare_cohort(dup, CFG, None, skip_bad=True)
    assert out.patient_ids == ["patient001", "patient002"]
    assert out.skipped[0][0] == "patient001" and "duplicate" in out.skipped[0][1]


def test_cohort_without_masks(tmp_path):
    data = _cohort_folder(tmp_path / "data", n=2, masks=False)
    out = prepare_cohort(read_acdc(data), CFG, None)
    assert out.ed_mask is None and out.es_mask is None
    assert len(out) == 10  # all 5 slices of both patients


@pytest.mark.slow
def test_workers_give_identical_results(tmp_path):
    data = _cohort_folder(tmp_path / "data", n=5)
    one = prepare_cohort(read_acdc(data), CFG, None, workers=1)
    two = prepare_cohort(read_acdc(data), CFG, None, workers=2)
    np.testing.assert_array_equal(one.ed, two.ed)
    np.testing.assert_array_equal(one.es_mask, two.es_mask)
