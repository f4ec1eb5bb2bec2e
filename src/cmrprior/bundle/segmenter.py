"""Which segmenter a bundle's measures come from, named by one sha256.

A segmenter is a set folder (`folds.json` indexing the full model and its fold models, as shipped) or one
weights file. Its digest covers everything that changes its masks: the weights (a set's index holds each
weights file's sha256, and `verify` checks the files against it) and each model's basal-decision file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cmrprior.errors import DataError
from cmrprior.segmentation.basal import basal_path
from cmrprior.segmentation.folds import INDEX_NAME, SHIPPED_SET, load_segmenter_set, verify
from cmrprior.segmentation.predict import file_sha256


def shipped_set() -> Path:
    return SHIPPED_SET


def segmenter_digest(path: str | Path) -> str:
    """sha256 naming the segmenter at `path` (module docstring); DataError when it is missing or its weights
    differ from its index."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        seg_set = load_segmenter_set(path)
        verify(seg_set)
        h.update((path / INDEX_NAME).read_bytes())
        weights = [seg_set.full.weights, *(m.weights for m in seg_set.folds)]
    elif path.is_file():
        h.update(file_sha256(path).encode())
        weights = [path]
    else:
        raise DataError(path, "segmenter not found (a segmenter-set folder or a .safetensors file)")
    for w in weights:
        b = basal_path(w)
        h.update(b"\0" + (file_sha256(b).encode() if b.exists() else b"-"))
    return h.hexdigest()


def segmenter_files(path: str | Path) -> dict[str, Path]:
    """The files to copy into a bundle that carries the weights file `path` (weights, its JSON arguments and
    basal file when present), by the name they get there."""
    path = Path(path)
    out = {path.name: path}
    for extra in (path.with_suffix(".json"), basal_path(path)):
        if extra.exists():
            out[extra.name] = extra
    return out
