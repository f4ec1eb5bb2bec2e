"""Atomic writes: write to a temporary file in the same folder, fsync, then rename over the target.

A killed process leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it to `target`, else delete it.

    An OSError that names no file, or only the temporary one (a full disk while writing), is raised again
    naming `target`, so the user learns which output could not be written.
    """
    target = Path(target)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give results the usual permissions
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        named = None if exc.filename is None else Path(exc.filename)
        if named is None or (named.parent == target.parent and named.name.startswith(f".{target.name}.")):
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the path(s) it names and what went wrong ("/run/x.json: No space left on
    device"); the CLI prints it instead of a traceback."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or str(exc)
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_npz(target: str | Path, **arrays: np.ndarray) -> Path:
    """np.savez (uncompressed, so loads are fast and can be memory-mapped) written atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(target)


def save_torch(target: str | Path, obj: Any) -> Path:
    import torch  # utils stays importable without torch (seconds to import) for NumPy-only callers

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return Path(target)


def append_jsonl(target: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (metrics logs); a line is written with one write call and flushed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True, default=_json_default) + "\n")
        fh.flush()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
