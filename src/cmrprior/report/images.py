"""Images of the report made small enough to mail: re-encoded before they are embedded.

A figure is stored in the run folder at full quality (matplotlib PNG); the report embeds a smaller copy:
at most `max_px` pixels wide (about twice the width it is shown at, so it stays sharp on high-density
screens), plots and tables of numbers as palette PNGs (few colours: exact edges, small files), image-like
figures (MR images, saliency heat maps, mask outlines) as JPEG. The smaller of that and the original is
kept. Without Pillow the original is embedded unchanged.
"""

from __future__ import annotations

import io

JPEG_QUALITY = 75
PALETTE_COLOURS = 128


def compact_image(data: bytes, *, photo: bool = False, max_px: int | None = None) -> tuple[bytes, str]:
    """(bytes, MIME type) of `data` (a PNG) re-encoded for embedding; see the module docstring."""
    try:
        from PIL import Image
    except ImportError:
        return data, "image/png"
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError):
        return data, "image/png"  # not an image Pillow reads: embedded as it is (the render check shows it)
    img = img.convert("RGB")  # matplotlib's alpha is opaque white; JPEG and palettes need no alpha
    if max_px and img.width > max_px:
        img = img.resize((max_px, max(1, round(img.height * max_px / img.width))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if photo:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        mime = "image/jpeg"
    else:
        img.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
        mime = "image/png"
    out = buf.getvalue()
    return (out, mime) if len(out) < len(data) else (data, "image/png")
