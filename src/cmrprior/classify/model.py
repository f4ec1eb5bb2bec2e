"""The study's diagnosis model: one encoder for the ED image, one for the ES image of the same slice
position, pooled features concatenated, one fully connected output layer (Nakashima et al., sec. 5.1).

Encoders come from `cmrprior.models.registry.create_backbone` (any registered backbone:
`forward_features(x (B, 1, H, W)) -> (B, F)`, `num_features = F`). Initialisations:

* `none`: random weights (seeded),
* `imagenet`: torchvision ImageNet weights (raises WeightsUnavailableError when not available offline);
  the model normalises its [0, 1] inputs as ImageNet inputs were (`cmrprior.models.weights.grey_normalization`),
* `full_sscl` / `segmented_sscl`: a SimCLR checkpoint (`cmrprior.ssl.pretrain.load_encoder`); both branches
  start from the same checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from cmrprior.classify.pooling import POOLINGS, descriptor_size, pool_slices
from cmrprior.errors import ConfigError, DataError
from cmrprior.models.registry import create_backbone
from cmrprior.models.weights import grey_normalization
from cmrprior.ssl.checkpoint import load_encoder
from cmrprior.utils import atomic
from cmrprior.vocab import get_init

IDENTITY_NORM: tuple[float, float] = (0.0, 1.0)  # (x - 0) / 1 is x exactly: the other inits see their images as is


class DiagnosisModel(nn.Module):
    """ED/ES two-branch classifier.

    Args:
        ed_encoder, es_encoder: backbones with `forward_features` and `num_features`.
        n_classes: K output logits.
        input_norm: (mean, std): both encoders see `(x - mean) / std`. Fixed buffers, part of the state dict,
            so saliency (through `forward`) and a reloaded checkpoint see the same inputs as training did.
        motion: the features also hold the ED features minus the ES features (`classifier.motion`): the two
            encoders must give features of the same size.

    `forward(ed (B, H, W) or (B, 1, H, W), es same) -> logits (B, K)`.
    """

    pooling = "slices"  # how it scores a patient (`cmrprior.classify.pooling.POOLINGS`)

    def __init__(self, ed_encoder: nn.Module, es_encoder: nn.Module, n_classes: int, *,
                 input_norm: tuple[float, float] = IDENTITY_NORM, motion: bool = False, position_bins: int = 0) -> None:
        super().__init__()
        if position_bins and self.pooling != PooledDiagnosisModel.pooling:
            raise ConfigError("position bins pool a patient's slices: they need pooling 'patient'")
        if position_bins < 0:
            raise ConfigError(f"position bins must be >= 0, got {position_bins}")
        self.position_bins = int(position_bins)
        if motion and int(ed_encoder.num_features) != int(es_encoder.num_features):
            raise ConfigError("motion features need ED and ES encoders with the same number of features")
        if n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
        if not input_norm[1] > 0:
            raise ConfigError(f"input_norm std must be > 0, got {input_norm}")
        self.ed_encoder = ed_encoder
        self.es_encoder = es_encoder
        self.motion = bool(motion)
        self.num_features = int(ed_encoder.num_features) * (2 if motion else 1) + int(es_encoder.num_features)
        self.head = nn.Linear(self.num_features, n_classes)
        self.register_buffer("input_mean", torch.tensor(float(input_norm[0])))
        self.register_buffer("input_std", torch.tensor(float(input_norm[1])))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.unsqueeze(1) if x.dim() == 3 else x) - self.input_mean) / self.input_std

    def features(self, ed: torch.Tensor, es: torch.Tensor) -> torch.Tensor:
        """Concatenated pooled features `(B, F_ed + F_es)`, with `motion` `(B, F_ed + F_es + F_ed)`: ED, ES, ED - ES."""
        f_ed = self.ed_encoder.forward_features(self._input(ed))
        f_es = self.es_encoder.forward_features(self._input(es))
        return torch.cat([f_ed, f_es, f_ed - f_es] if self.motion else [f_ed, f_es], dim=1)

    def forward(self, ed: torch.Tensor, es: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ed, es))


class PooledDiagnosisModel(DiagnosisModel):
    """Patient-level ED/ES model (`classifier.pooling: patient`): the slice features of one patient pooled into
    their mean and standard deviation, and with `position_bins` B > 0 the means of B parts from base to apex
    (`cmrprior.classify.pooling.pool_slices`), one linear layer.

    `forward(ed (S, H, W) or (S, 1, H, W), es same, positions (S,) base 0 to apex 1, needed when B > 0) ->
    logits (1, K)`: the S slice pairs of ONE patient.
    """

    pooling = "patient"

    def __init__(self, ed_encoder: nn.Module, es_encoder: nn.Module, n_classes: int, *,
                 input_norm: tuple[float, float] = IDENTITY_NORM, motion: bool = False, position_bins: int = 0) -> None:
        super().__init__(ed_encoder, es_encoder, n_classes, input_norm=input_norm, motion=motion,
                         position_bins=position_bins)
        self.head = nn.Linear(descriptor_size(self.num_features, self.position_bins), n_classes)

    def forward(self, ed: torch.Tensor, es: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(pool_slices(self.features(ed, es), positions, self.position_bins)[None])

    def one_slice_model(self) -> DiagnosisModel:
        """The slice-level model that scores each slice pair as a one-slice patient (mean = its features,
        SD = 0, every position part = its features, as an empty part takes the mean): the same encoders and
        normalisation (shared, not copied), the output layer's mean part plus its part weights.
        Saliency explains a pooled cell through it (a slice pair's map, as for the study's models)."""
        k = self.head.out_features
        out = DiagnosisModel(self.ed_encoder, self.es_encoder, k,
                             input_norm=(float(self.input_mean), float(self.input_std)), motion=self.motion)
        # the descriptor's blocks (`pool_slices`): mean, SD, then one per position part, each num_features long
        blocks = self.head.weight.view(k, 2 + self.position_bins, self.num_features)
        with torch.no_grad():
            out.head.weight.copy_(blocks[:, 0] + blocks[:, 2:].sum(1))
            out.head.bias.copy_(self.head.bias)
        return out.train(self.training)


def _model_class(pooling: str) -> type[DiagnosisModel]:
    """The model class scoring patients as `pooling` says; ConfigError for another pooling."""
    models = {cls.pooling: cls for cls in (DiagnosisModel, PooledDiagnosisModel)}
    if pooling not in models:
        raise ConfigError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    return models[pooling]


def build_encoders(
    backbone: str,
    init: str,
    *,
    checkpoint: str | Path | None = None,
    seed: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """Two encoders of architecture `backbone` initialised as `init` (see module doc).

    Raises ConfigError (unknown init, missing checkpoint for an SSCL init), WeightsUnavailableError.
    """
    spec = get_init(init)
    if init == "none":
        torch.manual_seed(seed)
        ed = create_backbone(backbone, in_chans=1, weights=None)
        es = create_backbone(backbone, in_chans=1, weights=None)
        return ed, es
    if init == "imagenet":
        ed = create_backbone(backbone, in_chans=1, weights="imagenet")
        return ed, copy.deepcopy(ed)
    if checkpoint is None:
        raise ConfigError(f"init {init!r} needs a pre-training checkpoint ({spec.pretrain_images} images)")

    ed = load_encoder(checkpoint)
    return ed, copy.deepcopy(ed)


def build_model(
    backbone: str, init: str, n_classes: int, *, checkpoint: str | Path | None = None, seed: int = 0,
    pooling: str = "slices", motion: bool = False, position_bins: int = 0,
) -> DiagnosisModel:
    """A DiagnosisModel (`pooling="slices"`) or PooledDiagnosisModel (`"patient"`) with encoders from
    `build_encoders` and a seeded output layer; ImageNet-initialised encoders get ImageNet's input
    normalisation for a grey image (`grey_normalization`); `motion`, `position_bins`: see DiagnosisModel and
    PooledDiagnosisModel. ConfigError for another pooling."""
    cls = _model_class(pooling)
    ed, es = build_encoders(backbone, init, checkpoint=checkpoint, seed=seed)
    torch.manual_seed(seed + 1)
    norm = grey_normalization() if init == "imagenet" else IDENTITY_NORM
    return cls(ed, es, n_classes, input_norm=norm, motion=motion, position_bins=position_bins)


def save_classifier(model: DiagnosisModel, path: str | Path, *, classes: list[str], meta: dict) -> Path:
    """Write the state dict plus the encoders' model arguments, so `load_classifier` needs nothing else (atomic)."""
    args = model.ed_encoder.model_args
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "backbone": args["backbone"],
        "model_args": args,
        "classes": list(classes),
        "meta": meta,
        "pooling": model.pooling,
        "motion": model.motion,
        "position_bins": model.position_bins,
    }
    return atomic.save_torch(path, payload)


def classifier_from_state(model_args: dict, state_dict: dict[str, torch.Tensor], *, n_classes: int,
                          pooling: str = DiagnosisModel.pooling, motion: bool = False,
                          position_bins: int = 0) -> DiagnosisModel:
    """The DiagnosisModel (or PooledDiagnosisModel) of `model_args` (the encoders' `model_args`) with the weights
    `state_dict`, in eval mode: how a saved classifier (`load_classifier`) and a model bundle's image model
    (`cmrprior.bundle.image`) are rebuilt. Encoders are built without downloading anything (their weights are
    in `state_dict`).

    Raises ConfigError for another pooling; RuntimeError when the weights do not fit the architecture.
    """
    def encoder() -> nn.Module:
        return create_backbone(model_args["backbone"], in_chans=model_args["in_chans"], **model_args["backbone_kwargs"])

    model = _model_class(pooling)(encoder(), encoder(), n_classes, motion=motion, position_bins=position_bins)
    # checkpoints from before the input normalisation was part of the model fed images as they are
    state = {**{k: v for k, v in model.state_dict().items() if k in ("input_mean", "input_std")}, **state_dict}
    model.load_state_dict(state)
    model.eval()
    return model


def load_classifier(path: str | Path) -> tuple[DiagnosisModel, dict]:
    """Rebuild a saved DiagnosisModel or PooledDiagnosisModel (eval mode) -> (model, {"backbone", "classes",
    "meta"}).

    Raises DataError when the file is not a cmrprior classifier checkpoint.
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        args = payload["model_args"]
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        raise DataError(path, f"not a cmrprior classifier checkpoint ({type(exc).__name__}: {exc})") from exc

    # checkpoints from before pooling (motion) existed scored slices (without motion features)
    model = classifier_from_state(args, payload["state_dict"], n_classes=len(payload["classes"]),
                                  pooling=payload.get("pooling", DiagnosisModel.pooling),
                                  motion=bool(payload.get("motion", False)),
                                  position_bins=int(payload.get("position_bins", 0)))
    return model, {k: payload[k] for k in ("backbone", "classes", "meta")}
