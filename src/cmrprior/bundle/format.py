"""The model bundle on disk: a folder that another machine can load without executing code.

    BUNDLE/
      manifest.json        {"format", "format_version", "kind", "kind_version", "files": {relative path: sha256}}
                           (every other file)
      bundle.json          BundleSpec: kind and its version, classes, the model's structure, features, training ranges,
                           the segmenter it expects (by sha256), preparation settings, the study's estimate
      weights.safetensors  every array of the model (no pickle anywhere)
      MODEL_CARD.md        training cohort, the study's intervals, intended use, limitations
      segmenter/           only when the bundle carries its own segmenter set (a copy of its files)

Loading (`read_bundle_files`) checks the manifest first: an unknown format or version, a file listed and
missing, a file present and not listed, or a file whose sha256 differs is a `BundleError` naming the file,
never a silent fallback. A bundle is written into a temporary folder beside its target and renamed at the end,
so a killed export leaves no half bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cmrprior.errors import DataError
from cmrprior.segmentation.predict import file_sha256

FORMAT = "cmrprior-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPEC = "bundle.json"
WEIGHTS = "weights.safetensors"
CARD = "MODEL_CARD.md"
SEGMENTER_DIR = "segmenter"


class BundleError(DataError):
    """A bundle that cannot be trusted or read: `path` is the offending file, `problem` what is wrong."""


def _files(root: Path) -> list[str]:
    """Every regular file under `root` (relative, '/'-separated, sorted), the manifest excepted."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST:
            out.append(rel)
    return out


def write_bundle_files(target: str | Path, *, spec: Mapping, arrays: Mapping[str, np.ndarray], card: str,
                       segmenter_files: Mapping[str, Path] | None = None) -> Path:
    """Write a bundle folder at `target` (replacing an older bundle there) atomically; returns `target`.

    `segmenter_files`: name -> file to copy under `segmenter/` (a bundle that carries its segmenter set).
    """
    from safetensors.numpy import save_file

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / WEIGHTS),
                  metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        (tmp / CARD).write_text(card, encoding="utf-8")
        for name, src in (segmenter_files or {}).items():
            (tmp / SEGMENTER_DIR).mkdir(exist_ok=True)
            shutil.copyfile(src, tmp / SEGMENTER_DIR / name)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    **{k: spec[k] for k in ("kind", "kind_version") if k in spec},
                    "files": {rel: file_sha256(tmp / rel) for rel in _files(tmp)}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_bundle_files(root: str | Path) -> tuple[dict, dict[str, np.ndarray], str, dict]:
    """(spec, arrays, model card, manifest) of the bundle at `root`, after checking its manifest (module
    docstring). The kind is checked by the reader of the spec (`cmrprior.bundle.model.load_bundle`).

    Raises:
        BundleError: not a bundle, unknown format version, a missing, unlisted or changed file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(root)
    if not root.is_dir():
        raise BundleError(root, "not a model bundle folder (no such folder)")
    manifest = _read_json(root / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise BundleError(root / MANIFEST, f"not a cmrprior model bundle (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(root / MANIFEST, f"bundle format version {version!r} is not known to this cmrprior "
                                           f"(it reads version {FORMAT_VERSION}); use the cmrprior that wrote it")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or SPEC not in listed or WEIGHTS not in listed:
        raise BundleError(root / MANIFEST, f"the manifest does not list {SPEC} and {WEIGHTS}")
    present = set(_files(root))
    for rel, sha in sorted(listed.items()):
        if rel not in present:
            raise BundleError(root / rel, "missing: the bundle's manifest lists this file")
        if file_sha256(root / rel) != sha:
            raise BundleError(root / rel, "changed since the bundle was written (sha256 differs from its manifest)")
    extra = sorted(present - set(listed))
    if extra:
        raise BundleError(root / extra[0], "not part of the bundle (not in its manifest); remove it")
    spec = _read_json(root / SPEC)
    if spec.get("format_version") != FORMAT_VERSION:
        raise BundleError(root / SPEC, f"format version {spec.get('format_version')!r} differs from the manifest's")
    try:
        arrays = load_file(str(root / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise BundleError(root / WEIGHTS, f"unreadable weights: {exc}") from None
    card = (root / CARD).read_text(encoding="utf-8") if (root / CARD).exists() else ""
    return spec, arrays, card, manifest


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(path, "missing: a model bundle holds this file") from None
    except (OSError, ValueError) as exc:
        raise BundleError(path, f"unreadable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(path, "expected a JSON object")
    return data


def bundle_sha256(root: str | Path) -> str:
    """One sha256 for a whole bundle: the hash of its manifest file (which holds every other file's)."""
    return file_sha256(Path(root) / MANIFEST)

