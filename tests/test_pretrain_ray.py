"""Ray Train pretraining integration tests on a local 2-CPU Ray, tiny preset, real NW-UCLA shards.

One run directory is shared by every test (train with a killed worker -> re-run -> resume -> refusals) to keep the
file short in wall time: every Train fit costs ~10 s of fixed start-up on 2 cores, and a worker restart more.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from macdiff_ray.config import ConfigError, from_dict, replace, to_dict
from macdiff_ray.train import (
    IncompatibleCheckpointError,
    PretrainConfig,
    check_compatible,
    find_latest_checkpoint,
    load_checkpoint,
    run_pretrain,
)

pytestmark = [pytest.mark.ray, pytest.mark.realdata, pytest.mark.slow]

STEPS = 8


def _cfg(data_dir, output, **kw) -> PretrainConfig:
    base = dict(
        data_dir=str(data_dir), benchmark="ucla-xview", preset="tiny", num_frames=32, output=str(output),
        epochs=4, batch_size=32, num_workers=2, use_gpu="no", lr=1e-3, lr_scaling="none", warmup_epochs=1.0,
        max_steps_per_epoch=STEPS, checkpoint_every=1, keep_checkpoints=2, seed=0,
    )
    base.update(kw)
    return from_dict(PretrainConfig, base)


@pytest.fixture(scope="module")
def first_run(ray_session, ucla_prepared, tmp_path_factory):
    """4 epochs on 2 workers; rank 1 dies (os._exit) at the start of epoch 2, once, and Ray Train restarts the
    worker group from the epoch-1 checkpoint."""
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    cfg = _cfg(ucla_prepared, run_dir, fail_at_epoch=2, fail_rank=1, fail_once_marker=str(run_dir.parent / "fault"),
               max_failures=1)
    return cfg, run_pretrain(cfg, quiet=True)


def test_two_workers_loss_goes_down(first_run):
    cfg, res = first_run
    run_dir = Path(cfg.output)
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert res["steps_per_epoch"] == STEPS and res["per_worker_batch"] == 16
    assert hist[-1]["loss"] < 0.85 * hist[0]["loss"], [h["loss"] for h in hist]
    # run files
    on_disk = json.loads((run_dir / "results.json").read_text())
    for key in ("config", "wall_time_s", "code_version", "final_loss", "samples_per_s_mean", "checkpoint"):
        assert on_disk[key] is not None, key
    assert from_dict(PretrainConfig, json.loads((run_dir / "config.json").read_text())) == cfg
    assert any((run_dir / "tb").iterdir())
    # checkpoint: newest is epoch 4, written by rank 0 with everything the contract names
    ck = load_checkpoint(run_dir)
    assert ck["epoch"] == 4 and ck["step"] == 4 * STEPS
    assert ck["data"]["dataset"] == "ucla" and ck["data"]["layout"]["name"] == "kinect_v1_20"
    assert ck["data"]["num_classes"] == 10 and len(ck["data"]["stats"]["mean"]) == 3
    assert ck["model_config"]["num_joints"] == 20 and ck["model_config"]["width"] == 64
    assert not any(k.startswith("module.") for k in ck["model"])
    assert from_dict(PretrainConfig, ck["config"]) == cfg


def test_killed_worker_is_restarted_from_checkpoint(first_run):
    cfg, res = first_run
    assert Path(cfg.fail_once_marker).is_file()  # the fault really fired (rank 1 os._exit at the start of epoch 2)
    assert res["final_epoch"] == 4
    assert res["start_epoch"] == 1  # the finishing attempt restored the epoch-1 checkpoint
    # results.json keeps every attempt: the epoch of the killed attempt and the ones after the restart
    assert res["resumed"] is True and res["num_resumes"] == 1
    assert [(a["attempt"], a["start_epoch"]) for a in res["attempts"]] == [(1, 0), (2, 1)]
    assert res["attempts"][0]["from_checkpoint"] is None
    assert res["resumed_from"][0]["epoch"] == 1 and res["resumed_from"][0]["checkpoint"].endswith("epoch_00001")
    # Re-running the finished command trains nothing and loses nothing (final_epoch was null before issue 13).
    again = run_pretrain(cfg, quiet=True)
    assert again["final_epoch"] == 4 and again["final_loss"] == res["final_loss"]
    assert again["history"] == res["history"]
    assert again["attempts"][-1]["start_epoch"] == 4 and again["num_resumes"] == 2
    assert again["attempts"][-1]["trained"] is False  # no Ray Train run was started for it
    assert json.loads((Path(cfg.output) / "results.json").read_text())["attempts"] == again["attempts"]
    assert load_checkpoint(cfg.output)["step"] == 4 * STEPS


def test_rerun_resumes_at_right_epoch_with_same_config(first_run):
    cfg, first = first_run
    more = replace(cfg, epochs=6)
    res = run_pretrain(more, quiet=True)
    assert res["start_epoch"] == 4 and res["resumed"] is True
    # results.json keeps the first attempt's epochs and appends the resumed ones
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4, 5, 6]
    assert res["history"][:4] == first["history"]
    # every attempt stays on record, the earlier re-run that trained nothing included, in the order they started
    assert [(a["attempt"], a["start_epoch"], a.get("trained", True)) for a in res["attempts"]] == [
        (1, 0, True), (2, 1, True), (3, 4, False), (4, 4, True)]
    assert res["num_resumes"] == 3 and [r["attempt"] for r in res["resumed_from"]] == [2, 3, 4]
    ck = load_checkpoint(cfg.output)
    assert ck["epoch"] == 6 and ck["step"] == 6 * STEPS
    assert {k: v for k, v in ck["config"].items() if k != "epochs"} == {
        k: v for k, v in to_dict(cfg).items() if k != "epochs"}
    # the lr schedule continued from the saved step instead of restarting its warmup
    # (a restarted schedule would end epoch 5 at the warmup peak, as epoch 1 did)
    assert res["history"][4]["lr"] < first["history"][0]["lr"] == pytest.approx(cfg.effective_lr)
    # only the newest `keep_checkpoints` remain (Ray CheckpointConfig.num_to_keep)
    kept = sorted(p.name for p in (find_latest_checkpoint(cfg.output).parent).iterdir()
                  if (p / "checkpoint.pt").is_file())
    assert kept == ["epoch_00005", "epoch_00006"]


def test_changed_model_config_or_mismatched_checkpoint_refused(first_run, tmp_path):
    cfg, _ = first_run
    # same RUN_DIR, another model: refused before any worker starts, naming the key
    with pytest.raises(ConfigError, match="model_overrides"):
        run_pretrain(replace(cfg, model_overrides={"dec_depth": 1}), quiet=True)
    with pytest.raises(ConfigError, match="preset"):
        run_pretrain(replace(cfg, preset="small"), quiet=True)
    # a run dir holding only checkpoints (no config.json): the checkpoint itself is checked
    other = tmp_path / "copied"
    shutil.copytree(find_latest_checkpoint(cfg.output).parent, other / "checkpoints")
    with pytest.raises(IncompatibleCheckpointError, match="model config differs"):
        run_pretrain(replace(cfg, output=str(other), preset="small"), quiet=True)
    # another joint layout (NTU 25 joints)
    from macdiff_ray.data.layouts import get_layout
    from macdiff_ray.train import resolve_model_config

    ck = load_checkpoint(cfg.output)
    with pytest.raises(IncompatibleCheckpointError, match="joint layout differs"):
        check_compatible(ck, None, get_layout("ntu25"))
    with pytest.raises(IncompatibleCheckpointError, match="num_joints"):
        check_compatible(ck, resolve_model_config(cfg, 25), None)
