"""Reading and checking a prepared dataset's ``manifest.json`` (schema in docs/ARCHITECTURE.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "MANIFEST_NAME", "ManifestError", "load_manifest", "list_shards", "sha256_file"]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = (
    "schema_version", "source_format", "dataset", "layout", "num_classes", "max_persons", "max_frames",
    "num_joints", "channels", "units", "num_samples", "split_counts", "stats", "shards", "skipped", "created_by",
)


class ManifestError(ValueError):
    """A prepared dataset is missing, incomplete, of another schema version, or fails its checksums."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(data_dir: str | Path, *, verify_checksums: bool = False) -> dict:
    """Load ``DIR/manifest.json`` and check it: schema version, required keys, every shard present (and, with
    ``verify_checksums``, its sha256). Raises :class:`ManifestError` naming the directory and the fault."""
    d = Path(data_dir)
    mp = d / MANIFEST_NAME
    if not mp.is_file():
        raise ManifestError(f"{d}: not a prepared dataset (no {MANIFEST_NAME}); run experiments/prepare_data.py")
    try:
        m = json.loads(mp.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{mp}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(m, dict):
        raise ManifestError(f"{mp}: top level must be an object")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(
            f"{mp}: schema_version {m.get('schema_version')!r} is not {SCHEMA_VERSION}; re-run prepare_data.py"
        )
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise ManifestError(f"{mp}: missing keys {missing}")
    for i, s in enumerate(m["shards"]):
        p = d / s["path"]
        if not p.is_file():
            raise ManifestError(f"{mp}: shards[{i}] {s['path']} does not exist")
        if verify_checksums:
            digest = sha256_file(p)
            if digest != s["sha256"]:
                raise ManifestError(f"{p}: sha256 {digest} does not match the manifest's {s['sha256']}")
    return m


def list_shards(data_dir: str | Path) -> list[Path]:
    """Absolute shard paths in manifest order (which is ``sample_id`` order)."""
    d = Path(data_dir)
    return [(d / s["path"]).resolve() for s in load_manifest(d)["shards"]]
