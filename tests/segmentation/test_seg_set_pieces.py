"""A segmenter set renewed one fold at a time (`segmentation.set_pieces`): a partly new set says so (index,
`describe`, choices, masks note, command output), still segments every patient with a model that never saw it,
refuses fold files that disagree with its index, and gets its full model only when every fold is new."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmrprior.cli import main
from cmrprior.errors import ConfigError, DataError
from cmrprior.io.acdc import read_acdc
from cmrprior.io.fingerprint import patient_fingerprints
from cmrprior.io.nifti import write_nifti
from cmrprior.segmentation.basal import FEATURES, BasalModel, SliceModel, basal_path
from cmrprior.segmentation.config import SegTrainConfig, recipe_digest
from cmrprior.segmentation.folds import choose_segmenters, load_segmenter_set, masks_statement, write_segmenter_set
from cmrprior.segmentation.predict import file_sha256
from cmrprior.segmentation.set_pieces import ship_fold, ship_full

IDS = [f"patient{i:03d}" for i in range(4)]
TRAIN = (IDS[:2], IDS[2:])  # fold 0 trained on the first two patients (held out the last two), fold 1 the reverse
OLD, NEW = SegTrainConfig(lr=2e-3), SegTrainConfig(lr=1e-3, max_epochs=120)


def _patient(root, pid, seed):
    folder = root / pid
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for frame in (1, 5):
        write_nifti(rng.random((4, 20, 24)).astype(np.float32), np.diag([1.5, 1.5, 8.0, 1.0]),
                    folder / f"{pid}_frame{frame:02d}.nii.gz")
    (folder / "Info.cfg").write_text("ED: 1\nES: 5\nGroup: NOR\nHeight: 170\nWeight: 70\nNbFrame: 10\n")


def _model(path, tag: bytes, config: SegTrainConfig):
    """Stand-in weights (the set never loads them here) with the JSON a training run writes, and its log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tag * 64)
    path.with_suffix(".json").write_text(json.dumps({"unet_args": {}, "config": config.to_json()}))
    (path.parent / "log.jsonl").write_text(json.dumps({"epoch": 0, "val_dice": tag[0] / 255}) + "\n")
    return path


def _cv(root, config, tags, trains=TRAIN):
    for k, train in enumerate(trains):
        d = root / f"fold_{k}"
        _model(d / "model.safetensors", tags[k], config)
        (d / "test_patients.json").write_text(json.dumps({"train": train, "test": [p for p in IDS if p not in train]}))
        (d / "metrics.csv").write_text("patient_id,phase,dice_LV\n" + "".join(
            f"{p},ED,0.{k}\n" for p in IDS if p not in train))
    return root


@pytest.fixture()
def world(tmp_path):
    """A 4-patient cohort, a whole set of the old recipe (no generation recorded, as the shipped set), and a new
    recipe's folds trained on the same folds."""
    cohort_dir = tmp_path / "cohort"
    for i, pid in enumerate(IDS):
        _patient(cohort_dir, pid, i)
    full = _model(tmp_path / "old" / "final" / "model.safetensors", b"F", OLD)
    seg_set = tmp_path / "set"
    write_segmenter_set(seg_set, read_acdc(cohort_dir), full_weights=full, cv_dir=_cv(tmp_path / "old" / "cv", OLD,
                                                                                     [b"a", b"b"]))
    new_cv = _cv(tmp_path / "new" / "cv", NEW, [b"A", b"B"])
    return {"cohort": read_acdc(cohort_dir), "dir": cohort_dir, "set": seg_set, "new": new_cv, "root": tmp_path}


def test_a_set_with_one_new_fold_says_it_is_mixed_and_names_the_new_fold(world):
    cohort, seg_dir = world["cohort"], world["set"]
    assert not load_segmenter_set(seg_dir).mixed
    seg = ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, "v3")
    assert seg.mixed and seg.new_models() == ("fold_1",) and seg.generation == "v3"
    assert seg.describe() == ("MIXED segmenter set (1 of 3 models new): full, fold_0 of an unrecorded generation "
                              f"(recipe {recipe_digest(OLD.to_json())[:12]}); fold_1 of generation v3 (recipe "
                              f"{recipe_digest(NEW.to_json())[:12]}) (new)")
    index = json.loads((seg_dir / "folds.json").read_text())
    assert index["status"] == {"mixed": True, "new": ["fold_1"], "note": seg.describe()}
    entry = index["folds"][1]
    assert (entry["generation"], entry["recipe"]) == ("v3", recipe_digest(NEW.to_json()))
    assert entry["sha256"] == file_sha256(world["new"] / "fold_1" / "model.safetensors")
    assert (entry["patients"], entry["held_out"]) == (IDS[2:], IDS[:2])
    assert index["folds"][0]["generation"] is None  # the old fold is left as it was
    # the shipped piece: weights, JSON with its own entry and held-out fingerprints, log
    assert (seg_dir / "fold_1.safetensors").read_bytes() == b"B" * 64
    own = json.loads((seg_dir / "fold_1.json").read_text())
    prints = {r.patient_id: patient_fingerprints(r) for r in cohort.patients}
    assert own["config"]["lr"] == 1e-3 and own["set_entry"]["generation"] == "v3"
    assert own["set_entry"]["held_out_fingerprints"] == sorted(f for p in IDS[:2] for f in prints[p])
    assert own["set_entry"]["fingerprints"] == entry["fingerprints"]
    assert (seg_dir / "fold_1.log.jsonl").read_text() == (world["new"] / "fold_1" / "log.jsonl").read_text()
    assert (seg_dir / "fold_1.metrics.csv").read_text() == (world["new"] / "fold_1" / "metrics.csv").read_text()
    # still out of sample for everyone, and whatever reports the masks names the mixed set
    choices = choose_segmenters(prints, seg_dir)
    for pid, c in choices.items():
        assert c.out_of_sample and pid not in c.model.patients and c.set_note == seg.describe()
    assert {pid: c.as_row()["generation"] for pid, c in choices.items()} == {
        "patient000": "v3", "patient001": "v3", "patient002": "", "patient003": ""}
    assert masks_statement(choices) == f"masks: out-of-sample segmenter for every patient; {seg.describe()}"



def test_measuring_with_a_mixed_set_says_so(world, monkeypatch, caplog):
    import logging

    from cmrprior.data.prepared import HeartLocation
    from cmrprior.segmentation import measures

    seg = ship_fold(world["set"], world["new"] / "fold_1", 1, world["cohort"], "v3")
    empty = np.zeros((4, 20, 24), np.uint8)
    monkeypatch.setattr(measures, "locate_cohort", lambda cohort, models, inference=None: {
        r.patient_id: HeartLocation((10.0, 12.0), (0, 4), empty, empty) for r in cohort.patients})
    with caplog.at_level(logging.WARNING, logger="cmrprior.segmentation.measures"):
        got = measures.segmenter_masks(world["cohort"], world["set"])
    assert len(got) == len(IDS)
    assert [r.getMessage() for r in caplog.records] == [f"measure: {seg.describe()}"]  # once, not per patient

def test_the_full_model_is_replaced_only_when_every_fold_is_new(world):
    cohort, seg_dir = world["cohort"], world["set"]
    new_full = _model(world["root"] / "new" / "final" / "model.safetensors", b"G", NEW)
    ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, "v3")
    with pytest.raises(DataError, match=r"folds.json: fold_0 not all of generation v3"):
        ship_full(seg_dir, new_full, cohort, "v3")
    seg = ship_fold(seg_dir, world["new"] / "fold_0", 0, cohort, "v3")
    assert seg.mixed and seg.new_models() == ("fold_0", "fold_1")  # the full model is still the old one
    assert "full of an unrecorded generation" in seg.describe()
    seg = ship_full(seg_dir, new_full, cohort, "v3")
    assert not seg.mixed and seg.new_models() == ()
    assert seg.describe() == f"segmenter set of generation v3 (recipe {recipe_digest(NEW.to_json())[:12]}): the full " \
                             "model and 2 fold models"
    assert (seg_dir / "full.safetensors").read_bytes() == b"G" * 64
    assert json.loads((seg_dir / "folds.json").read_text())["status"]["mixed"] is False
    choices = choose_segmenters({r.patient_id: patient_fingerprints(r) for r in cohort.patients}, seg_dir)
    assert masks_statement(choices) == "masks: out-of-sample segmenter for every patient"


def test_a_fold_json_that_disagrees_with_the_index_is_refused_with_the_file_named(world):
    cohort, seg_dir = world["cohort"], world["set"]
    old_index = (seg_dir / "folds.json").read_bytes()
    ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, "v3")
    own_path = seg_dir / "fold_1.json"
    shipped = own_path.read_text()
    own = json.loads(shipped)
    own["set_entry"]["patients"] = IDS[1:]  # claims another training set than the index
    own_path.write_text(json.dumps(own))
    with pytest.raises(DataError, match=r"fold_1.json: disagrees with the set index folds.json on patients of fold_1"):
        load_segmenter_set(seg_dir)
    del own["set_entry"]
    own_path.write_text(json.dumps(own))
    with pytest.raises(DataError, match=r"fold_1.json: the index records fold_1 as generation v3.*no 'set_entry'"):
        load_segmenter_set(seg_dir)
    own_path.write_text(shipped)
    load_segmenter_set(seg_dir)
    # a ship killed before its index was written: new files, old index; the same ship completes it
    (seg_dir / "folds.json").write_bytes(old_index)
    with pytest.raises(DataError, match=r"fold_1.json: disagrees with the set index folds.json on sha256, "
                                        "recipe, generation of fold_1"):
        load_segmenter_set(seg_dir)
    assert ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, "v3").new_models() == ("fold_1",)
    # an index whose status does not follow from its models
    index = json.loads((seg_dir / "folds.json").read_text())
    index["status"]["mixed"] = False
    (seg_dir / "folds.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"folds.json: its status \(mixed False, new \['fold_1'\]\) does not follow"):
        load_segmenter_set(seg_dir)


def test_a_fold_of_other_patients_or_another_recipe_of_the_same_generation_is_refused(world):
    cohort, seg_dir = world["cohort"], world["set"]
    other = _cv(world["root"] / "other" / "cv", NEW, [b"X", b"Y"], trains=(IDS[1:3], [IDS[0], IDS[3]]))
    with pytest.raises(DataError, match=r"other/cv/fold_0/test_patients.json: fold_0 of this run trained on other"):
        ship_fold(seg_dir, other / "fold_0", 0, cohort, "v3")
    ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, "v3")
    longer = _cv(world["root"] / "longer" / "cv", SegTrainConfig(lr=1e-3, max_epochs=200), [b"L", b"M"])
    with pytest.raises(DataError, match=r"longer/cv/fold_0/model.json: trained with recipe .* fold_1 of generation v3"):
        ship_fold(seg_dir, longer / "fold_0", 0, cohort, "v3")
    with pytest.raises(ConfigError, match="folds 0..1"):
        ship_fold(seg_dir, world["new"] / "fold_1", 2, cohort, "v3")
    with pytest.raises(ConfigError, match="generation tag"):
        ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, " ")
    unfinished = world["root"] / "unfinished"
    unfinished.mkdir()
    with pytest.raises(DataError, match="unfinished/model.safetensors: the fold has not finished"):
        ship_fold(seg_dir, unfinished, 0, cohort, "v3")


def test_a_basal_model_of_the_replaced_weights_is_removed(world):
    cohort, seg_dir = world["cohort"], world["set"]
    n = len(FEATURES)
    slice_model = SliceModel((0.0,) * n, (1.0,) * n, (0.0,) * n, 0.0, 10)
    old_sha = file_sha256(seg_dir / "fold_1.safetensors")
    BasalModel(slice_model, None, 2, old_sha).save(basal_path(seg_dir / "fold_1.safetensors"))
    BasalModel(slice_model, None, 2, file_sha256(seg_dir / "fold_0.safetensors")).save(
        basal_path(seg_dir / "fold_0.safetensors"))
    ship_fold(seg_dir, world["new"] / "fold_1", 1, cohort, "v3")
    assert not basal_path(seg_dir / "fold_1.safetensors").exists()
    assert basal_path(seg_dir / "fold_0.safetensors").exists()


def test_ship_commands_print_what_the_set_is(world, capsys):
    data = str(world["dir"])
    fresh = world["root"] / "fresh"
    assert main(["segment", "index-folds", "--cv", str(world["root"] / "old" / "cv"), "--data", data, "--full",
                 str(world["root"] / "old" / "final" / "model.safetensors"), "--out", str(fresh),
                 "--generation", "v2"]) == 0
    out = capsys.readouterr().out
    assert "segmenter set of generation v2 (recipe" in out
    assert json.loads((fresh / "fold_0.json").read_text())["set_entry"]["generation"] == "v2"
    assert main(["segment", "ship-fold", "--cv", str(world["new"]), "--fold", "0", "--data", data, "--set",
                 str(fresh), "--generation", "v3"]) == 0
    out = capsys.readouterr().out
    assert "fold 0 shipped" in out and "MIXED segmenter set (1 of 3 models new)" in out
    assert "fold_0 of generation v3" in out and "full, fold_1 of generation v2" in out
    assert main(["segment", "ship-full", "--model", str(world["root"] / "old" / "final" / "model.safetensors"),
                 "--data", data, "--set", str(fresh), "--generation", "v3"]) == 3
    assert "fold_1 not all of generation v3" in capsys.readouterr().err
    assert main(["segment", "ship-fold", "--cv", str(world["new"]), "--fold", "1", "--data", data, "--set",
                 str(fresh), "--generation", "v3"]) == 0
    assert "every fold is of this generation: train the full model" in capsys.readouterr().out


def test_a_set_indexed_from_folds_of_two_recipes_is_mixed(world):
    """index-folds over fold folders trained under two recipes (copied together by hand) names both."""
    cv = world["root"] / "two" / "cv"
    _cv(cv, OLD, [b"a", b"b"])
    shutil.rmtree(cv / "fold_1")
    shutil.copytree(world["new"] / "fold_1", cv / "fold_1")
    write_segmenter_set(world["root"] / "two_set", world["cohort"], full_weights=world["root"] / "old" / "final" /
                        "model.safetensors", cv_dir=cv, generation="v2")
    seg = load_segmenter_set(world["root"] / "two_set")
    assert seg.mixed and seg.new_models() == ()
    assert seg.describe() == ("MIXED segmenter set (folds of different recipes): full, fold_0 of generation v2 (recipe "
                              f"{recipe_digest(OLD.to_json())[:12]}); fold_1 of generation v2 (recipe "
                              f"{recipe_digest(NEW.to_json())[:12]})")
