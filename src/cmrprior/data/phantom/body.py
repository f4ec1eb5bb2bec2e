"""Extra-cardiac anatomy of the phantom and the painter that composes tissues with partial volume.

Tissues are drawn back to front as signed distance fields (mm, negative inside) in the canonical
short-axis frame (u = patient's left, v = anterior, origin at the basal LV centre): body outline with
subcutaneous fat, chest-wall and paraspinal muscle, the thoracic cavity (mediastinal tissue), both lungs
(dark), the liver (mid-grey, inferior-right, growing towards the apex as the oblique plane descends), the
stomach on apical slices, the spine (vertebral body with cortical rim and marrow, spinal canal with CSF),
the descending aorta (bright, left-anterior of the spine) and, above the ventricular base, the atria.
Partial volume: a tissue covers a pixel by clip(0.5 - d / pixel, 0, 1) (a one-pixel linear ramp across
the edge), i.e. an anti-aliased edge; the ground-truth mask is the pixel-centre test d < 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# bSSFP-like base intensities (blood and fat bright, myocardium and muscle dark, lung black)
TISSUES: dict[str, float] = {
    "air": 0.0,
    "fat": 0.92,
    "muscle": 0.24,
    "mediastinum": 0.42,
    "lung": 0.05,
    "liver": 0.34,
    "stomach": 0.52,
    "bone": 0.12,
    "marrow": 0.5,
    "csf": 0.75,
    "blood": 0.82,
    "aorta": 0.88,
    "myocardium": 0.22,
}


@dataclass(frozen=True)
class BodyParams:
    """Per-patient extra-cardiac layout (mm, canonical frame) and tissue intensities."""

    centre: tuple[float, float]
    semi_axes: tuple[float, float]
    fat_mm: float
    muscle_mm: float
    lung_r: tuple[float, float, float, float]  # right lung centre u, v, semi-axes a, b
    lung_l: tuple[float, float, float, float]
    liver: tuple[float, float, float, float]
    spine: tuple[float, float, float]  # centre u, v, vertebral body radius
    aorta: tuple[float, float, float]  # centre u, v, radius
    intensity: dict[str, float]


def sample_body(rng: np.random.Generator, heart_extent_mm: float) -> BodyParams:
    """Draw a thorax that holds a heart reaching `heart_extent_mm` from the LV centre."""
    fat = float(rng.uniform(6, 22))
    muscle = float(rng.uniform(7, 14))
    b = max(float(rng.uniform(110, 135)), heart_extent_mm + 70)
    a = float(rng.uniform(1.25, 1.5)) * b
    anterior_gap = float(rng.uniform(4, 14))
    # the anterior inner chest wall sits just in front of the heart
    cv = heart_extent_mm + anterior_gap + fat + muscle - b
    cu = float(rng.uniform(-55, -30))
    post = cv - b + fat + muscle  # inner posterior wall
    spine = (cu + float(rng.uniform(-8, 8)), post + float(rng.uniform(28, 36)), float(rng.uniform(16, 21)))
    aorta_r = float(rng.uniform(9, 13))
    aorta = (spine[0] + float(rng.uniform(18, 28)), spine[1] + spine[2] + aorta_r + float(rng.uniform(0, 6)), aorta_r)
    lung_b = 0.85 * b
    lung_r = (cu - 0.42 * a, cv + 0.05 * b, 0.5 * a, lung_b)
    lung_l = (float(heart_extent_mm * 0.35 + 0.3 * a), cv + 0.05 * b, 0.5 * a, lung_b)
    liver = (cu - float(rng.uniform(30, 60)), cv - float(rng.uniform(0.5, 0.8)) * b, 0.55 * a, 0.45 * b)
    jitter = {k: v * float(1 + rng.normal(0, 0.07)) for k, v in TISSUES.items()}
    jitter["air"] = 0.0
    jitter["blood"] = TISSUES["blood"] * float(rng.uniform(0.85, 1.15))
    return BodyParams(
        centre=(cu, cv), semi_axes=(a, b), fat_mm=fat, muscle_mm=muscle, lung_r=lung_r, lung_l=lung_l,
        liver=liver, spine=spine, aorta=aorta, intensity=jitter,
    )


def ellipse_sdf(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float) -> np.ndarray:
    """First-order signed distance (mm) to an axis-aligned ellipse (exact sign, approximate magnitude)."""
    p, q = u - cu, v - cv
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.sqrt((p / a) ** 2 + (q / b) ** 2)
        grad = np.sqrt((p / a**2) ** 2 + (q / b**2) ** 2) / k
        d = (k - 1) / grad
    return np.where(k > 1e-9, d, -min(a, b)).astype(u.dtype, copy=False)


def coverage(d: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Partial-volume fraction of a pixel covered by the shape with signed distance `d` (mm)."""
    return np.clip(0.5 - d / pixel_mm, 0.0, 1.0)


def paint(image: np.ndarray, d: np.ndarray, value: float | np.ndarray, pixel_mm: float) -> None:
    """Composite a tissue over `image` in place (image is the caller's own buffer)."""
    alpha = coverage(d, pixel_mm)
    image *= 1 - alpha
    image += alpha * np.asarray(value, dtype=image.dtype)


def render_body(
    body: BodyParams, u: np.ndarray, v: np.ndarray, depths: np.ndarray, pixel_mm: float
) -> np.ndarray:
    """Extra-cardiac tissues `(Z, H, W)` (dtype of `u`) for slices at relative `depths` in [0, 1] (base to apex).

    Shapes that do not change along the stack (body wall, spine, aorta) are computed once.
    """
    it = body.intensity
    cu, cv = body.centre
    a, b = body.semi_axes
    wall = body.fat_mm + body.muscle_mm
    d_cavity = ellipse_sdf(u, v, cu, cv, a - wall, b - wall)
    front = [
        (coverage(ellipse_sdf(u, v, cu, cv, a, b), pixel_mm), it["fat"]),
        (coverage(ellipse_sdf(u, v, cu, cv, a - body.fat_mm, b - body.fat_mm), pixel_mm), it["muscle"]),
        (coverage(d_cavity, pixel_mm), it["mediastinum"]),
    ]
    su, sv, sr = body.spine
    au, av, ar = body.aorta
    back = [
        (coverage(ellipse_sdf(u, v, su, sv - sr - 10, 13, 10), pixel_mm), it["bone"]),  # posterior arch
        (coverage(ellipse_sdf(u, v, su, sv - sr - 10, 6.5, 6.5), pixel_mm), it["csf"]),  # spinal canal
        (coverage(ellipse_sdf(u, v, su, sv, sr, sr * 0.9), pixel_mm), it["bone"]),  # cortical rim
        (coverage(ellipse_sdf(u, v, su, sv, sr - 2.2, sr * 0.9 - 2.2), pixel_mm), it["marrow"]),
        (coverage(ellipse_sdf(u, v, au, av, ar + 1.5, ar + 1.5), pixel_mm), it["muscle"]),  # aortic wall
        (coverage(ellipse_sdf(u, v, au, av, ar, ar), pixel_mm), it["aorta"]),
    ]
    base = np.zeros(u.shape, dtype=u.dtype)
    for alpha, value in front:
        base = base * (1 - alpha) + alpha * value
    out = np.empty((len(depths),) + u.shape, dtype=u.dtype)
    for k, depth in enumerate(depths):
        img = base.copy()
        shrink = 1.0 - 0.35 * depth
        for lu, lv, la, lb in (body.lung_r, body.lung_l):
            d_lung = np.maximum(ellipse_sdf(u, v, lu, lv, la * shrink, lb * shrink), d_cavity + 2.0)
            paint(img, d_lung, it["lung"], pixel_mm)
        hu, hv, ha, hb = body.liver
        grow = 0.55 + 0.7 * depth
        d_liver = np.maximum(ellipse_sdf(u, v, hu, hv + 25 * depth, ha * grow, hb * grow), d_cavity)
        paint(img, d_liver, it["liver"], pixel_mm)
        if depth > 0.45:
            d_stomach = np.maximum(ellipse_sdf(u, v, cu + 0.55 * a, cv - 0.55 * b, 45 * depth, 30 * depth), d_cavity)
            paint(img, d_stomach, it["stomach"], pixel_mm)
        for alpha, value in back:
            img *= 1 - alpha
            img += alpha * value
        out[k] = img
    return out


def paint_atria(img: np.ndarray, du: np.ndarray, dv: np.ndarray, above_base_mm: float, radius: float,
                rv_direction: float, it: dict[str, float], pixel_mm: float) -> None:
    """Left and right atria (bright blood with a thin wall) on slices `above_base_mm` > 0 above the base."""
    if above_base_mm <= 0:
        return
    shrink = max(0.0, 1.0 - above_base_mm / 45.0)
    if shrink <= 0:
        return
    la = radius * 0.9 * shrink
    lu, lv = 0.0, -0.45 * radius
    ru, rv = 1.3 * radius * math.cos(rv_direction), 1.3 * radius * math.sin(rv_direction)
    for cu, cv, r in ((lu, lv, la), (ru, rv, 0.8 * la)):
        if r < 2:
            continue
        paint(img, ellipse_sdf(du, dv, cu, cv, r + 2.0, r + 2.0), it["myocardium"], pixel_mm)
        paint(img, ellipse_sdf(du, dv, cu, cv, r, r), it["blood"], pixel_mm)
