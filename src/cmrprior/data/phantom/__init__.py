"""Synthetic CMR phantom cohort in the ACDC layout: the embedded default dataset.

`generate_phantom(out, n_patients, seed, spurious_cue=False, classes=ACDC_CLASSES, config=None) -> Path`
writes short-axis ED/ES stacks with ground-truth masks and Info.cfg for the five ACDC classes (see
`physiology` for the class definitions, `heart` and `body` for the anatomy, `render` for the image
formation and the optional spurious cue, `writer` for the layout).
"""

from cmrprior.data.phantom.config import PhantomConfig
from cmrprior.data.phantom.physiology import KNOWN_CLASSES
from cmrprior.data.phantom.render import RenderedPatient, render_patient
from cmrprior.data.phantom.writer import MANIFEST, generate_phantom

__all__ = ["KNOWN_CLASSES", "MANIFEST", "PhantomConfig", "RenderedPatient", "generate_phantom", "render_patient"]
