"""Study configs: the shipped YAML files, strict loading."""

from pathlib import Path

import pytest

from cmrprior.errors import ConfigError
from cmrprior.experiments.config import StudyConfig, builtin_config_path, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["paper", "cpu", "demo"])
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


def test_demo_config_runs_every_stage_of_the_cpu_study_smaller():
    """The demo's config is the CPU study's grid (every init, kind of images, mode, the anatomy model and its
    hybrids) with fewer splits, epochs and search values; `cmrprior demo` uses it unless --config says otherwise."""
    demo, cpu = load_config("demo"), load_config("cpu")
    same = lambda c: (c.classifier.backbones, c.classifier.inits, c.classifier.images, c.classifier.modes,  # noqa: E731
                      c.classifier.input_size, c.classifier.pooling, c.primary, c.masks, c.images, c.prepare,
                      c.anatomy.enabled, c.anatomy.hybrid, c.protocol.test_fraction)
    assert same(demo) == same(cpu)
    assert demo.protocol.n_splits < cpu.protocol.n_splits and demo.pretrain.simclr.epochs < cpu.pretrain.simclr.epochs
    assert demo.teacher.epochs < cpu.teacher.epochs and demo.classifier.finetune_max_epochs < cpu.classifier.finetune_max_epochs
    assert len(demo.classifier.lrs) < len(cpu.classifier.lrs)


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


@pytest.mark.parametrize("section, body, needle", [
    ("protocol", "  n_splits: 1.7\n", r"protocol: n_splits must be a whole number, got 1.7"),
    ("protocol", "  n_splits: two\n", r"protocol: n_splits must be a whole number, got 'two'"),
    ("anatomy", "  enabled: \"false\"\n", r"anatomy: enabled must be true or false \(unquoted\), got 'false'"),
    ("anatomy", "  enabled: 0\n", r"anatomy: enabled must be true or false"),
    ("protocol", "  test_fraction: a third\n", r"protocol: test_fraction must be a number, got 'a third'"),
    ("classifier", "  backbones: [vgg16, 3]\n", r"classifier: backbones\[1\] must be text, got 3"),
    ("classifier", "  lrs: [0.01, fast]\n", r"classifier: lrs\[1\] must be a number"),
    ("pretrain", "  augment:\n    crop_scale: [0.3]\n", r"crop_scale must be a list of 2 values"),
    ("prepare", "  full_fov_mm: wide\n", r"prepare: full_fov_mm must be a number or null, got 'wide'"),
    ("masks", "  inference:\n    threads: 1.5\n", r"inference: threads must be a whole number or null, got 1.5"),
])
def test_values_of_the_wrong_type_are_errors_naming_the_key_and_the_file(tmp_path, section, body, needle):
    p = tmp_path / "typed.yaml"
    p.write_text(f"{section}:\n{body}")
    with pytest.raises(ConfigError, match=needle) as err:
        StudyConfig.from_yaml(p)
    assert str(p) in str(err.value)


def test_values_that_fit_their_type_are_read_as_it():
    c = StudyConfig.from_dict({"protocol": {"n_splits": 2.0, "cv_folds": 4}, "pretrain": {"lr": "1e-3"},
                               "classifier": {"lrs": 0.01}, "anatomy": {"enabled": False}})
    assert c.protocol.n_splits == 2 and isinstance(c.protocol.n_splits, int) and c.protocol.cv_folds == 4
    assert c.pretrain.simclr.lr == 1e-3 and c.classifier.lrs == (0.01,) and c.anatomy.enabled is False
    with pytest.raises(ConfigError, match=r"overrides: protocol: n_splits must be a whole number, got 'two'"):
        load_config("cpu", overrides={"protocol.n_splits": "two"}).protocol  # the CLI's --set path too


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("name: mine\nprotocol:\n  n_splits: 3\n  seed: 1\n  n_splits: 5\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: key 'n_splits' given twice \(lines 3 and 5\)"):
        StudyConfig.from_yaml(p)
    p.write_text("protocol:\n  n_splits: 3\nprotocol:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"key 'protocol' given twice \(lines 1 and 3\)"):
        StudyConfig.from_yaml(p)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_an_error_not_the_defaults(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="empty.yaml: the config file is empty"):
        load_config(p)
