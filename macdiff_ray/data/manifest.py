"""Reading and checking a prepared dataset's ``manifest.json`` (schema in docs/ARCHITECTURE.md).

The dataset folder may be a local path or a URI (``s3://bucket/prepared/ucla``): everything is read through
:mod:`macdiff_ray.storage` (pyarrow filesystems), and shard paths come back as local paths or URIs that
``pyarrow.parquet`` and Ray Data read directly, so no node needs a local copy."""

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
    """sha256 of a local file or a URI."""
    from macdiff_ray.storage import resolve

    fs, p = resolve(path)
    h = hashlib.sha256()
    with fs.open_input_stream(p) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(data_dir: str | Path, *, verify_checksums: bool = False) -> dict:
    """Load ``DIR/manifest.json`` and check it: schema version, required keys, every shard present (and, with
    ``verify_checksums``, its sha256). Raises :class:`ManifestError` naming the directory and the fault."""
    from macdiff_ray.storage import join, list_files, read_bytes

    d = str(data_dir)
    mp = join(d, MANIFEST_NAME)
    try:
        text = read_bytes(mp).decode()
    except FileNotFoundError:
        raise ManifestError(f"{d}: not a prepared dataset (no {MANIFEST_NAME}); run experiments/prepare_data.py")
    try:
        m = json.loads(text)
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
    present = set(list_files(d))  # one listing, not one request per shard (cheap on object storage too)
    for i, s in enumerate(m["shards"]):
        p = join(d, s["path"])
        if s["path"] not in present:
            raise ManifestError(f"{mp}: shards[{i}] {s['path']} does not exist")
        if verify_checksums:
            digest = sha256_file(p)
            if digest != s["sha256"]:
                raise ManifestError(f"{p}: sha256 {digest} does not match the manifest's {s['sha256']}")
    return m


def list_shards(data_dir: str | Path) -> list[str]:
    """Shard paths in manifest order (which is ``sample_id`` order): absolute local paths, or URIs under a URI."""
    from macdiff_ray.storage import absolute, join

    d = absolute(data_dir)
    return [join(d, s["path"]) for s in load_manifest(d)["shards"]]
