"""VICReg: the loss against lightly's `VICRegLoss` and a hand-computed value; a short pre-training with it in the
SimCLR loop (the loss falls, the checkpoint records the objective, a resume under another objective is refused)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cmrprior.errors import ConfigError
from cmrprior.ssl.checkpoint import load_encoder
from cmrprior.ssl.config import PretrainConfig
from cmrprior.ssl.pretrain import pretrain
from cmrprior.ssl.vicreg import VICRegConfig, VICRegObjective, vicreg_loss

CASES = [(2, 4, 25.0, 25.0, 1.0), (8, 16, 25.0, 25.0, 1.0), (33, 8, 1.0, 2.0, 3.0), (64, 128, 25.0, 25.0, 1.0),
         (5, 3, 0.0, 1.0, 0.0)]


@pytest.mark.parametrize("n,d,lam,mu,nu", CASES)
def test_matches_lightly(n, d, lam, mu, nu):
    from lightly.loss import VICRegLoss

    g = torch.Generator().manual_seed(n * 7 + d)
    z1, z2 = torch.randn(n, d, generator=g) * 0.7, torch.randn(n, d, generator=g) * 1.3 + 0.2
    ref = VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu)(z1, z2)
    got = vicreg_loss(z1, z2, sim_weight=lam, var_weight=mu, cov_weight=nu)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_gradients_match_lightly():
    from lightly.loss import VICRegLoss

    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=g, requires_grad=True)
    b = torch.randn(16, 8, generator=g, requires_grad=True)
    vicreg_loss(a, b).backward()
    ga, gb = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    VICRegLoss()(a, b).backward()
    torch.testing.assert_close(ga, a.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb, b.grad, rtol=1e-5, atol=1e-6)


def test_hand_computed_value():
    # N = 2, D = 2: z1 = [[1, 0], [-1, 0]], z2 = [[1, 1], [-1, -1]]
    # invariance: mean of squared differences = (0 + 1 + 0 + 1) / 4 = 0.5
    # variance (eps 0): z1 dims var (unbiased) 2, 0 -> std 1.414, 0 -> relu(1 - std) = 0, 1 -> mean 0.5;
    #   z2 dims var 2, 2 -> 0; mean of branches 0.25
    # covariance: z1 cov [[2, 0], [0, 0]] -> 0; z2 cov [[2, 2], [2, 2]] -> off-diagonal 2^2 * 2 / D = 4
    z1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    z2 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    got = vicreg_loss(z1, z2, sim_weight=1.0, var_weight=1.0, cov_weight=1.0, eps=1e-12)
    assert got.item() == pytest.approx(0.5 + 0.25 + 4.0, abs=1e-5)


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError, match="N >= 2"):
        vicreg_loss(torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ConfigError, match="must both be"):
        vicreg_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="batch_sizes"):
        VICRegConfig(batch_sizes=(1,))


CFG = PretrainConfig(backbone="tiny", backbone_kwargs={"widths": (8, 16)}, image_size=32, batch_size=16, epochs=4,
                     device="cpu", proj_hidden_dim=32, proj_dim=16, proj_batch_norm=True, lr=3e-3, val_batch_size=16,
                     progress=False, seed=3, precision="fp32")


def _phantom_slices(n_patients: int = 6) -> np.ndarray:
    """ED and ES short-axis slices of phantom patients (`cmrprior.data.phantom`): the central 96 px, every
    third pixel (32 px), scaled to unit range per patient. float32 `(M, 32, 32)`."""
    from cmrprior.data.phantom.config import PhantomConfig
    from cmrprior.data.phantom.render import render_patient

    out = []
    for i, seed in enumerate(np.random.SeedSequence(7).spawn(n_patients)):
        labels = ("NOR", "DCM", "HCM")
        p = render_patient(labels[i % 3], i % 3, 3, PhantomConfig(), seed)
        for vol in (p.ed_image, p.es_image):
            h, w = vol.shape[1:]
            crop = vol[:, h // 2 - 48: h // 2 + 48: 3, w // 2 - 48: w // 2 + 48: 3].astype(np.float32)
            out.append(crop / max(float(crop.max()), 1.0))
    return np.concatenate(out)


def test_vicreg_pretraining_learns_and_records_its_objective(tmp_path):
    images = _phantom_slices()
    train, val = images[: len(images) * 3 // 4], images[len(images) * 3 // 4:]
    objective = VICRegConfig().objective()
    res = pretrain(train, CFG, tmp_path / "run", val_images=val, objective=objective)
    vals = [h["val_loss"] for h in res.history]
    assert len(vals) == 4 and min(vals[1:]) < vals[0]  # the held-out VICReg loss falls
    # the held-out loss is VICReg's, not NT-Xent's: an untrained network's VICReg loss is far above log(2N - 1)
    assert vals[0] > np.log(2 * CFG.val_batch_size - 1)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["objective"] == objective.describe()
    assert load_encoder(res.checkpoint).num_features > 0
    with pytest.raises(ConfigError, match="another objective"):
        pretrain(train, dataclasses.replace(CFG, epochs=5), tmp_path / "run", val_images=val)
    with pytest.raises(ConfigError, match="another objective"):
        pretrain(train, dataclasses.replace(CFG, epochs=5), tmp_path / "run", val_images=val,
                 objective=VICRegObjective(sim_weight=1.0))
