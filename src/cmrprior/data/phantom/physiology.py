"""Per-patient physiology of the phantom: body size, volumes, ejection fractions, wall thickness per class.

The five classes follow the ACDC definitions (Bernard et al., IEEE TMI 2018), applied at ED and ES:

* NOR:  normal volumes (LV EDV index < 100 ml/m^2), LVEF > 50 %, ED wall thickness < 12 mm.
* DCM:  LV EDV index > 100 ml/m^2 and LVEF < 40 % (thin walls, reduced long-axis shortening).
* HCM:  myocardium thicker than 15 mm (septal bump, sometimes concentric), normal or high LVEF (> 50 %).
* MINF: LVEF < 40 % with a thinned (35-55 % of the remote wall, >= 2.5 mm), akinetic sector
  (anterior, inferior or lateral, 60-120 degrees wide).
* RV:   RV EDV index > 110 ml/m^2 and/or RVEF < 40 %.

Targets are drawn from ranges that overlap between classes (MINF and DCM share low EF and dilation, RV and
NOR share LV values, HCM and NOR share EF) so that no single measurement separates them; the generator
re-draws a patient whose written masks break its class definition (`violates_definition`).
Angles are in the canonical short-axis frame: 0 = patient's left (lateral wall), 90 deg = anterior,
180 deg = patient's right (septum / RV side), 270 deg = inferior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cmrprior.anatomy.measure import AnatomyMeasures

N_ANGLES = 360
ANGLES = np.linspace(0.0, 2.0 * np.pi, N_ANGLES, endpoint=False)

# (low, high) uniform ranges per class
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "NOR": dict(lv_edvi=(56, 94), lvef=(54, 72), wall=(6.0, 8.8), rv_edvi=(62, 100), rvef=(45, 66), ls=(0.10, 0.17)),
    "DCM": dict(lv_edvi=(106, 185), lvef=(8, 36), wall=(5.0, 8.0), rv_edvi=(62, 125), rvef=(25, 60), ls=(0.03, 0.09)),
    "HCM": dict(lv_edvi=(45, 90), lvef=(58, 82), wall=(8.0, 11.5), rv_edvi=(52, 95), rvef=(50, 70), ls=(0.06, 0.13)),
    "MINF": dict(lv_edvi=(66, 135), lvef=(16, 37), wall=(7.0, 10.0), rv_edvi=(56, 100), rvef=(38, 62), ls=(0.05, 0.11)),
    "RV": dict(lv_edvi=(50, 94), lvef=(51, 68), wall=(6.0, 8.8), rv_edvi=(90, 150), rvef=(18, 50), ls=(0.08, 0.15)),
}
KNOWN_CLASSES: tuple[str, ...] = tuple(_RANGES)


@dataclass(frozen=True, eq=False)
class Physiology:
    """Targets for one patient. Volumes in ml, EF in %, lengths in mm, angles in radians.

    `wall_ed` is the ED wall thickness per angle (N_ANGLES,), `kinesis` the relative endocardial motion
    per angle (1 normal, 0 akinetic), `shape` the endocardial radius profile (mean 1).
    """

    label: str
    height_cm: float
    weight_kg: float
    lv_edv: float
    lvef: float
    rv_edv: float
    rvef: float
    wall_ed: np.ndarray
    kinesis: np.ndarray
    shape: np.ndarray
    long_shortening: float
    length_ratio: float  # LV endocardial long axis / basal radius
    rv_direction: float  # centre of the RV crescent (radians)
    rv_length_ratio: float  # RV long axis / LV endocardial long axis
    rv_half_widths: tuple[float, float]  # angular half-width of the crescent on either side (radians)
    rv_power: float  # crescent profile cos(...)^power: < 1 fuller, 1 rounder
    rv_wall_mm: float
    infarct_centre: float | None = None

    @property
    def bsa_m2(self) -> float:
        return math.sqrt(self.height_cm * self.weight_kg / 3600.0)

    def summary(self) -> dict[str, object]:
        return {
            "label": self.label,
            "height_cm": self.height_cm,
            "weight_kg": self.weight_kg,
            "target_lv_edv_ml": round(self.lv_edv, 2),
            "target_lvef": round(self.lvef, 2),
            "target_rv_edv_ml": round(self.rv_edv, 2),
            "target_rvef": round(self.rvef, 2),
            "max_wall_ed_mm": round(float(self.wall_ed.max()), 2),
            "min_wall_ed_mm": round(float(self.wall_ed.min()), 2),
            "long_shortening": round(self.long_shortening, 4),
            "infarct_centre_deg": None if self.infarct_centre is None else round(math.degrees(self.infarct_centre), 1),
        }


def _sector(centre: float, half_width: float, taper: float) -> np.ndarray:
    """1 inside an angular sector, 0 outside, raised-cosine edges of width `taper` (radians)."""
    d = np.abs((ANGLES - centre + np.pi) % (2 * np.pi) - np.pi)
    out = np.clip((half_width + taper / 2 - d) / taper, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * out)


def sample_physiology(label: str, rng: np.random.Generator) -> Physiology:
    """Draw one patient of class `label` (one of KNOWN_CLASSES). All randomness comes from `rng`."""
    r = _RANGES[label]
    u = lambda key: float(rng.uniform(*r[key]))  # noqa: E731
    height = float(np.clip(rng.normal(172, 9), 150, 198))
    bmi = float(np.clip(rng.normal(25.5, 3.5), 18, 38))
    weight = round(bmi * (height / 100) ** 2, 1)
    height = round(height, 1)
    bsa = math.sqrt(height * weight / 3600.0)

    lv_edv, lvef, rv_edv, rvef = u("lv_edvi") * bsa, u("lvef"), u("rv_edvi") * bsa, u("rvef")
    if label == "RV":  # "dilated RV and/or RVEF < 40": re-draw until at least one holds with margin
        while not (rv_edv / bsa > 116 or rvef < 37):
            rv_edv, rvef = u("rv_edvi") * bsa, u("rvef")

    rv_direction = math.radians(rng.uniform(140, 170))
    wall0 = u("wall")
    phase = rng.uniform(0, 2 * np.pi)
    wall = wall0 * (1 + 0.07 * np.cos(ANGLES - phase))
    kinesis = 1 + 0.12 * np.cos(ANGLES - rng.uniform(0, 2 * np.pi))
    infarct_centre = None
    if label == "HCM":
        if rng.random() < 0.25:  # concentric hypertrophy
            wall = rng.uniform(16.5, 20) * (1 + 0.06 * np.cos(ANGLES - phase))
        else:  # asymmetric septal hypertrophy
            peak = rng.uniform(17.5, 27.0)
            centre = rv_direction + math.radians(rng.uniform(-35, 35))
            width = math.radians(rng.uniform(25, 50))
            d = (ANGLES - centre + np.pi) % (2 * np.pi) - np.pi
            wall = wall + (peak - wall0) * np.exp(-0.5 * (d / width) ** 2)
    elif label == "MINF":
        infarct_centre = math.radians(float(rng.choice([90.0, 270.0, 0.0])) + rng.uniform(-25, 25))
        sector = _sector(infarct_centre, math.radians(rng.uniform(30, 60)), math.radians(25))
        thin = max(2.5, wall0 * float(rng.uniform(0.35, 0.55)))  # thinned scar, 2.5-5.5 mm
        wall = wall * (1 - sector) + thin * sector
        kinesis = kinesis * (1 - sector)  # akinetic: the infarcted sector does not move
    elif label == "DCM":
        kinesis = 1 + 0.25 * np.cos(ANGLES - rng.uniform(0, 2 * np.pi))  # patchier hypokinesis

    ellipticity = rng.uniform(0.0, 0.07)
    shape = 1 + ellipticity * np.cos(2 * (ANGLES - rng.uniform(0, np.pi)))
    for harmonic in (3, 4, 5):  # a slightly irregular, not perfectly elliptic endocardium
        shape = shape + rng.uniform(0.0, 0.015) * np.cos(harmonic * ANGLES - rng.uniform(0, 2 * np.pi))
    return Physiology(
        label=label,
        height_cm=height,
        weight_kg=weight,
        lv_edv=lv_edv,
        lvef=lvef,
        rv_edv=rv_edv,
        rvef=rvef,
        wall_ed=wall,
        kinesis=kinesis,
        shape=shape / shape.mean(),
        long_shortening=u("ls"),
        length_ratio=float(rng.uniform(2.6, 3.3)),
        rv_direction=rv_direction,
        rv_length_ratio=float(rng.uniform(0.72, 0.88)),
        rv_half_widths=(math.radians(rng.uniform(75, 100)), math.radians(rng.uniform(70, 95))),
        rv_power=float(rng.uniform(0.4, 0.75)),
        rv_wall_mm=float(rng.uniform(2.5, 4.0)),
        infarct_centre=infarct_centre,
    )


def violates_definition(label: str, m: AnatomyMeasures) -> str | None:
    """The ACDC class definition that measured values `m` break (a sentence), or None when they hold."""
    lvedvi = m.lv_edv_ml_m2 if m.lv_edv_ml_m2 is not None else float("nan")
    rvedvi = m.rv_edv_ml_m2 if m.rv_edv_ml_m2 is not None else float("nan")
    checks = {
        "NOR": [(m.lvef > 50, "LVEF > 50"), (lvedvi < 100, "LV EDV index < 100"),
                (m.max_wall_thickness_mm < 12, "wall < 12 mm"), (m.rvef > 40, "RVEF > 40")],
        "DCM": [(m.lvef < 40, "LVEF < 40"), (lvedvi > 100, "LV EDV index > 100")],
        "HCM": [(m.max_wall_thickness_mm > 15, "wall > 15 mm"), (m.lvef > 50, "LVEF > 50")],
        "MINF": [(m.lvef < 40, "LVEF < 40")],
        "RV": [(rvedvi > 110 or m.rvef < 40, "RV EDV index > 110 or RVEF < 40")],
    }[label]
    for ok, what in checks:
        if not ok:
            return f"{label} needs {what}"
    return None
