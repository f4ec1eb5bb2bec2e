"""Seg-teacher pre-training: augmentation against references, learning on a task with a known answer, the
checkpoint that downstream code reads, and resuming."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from cmrprior.classify.data import resize_labels
from cmrprior.errors import ConfigError, InputError
from cmrprior.ssl.checkpoint import load_encoder
from cmrprior.ssl.teacher import SegmentationPretext, TeacherConfig, _shift, pretrain_teacher
from cmrprior.models.registry import create_backbone


def _discs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of a bright disc (label 3) in a grey ring (label 2) beside a dimmer blob (label 1), with noise:
    the labels follow from the image, so a segmenter can learn them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(10, size - 10, 2)
        r = rng.uniform(3, 5)
        d = np.hypot(yy - cy, xx - cx)
        masks[i][(d < r + 2.5) & (d >= r)] = 2
        masks[i][d < r] = 3
        masks[i][(np.hypot(yy - cy, xx - cx - r - 5) < 2.5) & (masks[i] == 0)] = 1
        images[i] = np.choose(masks[i], [0.0, 0.5, 0.3, 0.9]) + rng.normal(0, 0.05, (size, size))
    return images.astype(np.float32), masks


def test_resize_labels_matches_a_majority_count_per_block():
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, (3, 8, 8)).astype(np.uint8)
    out = resize_labels(masks, 4)
    ref = np.zeros((3, 4, 4), np.uint8)
    for n in range(3):
        for i in range(4):
            for j in range(4):
                counts = np.bincount(masks[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel(), minlength=4)
                ref[n, i, j] = int(np.argmax(counts))  # ties: the lower label, as argmax
    np.testing.assert_array_equal(out, ref)
    assert resize_labels(masks, 8) is masks


def test_shift_moves_pixels_and_fills_with_zeros():
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 5, 5)
    for dy, dx in [(2, -1), (-3, 0), (0, 4), (0, 0)]:
        ref = np.zeros((5, 5), np.float32)
        for i in range(5):
            for j in range(5):
                si, sj = i - dy, j - dx
                if 0 <= si < 5 and 0 <= sj < 5:
                    ref[i, j] = x[0, si, sj]
        np.testing.assert_array_equal(_shift(x, dy, dx)[0].numpy(), ref)


def test_decoder_output_matches_input_size_for_the_tiny_backbone():
    model = SegmentationPretext(create_backbone("tiny", in_chans=1), width=8)
    assert model(torch.zeros(2, 1, 40, 40)).shape == (2, 4, 40, 40)


def test_teacher_learns_the_labels_and_best_pt_is_the_encoder_downstream_code_loads(tmp_path):
    torch.set_num_threads(1)
    x, y = _discs(128)
    xv, yv = _discs(16, seed=9)
    cfg = TeacherConfig(epochs=15, batch_size=16, lr=1e-2, patience=0, decoder_width=16, shift_px=2)
    res = pretrain_teacher(x, y, cfg, tmp_path / "t", backbone="tiny", seed=0, val=(xv, yv))
    losses = [h["val_loss"] for h in res.history]
    assert len(losses) == 15 and res.best_val_loss == min(losses)
    # background-only guessing costs the entropy of the label frequencies; the teacher must beat it by far
    freq = np.bincount(yv.ravel(), minlength=4) / yv.size
    prior_ce = -(freq[freq > 0] * np.log(freq[freq > 0])).sum()
    assert res.best_val_loss < 0.5 * prior_ce
    enc = load_encoder(res.checkpoint)
    best_epoch = int(np.argmin(losses)) + 1
    saved = torch.load(res.checkpoint, weights_only=True)
    assert saved["epoch"] == best_epoch and type(enc).__name__ == "TinyCNN"
    # the loaded encoder is the trained one (not a fresh init): its features differ from a seeded fresh model's
    torch.manual_seed(0)
    fresh = create_backbone("tiny", in_chans=1).eval()
    with torch.no_grad():
        t = torch.from_numpy(xv[:4])[:, None]
        assert not torch.allclose(enc.forward_features(t), fresh.forward_features(t))


def test_a_resumed_teacher_ends_where_an_uninterrupted_one_does(tmp_path):
    torch.set_num_threads(1)
    x, y = _discs(24, seed=2)
    xv, yv = _discs(8, seed=3)
    cfg4 = TeacherConfig(epochs=4, batch_size=8, patience=0, decoder_width=8)
    whole = pretrain_teacher(x, y, cfg4, tmp_path / "a", backbone="tiny", seed=5, val=(xv, yv))
    pretrain_teacher(x, y, TeacherConfig(epochs=2, batch_size=8, patience=0, decoder_width=8), tmp_path / "b",
                     backbone="tiny", seed=5, val=(xv, yv))
    resumed = pretrain_teacher(x, y, cfg4, tmp_path / "b", backbone="tiny", seed=5, val=(xv, yv))
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in whole.history]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="different teacher configuration"):
        pretrain_teacher(x, y, TeacherConfig(epochs=4, batch_size=4, patience=0, decoder_width=8), tmp_path / "b",
                         backbone="tiny", seed=5)


def test_bad_inputs_and_settings_are_refused(tmp_path):
    x, y = _discs(4)
    with pytest.raises(InputError, match="must both be"):
        pretrain_teacher(x, y[:, :8], TeacherConfig(epochs=1), tmp_path, backbone="tiny", seed=0)
    with pytest.raises(InputError, match="labels must be in"):
        pretrain_teacher(x, y + 4, TeacherConfig(epochs=1), tmp_path, backbone="tiny", seed=0)
    with pytest.raises(ConfigError, match="teacher.epochs"):
        TeacherConfig(epochs=0)


def test_the_pretext_holds_each_encoder_weight_once():
    model = SegmentationPretext(create_backbone("tiny", in_chans=1), width=8)
    keys = list(model.state_dict())
    assert all(k.startswith(("encoder.", "decoder.")) for k in keys)
    assert len([k for k in keys if k.startswith("encoder.")]) == len(model.encoder.state_dict())


def test_a_teacher_killed_between_its_epoch_record_and_its_checkpoint_resumes_to_the_uninterrupted_run(
        tmp_path, kill_before_checkpoint):
    """Reference: an uninterrupted run; metrics.jsonl holds each epoch once, the weights are the same."""
    torch.set_num_threads(1)
    x, y = _discs(16, seed=2)
    xv, yv = _discs(8, seed=3)
    cfg = TeacherConfig(epochs=3, batch_size=8, patience=0, decoder_width=8)
    whole = pretrain_teacher(x, y, cfg, tmp_path / "a", backbone="tiny", seed=5, val=(xv, yv))
    kill_before_checkpoint(tmp_path / "b" / "last.pt", tmp_path / "b" / "metrics.jsonl", 2)
    with pytest.raises(Exception, match="killed before writing"):
        pretrain_teacher(x, y, cfg, tmp_path / "b", backbone="tiny", seed=5, val=(xv, yv))
    resumed = pretrain_teacher(x, y, cfg, tmp_path / "b", backbone="tiny", seed=5, val=(xv, yv))
    lines = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [r["val_loss"] for r in lines] == [h["val_loss"] for h in whole.history] == [h["val_loss"] for h in resumed.history]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_gives_the_same_teacher_and_another_seed_another(tmp_path):
    torch.set_num_threads(1)
    x, y = _discs(8, seed=2)
    cfg = TeacherConfig(epochs=1, batch_size=4, patience=0, decoder_width=8)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        pretrain_teacher(x, y, cfg, tmp_path / name, backbone="tiny", seed=seed)
    a, b, c = (torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


def test_fewer_decoder_blocks_draw_coarser_logits_at_a_fraction_of_the_cost():
    """1 block: one conv at 1/4 of the input, logits resized to the input; its forward FLOPs (torch's counter) are
    those of the encoder plus that one block, against three blocks at 1/4, 1/2 and the full size."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(model):
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, 64, 64))
        return counter.get_total_flops()

    torch.manual_seed(0)
    three = SegmentationPretext(create_backbone("tiny", in_chans=1), width=64)
    one = SegmentationPretext(create_backbone("tiny", in_chans=1), width=64, blocks=1)
    assert one(torch.zeros(2, 1, 64, 64)).shape == three(torch.zeros(2, 1, 64, 64)).shape == (2, 4, 64, 64)
    convs = [m for m in one.decoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 4]
    with FlopCounterMode(display=False) as counter:
        one.encoder.forward_features(torch.zeros(1, 1, 64, 64))
    enc = counter.get_total_flops()
    c_in = convs[0].in_channels
    block = 2 * 16 * 16 * c_in * 64 * 9  # the block's conv at 16 x 16 px (the encoder's 8 x 8 map upsampled)
    head = 2 * 16 * 16 * 64 * 4  # the 1x1 conv to the 4 labels, at 16 x 16
    assert flops(one) == enc + block + head
    assert flops(three) > 3 * flops(one)


def test_decoder_blocks_are_checked_and_an_older_checkpoint_without_them_resumes(tmp_path):
    with pytest.raises(ConfigError, match="decoder_blocks"):
        TeacherConfig(decoder_blocks=4)
    torch.set_num_threads(1)
    x, y = _discs(24, seed=2)
    two = TeacherConfig(epochs=2, batch_size=8, patience=0, decoder_width=8)
    pretrain_teacher(x, y, two, tmp_path / "run", backbone="tiny", seed=5)
    last = tmp_path / "run" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["decoder_blocks"]  # as written before the setting existed
    torch.save(ckpt, last)
    resumed = pretrain_teacher(x, y, dataclasses.replace(two, epochs=3), tmp_path / "run", backbone="tiny", seed=5)
    assert len(resumed.history) == 3
    with pytest.raises(ConfigError, match="decoder_blocks"):
        pretrain_teacher(x, y, dataclasses.replace(two, epochs=4, decoder_blocks=1), tmp_path / "run",
                         backbone="tiny", seed=5)


def test_channels_last_is_the_same_teacher_up_to_rounding_and_its_encoder_loads(tmp_path):
    """`channels_last`: the model and its inputs in NHWC memory format. The first epoch's losses agree with the
    default layout's to float rounding (the same computation); the saved encoder loads as usual."""
    torch.set_num_threads(1)
    x, y = _discs(32, seed=2)
    xv, yv = _discs(8, seed=3)
    cfg = TeacherConfig(epochs=1, batch_size=8, patience=0, decoder_width=8)
    runs = {cl: pretrain_teacher(x, y, dataclasses.replace(cfg, channels_last=cl), tmp_path / str(cl), backbone="tiny",
                                 seed=5, val=(xv, yv)) for cl in (False, True)}
    nchw, nhwc = (runs[cl].history[0] for cl in (False, True))
    assert nhwc["train_loss"] == pytest.approx(nchw["train_loss"], rel=1e-4)
    assert nhwc["val_loss"] == pytest.approx(nchw["val_loss"], rel=1e-3)
    model = torch.load(tmp_path / "True" / "last.pt", weights_only=True)["model"]
    conv = next(v for k, v in model.items() if v.dim() == 4 and v.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    enc = load_encoder(runs[True].checkpoint)
    with torch.no_grad():
        assert torch.isfinite(enc.forward_features(torch.from_numpy(xv[:2])[:, None])).all()


def test_a_bf16_teacher_computes_close_to_float32_learns_and_keeps_float32_weights(tmp_path):
    """`precision: bf16`: the forward under bf16 autocast, the loss and the weights in float32. Its first epoch's
    loss is float32's to bf16 rounding (far looser than channels-last's); it learns the labels as well."""
    torch.set_num_threads(1)
    x, y = _discs(64, seed=2)
    xv, yv = _discs(16, seed=3)
    cfg = TeacherConfig(epochs=10, batch_size=16, lr=1e-2, patience=0, decoder_width=16, shift_px=2)
    runs = {p: pretrain_teacher(x, y, dataclasses.replace(cfg, precision=p), tmp_path / p, backbone="tiny", seed=5,
                                val=(xv, yv)) for p in ("fp32", "bf16")}
    first = {p: runs[p].history[0] for p in runs}
    assert first["bf16"]["train_loss"] == pytest.approx(first["fp32"]["train_loss"], rel=3e-2)
    assert first["bf16"]["train_loss"] != first["fp32"]["train_loss"]  # it did compute in bf16
    freq = np.bincount(yv.ravel(), minlength=4) / yv.size
    prior_ce = -(freq[freq > 0] * np.log(freq[freq > 0])).sum()
    # both learn (well under guessing from the label frequencies), bf16 as far as float32
    assert runs["fp32"].best_val_loss < 0.7 * prior_ce
    assert runs["bf16"].best_val_loss < 1.1 * runs["fp32"].best_val_loss
    saved = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)
    # the layout left to the precision: channels-last with bf16, the default layout with float32
    assert saved["config"]["precision"] == "bf16" and saved["config"]["channels_last"] is True
    assert torch.load(tmp_path / "fp32" / "last.pt", weights_only=True)["config"]["channels_last"] is False
    assert all(v.dtype == torch.float32 for v in saved["model"].values() if v.is_floating_point())
    with pytest.raises(ConfigError, match="teacher.precision"):
        TeacherConfig(precision="fp16")


def test_auto_precision_times_the_teacher_step_and_a_resumed_run_keeps_its_choice(tmp_path, monkeypatch):
    from cmrprior.utils import cpu_precision

    torch.set_num_threads(1)
    x, y = _discs(16, seed=2)
    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda *a, **k: frozenset({"avx2", "avx512_bf16"}))
    real = cpu_precision.choose_cpu_precision
    seen = []

    def prefer_bf16(step, **kw):  # the real steps are timed; the choice is made bf16 whatever the timings
        return real(lambda p: (seen.append(p), step(p))[1], margin=0.0, **kw)

    monkeypatch.setattr(cpu_precision, "choose_cpu_precision", prefer_bf16)
    cfg = TeacherConfig(epochs=1, batch_size=8, patience=0, decoder_width=8, precision="auto")
    chose = pretrain_teacher(x, y, cfg, tmp_path / "auto", backbone="tiny", seed=5)
    pretrain_teacher(x, y, dataclasses.replace(cfg, precision="bf16"), tmp_path / "bf16", backbone="tiny", seed=5)
    assert seen == ["fp32", "bf16"] + ["fp32", "bf16"] * 3
    assert (chose.precision, chose.channels_last) == ("bf16", True)  # the result says what "auto" became
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("auto", "bf16"))
    assert a["config"]["precision"] == "bf16"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # the timing left the run alone
    monkeypatch.setattr(cpu_precision, "choose_cpu_precision", lambda *a, **k: pytest.fail("timed again on resume"))
    res = pretrain_teacher(x, y, dataclasses.replace(cfg, epochs=2), tmp_path / "auto", backbone="tiny", seed=5)
    assert len(res.history) == 2 and res.precision == "bf16"
