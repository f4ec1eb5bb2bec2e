"""Checks that tie an output folder to its inputs: where it may be, and a fingerprint of what it was made from.

Every command that writes a run folder calls `check_out_dir` before its first long step, so a run folder
inside the input (which would write into the user's data), an `--out` that is a file, or a read-only
location is a one-line error instead of a traceback or a damaged input.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cmrprior.errors import ConfigError, DataError

_EDGE = 64 * 1024  # bytes hashed at each end of a file: cheap, and any re-export or edit of an image shows


def check_out_dir(out: str | Path, inputs: Iterable[str | Path | None]) -> Path:
    """Create `out` if needed and return it; ConfigError when it cannot serve as a run folder.

    Refused: `out` is an existing file; `out` is an input folder or inside one (a file input counts as
    its folder); `out` cannot be created or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out is an existing file, not a folder")
    out_r = out.resolve()
    for item in inputs:
        if item is None or not Path(item).exists():  # a missing input gets its own error from its reader
            continue
        p = Path(item).resolve()
        root = p if p.is_dir() else p.parent
        if out_r == root or root in out_r.parents:
            raise ConfigError(f"{out}: the run folder must not be inside the input folder {root}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the run folder there ({exc.strerror or exc})") from exc
    return out


def input_fingerprint(path: str | Path) -> str:
    """A stable fingerprint of an input (a folder's files, or one file such as a manifest CSV).

    Covers every non-hidden file's relative path, size and the first and last 64 KiB of its content, so
    a different cohort, an added or removed patient, or a re-exported image changes it, while a copy of
    the same data to another place keeps it. 16 hex digits.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(root, "input not found")
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_EDGE))
            if size > 2 * _EDGE:
                fh.seek(size - _EDGE, os.SEEK_SET)
                h.update(fh.read(_EDGE))
    return h.hexdigest()[:16]
