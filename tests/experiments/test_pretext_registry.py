"""The pretext registry: a method registered from this module runs through a phantom study and gets its rows,
the registry refuses clashes, run folders name the method (older SimCLR folders are still found), a missing
training mode is an error that names the init, and VICReg (the built-in second method) runs in the study."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cmrprior.classify.config import ClassifierConfig
from cmrprior.errors import ConfigError
from cmrprior.experiments.config import StudyConfig
from cmrprior.experiments.pretraining import PretrainJob
from cmrprior.experiments.progress import StudyProgress
from cmrprior.experiments.study import run_study
from cmrprior.runs import PretrainRecord, RunFolder
from cmrprior.vocab import Init, Pretext, get_pretext, init_label, init_names, registered

from .study_doubles import install_cohort, tiny_cohort, tiny_config


@dataclass(frozen=True)
class ToySettings:
    """The toy method's config section (`toy:`)."""

    batch_sizes: tuple[int, ...] = (8,)
    scale: float = 1.0


CALLS: list[PretrainJob] = []


def toy_step(job: PretrainJob) -> PretrainRecord:
    """A 'pre-training' that writes a seeded tiny encoder, scaled by the section's `scale`, in SimCLR's best.pt
    format (what `load_encoder` reads)."""
    from cmrprior.models.registry import create_backbone

    CALLS.append(job)
    torch.manual_seed(job.split_seed + job.batch_size)
    enc = create_backbone(job.backbone, in_chans=1)
    with torch.no_grad():
        for p in enc.parameters():
            p.mul_(job.settings.scale)
    job.folder.mkdir(parents=True, exist_ok=True)
    ckpt = job.folder / "best.pt"
    torch.save({"model_args": {"backbone": job.backbone, "in_chans": 1, "backbone_kwargs": {}},
                "encoder": enc.state_dict()}, ckpt)
    record = PretrainRecord(checkpoint=str(ckpt), backbone=job.backbone, batch_size=job.batch_size, images=job.images,
                            patient_ids=sorted(job.train_ids), val_patient_ids=sorted(job.val_ids),
                            n_train_images=0, n_val_images=0, seed=job.split_seed, wall_s=0.0)
    job.run.write_pretrain(job.folder, record, {})
    return record


TOY = Pretext("toy", "Toy", (Init("full_toy", "Full-Toy", "full"), Init("segmented_toy", "Segmented-Toy", "segmented")),
              learns_from="images", default_mode="linear", folder="toy", section="toy", train=toy_step,
              settings=ToySettings, batch_grid=True, comparisons=(("full_toy", "none"), ("segmented_toy", "full_toy")))


@pytest.fixture
def toy():
    CALLS.clear()
    with registered(TOY):
        yield TOY


def test_a_method_registered_here_runs_through_a_phantom_study(tmp_path, monkeypatch, toy):
    cohort = tiny_cohort()
    install_cohort(monkeypatch, {"COHORT": cohort})
    cfg = tiny_config(classifier={"inits": ["none", "full_toy", "segmented_toy"]}, toy={"scale": 0.5})
    assert cfg.pretext_settings("toy") == ToySettings(scale=0.5)
    assert cfg.classifier.mode_of("full_toy") == "linear"
    assert StudyProgress.for_grid(cfg, 2).pretrain.total == 2 * 2  # 2 splits x (full, segmented) x 1 batch size
    run = tmp_path / "run"
    run_study("COHORT", run, cfg, report=False)

    splits = json.loads((run / "splits.json").read_text())
    assert len(CALLS) == 4 and {c.images for c in CALLS} == {"full", "segmented"}
    for job in CALLS:  # its section's settings, its own folder, the split's training patients only
        split = next(s for s in splits if f"split_{s['index']}" == job.folder.parts[-5])
        assert job.settings == ToySettings(scale=0.5) and job.study is not None
        assert job.folder == RunFolder(run).split_dir(str(split["index"])) / "pretrain" / job.images / "tiny" / "toy_bs8"
        assert not set(job.train_ids + job.val_ids) & set(split["test"])
    for split in splits:
        for images in ("full", "segmented"):
            r = json.loads((run / f"splits/split_{split['index']}/cells/tiny/full_toy__{images}/result.json").read_text())
            assert r["status"] == "ok", r.get("reason")
            assert r["pretrain_checkpoint"].endswith("pretrain/full/tiny/toy_bs8/best.pt")

    tables = run / "tables"
    t1 = json.loads((tables / "table1.json").read_text())
    assert [row["column"] for row in t1["rows"]] == ["None", "Full-Toy", "Segmented-Toy"]
    assert all(row["status"] == "ok" for row in t1["rows"])
    t3 = json.loads((tables / "table3.json").read_text())
    assert [row["column"] for row in t3["rows"]] == ["Toy Full-Full", "Toy Full-Segmented", "Toy Segmented-Full",
                                                      "Toy Segmented-Segmented"]
    pairs = {(c["a"], c["b"]) for c in json.loads((tables / "comparisons.json").read_text())}
    assert {("tiny/full_toy/full", "tiny/none/full"), ("tiny/segmented_toy/segmented", "tiny/full_toy/segmented"),
            ("tiny/segmented_toy/segmented", "tiny/full_toy/full")} <= pairs
    assert "Full-Toy" in (tables / "table1.md").read_text()
    # the section is part of the run's config: it reads back, and a rerun with other settings is refused
    assert StudyConfig.from_yaml(run / "config.yaml").pretext_settings("toy").scale == 0.5
    with pytest.raises(ConfigError, match="another config"):
        run_study("COHORT", run, tiny_config(classifier={"inits": ["none", "full_toy", "segmented_toy"]}), report=False)


def test_sections_and_inits_come_and_go_with_their_method(toy):
    assert tiny_config(toy={"scale": 2.0}).to_dict()["toy"]["scale"] == 2.0
    with registered(Pretext("toy2", "Toy2", (Init("full_toy2", "F", "full"),), learns_from="images",
                            default_mode="finetune", folder="toy2", section="toy2", train=toy_step)):
        assert ClassifierConfig(inits=("full_toy2",)).mode_of("full_toy2") == "finetune"
    assert "full_toy2" not in init_names() and init_label("full_toy2") == "full_toy2"


def test_unknown_section_without_its_method():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['toy'\]"):
        tiny_config(toy={"scale": 2.0})


def test_registry_refuses_clashes(toy):
    kw = dict(learns_from="images", default_mode="linear", train=toy_step)
    with pytest.raises(ConfigError, match="folder 'toy' is already used by pretext 'toy'"):
        with registered(Pretext("other", "O", (Init("full_other", "F", "full"),), folder="toy", section="other", **kw)):
            pass
    with pytest.raises(ConfigError, match="folder 'simclr'"):  # SimCLR's runs can never be reused by another method
        with registered(Pretext("other", "O", (Init("full_other", "F", "full"),), folder="simclr", section="o", **kw)):
            pass
    with pytest.raises(ConfigError, match="init 'full_sscl' is already pretext 'simclr'"):
        with registered(Pretext("other", "O", (Init("full_sscl", "F", "full"),), folder="other", section="o", **kw)):
            pass
    with pytest.raises(ConfigError, match="default_mode must be one of"):
        Pretext("other", "O", (Init("full_other", "F", "full"),), folder="o", section="o", learns_from="images",
                default_mode="frozen", train=toy_step)
    with pytest.raises(TypeError, match="default_mode"):  # a method cannot leave its mode out
        Pretext("other", "O", (Init("full_other", "F", "full"),), folder="o", section="o", learns_from="images",
                train=toy_step)


def test_an_init_without_a_mode_is_an_error_that_names_it(toy):
    c = ClassifierConfig(inits=("none",))
    with registered(Pretext("late", "Late", (Init("full_late", "Full-Late", "full"),), learns_from="images",
                            default_mode="linear", folder="late", section="late", train=toy_step)):
        with pytest.raises(ConfigError, match="init 'full_late' has no training mode"):
            c.mode_of("full_late")


def test_run_folders_name_the_method_and_older_simclr_folders_are_found(tmp_path):
    run = RunFolder(tmp_path)
    simclr = run.pretrain_dir("0", "full", "tiny", "simclr", 16)
    vicreg = run.pretrain_dir("0", "full", "tiny", "vicreg", 16)
    assert simclr.name == "simclr_bs16" and vicreg.name == "vicreg_bs16" and simclr.parent == vicreg.parent
    assert run.pretrain_dir("0", "segmented", "tiny", "masks").name == "teacher"
    # a finished SimCLR run of an older cmrprior (`bs16`) is that run's folder; VICReg never takes it
    old = simclr.parent / "bs16"
    old.mkdir(parents=True)
    assert run.pretrain_dir("0", "full", "tiny", "simclr", 16) == old
    assert run.pretrain_dir("0", "full", "tiny", "vicreg", 16) == vicreg
    with pytest.raises(ConfigError, match="batch size"):
        run.pretrain_dir("0", "full", "tiny", "simclr")
    with pytest.raises(ConfigError, match="unknown pretext"):
        run.pretrain_dir("0", "full", "tiny", "byol", 16)


def test_vicreg_in_the_study_next_to_simclr(tmp_path, monkeypatch):
    """Real SimCLR and VICReg pre-training (tiny backbone, 1 epoch) on the same images and batch size: two runs,
    VICReg's rows in the tables and its paired comparisons with SimCLR."""
    install_cohort(monkeypatch, {"COHORT": tiny_cohort(n_patients=15, slices=2)})
    inits = ["none", "full_sscl", "segmented_sscl", "full_vicreg", "segmented_vicreg"]
    cfg = tiny_config(classifier={"inits": inits}, protocol={"n_splits": 2}, pretrain={"precision": "fp32"},
                      vicreg={"batch_sizes": [16]})
    assert cfg.to_dict()["vicreg"]["batch_sizes"] == [16]  # in the grid: its section is part of the config
    run = tmp_path / "run"
    run_study("COHORT", run, cfg, report=False)
    base = run / "splits/split_0/pretrain/full/tiny"
    s, v = (json.loads((base / f / "done.json").read_text()) for f in ("simclr_bs16", "vicreg_bs16"))
    assert s["checkpoint"] != v["checkpoint"] and s["patient_ids"] == v["patient_ids"]
    last = torch.load(Path(v["checkpoint"]).parent / "last.pt", weights_only=True)
    assert last["objective"]["name"] == "vicreg" and last["config"]["proj_batch_norm"] is True
    assert torch.load(Path(s["checkpoint"]).parent / "last.pt", weights_only=True)["objective"] == {"name": "nt_xent"}

    tables = run / "tables"
    t1 = json.loads((tables / "table1.json").read_text())
    assert [r["column"] for r in t1["rows"]] == ["None", "Full-SSCL", "Segmented-SSCL", "Full-VICReg", "Segmented-VICReg"]
    assert all(r["status"] == "ok" for r in t1["rows"]), [r["reason"] for r in t1["rows"]]
    t3 = [r["column"] for r in json.loads((tables / "table3.json").read_text())["rows"]]
    assert t3 == ["Full-Full", "Full-Segmented", "Segmented-Full", "Segmented-Segmented", "VICReg Full-Full",
                  "VICReg Full-Segmented", "VICReg Segmented-Full", "VICReg Segmented-Segmented"]
    pairs = {(c["a"], c["b"]) for c in json.loads((tables / "comparisons.json").read_text())}
    assert {("tiny/full_vicreg/full", "tiny/full_sscl/full"),
            ("tiny/segmented_vicreg/segmented", "tiny/segmented_sscl/segmented"),
            ("tiny/segmented_vicreg/segmented", "tiny/full_vicreg/full")} <= pairs
    assert get_pretext("vicreg").learns_from == "images"
