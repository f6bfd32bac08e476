"""Unit tests: the checkpoint a run continues from is the one Ray Train committed (its snapshot file), not the
highest epoch folder on disk (issue 13, fix 6); without a snapshot, the newest by meta.json."""

from __future__ import annotations

import json

import torch

from macdiff_ray.train import checkpoint as ckpt_lib


def _save(run, epoch):
    state = {"model": {"w": torch.zeros(1)}, "optimizer": None, "scaler": None, "epoch": epoch, "step": 10 * epoch,
             "config": {}, "model_config": {}, "data": {"dataset": "d", "layout": {"name": "l"}},
             "code_version": "test"}
    return ckpt_lib.save_checkpoint(state, run / "checkpoints" / f"epoch_{epoch:05d}")


def _snapshot(run, committed):
    # the fields of Ray 2.60's _CheckpointManagerState that matter here
    (run / "checkpoints" / ckpt_lib.RAY_SNAPSHOT_FILE).write_text(json.dumps({
        "ray_version": "2.60.0", "checkpoint_results": [],
        "latest_checkpoint_result": {"checkpoint_dir_name": committed, "metrics": {}},
    }))


def test_committed_checkpoint_wins_over_a_higher_uncommitted_folder(tmp_path):
    run = tmp_path / "run"
    for e in (1, 2, 3):
        _save(run, e)
    assert ckpt_lib.find_latest_checkpoint(run).name == "epoch_00003"  # no snapshot: newest by meta.json
    _snapshot(run, "epoch_00002")  # epoch 3 was written by an attempt that died before Ray committed it
    assert ckpt_lib.find_latest_checkpoint(run).name == "epoch_00002"
    assert ckpt_lib.load_checkpoint(run)["epoch"] == 2
    assert ckpt_lib.committed_checkpoint_name(run / "checkpoints") == "epoch_00002"


def test_snapshot_naming_a_missing_folder_falls_back(tmp_path):
    run = tmp_path / "run"
    _save(run, 1)
    _snapshot(run, "epoch_00009")
    assert ckpt_lib.find_latest_checkpoint(run).name == "epoch_00001"
    (run / "checkpoints" / ckpt_lib.RAY_SNAPSHOT_FILE).write_text("{not json")
    assert ckpt_lib.committed_checkpoint_name(run / "checkpoints") is None
    assert ckpt_lib.find_latest_checkpoint(run).name == "epoch_00001"


def test_checkpoint_uri_gives_the_scheme_back():
    """results.json names checkpoints as --checkpoint accepts them: Ray's Checkpoint.path on S3 has no scheme."""
    import types

    import pyarrow.fs as pafs

    from macdiff_ray.train.pretrain import checkpoint_uri

    s3 = types.SimpleNamespace(path="bucket/run/checkpoints/epoch_00002",
                               filesystem=pafs.S3FileSystem(region="us-east-1"))
    assert checkpoint_uri(s3) == "s3://bucket/run/checkpoints/epoch_00002"
    local = types.SimpleNamespace(path="/r/checkpoints/epoch_00001", filesystem=pafs.LocalFileSystem())
    assert checkpoint_uri(local) == "/r/checkpoints/epoch_00001"


def test_merged_attempts_keep_a_rerun_that_trained_nothing():
    """A no-op re-run is recorded only in results.json; the run extended after it keeps it on record, in order."""
    from macdiff_ray.train.pretrain import _merge_attempts

    first, restart = {"attempt": 1, "start_epoch": 0, "started_unix": 10.0}, {"attempt": 2, "start_epoch": 1,
                                                                              "started_unix": 20.0}
    noop = {"attempt": 3, "start_epoch": 4, "started_unix": 30.0, "trained": False}
    extend = {"attempt": 3, "start_epoch": 4, "started_unix": 40.0}  # the checkpoint numbers it after attempt 2
    merged = _merge_attempts([first, restart, extend], {"attempts": [first, restart, noop]})
    assert [(a["attempt"], a["started_unix"], a.get("trained", True)) for a in merged] == [
        (1, 10.0, True), (2, 20.0, True), (3, 30.0, False), (4, 40.0, True)]
    assert _merge_attempts([first], None) == [first]  # a fresh run: nothing to add
