"""Per-initialisation training modes: the study's default, partial mappings, and errors that name the problem."""

import pytest

from cmrprior.classify.config import STUDY_MODES, ClassifierConfig, default_modes
from cmrprior.errors import ConfigError
from cmrprior.vocab import STUDY_INITS, init_names


def test_default_is_the_study():
    c = ClassifierConfig()
    assert c.inits == ("none", "imagenet", "full_sscl", "segmented_sscl") == STUDY_INITS
    assert c.modes == {"none": "finetune", "imagenet": "linear", "full_sscl": "linear", "segmented_sscl": "linear",
                       "seg_teacher": "linear", "full_vicreg": "linear", "segmented_vicreg": "linear"}
    assert set(STUDY_MODES) == set(STUDY_INITS) and set(default_modes()) == set(init_names())
    assert c.mode_of("none") == "finetune" and c.mode_of("segmented_sscl") == "linear"


def test_partial_mapping_keeps_the_study_mode_for_the_others():
    c = ClassifierConfig(modes={"none": "linear", "imagenet": "finetune"})
    assert c.modes == {"none": "linear", "imagenet": "finetune", "full_sscl": "linear", "segmented_sscl": "linear",
                       "seg_teacher": "linear", "full_vicreg": "linear", "segmented_vicreg": "linear"}
    assert ClassifierConfig(inits=("none", "full_sscl")).modes_note() == "none finetune, full_sscl linear"


def test_unknown_init_or_mode_is_named():
    with pytest.raises(ConfigError, match="'imagnet'"):
        ClassifierConfig(modes={"imagnet": "linear"})
    with pytest.raises(ConfigError, match="'frozen'"):
        ClassifierConfig(modes={"none": "frozen"})
    with pytest.raises(ConfigError, match="mapping"):
        ClassifierConfig(modes="linear")
    with pytest.raises(ConfigError, match="encoder_lr_ratio"):
        ClassifierConfig(encoder_lr_ratio=0.0)


def test_yaml_mapping_and_old_single_mode_key():
    from cmrprior.experiments.config import StudyConfig

    c = StudyConfig.from_dict({"classifier": {"modes": {"none": "linear"}}})
    assert c.classifier.mode_of("none") == "linear"
    assert StudyConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['mode'\]"):
        StudyConfig.from_dict({"classifier": {"mode": "linear"}})
