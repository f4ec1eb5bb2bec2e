"""Whole-file sha256 of input files, with a small cache so that a rerun does not read every image again.

A run folder is tied to the content of its inputs (design rule 9). Hashing only part of a file misses an
edit in its middle (a mask corrected in a viewer and saved as an uncompressed `.nii` keeps its size, its
header and its last bytes), so every file is hashed whole. To keep reruns fast, the hash of each file is
cached by `(path, size, mtime_ns, ctime_ns)` in a JSON file inside the run folder (never in the input
folder); a file whose size or times changed is read again. `ctime_ns` is set by the kernel on every write
and cannot be set back by a tool that restores `mtime` (`cp -p`, `touch -r`, some viewers).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cmrprior.utils import atomic

_CHUNK = 1 << 20
_CACHE_VERSION = 1


def visible_files(folder: Path) -> list[Path]:
    """Every file under `folder` whose path (relative to it) has no hidden part, sorted."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class FileHashes:
    """sha256 of whole files, cached in `cache` (a JSON file; None: in memory only).

    A missing, unreadable or foreign cache file is treated as empty: it only saves time, it is never
    trusted for anything the stat key does not match.
    """

    def __init__(self, cache: str | Path | None = None) -> None:
        self.cache = None if cache is None else Path(cache)
        self._entries: dict[str, dict] = {}
        self._dirty = False
        if self.cache is not None and self.cache.is_file():
            try:
                data = json.loads(self.cache.read_text(encoding="utf-8"))
                if data.get("version") == _CACHE_VERSION and isinstance(data.get("files"), dict):
                    self._entries = data["files"]
            except (OSError, ValueError, AttributeError):
                self._entries = {}

    def file(self, path: str | Path) -> str:
        """Hex sha256 of the whole file at `path`. Raises OSError when it cannot be read."""
        key = os.path.abspath(path)
        st = os.stat(key)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        hit = self._entries.get(key)
        if hit is not None and hit.get("stat") == stamp:
            return hit["sha256"]
        h = hashlib.sha256()
        with open(key, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        self._entries[key] = {"stat": stamp, "sha256": h.hexdigest()}
        self._dirty = True
        return h.hexdigest()

    def tree(self, path: str | Path) -> str:
        """Hex sha256 of a file, or of a folder: each visible file's relative path and whole-content hash
        (so a copy of the same data elsewhere gives the same value). Raises OSError when unreadable."""
        root = Path(path)
        if not root.is_dir():
            return self.file(root)
        h = hashlib.sha256()
        for f in visible_files(root):
            h.update(f"{f.relative_to(root).as_posix()}\0{self.file(f)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        """Write the cache (atomically) when something was hashed anew."""
        if self.cache is not None and self._dirty:
            atomic.write_json(self.cache, {"version": _CACHE_VERSION, "files": self._entries})
            self._dirty = False
