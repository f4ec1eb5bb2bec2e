"""Checks that tie an output folder to its inputs: where it may be, and a fingerprint of what it was made from.

Every command that writes a run folder calls `check_out_dir` before its first long step, so a run folder
inside the input (which would write into the user's data), an `--out` that is a file, or a read-only
location is a one-line error instead of a traceback or a damaged input.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cmrprior.errors import ConfigError, DataError
from cmrprior.utils.file_hashes import FileHashes, visible_files

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


# Fingerprints of whole files carry this prefix; an older cmrprior wrote bare hex from partial hashes, which
# a run folder made then cannot be checked against (`cmrprior.runs.RunFolder.bind_inputs` says so).
FINGERPRINT_PREFIX = "whole:"


def input_fingerprint(path: str | Path, *, referenced: Iterable[tuple[str, Path]] = (),
                      cache: str | Path | None = None) -> str:
    """A stable fingerprint of an input (a folder's files, or one file such as a manifest CSV) and of every
    file its records point to (`referenced`: (role, path) pairs such as ("p001/ed_image", path); a path may
    be a folder, e.g. a DICOM series).

    Covers every visible file's relative path and whole content (sha256), and each referenced path's role
    and whole content, so a different cohort, an added or removed patient, an image replaced under the same
    manifest, or an edit anywhere in a file changes it, while a copy of the same data to another place keeps
    it. `cache`: a JSON file (in the run folder) of the hashes already computed (`FileHashes`).
    `FINGERPRINT_PREFIX` + 16 hex digits.

    Raises:
        DataError: the input or a referenced file is missing or cannot be read.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(root, "input not found")
    hashes = FileHashes(cache)
    h = hashlib.sha256()
    current = root
    try:
        for f in [root] if root.is_file() else visible_files(root):
            current = f
            h.update(f"{f.relative_to(root).as_posix() if f != root else f.name}\0{hashes.file(f)}\n".encode())
        for role, p in referenced:
            current = Path(p)
            h.update(f"{role}\0{hashes.tree(p)}\n".encode())
    except OSError as exc:
        raise DataError(current, f"cannot read this input to fingerprint it ({exc.strerror or exc})") from exc
    hashes.save()
    return FINGERPRINT_PREFIX + h.hexdigest()[:16]
