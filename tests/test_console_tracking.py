"""What a user sees and keeps from a run, end to end in subprocesses (each its own local Ray, as a user runs it):
the console (project lines and bars; Ray's internals in RUN_DIR/ray.log unless --verbose), TensorBoard event files
read by TensorBoard's own reader, and MLflow tracking against a real ``mlflow server`` on localhost
(params, per-epoch metrics, artifacts; a sweep's trials as child runs). The server comes from conftest.py
(tests/mlflow_server.py), started in the background at collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]

RAY_DATA_PLAN = "Execution plan of Dataset"


def _env() -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, never a stray cluster
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
               PYTHONPATH=str(REPO))
    return env


def _check(args: list[str], proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _run(args: list[str], timeout: int = 420) -> subprocess.CompletedProcess:
    return _check(args, subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), capture_output=True,
                                       text=True, timeout=timeout))


class _Background:
    """A subprocess started now and collected later, its output in files (a pipe could fill up and stall it)."""

    def __init__(self, args: list[str], folder: Path) -> None:
        self.args, self.folder = args, folder
        self.out, self.err = open(folder / "stdout.txt", "w"), open(folder / "stderr.txt", "w")
        self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=_env(), stdout=self.out,
                                     stderr=self.err, text=True)

    def result(self, timeout: int = 420) -> subprocess.CompletedProcess:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.out.close()
            self.err.close()
        return _check(self.args, subprocess.CompletedProcess(
            self.args, code, (self.folder / "stdout.txt").read_text(), (self.folder / "stderr.txt").read_text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, mlflow_server):
    """The smoke sweep (--verbose), tracked on the local server, started in the background as soon as the server
    is up: it runs beside the smoke pretraining below, so the module waits for one local Ray's start-up instead of
    two in a row."""
    folder = tmp_path_factory.mktemp("sweep")
    out = folder / "sweep"
    run = _Background(["experiments/sweep.py", "--smoke-test", "--verbose", "--output", str(out), "--mlflow-uri",
                       mlflow_server, "--mlflow-experiment", "test-sweep"], folder)
    yield run, out
    run.stop()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mlflow_server, sweep_run):
    """One smoke pretraining, default console, tracked on the local server (the sweep runs beside it)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = _run(["experiments/pretrain.py", "--smoke-test", "--output", str(out), "--mlflow-uri", mlflow_server,
                 "--mlflow-experiment", "test-pretrain"])
    return proc, out


def test_default_console_has_no_ray_internals(smoke_run):
    proc, out = smoke_run
    console = proc.stdout + proc.stderr
    assert RAY_DATA_PLAN not in console
    assert "TrainingReport(" not in console
    assert "epoch 1/2 | loss" in console and "epoch 2/2 | loss" in console  # one summary line per epoch
    assert "pretraining done" in console and str(out / "results.json") in console
    log = (out / "ray.log").read_text()
    assert RAY_DATA_PLAN in log  # Ray's lines were kept, in the run's log file


def test_tensorboard_reads_the_event_files(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = smoke_run
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/mse", "train/uniformity", "train/lr", "train/grad_norm",
            "train/samples_per_s"} <= tags
    loss = acc.Scalars("train/loss")
    results = json.loads((out / "results.json").read_text())
    assert [e.step for e in loss] == [3, 6]  # 3 steps per smoke epoch, 2 epochs
    assert loss[-1].value == pytest.approx(results["final_loss"], rel=1e-6)


def test_mlflow_run_has_params_metrics_and_checkpoint(smoke_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    _, out = smoke_run
    results = json.loads((out / "results.json").read_text())
    run_id = results["mlflow"]["run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "test-pretrain"
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["preset"] == "tiny" and p["epochs"] == "2" and p["diffusion.schedule"]
    assert float(p["effective_lr"]) == pytest.approx(results["effective_lr"])
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [3, 6]
    assert history[-1].value == pytest.approx(results["final_loss"])
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "checkpoint"} <= top
    ckpt = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    assert "checkpoint/checkpoint.pt" in ckpt and "checkpoint/meta.json" in ckpt


def test_sweep_trials_are_child_runs_and_verbose_console_shows_ray_internals(sweep_run, mlflow_server):
    """The sweep runs with --verbose (one subprocess for both checks: each costs a local Ray's start-up): Ray's
    internals from the trials reach the console, and the project's own lines are still there."""
    from mlflow.tracking import MlflowClient

    run, out = sweep_run
    proc = run.result()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_trials"] == 2
    console = proc.stdout + proc.stderr
    assert RAY_DATA_PLAN in console  # verbose: Ray Data's execution plans, logged in the trial processes
    assert "sweep done: 2 trials (2 completed)" in console  # the project's summary line
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("test-sweep")
    runs = client.search_runs([exp.experiment_id])
    parent = summary["mlflow"]["parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 2
    assert {r.info.run_id for r in runs} == {parent} | {r.info.run_id for r in children}
    for r in children:
        assert client.get_metric_history(r.info.run_id, "loss"), r.info.run_name
        assert "knn_top1" in r.data.metrics
    assert client.get_run(parent).info.status == "FINISHED"
