"""cmrprior: anatomic priors and self-supervised contrastive learning for cardiac MRI diagnosis.

Implements Nakashima et al., "Interaction of a priori anatomic knowledge with self-supervised
contrastive learning in cardiac MRI", end to end: heart segmentation, SimCLR pre-training on full or
heart-masked images, an ED/ES two-branch diagnosis model, and patient-level evaluation with
confidence intervals.
"""

__version__ = "0.1.0"
