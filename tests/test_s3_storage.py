"""Paths on object storage, against a real S3-compatible server on 127.0.0.1 (tests/s3_server.py: moto's standalone
server in its own process), configured the way users configure MinIO: ``AWS_ENDPOINT_URL`` and the credential
variables, nothing passed in code. No Ray here (the cluster tier, tests/test_cluster_sim.py, covers Ray Data, Train
and Tune on the bucket)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from s3_server import patched_environ, s3_server

pytest.importorskip("moto.server", reason="moto[server] is in the test extra")


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    log = tmp_path_factory.mktemp("s3") / "server.log"
    with s3_server(log_path=str(log)) as env, patched_environ(env):
        yield f"s3://{env['MACDIFF_TEST_BUCKET']}"


def test_pyarrow_reaches_the_endpoint_from_the_environment(bucket):
    """The fact macdiff_ray/storage.py relies on: pyarrow 26's from_uri honours AWS_ENDPOINT_URL, for small
    writes and for multipart uploads (8 MiB here: above pyarrow's part threshold)."""
    from macdiff_ray import storage

    big = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8).tobytes()
    storage.write_bytes(f"{bucket}/probe/small.txt", b"hello")
    storage.write_bytes(f"{bucket}/probe/big.bin", big)
    assert storage.read_bytes(f"{bucket}/probe/small.txt") == b"hello"
    assert storage.read_bytes(f"{bucket}/probe/big.bin") == big
    assert storage.list_files(f"{bucket}/probe") == ["big.bin", "small.txt"]
    storage.delete_dir(f"{bucket}/probe")
    assert storage.list_files(f"{bucket}/probe") == []
    with pytest.raises(FileNotFoundError, match="probe/small.txt"):
        storage.read_bytes(f"{bucket}/probe/small.txt")


def test_publish_dir_uploads_the_marker_last(tmp_path, bucket):
    from macdiff_ray import storage

    (tmp_path / "shards").mkdir()
    for name in ("shards/b.parquet", "shards/a.parquet", "manifest.json", "zz.txt"):
        (tmp_path / name).write_text(name)
    order = storage.publish_dir(tmp_path, f"{bucket}/pub", last=["manifest.json"])
    assert order[-1] == "manifest.json" and sorted(order) == sorted(storage.list_files(f"{bucket}/pub"))
    with pytest.raises(FileNotFoundError):
        storage.publish_dir(tmp_path, f"{bucket}/pub2", last=["missing.json"])


def test_prepare_into_bucket_then_read_manifest_and_shards(bucket):
    from macdiff_ray import storage
    from macdiff_ray.data.manifest import ManifestError, list_shards, load_manifest
    from macdiff_ray.data.pipeline import select_split
    from macdiff_ray.data.prepare import prepare_dataset

    uri = f"{bucket}/prepared/syn"
    m = prepare_dataset("synthetic", None, uri, progress=False,
                        synthetic_options={"num_samples": 60, "num_classes": 4, "seed": 1})
    files = storage.list_files(uri)
    assert "manifest.json" in files and all(s["path"] in files for s in m["shards"])
    loaded = load_manifest(uri, verify_checksums=True)  # every shard's sha256 read back from the bucket
    assert loaded["num_samples"] == 60
    shards = list_shards(uri)
    assert shards and all(s.startswith(uri + "/") for s in shards)
    rows = sum(pq.read_table(s).num_rows for s in shards)  # pyarrow reads the URIs directly
    assert rows == 60
    bench = sorted(loaded["split_counts"])[0]
    sel = select_split(uri, bench, "train")
    assert len(sel) == loaded["split_counts"][bench]["train"]

    with pytest.raises(FileExistsError, match="prepared dataset"):
        prepare_dataset("synthetic", None, uri, progress=False, synthetic_options={"num_samples": 30})
    m2 = prepare_dataset("synthetic", None, uri, progress=False, overwrite=True,
                         synthetic_options={"num_samples": 30, "num_classes": 4, "seed": 2})
    assert load_manifest(uri)["num_samples"] == 30 and m2["num_samples"] == 30

    # A folder whose shard was lost is refused with the shard named.
    fs, p = storage.resolve(shards[0] if len(list_shards(uri)) == 1 else list_shards(uri)[0])
    fs.delete_file(p)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(uri)
    with pytest.raises(ManifestError, match="not a prepared dataset"):
        load_manifest(f"{bucket}/prepared/nothing-here")


def test_prepare_data_cli_output_uri(bucket):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    uri = f"{bucket}/prepared/cli"
    out = subprocess.run([sys.executable, "experiments/prepare_data.py", "--format", "synthetic", "--output", uri,
                          "--num-samples", "40", "--num-classes", "4", "--no-progress"],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    from macdiff_ray.data.manifest import load_manifest

    assert load_manifest(uri, verify_checksums=True)["num_samples"] == 40


def test_checkpoint_from_bucket(tmp_path, bucket):
    """A probe or fine-tune reads its --checkpoint from the bucket: a checkpoint folder or a run folder."""
    import torch

    from macdiff_ray import storage
    from macdiff_ray.train import checkpoint as ckpt_lib

    state = {"model": {"w": torch.ones(2)}, "optimizer": None, "scaler": None, "epoch": 3, "step": 30,
             "config": {"preset": "tiny"}, "model_config": {}, "data": {"dataset": "d", "layout": {"name": "l"}},
             "code_version": "test"}
    for epoch in (2, 3):
        d = ckpt_lib.save_checkpoint(dict(state, epoch=epoch), tmp_path / f"run/checkpoints/epoch_{epoch:05d}")
        storage.publish_dir(d, f"{bucket}/run/checkpoints/epoch_{epoch:05d}")
    got = ckpt_lib.load_checkpoint(f"{bucket}/run")
    assert got["epoch"] == 3 and torch.equal(got["model"]["w"], torch.ones(2))
    assert ckpt_lib.load_checkpoint(f"{bucket}/run/checkpoints/epoch_00002")["epoch"] == 2
    with pytest.raises(ckpt_lib.CheckpointNotFoundError):
        ckpt_lib.load_checkpoint(f"{bucket}/no-such-run")
    assert json.loads(storage.read_bytes(f"{bucket}/run/checkpoints/epoch_00003/meta.json"))["epoch"] == 3
    # Ray's snapshot says epoch 2 is the committed one (epoch 3: written by an attempt that died): epoch 2 it is
    storage.write_bytes(f"{bucket}/run/checkpoints/{ckpt_lib.RAY_SNAPSHOT_FILE}",
                        json.dumps({"latest_checkpoint_result": {"checkpoint_dir_name": "epoch_00002"}}).encode())
    assert ckpt_lib.load_checkpoint(f"{bucket}/run")["epoch"] == 2
