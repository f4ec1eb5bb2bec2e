"""Progress of the study's coarse stages: one log line per finished pre-training run and per finished cell.

Lines like "cells: 5/40 done (split 0, tiny, Full-SSCL, full images: macro AUC 0.818), 1 min 10 s elapsed,
~8 min 10 s left" (`cmrprior.utils.progress`). Pieces finished in an earlier run (reused) and cells that end
without a score (unavailable, failed: seconds) count as done but not in the estimate of the time left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cmrprior.experiments.config import StudyConfig
from cmrprior.runs import CellResult
from cmrprior.utils.progress import Progress
from cmrprior.vocab import Pretext, init_label, pretexts

log = logging.getLogger("cmrprior.experiments.study")


def batch_grid(pretext: Pretext, config: StudyConfig) -> tuple[int | None, ...]:
    """The batch sizes a pretext's runs span (its section's `batch_sizes`), or (None,): one run."""
    return tuple(config.pretext_settings(pretext.name).batch_sizes) if pretext.batch_grid else (None,)


@dataclass(frozen=True)
class StudyProgress:
    pretrain: Progress
    cells: Progress

    @classmethod
    def for_grid(cls, config: StudyConfig, n_splits: int, prefix: str = "") -> "StudyProgress":
        """Counters for `n_splits` splits of the config's grid (`prefix`: "held-out " for --test)."""
        c = config.classifier
        per_backbone = sum(len(batch_grid(p, config)) for p in pretexts() for i in p.inits if i.name in c.inits)
        n_pretrain = n_splits * len(c.backbones) * per_backbone
        return cls(Progress(f"{prefix}pre-training", n_pretrain, log),
                   Progress(f"{prefix}cells", n_splits * len(c.backbones) * len(c.inits) * len(c.images), log))

    def pretrain_done(self, split: str, backbone: str, pretext: Pretext, images: str, batch_size: int | None, *,
                      reused: bool) -> None:
        self.pretrain.done(f"split {split}, {backbone}, {pretext.label} on {images} images"
                           + ("" if batch_size is None else f", batch {batch_size}")
                           + (", reused" if reused else ""), reused=reused)

    def cell_done(self, r: CellResult, *, reused: bool) -> None:
        what = f"split {r.key.split}, {r.key.backbone}, {init_label(r.key.init)}, {r.key.images} images"
        if r.ok and r.test is not None and r.test.metrics.macro_auc is not None:
            what += f": macro AUC {r.test.metrics.macro_auc:.3f}"
        elif not r.ok:
            what += f": {r.status}"
        self.cells.done(what + (", reused" if reused else ""), reused=reused or not r.ok)
