"""Render one phantom patient: ED/ES short-axis stacks `(Z, H, W)` and their ACDC masks.

Order of operations per patient (all randomness from three independent seeded streams: anatomy, noise,
cue, so switching the cue on or off changes nothing else):
1. physiology (class targets) -> acquisition (pixel size, matrix, slices, rotation, heart position);
2. heart geometry with ED/ES volumes matched on the pixel grid -> masks; the masks are measured with
   `cmrprior.anatomy.measure.measure_patient` and the patient is re-drawn if its class definition fails;
3. extra-cardiac tissues, heart tissues painted with partial volume, a Gaussian point-spread function
   (sigma 0.35-0.75 px, the acquisition's limited resolution), tissue texture, contrast (gamma),
   smooth multiplicative coil bias field, optional spurious cue, Rician noise (magnitude of complex
   Gaussian), fixed-gain quantisation to int16.

Spurious cue (off by default): with probability `cue_probability` a patient carries a "burned-in marker"
near the top edge of every slice: a bar textured with a class-specific pattern (stripes or checks), whose
width and grey level grow with the class (`cue_marker`), so that it survives the 99th-percentile intensity
window of preparation and the resizing, and is seen by global-average-pooled networks. The heart never
reaches the top 12 % of rows where the bar lies, so the cue changes only pixels outside the heart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cmrprior.anatomy.measure import AnatomyMeasures, measure_patient
from cmrprior.data.phantom.body import paint, paint_atria, render_body, sample_body
from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.data.phantom.heart import (
    Grid,
    PhaseGeometry,
    build_ed,
    build_es,
    heart_extent_estimate,
    heart_labels,
    interpolate_phase,
    lv_fields,
    lv_lengths,
    papillary_field,
    rv_fields,
)
from cmrprior.data.phantom.physiology import Physiology, sample_physiology, violates_definition

CUE_TOP_FRACTION = 0.12
CUE_ROWS = (0.01, 0.11)  # the marker's first and last row, fractions of the height
CUE_MAX_WIDTH = 0.9  # the widest marker (last class), fraction of the width
CUE_LEVELS = (0.5, 0.8)  # level of the marker's bright stripes, first and last class, x blood
CUE_PERIOD = 1 / 16  # the pattern's period, fraction of the width (a few pixels after any resizing)
CUE_PATTERNS = ("vertical", "horizontal", "checkerboard", "diagonal", "antidiagonal")  # by class index


@dataclass(frozen=True, eq=False)
class RenderedPatient:
    """One patient. Images int16 `(Z, H, W)`, masks uint8 `(Z, H, W)`, spacing `(z, y, x)` mm."""

    label: str
    ed_image: np.ndarray
    es_image: np.ndarray
    ed_mask: np.ndarray
    es_mask: np.ndarray
    spacing: tuple[float, float, float]
    height_cm: float
    weight_kg: float
    es_frame: int
    n_frames: int
    cue: bool
    physiology: Physiology
    measures: AnatomyMeasures
    attempts: int
    cine_images: np.ndarray | None = None  # int16 (T, Z, H, W), frame t + 1 at index t
    cine_masks: np.ndarray | None = None  # uint8 (T, Z, H, W), exact masks of every frame
    cine_lv_ml: tuple[float, ...] | None = None  # true LV cavity volume per frame (ml)


@dataclass(frozen=True)
class _Acquisition:
    pixel: float
    shape: tuple[int, int]
    centre: tuple[float, float]  # LV centre (row, col), float pixels
    psi: float
    s: np.ndarray  # slice depths (mm below the ED base)
    dz: float
    tilt: tuple[float, float]


def _acquisition(phys: Physiology, cfg: PhantomConfig, rng: np.random.Generator) -> _Acquisition:
    pixel = float(rng.uniform(*cfg.pixel_spacing_mm))
    extent = heart_extent_estimate(phys)
    need = 2 * (extent + 12.0) / pixel
    h = int(rng.integers(cfg.image_size[0] // 2, cfg.image_size[1] // 2 + 1)) * 2
    w = int(rng.integers(cfg.image_size[0] // 2, cfg.image_size[1] // 2 + 1)) * 2
    h = max(h, int(math.ceil(need / (1 - CUE_TOP_FRACTION) / 2)) * 2)
    w = max(w, int(math.ceil(need / 2)) * 2)
    # LV centre: image centre + jitter, kept so that the heart stays clear of the borders and the cue band
    jit = cfg.position_jitter_mm / pixel
    half = extent / pixel + 3
    row = float(np.clip(h / 2 + rng.uniform(-jit, jit), CUE_TOP_FRACTION * h + half, h - 1 - half))
    col = float(np.clip(w / 2 + rng.uniform(-jit, jit), half, w - 1 - half))
    psi = math.pi / 2 + math.radians(float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)))
    _, _, l_epi = lv_lengths(phys)
    n = int(rng.integers(cfg.n_slices[0], cfg.n_slices[1] + 1))
    dz = float(np.clip((l_epi + 4.0) / (n - 0.8), *cfg.slice_spacing_mm))
    s0 = float(rng.uniform(-0.35, 0.15)) * dz
    n = max(n, int(math.ceil((l_epi + 3.0 - s0) / dz)) + 1)
    dz = round(dz, 2)
    tilt = (float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.12, 0.12)))
    return _Acquisition(pixel, (h, w), (row, col), psi, s0 + dz * np.arange(n), dz, tilt)


def _canonical_coords(acq: _Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (u, v) mm of every pixel centre `(H, W)`: rotation psi maps anterior towards the image left."""
    h, w = acq.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    x = (xx - acq.centre[1]) * acq.pixel
    y = (yy - acq.centre[0]) * acq.pixel
    c, s = math.cos(acq.psi), math.sin(acq.psi)
    return c * x - s * y, -s * x - c * y


def _paint_heart(img: np.ndarray, geo: PhaseGeometry, grid: Grid, it: dict[str, float], pixel: float) -> None:
    """Paint pericardial fat, RV free wall and cavity, LV myocardium, cavity and papillary muscles."""
    d_endo, d_epi = lv_fields(geo, grid)
    d_rv, d_wall = rv_fields(geo, grid)
    d_fat = np.minimum(d_epi, d_wall) - grid.angular(geo.fat)
    paint(img, d_fat, it["fat"], pixel)
    paint(img, d_wall, it["myocardium"], pixel)
    paint(img, d_rv, it["blood"], pixel)
    paint(img, d_epi, it["myocardium"], pixel)
    paint(img, d_endo, it["blood"], pixel)
    paint(img, papillary_field(geo, grid, d_endo), it["myocardium"], pixel)


def _crop(acq: _Acquisition, radius_mm: float) -> tuple[slice, slice]:
    """Rows and columns within `radius_mm` of the LV centre (the heart never leaves this box)."""
    h, w = acq.shape
    r = radius_mm / acq.pixel
    rows = slice(max(0, int(acq.centre[0] - r)), min(h, int(math.ceil(acq.centre[0] + r)) + 1))
    cols = slice(max(0, int(acq.centre[1] - r)), min(w, int(math.ceil(acq.centre[1] + r)) + 1))
    return rows, cols


def rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise (std `sigma` per channel): Rician distributed."""
    n1 = rng.standard_normal(image.shape, dtype=np.float32)
    n2 = rng.standard_normal(image.shape, dtype=np.float32)
    s = np.float32(sigma)
    return np.hypot(image + s * n1, s * n2)


def _bias_field(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    c = rng.normal(0.0, strength, size=5)
    field = np.exp(c[0] * x + c[1] * y + 0.5 * c[2] * x * y + 0.5 * c[3] * x**2 + 0.5 * c[4] * y**2)
    return field.astype(np.float32)


def _draw_anatomy(label: str, cfg: PhantomConfig, rng: np.random.Generator):
    """Physiology, acquisition and heart geometry whose measured masks satisfy the class definition."""
    for attempt in range(1, cfg.max_attempts + 1):
        phys = sample_physiology(label, rng)
        acq = _acquisition(phys, cfg, rng)
        u, v = _canonical_coords(acq)
        rows, cols = _crop(acq, heart_extent_estimate(phys))
        uc, vc = u[rows, cols], v[rows, cols]
        du = uc[None] - acq.tilt[0] * acq.s[:, None, None]
        dv = vc[None] - acq.tilt[1] * acq.s[:, None, None]
        grid = Grid.crop(du, dv, acq.s, voxel_mm3=acq.pixel**2 * acq.dz)
        ed = build_ed(phys, grid, rng=rng)
        es = build_es(phys, ed, grid)
        crop_ed, crop_es = heart_labels(ed, grid), heart_labels(es, grid)
        touches = any(m[:, [0, -1], :].any() or m[:, :, [0, -1]].any() for m in (crop_ed, crop_es))
        z = acq.s.size
        ed_mask = np.zeros((z,) + acq.shape, dtype=np.uint8)
        es_mask = np.zeros_like(ed_mask)
        ed_mask[:, rows, cols] = crop_ed
        es_mask[:, rows, cols] = crop_es
        spacing = (acq.dz, acq.pixel, acq.pixel)
        m = measure_patient(ed_mask, es_mask, spacing, phys.height_cm, phys.weight_kg)
        in_cue_band = ed_mask[:, : int(math.ceil(CUE_TOP_FRACTION * acq.shape[0]))].any()
        enough = (ed_mask == 3).any(axis=(1, 2)).sum() >= 3
        if violates_definition(label, m) is None and not touches and not in_cue_band and enough:
            return phys, acq, u, v, (rows, cols), grid, ed, es, ed_mask, es_mask, m, attempt
    raise RuntimeError(f"phantom: could not draw a {label} patient within {cfg.max_attempts} attempts")


def cue_marker(shape: tuple[int, int], class_index: int, n_classes: int, blood: float) -> tuple[np.ndarray, np.ndarray]:
    """(pixels bool `(H, W)`, their levels float32 `(n,)`) of the class marker of a `shape` slice; `blood` the
    blood intensity.

    The class k is coded in what survives intensity windowing, resizing and global average pooling: a texture
    no anatomy has, whose pattern depends on the class (CUE_PATTERNS[k mod 5]: vertical stripes, horizontal
    stripes, checkerboard, two diagonals; period CUE_PERIOD of the width), bright at CUE_LEVELS interpolated
    x blood (below the 99th-percentile clip) alternating with 0, and whose width grows with the class
    ((k + 1) / n_classes x CUE_MAX_WIDTH x W). Centred; in rows CUE_ROWS, inside the top CUE_TOP_FRACTION of
    rows, where the heart never is.
    """
    h, w = shape
    rows = slice(int(CUE_ROWS[0] * h), max(int(CUE_ROWS[0] * h) + 2, int(round(CUE_ROWS[1] * h))))
    width = max(2, int(round(CUE_MAX_WIDTH * w * (class_index + 1) / n_classes)))
    start = (w - width) // 2
    pixels = np.zeros(shape, dtype=bool)
    pixels[rows, start : start + width] = True
    level = (CUE_LEVELS[0] + (CUE_LEVELS[1] - CUE_LEVELS[0]) * class_index / max(1, n_classes - 1)) * blood
    half = max(1.0, CUE_PERIOD * w / 2)
    yy, xx = np.mgrid[: rows.stop - rows.start, :width]
    phase = {"vertical": xx // half, "horizontal": yy // half, "checkerboard": xx // half + yy // half,
             "diagonal": (xx + yy) // half, "antidiagonal": (xx - yy + h) // half}
    bright = phase[CUE_PATTERNS[class_index % len(CUE_PATTERNS)]] % 2 == 0
    return pixels, np.where(bright, level, 0.0).astype(np.float32).ravel()


def render_patient(
    label: str,
    class_index: int,
    n_classes: int,
    config: PhantomConfig,
    seed: np.random.SeedSequence,
    spurious_cue: bool = False,
    cine: bool = False,
) -> RenderedPatient:
    """Render one patient of class `label`. `seed` spawns the anatomy, noise and cue streams.

    With `cine`, every frame 1..n_frames is rendered too (`RenderedPatient.cine_images`), the geometry moving
    between ED and ES along `contraction`; the ED and ES images are identical to those without `cine`.
    """
    rng_anat, rng_noise, rng_cue = (np.random.default_rng(s) for s in seed.spawn(3))
    phys, acq, u, v, (rows, cols), grid, ed, es, ed_mask, es_mask, m, attempts = _draw_anatomy(
        label, config, rng_anat
    )
    heart = (ed_mask > 0).any(axis=0)
    extent = float(np.max(np.hypot(u[heart], v[heart]))) + 6.0
    body = sample_body(rng_anat, extent)
    it = body.intensity
    z = acq.s.size
    texture = np.stack([ndimage.gaussian_filter(rng_noise.standard_normal(acq.shape, dtype=np.float32), 2.5)
                        for _ in range(z)])
    texture /= texture.std() + 1e-12
    gamma = float(rng_anat.uniform(0.85, 1.2))
    psf_px = float(rng_anat.uniform(0.35, 0.75))
    bias = _bias_field(acq.shape, config.bias_strength, rng_anat)
    gain = float(rng_anat.uniform(*config.gain)) / it["blood"]
    sigma = float(rng_anat.uniform(*config.noise)) * it["blood"]
    es_frame = int(rng_anat.integers(9, 16))
    n_frames = int(rng_anat.integers(max(25, es_frame + 6), 36))

    background = render_body(body, u.astype(np.float32), v.astype(np.float32), np.clip(acq.s / ed.l_epi, 0, 1),
                             acq.pixel)
    cue_img, cue_levels = None, None
    has_cue = bool(spurious_cue) and rng_cue.random() < config.cue_probability
    if has_cue:
        cue_img, cue_levels = cue_marker(acq.shape, class_index, n_classes, it["blood"])

    def frame_image(geo: PhaseGeometry, rng: np.random.Generator) -> np.ndarray:
        img = background.astype(np.float64)
        crop = img[:, rows, cols]  # a view: painting it paints the image
        for k in range(z):
            paint_atria(crop[k], grid.du[k], grid.dv[k], geo.base_s - acq.s[k], float(np.mean(ed.endo)),
                        ed.rv_direction, it, acq.pixel)
        _paint_heart(crop, geo, grid, it, acq.pixel)
        img = ndimage.gaussian_filter(img.astype(np.float32), sigma=(0.0, psf_px, psf_px))
        img *= 1 + 0.05 * texture
        img = np.clip(img, 0, None) ** np.float32(gamma)
        img *= bias[None]
        if cue_img is not None:
            img[:, cue_img] = cue_levels  # only the marker's pixels change
        img = rician_noise(img, sigma, rng)
        return np.clip(np.rint(img * gain), 0, 32767).astype(np.int16)

    images = [frame_image(ed, rng_noise), frame_image(es, rng_noise)]
    cine_images, cine_masks, cine_lv = None, None, None
    if cine:
        # intermediate frames draw their noise from a fourth stream: ED/ES images are the same with or without
        rng_cine = np.random.default_rng(seed.spawn(1)[0])
        cine_images, cine_masks = _render_cine(ed, es, grid, (rows, cols), ed_mask, es_frame, n_frames, images,
                                               frame_image, rng_cine)
        voxel_ml = acq.pixel**2 * acq.dz / 1000.0
        cine_lv = tuple(float(np.count_nonzero(m == 3)) * voxel_ml for m in cine_masks)

    return RenderedPatient(
        label=label, ed_image=images[0], es_image=images[1], ed_mask=ed_mask, es_mask=es_mask,
        spacing=(acq.dz, acq.pixel, acq.pixel), height_cm=phys.height_cm, weight_kg=phys.weight_kg,
        es_frame=es_frame, n_frames=n_frames, cue=has_cue, physiology=phys, measures=m, attempts=attempts,
        cine_images=cine_images, cine_masks=cine_masks, cine_lv_ml=cine_lv,
    )


# Diastole: rapid early filling (this share of the stroke volume, exponential with this time constant as a
# fraction of diastole), diastasis, then the atrial contraction over the last frames before the next R wave.
RAPID_FILLING = 0.7
RAPID_FILLING_TAU = 0.12
ATRIAL_KICK_FRAMES = 2.0


def contraction(n_frames: int, es_frame: int) -> np.ndarray:
    """Fraction of the ED-to-ES motion per frame `(T,)`: 0 at frame 1 (ED, the R wave), 1 at `es_frame` (ES).

    Systole ejects at a constant rate and stops at ES; diastole starts with rapid filling, plateaus
    (diastasis) and ends with the atrial kick, returning to 0 at frame T + 1 (the next ED). Both extremes
    are therefore sharp, as in a real heart: every other frame is at least 1 / (es_frame - 1) of the motion
    away from them, so ED and ES are the unique largest and smallest LV volumes by a margin that a
    segmenter's frame-to-frame noise does not erase (a raised cosine left neighbours within ~1 %).
    """
    t = np.arange(1, n_frames + 1, dtype=np.float64)
    systole = (t - 1) / (es_frame - 1)
    y = (t - es_frame) / (n_frames + 1 - es_frame)  # 0 at ES, 1 at the next ED
    rapid = RAPID_FILLING * (1 - np.exp(-y / RAPID_FILLING_TAU)) / (1 - math.exp(-1 / RAPID_FILLING_TAU))
    kick_start = 1 - ATRIAL_KICK_FRAMES / (n_frames + 1 - es_frame)
    kick = (1 - RAPID_FILLING) * np.clip((y - kick_start) / (1 - kick_start), 0.0, 1.0)
    return np.where(t <= es_frame, systole, 1 - rapid - kick)


def _render_cine(ed: PhaseGeometry, es: PhaseGeometry, grid: Grid, window: tuple[slice, slice],
                 ed_mask: np.ndarray, es_frame: int, n_frames: int, ed_es: list[np.ndarray], frame_image,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All frames int16 `(T, Z, H, W)` and their exact masks uint8 `(T, Z, H, W)`; frame 1 and `es_frame`
    are the ED/ES images."""
    frames, masks = [], []
    for t, f in enumerate(contraction(n_frames, es_frame), start=1):
        geo = ed if t == 1 else es if t == es_frame else interpolate_phase(ed, es, float(f))
        mask = np.zeros_like(ed_mask)
        mask[:, window[0], window[1]] = heart_labels(geo, grid)
        masks.append(mask)
        frames.append(ed_es[0] if t == 1 else ed_es[1] if t == es_frame else frame_image(geo, rng))
    return np.stack(frames), np.stack(masks)
