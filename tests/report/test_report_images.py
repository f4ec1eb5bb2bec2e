"""Embedded images are re-encoded smaller and still look like the original."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image

from cmrprior.report.images import compact_image


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def test_plot_becomes_a_smaller_palette_png_with_the_same_pixels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.linspace(0, 1, 50), np.linspace(0, 1, 50) ** 2, label="x^2")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    original = buf.getvalue()
    small, mime = compact_image(original)
    assert mime == "image/png" and len(small) < len(original)
    a, b = _decode(original), _decode(small)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0  # grey levels of 255


def test_image_like_figure_becomes_a_jpeg_no_wider_than_asked():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :600]
    grey = (127 + 100 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 8, xx.shape)).clip(0, 255)
    original = _png(np.stack([grey, grey * 0.8, 255 - grey], axis=-1).astype(np.uint8))
    small, mime = compact_image(original, photo=True, max_px=300)
    img = PIL.Image.open(io.BytesIO(small))
    assert mime == "image/jpeg" and img.format == "JPEG" and img.size == (300, 150)
    assert len(small) < len(original) / 4
    ref = np.asarray(PIL.Image.open(io.BytesIO(original)).convert("RGB").resize((300, 150)), dtype=np.float64)
    assert np.abs(_decode(small) - ref).mean() < 8.0


def test_not_an_image_is_kept_as_it_is():
    assert compact_image(b"not a png") == (b"not a png", "image/png")
