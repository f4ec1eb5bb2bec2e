"""Study configs: the shipped YAML files, strict loading."""

from pathlib import Path

import pytest

from cmrprior.errors import ConfigError
from cmrprior.experiments.config import StudyConfig, builtin_config_path, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["paper", "cpu"])
def test_repo_and_package_configs_are_identical_and_load(name):
    repo_file = REPO / "configs" / f"{name}.yaml"
    assert repo_file.read_text() == builtin_config_path(name).read_text()
    cfg = load_config(name)
    assert cfg.name == name
    assert StudyConfig.from_yaml(repo_file).digest() == cfg.digest()


def test_paper_config_is_the_study():
    c = load_config("paper")
    assert c.classifier.backbones == ("vgg16", "densenet121") and c.classifier.input_size == 224
    assert set(c.classifier.inits) == {"none", "imagenet", "full_sscl", "segmented_sscl"}
    assert c.protocol.n_splits == 5 and c.protocol.test_fraction == 0.3
    assert c.pretrain.simclr.temperature == 0.1 and c.pretrain.simclr.lr == 1e-4
    assert min(c.pretrain.batch_sizes) == 64 and max(c.pretrain.batch_sizes) == 256
    assert c.classifier.weight_decay == 1e-4
    assert {i: c.classifier.modes[i] for i in c.classifier.inits} == {
        "none": "finetune", "imagenet": "linear", "full_sscl": "linear", "segmented_sscl": "linear"}


def test_yaml_roundtrip(tmp_path):
    c = load_config("cpu")
    p = tmp_path / "c.yaml"
    p.write_text(c.to_yaml())
    assert StudyConfig.from_yaml(p) == c


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("classifier:\n  backbonez: [vgg16]\n")
    with pytest.raises(ConfigError, match="backbonez"):
        StudyConfig.from_yaml(p)
    with pytest.raises(ConfigError, match="inits"):
        StudyConfig.from_dict({"classifier": {"inits": ["random"]}})
    with pytest.raises(ConfigError):
        StudyConfig.from_dict({"protocol": {"test_fraction": 1.5}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("section, body, key", [
    ("prepare", "  pixel_spacing: 1.5\n", "pixel_spacing"),
    ("pretrain", "  tempreature: 0.1\n", "tempreature"),
    ("pretrain", "  augment:\n    rotaton_deg: 10\n", "rotaton_deg"),
    ("masks", "  sorce: segmenter\n", "sorce"),
    ("evaluation", "  nboot: 10\n", "nboot"),
])
def test_unknown_keys_in_every_section_name_the_key_and_the_file(tmp_path, section, body, key):
    p = tmp_path / "typo.yaml"
    p.write_text(f"{section}:\n{body}")
    with pytest.raises(ConfigError, match=key) as err:
        StudyConfig.from_yaml(p)
    assert str(p) in str(err.value)


def test_pretrain_fields_the_study_sets_are_refused():
    with pytest.raises(ConfigError, match="set by the study"):
        StudyConfig.from_dict({"pretrain": {"batch_size": 64}})


def test_one_default_backbone():
    from cmrprior.classify.config import ClassifierConfig
    from cmrprior.cli import build_parser
    from cmrprior.ssl.config import PretrainConfig
    from cmrprior.vocab import DEFAULT_BACKBONE

    assert ClassifierConfig().backbones == (DEFAULT_BACKBONE,) and PretrainConfig().backbone == DEFAULT_BACKBONE
    args = build_parser().parse_args(["pretrain", "--data", "d", "--out", "o"])
    assert args.backbone == DEFAULT_BACKBONE


def test_replace_nested():
    c = load_config("cpu").replace(protocol={"n_splits": 2})
    assert c.protocol.n_splits == 2 and c.protocol.test_fraction == 0.3


def test_overrides_set_dotted_keys_and_keep_everything_else():
    from cmrprior.experiments.config import apply_overrides

    base = load_config("paper")
    c = load_config("paper", overrides={"classifier.input_size": 32, "protocol.n_splits": 1,
                                        "pretrain.epochs": 2, "pretrain.batch_sizes": [8],
                                        "pretrain.augment.rotate_degrees": 10, "classifier.modes.none": "linear"})
    assert c.classifier.input_size == 32 and c.protocol.n_splits == 1 and c.pretrain.batch_sizes == (8,)
    assert c.pretrain.simclr.epochs == 2 and c.pretrain.simclr.augment.rotate_degrees == 10.0
    assert c.classifier.modes == {**base.classifier.modes, "none": "linear"}
    # every other setting is the file's, nested ones included
    expect = base.to_dict()
    expect["classifier"].update(input_size=32, modes={**base.classifier.modes, "none": "linear"})
    expect["protocol"]["n_splits"] = 1
    expect["pretrain"].update(epochs=2, batch_sizes=[8])
    expect["pretrain"]["augment"]["rotate_degrees"] = 10.0
    assert c.to_dict() == expect
    assert apply_overrides(base, {}) == base and load_config("paper", overrides={}) == base


@pytest.mark.parametrize("key, match", [
    ("protocol.n_splitz", "n_splitz"),
    ("protocl.n_splits", "protocl"),
    ("pretrain.augment.rotaton_deg", "rotaton_deg"),
    ("protocol.n_splits.x", "'protocol.n_splits' is a value"),
    ("masks.model.x", "'masks.model' is a value"),
    ("nothing.at.all", "'nothing' is not a setting"),
    ("protocol..n_splits", "bad key"),
    ("pretrain.backbone", "set by the study"),
])
def test_unknown_override_keys_are_refused_by_name(key, match):
    with pytest.raises(ConfigError, match=match):
        load_config("paper", overrides={key: 1})


def test_set_options_parse_values_as_yaml():
    from cmrprior.experiments.config import parse_set_options

    got = parse_set_options(["protocol.n_splits=1", "classifier.lrs=[1e-3, 0.01]", "anatomy.enabled=false",
                             "classifier.backbones=[vgg16]", "masks.model=a=b.safetensors", "name= small "])
    assert got == {"protocol.n_splits": 1, "classifier.lrs": [1e-3, 0.01], "anatomy.enabled": False,
                   "classifier.backbones": ["vgg16"], "masks.model": "a=b.safetensors", "name": "small"}
    for bad in ("protocol.n_splits", "=3", "classifier.lrs=[1, 2"):
        with pytest.raises(ConfigError, match="--set"):
            parse_set_options([bad])
