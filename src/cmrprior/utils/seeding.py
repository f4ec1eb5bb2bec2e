"""Seeding helpers: every random step in cmrprior takes a seed or a generator."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (for code outside our control, e.g. init)."""
    import torch  # utils stays importable without torch (seconds to import) for NumPy-only callers

    seed = int(seed)  # a NumPy integer from a config or a derived seed
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def torch_generator(seed: int, device: str = "cpu"):
    import torch  # see seed_everything

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def derive_seed(seed: int, *keys: object) -> int:
    """A stable child seed from a parent seed and keys (e.g. split index, stage name)."""
    h = hashlib.sha256(repr((seed,) + keys).encode()).digest()
    return int.from_bytes(h[:4], "little")
