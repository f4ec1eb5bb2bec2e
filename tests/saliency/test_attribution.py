"""Integrated gradients and occlusion: exact answers for linear and one-quadrant models, completeness."""

from __future__ import annotations

import pytest
import torch
from saliency_doubles import LinearPixelModel, make_model, quadrant

from cmrprior.errors import ConfigError
from cmrprior.saliency.attribution import integrated_gradients, occlusion


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_ig_of_linear_model_is_exact():
    h, w, k = 6, 5, 3
    model = LinearPixelModel(h, w, k, seed=0)
    g = torch.Generator().manual_seed(1)
    ed, es = torch.randn(2, 1, h, w, generator=g), torch.randn(2, 1, h, w, generator=g)
    base = torch.randn(1, 1, h, w, generator=g)
    res = integrated_gradients(model, ed, es, target_class=torch.tensor([2, 1]), baseline_ed=base, steps=3, chunk=2)
    for b, t in enumerate([2, 1]):
        exp_ed = (ed[b, 0] - base[0, 0]) * model.w_ed[t].detach().view(h, w)
        exp_es = es[b, 0] * model.w_es[t].detach().view(h, w)
        torch.testing.assert_close(res.ed[b, 0], exp_ed, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(res.es[b, 0], exp_es, rtol=1e-5, atol=1e-5)
    assert float(res.delta.abs().max()) < 1e-4


@pytest.mark.parametrize("steps", [16, 48])
def test_ig_completeness_nonlinear(steps):
    """sum of attributions = f(x) - f(baseline) for a ReLU network, up to the quadrature error."""
    model = make_model(channels=6, n_classes=4, seed=5)
    g = torch.Generator().manual_seed(2)
    ed, es = torch.randn(3, 1, 12, 12, generator=g), torch.randn(3, 1, 12, 12, generator=g)
    res = integrated_gradients(model, ed, es, steps=steps)
    with torch.no_grad():
        fx = model(ed, es).gather(1, res.target[:, None])[:, 0]
        fb = model(torch.zeros_like(ed), torch.zeros_like(es)).gather(1, res.target[:, None])[:, 0]
    total = res.ed.flatten(1).sum(1) + res.es.flatten(1).sum(1)
    gap = fx - fb
    torch.testing.assert_close(res.delta, total - gap, rtol=1e-5, atol=1e-6)
    assert float((total - gap).abs().max()) < 0.02 * float(gap.abs().max()) + 1e-4


def test_ig_and_occlusion_zero_outside_the_seen_quadrant():
    h = w = 16
    q = quadrant(h, w)
    model = make_model(channels=4, n_classes=3, region=q, seed=6)
    ed, es = torch.rand(2, 1, h, w) + 0.2, torch.rand(2, 1, h, w) + 0.2
    res = integrated_gradients(model, ed, es, steps=8)
    for a in (res.ed[:, 0], res.es[:, 0]):
        assert float(a[:, ~q].abs().max()) == 0.0
        assert float(a[:, q].abs().sum()) > 0
    o_ed, o_es, _ = occlusion(model, ed, es, window=4, stride=4)
    for m in (o_ed, o_es):
        assert m.shape == (2, h, w)
        assert float(m[:, ~q].abs().max()) == 0.0
        assert float(m[:, q].abs().sum()) > 0


def test_occlusion_against_loop_reference():
    model = make_model(channels=3, n_classes=2, seed=7)
    ed, es = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    o_ed, o_es, t = occlusion(model, ed, es, target_class=1, window=4, stride=2, fill=0.5, batch_windows=3)
    ref = torch.zeros(8, 8)
    cnt = torch.zeros(8, 8)
    with torch.no_grad():
        base = model(ed, es)[0, 1]
        for y0 in (0, 2, 4):
            for x0 in (0, 2, 4):
                x = es.clone()
                x[..., y0 : y0 + 4, x0 : x0 + 4] = 0.5
                ref[y0 : y0 + 4, x0 : x0 + 4] += base - model(ed, x)[0, 1]
                cnt[y0 : y0 + 4, x0 : x0 + 4] += 1
    torch.testing.assert_close(o_es[0], ref / cnt, rtol=1e-5, atol=1e-6)
    assert t.tolist() == [1]
    with pytest.raises(ConfigError, match="window"):
        occlusion(model, ed, es, window=9)
