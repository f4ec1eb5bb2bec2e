"""Settings of the diagnosis model's training (one frozen dataclass, filled from YAML or the CLI at the edge)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from cmrprior.classify.pooling import POOLINGS
from cmrprior.errors import ConfigError
from cmrprior.utils.suggest import unknown_names
from cmrprior.vocab import DEFAULT_BACKBONE, IMAGES, STUDY_INITS, TRAINING_MODES, init_names, pretexts

# How the study trained each initialisation (Nakashima et al., sec. 5.1 and 6):
# * pre-trained encoders (ImageNet, Full-SSCL, Segmented-SSCL) kept their representation and only the output
#   layer was trained: "We then fine-tuned a fully connected output layer for classification."
# * random encoders were trained as one network: "It is clear from the consistently poor performance of
#   randomly initialized models that each of these datasets are not well suited to fully train a network
#   end-to-end."
STUDY_MODES: dict[str, str] = {"none": "finetune", "imagenet": "linear", "full_sscl": "linear",
                                "segmented_sscl": "linear"}


def default_modes() -> dict[str, str]:
    """The training mode of every init unless `classifier.modes` says otherwise: the study's for the inits
    without pre-training, each registered pretext's `default_mode` for its inits (`cmrprior.vocab.pretexts`)."""
    return {"none": STUDY_MODES["none"], "imagenet": STUDY_MODES["imagenet"],
            **{i.name: p.default_mode for p in pretexts() for i in p.inits}}


@dataclass(frozen=True)
class ClassifierConfig:
    """The grid of diagnosis models and how each is trained.

    backbones x inits x images is the grid. modes: init name -> `linear` (frozen encoders, output layer
    trained) or `finetune` (all layers trained); inits not named keep their default (`default_modes()`:
    the study's mode for the study's inits, a pretext's own for its inits).
    Both modes choose the lr and the number of epochs by k-fold CV inside the training part (linear: `lrs`, up
    to `max_epochs`; finetune: `finetune_lrs`, up to `finetune_max_epochs`); finetune folds stop early after `patience` epochs without a better validation loss, and the
    encoders learn at `lr * encoder_lr_ratio` (1: one network trained end to end, as the study's None).
    input_size: px, images are resized to it before every encoder (pre-training too). standardize: linear
    mode trains the output layer on standardised features (statistics of the training part), folded into the
    layer afterwards. pooling: how linear cells score a patient, `slices` (the study's: every slice pair
    scored, the probabilities averaged) or `patient` (the frozen slice features pooled into their mean and SD
    per patient, one linear layer on that: `cmrprior.classify.pooling`); finetune cells score slices.
    motion: linear cells' slice features also hold the ED features minus the ES features; with patient pooling
    their SD over the slices (how unevenly the heart contracts from base to apex) reaches the output layer,
    which a layer on the ED and ES features alone cannot form. position_bins: with patient pooling, B > 0 adds
    the mean features of B equal parts of the heart from base to apex (`cmrprior.classify.pooling`).
    """

    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    inits: tuple[str, ...] = STUDY_INITS
    images: tuple[str, ...] = IMAGES
    modes: dict[str, str] = field(default_factory=default_modes)
    input_size: int = 64
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    max_epochs: int = 40
    batch_size: int = 64
    weight_decay: float = 1e-4
    encoder_lr_ratio: float = 1.0
    finetune_lrs: tuple[float, ...] = (1e-3, 3e-3)  # searched for finetune cells (a whole network wants smaller steps)
    finetune_max_epochs: int = 20
    patience: int = 5
    feature_batch_size: int = 128
    standardize: bool = True
    pooling: str = "slices"
    motion: bool = False
    position_bins: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"classifier.pooling: expected one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.position_bins < 0 or (self.position_bins and self.pooling != "patient"):
            raise ConfigError(f"classifier.position_bins must be >= 0 and needs pooling 'patient', got "
                              f"{self.position_bins} with pooling {self.pooling!r}")
        for problem in (unknown_names("classifier.inits", self.inits, init_names()),
                        unknown_names("classifier.backbones", self.backbones, _backbones())):
            if problem:  # found when the config is read, not after hours of segmentation
                raise ConfigError(problem)
        bad = [i for i in self.images if i not in IMAGES]
        if bad:
            raise ConfigError(f"classifier.images: unknown {bad}; expected a subset of {list(IMAGES)}")
        object.__setattr__(self, "modes", _checked_modes(self.modes))
        if not self.lrs or not self.finetune_lrs or not self.backbones or not self.inits or not self.images:
            raise ConfigError("classifier.lrs, finetune_lrs, backbones, inits and images must not be empty")
        if self.finetune_max_epochs < 1:
            raise ConfigError(f"classifier.finetune_max_epochs must be >= 1, got {self.finetune_max_epochs}")
        if self.input_size < 8 or self.max_epochs < 1 or self.batch_size < 1 or self.feature_batch_size < 1:
            raise ConfigError(f"classifier: input_size >= 8, max_epochs, batch_size, feature_batch_size >= 1 ({self})")
        if not self.encoder_lr_ratio > 0 or self.patience < 1:
            raise ConfigError(f"classifier: encoder_lr_ratio > 0 and patience >= 1, got {self.encoder_lr_ratio}, "
                              f"{self.patience}")

    def mode_of(self, init: str) -> str:
        """Training mode of the cells of initialisation `init`; ConfigError naming it when it has none (an init
        registered after this config was made)."""
        if init not in self.modes:
            raise ConfigError(f"classifier.modes: init {init!r} has no training mode (known: {sorted(self.modes)}); "
                              "register its pretext before the config is loaded, or name its mode")
        return self.modes[init]

    def modes_note(self) -> str:
        """One line for tables: the training mode of each initialisation of the grid."""
        return ", ".join(f"{i} {self.mode_of(i)}" for i in self.inits)


def _backbones() -> list[str]:
    """Registered backbone names (`cmrprior.models.registry`; imported here, where torch is already needed)."""
    from cmrprior.models.registry import list_backbones

    return list_backbones()


def _checked_modes(modes: object) -> dict[str, str]:
    """`modes` over every init name (the study's mode where not given); ConfigError naming what is unknown."""
    if not isinstance(modes, dict):
        raise ConfigError(f"classifier.modes must be a mapping init -> mode, got {modes!r}")
    names, defaults = init_names(), default_modes()
    unknown = sorted(str(k) for k in modes if k not in names)
    if unknown:
        raise ConfigError(f"classifier.modes: unknown init(s) {unknown}; expected some of {list(names)}")
    bad = {k: v for k, v in modes.items() if v not in TRAINING_MODES}
    if bad:
        raise ConfigError(f"classifier.modes: unknown mode(s) {bad}; expected one of {list(TRAINING_MODES)}")
    return {i: str(modes.get(i, defaults[i])) for i in names}  # every init has a default: the registry's


ANATOMY_FAMILIES: tuple[str, ...] = ("logistic", "forest", "sparse_logistic")
ANATOMY_SELECTIONS: tuple[str, ...] = ("auc", "log_loss", "brier")
# The right ventricle by the clinical definition of ACDC's RV class (RV volume index > 110 ml/m2 or RVEF < 40 %),
# read where the segmenter is surest: its cavity area against the LV's over the mid-ventricular slices at ED and
# ES (a segmenter that misses basal or apical RV slices moves the whole-volume measures, not these), its EF and
# its ES volume index.
RV_MEASURES: tuple[str, ...] = ("rv_lv_area_mid_ed_ratio", "rv_lv_area_mid_es_ratio", "rvef", "rv_esv_ml_m2")
# HCM against MINF by their definitions (HCM: thick walls, a heavy LV, normal EF; MINF: low EF with regional loss of
# thickening): EF and ES volume index, wall thickness, mass index, thickening and its spread over the segments.
HCM_MINF_MEASURES: tuple[str, ...] = ("lvef", "lv_esv_ml_m2", "max_wall_thickness_mm", "mean_wall_thickness_mm",
                                      "myo_mass_g_m2", "systolic_thickening_percent", "sector_thickening_sd_percent",
                                      "sectors_akinetic_count", "sectors_hypokinetic_count")


@dataclass(frozen=True)
class AnatomyConfig:
    """The "Anatomy" model: per-patient cardiac measures (`cmrprior.anatomy.measure`) -> a tabular classifier.

    families: model families searched (`logistic`: standardised L2 logistic regression over `cs`; `forest`:
    random forest of `n_trees` trees, max depth over `depths`, 0 = unlimited; `sparse_logistic`: standardised L1
    logistic regression over `sparse_cs`, which sets the weight of most measures to 0; with logistic and forest,
    also their soft vote,
    `cmrprior.classify.anatomy`); the family and its hyperparameters are chosen by stratified k-fold CV (the
    protocol's `cv_folds`) inside the training part.
    selection: the CV criterion that chooses the candidate (`cmrprior.classify.anatomy.selection_score`): mean
    fold macro AUC (`auc`), log loss (`log_loss`) or Brier score (`brier`, the default); the two proper scores
    also reward a model whose most probable class is right, which AUC (a ranking measure) does not. Brier was
    chosen by nested CV on ACDC with development seeds (`src/cmrprior/weights/MODEL_CARD.md`): it kept the
    macro AUC and raised the accuracy over AUC selection; log loss punishes a forest's certain errors hardest.
    perturb: sizes of the robustness check (test patients' masks dilated/eroded by N px, N basal/apical
    slices dropped; empty: no check). permutation_repeats: permutation importance of forests.
    groups: classes grouped for a model in stages (`cmrprior.classify.staged`): first the group, then the class
    within it, each stage with its own CV choice among the same candidates; empty: one model over all classes.
    Used where every class of the cohort is in a group and two groups or more hold one (`stage_groups`).
    pairs, pair_measures: pairs of classes that one model over all classes confuses, each split again by a
    model of that pair alone on its own measures (`pair_measures[i]` for `pairs[i]`,
    `cmrprior.classify.staged.PairSplitClassifier`): the pair's probability stays the main model's, the
    share between its two classes is the pair model's. Used where both classes are in the cohort, on the
    pair's measures known for every training patient. Default: NOR and RV on four RV measures (`RV_MEASURES`),
    HCM and MINF on nine LV measures (`HCM_MINF_MEASURES`),
    chosen by nested CV on ACDC with development seeds (`src/cmrprior/weights/MODEL_CARD.md`).
    hybrid: also combine every image cell with the anatomy model (`cmrprior.classify.hybrid`).
    workers: processes measuring the cohort (the measures are identical for any number).
    """

    enabled: bool = True
    hybrid: bool = True
    workers: int = 2
    families: tuple[str, ...] = ("logistic", "forest")
    cs: tuple[float, ...] = (0.1, 1.0, 10.0)
    sparse_cs: tuple[float, ...] = (0.1, 1.0)
    n_trees: int = 100
    depths: tuple[int, ...] = (3, 0)
    perturb: tuple[int, ...] = (1, 2)
    permutation_repeats: int = 5
    selection: str = "brier"
    groups: tuple[tuple[str, ...], ...] = ()
    pairs: tuple[tuple[str, ...], ...] = (("NOR", "RV"), ("HCM", "MINF"))
    pair_measures: tuple[tuple[str, ...], ...] = (RV_MEASURES, HCM_MINF_MEASURES)

    def __post_init__(self) -> None:
        from cmrprior.anatomy.measure import AnatomyMeasures

        named = [c for p in self.pairs for c in p]
        if len(self.pairs) != len(self.pair_measures) or any(len(p) != 2 for p in self.pairs) \
                or len(named) != len(set(named)) or any(not m for m in self.pair_measures):
            raise ConfigError(f"anatomy.pairs: pairs of two different class names, each class in one pair at most, "
                              f"with one non-empty list of measures each in anatomy.pair_measures; got pairs "
                              f"{[list(p) for p in self.pairs]} and {len(self.pair_measures)} measure list(s)")
        bad = unknown_names("anatomy.pair_measures", sorted({m for ms in self.pair_measures for m in ms}),
                            [f.name for f in fields(AnatomyMeasures)])
        if bad:
            raise ConfigError(bad)
        named = [c for g in self.groups for c in g]
        if any(not g for g in self.groups) or len(named) != len(set(named)):
            raise ConfigError(f"anatomy.groups: non-empty groups of class names, each class in one group at most, "
                              f"got {[list(g) for g in self.groups]}")
        if self.selection not in ANATOMY_SELECTIONS:
            raise ConfigError(f"anatomy.selection: expected one of {list(ANATOMY_SELECTIONS)}, got {self.selection!r}")
        bad = [f for f in self.families if f not in ANATOMY_FAMILIES]
        if not self.families or bad:
            raise ConfigError(f"anatomy.families: expected a non-empty subset of {list(ANATOMY_FAMILIES)}, got "
                              f"{list(self.families)}")
        if not self.cs or min(self.cs) <= 0 or not self.sparse_cs or min(self.sparse_cs) <= 0 or not self.depths or min(self.depths) < 0 or self.n_trees < 1:
            raise ConfigError(f"anatomy: cs > 0, sparse_cs > 0, depths >= 0 (0 = unlimited), n_trees >= 1 ({self})")
        if any(int(s) < 1 for s in self.perturb) or self.permutation_repeats < 1 or self.workers < 1:
            raise ConfigError(f"anatomy: perturb sizes, permutation_repeats and workers must be >= 1 ({self})")
