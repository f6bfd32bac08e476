"""Sweeps with a local 2-CPU Ray, on the small synthetic set (what a sweep does does not depend on the data; its
kNN proxy then embeds 120 + 120 sequences instead of NW-UCLA's 200 + 464): a 4-trial ASHA sweep completes
(early-stopped trials do not leak CPUs), an interrupted sweep resumes with Tuner.restore, the best config round-trips through
experiments/pretrain.py --config, a 2-trial augmentation sweep on synthetic data runs both trials, and a
Tune-over-Train trial (2 Train workers) reports rank 0's metrics to Tune and resumes from its committed checkpoint."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest
from ray.tune import Callback

from macdiff_ray.config import ConfigError, from_dict
from macdiff_ray.tune.space import parse_space

REPO = Path(__file__).resolve().parents[1]


def _space(data_dir, search, **tune):
    return parse_space({
        "kind": "pretrain",
        "base": {"data_dir": str(data_dir), "benchmark": "synthetic", "preset": "tiny", "epochs": 2,
                 "batch_size": 16, "max_steps_per_epoch": 2, "num_frames": 32, "warmup_epochs": 1.0,
                 "checkpoint_every": 1, "use_gpu": "no"},
        "search": search,
        "tune": {"metric": "knn_top1", "mode": "max", "max_concurrent": 1, "resources": {"cpu": 1, "gpu": 0},
                 "knn_max_train": 200, **tune},
    }, "test-space")


def _load_pretrain_cli():
    spec = importlib.util.spec_from_file_location("pretrain_cli", REPO / "experiments" / "pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result_lines(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def test_four_trial_asha_sweep_and_best_config(ray_session, synthetic_prepared, tmp_path):
    from macdiff_ray.train.config import PretrainConfig
    from macdiff_ray.tune.sweep import run_sweep

    space = _space(synthetic_prepared, {"diffusion.tau": {"grid": [-1.0, 1.0]}, "model.dec_depth": {"grid": [2, 1]}},
                   scheduler="asha", grace_period=1, reduction_factor=2)
    out = tmp_path / "sweep"
    summary = run_sweep(space, str(out))
    assert summary["errors"] == [] and summary["num_trials"] == 4
    counts = summary["status_counts"]
    assert counts["error"] == 0 and counts["completed"] >= 1 and counts["completed"] + counts["stopped"] == 4

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert {"trial_id", "diffusion.tau", "model.dec_depth", "knn_top1_last", "knn_top1_best", "loss", "epochs",
            "status"} <= set(rows[0])
    best = [float(r["knn_top1_best"]) for r in rows]
    assert best == sorted(best, reverse=True) and all(0.0 <= b <= 1.0 for b in best)
    assert {(float(r["diffusion.tau"]), int(r["model.dec_depth"])) for r in rows} == {
        (-1.0, 1), (-1.0, 2), (1.0, 1), (1.0, 2)}
    for r in rows:  # ASHA-stopped trials ran fewer epochs; finished ones all of them
        assert int(r["epochs"]) == (2 if r["status"] == "completed" else 1)
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("| rank | trial_id") and len(md) == 2 + 4

    # the reported proxy is in every result line (ASHA reads it), measured on the last epoch of a finished trial
    for trial_dir in (out / "sweep").glob("pretrain_trial_*"):
        lines = _result_lines(trial_dir)
        assert lines and all("knn_top1" in r and "loss" in r for r in lines)
        if lines[-1]["epoch"] == 2:
            assert lines[-1]["knn_epoch"] == 2

    # best_config.json is accepted by experiments/pretrain.py --config and carries the best trial's values
    cli = _load_pretrain_cli()
    cfg = cli.build_config(cli.parse_args(["--config", str(out / "best_config.json"), "--output", str(tmp_path / "r")]))
    assert isinstance(cfg, PretrainConfig)
    assert cfg.diffusion.tau == float(rows[0]["diffusion.tau"])
    assert cfg.model_overrides == {"dec_depth": int(rows[0]["model.dec_depth"])}
    assert cfg.preset == "tiny" and cfg.data_dir == str(synthetic_prepared) and cfg.output == str(tmp_path / "r")
    saved = json.loads((out / "best_config.json").read_text())
    assert from_dict(PretrainConfig, {**saved, "output": str(tmp_path / "r")}) == cfg


class _InterruptOnce(Callback):
    """Ctrl-C (SIGINT to the driver) once the ``n``-th trial checkpoint is registered: Tune saves its state and
    returns. Tuner.restore unpickles this callback with the run config, so a marker file makes it fire only once."""

    def __init__(self, n: int, marker: Path):
        self.n, self.seen, self.marker = n, 0, marker

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.seen += 1
        if self.seen == self.n and not self.marker.exists():
            self.marker.write_text("interrupted\n")
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.extended  # covered in the default run by the console tier's sweep, and by the cluster tier's step 5
def test_interrupted_sweep_resumes(ray_session, synthetic_prepared, tmp_path):
    from macdiff_ray.tune.sweep import run_sweep

    space = _space(synthetic_prepared, {"diffusion.tau": {"grid": [-1.0, 1.0]}}, scheduler="fifo")
    out = tmp_path / "sweep"
    # interrupted after 3 checkpointed epochs: trial 1 finished (2 epochs), trial 2 after its first epoch
    first = run_sweep(space, str(out), callbacks=[_InterruptOnce(3, tmp_path / "interrupted")])
    assert not first["restored"] and (tmp_path / "interrupted").exists()
    assert first["status_counts"]["completed"] == 1 and first["num_trials"] == 2
    before = {d.name: _result_lines(d) for d in (out / "sweep").glob("pretrain_trial_*") if (d / "result.json").exists()}
    assert sum(len(v) for v in before.values()) >= 1

    with pytest.raises(ConfigError, match="another search space"):  # a resumed sweep must keep its space
        run_sweep(_space(synthetic_prepared, {"diffusion.tau": {"grid": [0.0]}}, scheduler="fifo"), str(out))
    with pytest.raises(ConfigError, match="already holds a sweep"):
        run_sweep(space, str(out), resume="never")

    second = run_sweep(space, str(out))  # resume=auto: Tuner.restore
    assert second["restored"] and second["errors"] == []
    assert second["num_trials"] == 2 and second["status_counts"]["completed"] == 2
    after = {d.name: _result_lines(d) for d in (out / "sweep").glob("pretrain_trial_*")}
    assert set(before) <= set(after) and len(after) == 2
    for name, lines in after.items():
        epochs = [r["epoch"] for r in lines]
        assert epochs[-1] == 2 and len(set(epochs)) == len(epochs), (name, epochs)  # no epoch trained twice
    interrupted = [n for n, lines in before.items() if lines[-1]["epoch"] < 2]
    for name in interrupted:  # the interrupted trial continued from its checkpoint, not from scratch
        assert after[name][-1]["resumed_from_epoch"] == before[name][-1]["epoch"]
    assert (out / "best_config.json").is_file()


def test_cpu_starvation_refused(ray_session, synthetic_prepared, tmp_path):
    from macdiff_ray.tune.sweep import run_sweep

    space = _space(synthetic_prepared, {"diffusion.tau": {"grid": [0.0]}}, scheduler="fifo", max_concurrent=2)
    with pytest.raises(ConfigError, match="Ray Data"):
        run_sweep(space, str(tmp_path / "s"))
    assert not (tmp_path / "s" / "sweep").exists()


@pytest.mark.extended  # 105 s on the slow AMD box; the ASHA sweep above takes the Tune path, and the augmenter hook test
@pytest.mark.timeout(300)  # of test_eval_ray the fine-tune-with-augmentation-actors path
def test_augment_sweep_runs_every_trial(ray_session, synthetic_prepared, tmp_path):
    """kind: augment, 2 FIFO trials, each a fine-tuning run with its own augmentation actors (synthetic data, an
    untrained checkpoint). The second trial used to wait forever: run_finetune left the first trial's actors alive,
    holding their CPUs. It now shuts down the augmenter it built."""
    from macdiff_ray.augment import save_random_checkpoint
    from macdiff_ray.tune.sweep import run_sweep

    ckpt = save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path / "ckpt", num_frames=16)
    space = parse_space({
        "kind": "augment",
        "base": {"data_dir": str(synthetic_prepared), "benchmark": "synthetic", "checkpoint": str(ckpt), "epochs": 1,
                 "batch_size": 16, "num_frames": 16, "augment": True, "labeled_fraction": 0.1,
                 "materialize": True, "cpus_per_worker": 0.25, "eval_every": 1},
        "search": {"t_start": {"grid": [100, 300]}},
        "tune": {"metric": "top1_best", "mode": "max", "scheduler": "fifo", "max_concurrent": 1},
    }, "test-augment-space")
    out = tmp_path / "sweep"
    summary = run_sweep(space, str(out))
    assert summary["errors"] == [] and summary["num_trials"] == 2
    assert summary["status_counts"]["completed"] == 2
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(int(r["t_start"]) for r in rows) == [100, 300]
    assert all(0.0 <= float(r["top1_best_best"]) <= 1.0 for r in rows)


class _InterruptAtEpoch(Callback):
    """Ctrl-C (SIGINT to the driver) when a trial first reports ``epoch``; a marker file keeps a restored copy
    from firing again."""

    def __init__(self, epoch: int, marker: Path):
        self.epoch, self.marker = epoch, marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == self.epoch and not self.marker.exists():
            self.marker.write_text("interrupted\n")
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.extended  # the same Tune-over-Train resume runs in the cluster tier (step 5), on 2 workers too
@pytest.mark.timeout(400)
def test_tune_over_train_trial_with_two_workers_resumes(ray_session, synthetic_prepared, tmp_path):
    """tune.resources.workers: 2 -> each trial is a 2-worker TorchTrainer reporting through TuneReportCallback.
    One trial of 2 epochs, interrupted after epoch 1 and resumed: rank 0's metrics (loss, kNN proxy, world size)
    are the Tune result, and the resumed trial's Train run continues from its committed epoch-1 checkpoint.

    The interruption must land between the epochs: a Train run outlives Tune's stop by a few seconds (Tune gives a
    stopping trial 10 s), long enough to finish a tiny epoch 2. So rank 1 also dies at the start of epoch 2 in the
    first run (the test-only fault, once, no Train retry); the restored run trains epoch 2 with the fault spent."""
    from macdiff_ray.train.checkpoint import committed_checkpoint_name
    from macdiff_ray.tune.sweep import TRIAL_RUNS, run_sweep

    space = parse_space({
        "kind": "pretrain",
        "base": {"data_dir": str(synthetic_prepared), "benchmark": "synthetic", "preset": "tiny", "epochs": 2,
                 "batch_size": 16, "max_steps_per_epoch": 1, "num_frames": 16, "warmup_epochs": 1.0,
                 "checkpoint_every": 1, "use_gpu": "no", "max_failures": 0, "fail_at_epoch": 2, "fail_rank": 1,
                 "fail_once_marker": str(tmp_path / "fault")},
        "search": {"diffusion.tau": {"grid": [1.0]}},
        "tune": {"metric": "knn_top1", "mode": "max", "scheduler": "fifo", "max_concurrent": 1,
                 "resources": {"workers": 2, "cpu": 0.5, "gpu": 0}, "knn_max_train": 64},
    }, "test-train-trials")
    out = tmp_path / "sweep"
    first = run_sweep(space, str(out), callbacks=[_InterruptAtEpoch(1, tmp_path / "interrupted")])
    assert (tmp_path / "interrupted").exists() and first["num_trials"] == 1
    assert first["status_counts"]["completed"] == 0
    (run_dir,) = (out / "sweep" / TRIAL_RUNS).iterdir()  # OUT/sweep/trial_runs/<trial_id>
    trial_id = run_dir.name
    ckpts = run_dir / f"checkpoints_{trial_id}"
    assert committed_checkpoint_name(str(ckpts)) == "epoch_00001"

    second = run_sweep(space, str(out))  # resume=auto: Tuner.restore
    assert second["restored"] and second["errors"] == [] and second["status_counts"]["completed"] == 1
    assert committed_checkpoint_name(str(ckpts)) == "epoch_00002"
    (trial_dir,) = (out / "sweep").glob("pretrain_trial_*")
    lines = _result_lines(trial_dir)
    last = lines[-1]
    assert last["trial_id"] == trial_id and last["epoch"] == 2 and last["world_size"] == 2
    assert last["resumed_from_epoch"] == 1  # epoch 2 trained after the restore, epoch 1 not again
    assert 0.0 <= last["knn_top1"] <= 1.0 and last["knn_epoch"] == 2 and last["loss"] > 0
    assert last["checkpoint_path"].endswith("epoch_00002")
    assert sorted({r["epoch"] for r in lines}) == [1, 2]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 1 and rows[0]["status"] == "completed" and float(rows[0]["knn_top1_best"]) >= 0.0
