"""What a user sees and keeps from a run, end to end in subprocesses (each its own local Ray, as a user runs it):
the console (project lines and bars; Ray's internals in RUN_DIR/ray.log unless --verbose), TensorBoard event files
read by TensorBoard's own reader, and MLflow tracking against a real ``mlflow server`` started here on localhost
(params, per-epoch metrics, artifacts; a sweep's trials as child runs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
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


def _run(args: list[str], timeout: int = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 with a temp SQLite store and artifact folder."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core box took over 2 minutes to serve /health
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mlflow_server):
    """One smoke pretraining, default console, tracked on the local server."""
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


def test_sweep_trials_are_child_runs_and_verbose_console_shows_ray_internals(tmp_path, mlflow_server):
    """The sweep runs with --verbose (one subprocess for both checks: each costs a local Ray's start-up): Ray's
    internals from the trials reach the console, and the project's own lines are still there."""
    from mlflow.tracking import MlflowClient

    out = tmp_path / "sweep"
    proc = _run(["experiments/sweep.py", "--smoke-test", "--verbose", "--output", str(out), "--mlflow-uri",
                 mlflow_server, "--mlflow-experiment", "test-sweep"])
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
