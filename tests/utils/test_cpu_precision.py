"""The CPU precision choice: flags read from cpuinfo, float32 without native bf16 (nothing timed), otherwise the
faster of the two by the margin, timed alternately; and pre-training's "auto" on a CPU that has native bf16."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cmrprior.utils import cpu_precision
from cmrprior.utils.cpu_precision import choose_cpu_precision, cpu_flags  # the real one: conftest patches the module's

BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})


def test_flags_come_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512_bf16 amx_tile\n")
    flags = cpu_flags(info)
    assert flags == frozenset({"fpu", "sse2", "avx2", "avx512_bf16", "amx_tile"})
    assert cpu_precision.native_bf16(flags) == ("avx512_bf16",)
    assert cpu_precision.native_bf16(frozenset({"avx2"})) == () and cpu_precision.native_bf16(None) == ()


class FakeSteps:
    """`step(precision)` advancing a fake clock by that precision's seconds, recording the calls."""

    def __init__(self, fp32_s: float, bf16_s: float) -> None:
        self.seconds = {"fp32": fp32_s, "bf16": bf16_s}
        self.now = 0.0
        self.calls: list[str] = []

    def step(self, precision: str) -> None:
        self.calls.append(precision)
        self.now += self.seconds[precision]

    def clock(self) -> float:
        return self.now


def test_without_native_bf16_float32_is_chosen_and_nothing_is_timed():
    fake = FakeSteps(1.0, 0.1)
    for flags in (frozenset({"sse2", "avx2", "fma"}), frozenset()):
        choice = choose_cpu_precision(fake.step, flags=flags, clock=fake.clock)
        assert choice.precision == "fp32" and choice.fp32_s is None and "no native bf16" in choice.reason
    assert fake.calls == []


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(1.0, 0.5, "bf16"), (1.0, 0.95, "fp32"), (1.0, 2.0, "fp32"),
                                                      (1.1, 1.0, "bf16")])
def test_with_native_bf16_the_faster_by_the_margin_is_chosen(fp32_s, bf16_s, expected):
    fake = FakeSteps(fp32_s, bf16_s)
    choice = choose_cpu_precision(fake.step, flags=BF16_CPU, repeats=3, clock=fake.clock)
    assert choice.precision == expected
    assert choice.fp32_s == pytest.approx(fp32_s) and choice.bf16_s == pytest.approx(bf16_s)
    # one warm-up of each, then alternating, so that a change of load falls on both
    assert fake.calls == ["fp32", "bf16"] + ["fp32", "bf16"] * 3
    assert "avx512_bf16" in choice.reason


def test_the_median_step_decides_not_one_slow_step():
    times = iter([0.0, 0.0] + [1.0, 0.5, 9.0, 0.5, 1.0, 0.5])  # warm-ups, then one slow float32 step among three
    now = [0.0]

    def step(precision):
        now[0] += next(times)

    choice = choose_cpu_precision(step, flags=BF16_CPU, repeats=3, clock=lambda: now[0])
    assert (choice.fp32_s, choice.bf16_s, choice.precision) == (1.0, 0.5, "bf16")


def _blobs(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size), dtype=np.float32)


def test_pretrain_auto_times_its_own_step_without_changing_the_run(tmp_path, monkeypatch):
    """On a CPU with native bf16 "auto" times the run's network in both precisions; the timing uses numbers of
    its own, so the run equals one made in the precision it chose; a resumed run keeps that choice."""
    from cmrprior.ssl.config import PretrainConfig
    from cmrprior.ssl.pretrain import pretrain

    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda *a, **k: BF16_CPU)
    real = cpu_precision.choose_cpu_precision
    seen: list[str] = []

    def choose(step, **kw):  # the real choice on the real steps, made to prefer float32 whatever the timings
        return real(lambda p: (seen.append(p), step(p))[1], margin=1e9, **kw)

    monkeypatch.setattr(cpu_precision, "choose_cpu_precision", choose)
    cfg = PretrainConfig(backbone="tiny", backbone_kwargs={"widths": (8, 16)}, image_size=32, batch_size=8, epochs=1,
                         device="cpu", proj_hidden_dim=16, proj_dim=8, lr=1e-3, progress=False, seed=3)
    chose = pretrain(_blobs(16), cfg, tmp_path / "auto")
    assert seen == ["fp32", "bf16"] + ["fp32", "bf16"] * 3
    assert (chose.precision, chose.channels_last) == ("fp32", True)  # the result says what "auto" became
    pretrain(_blobs(16), dataclasses.replace(cfg, precision="fp32"), tmp_path / "fp32")
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("auto", "fp32"))
    assert a["config"]["precision"] == "fp32"
    assert set(a["model"]) == set(b["model"]) and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    # a longer run resumes the first: its precision is the one chosen then, and nothing is timed again
    seen.clear()
    monkeypatch.setattr(cpu_precision, "choose_cpu_precision", lambda *a, **k: pytest.fail("timed again on resume"))
    res = pretrain(_blobs(16), dataclasses.replace(cfg, epochs=2), tmp_path / "auto")
    assert len(res.history) == 2 and seen == [] and res.precision == "fp32"
