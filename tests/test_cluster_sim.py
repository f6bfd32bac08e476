"""The cluster-simulation tier (issue 13 "Proof"): the cloud workflow of docs/CLUSTER.md on one machine.

- an S3-compatible server on 127.0.0.1 (tests/s3_server.py), reached by every node through ``AWS_ENDPOINT_URL``
  and the credential variables, as MinIO would be;
- an autoscaling Ray cluster from Ray's fake multi-node provider (tests/sim_cluster.py): a head with 0 CPUs (it
  takes no work; it offers only ``trial_launcher``, as cluster.yaml's head does) and a worker type
  ``sim.worker.accel`` that starts at zero and advertises a GPU-like resource.

Every step is a job submitted through Ray's job API (``JobSubmissionClient``, what ``ray job submit`` calls) with
``working_dir`` = this repository: prepare NW-UCLA (synthetic data where ../shared/data is absent) into the bucket;
pretrain from the bucket with checkpoints in the bucket (the worker node is launched by demand); kill that node
after a committed checkpoint, the run completes from it and results.json says so; then, as jobs running side by
side on the cluster: re-run the finished command (nothing retrained), a linear probe and a fine-tune reading the
checkpoint from the bucket, and a 2-trial sweep of Tune-over-Train trials (2 Train workers each, launched from the
head) stored in the bucket, stopped and resumed with ``--resume``. The measured timeline is printed (``pytest -s``)
and written to ``timeline.json`` in the test's tmp folder.

The working_dir is passed as ``local://REPO`` (the directory is already on every node), not uploaded: the fake
nodes share one Ray session folder, and each node's runtime-env agent re-extracts an uploaded package into it the
first time one of its workers needs it (``overwrite=True`` in Ray 2.60's working_dir plugin), replacing the
directory under a job driver that runs in it. Seen here as a driver's ``os.getcwd()`` failing with
FileNotFoundError and an import failing mid-job. On a real cluster each node has its own disk.

Steps share one cluster and run in file order; a failed step fails the ones after it. The tier is opt-in (about
10 minutes on 2 cores by itself; pyproject's addopts deselect it): ``python -m pytest -q -m cluster``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from s3_server import patched_environ, s3_server

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MACDIFF_SHARED_DATA", REPO.parent / "shared" / "data"))
# Per step, the cluster's start-up included in the first: pyproject's 600 s default was close on a loaded box.
pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]

EPOCHS = 3
SWEEP_EPOCHS = 2
POLL_S = 0.5
TIMELINE: dict = {}


def _user_env(s3env: dict) -> dict:
    """The nodes' environment: the machine's, minus Ray variables of the test session, plus the S3 settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(s3env, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return env


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    from sim_cluster import SimCluster

    work = tmp_path_factory.mktemp("cluster_sim")
    t_start = time.monotonic()
    with s3_server(log_path=str(work / "s3.log")) as s3env, patched_environ(s3env):
        cluster = SimCluster(work, _user_env(s3env), max_workers=2)
        t0 = time.monotonic()
        cluster.start()
        TIMELINE["head_start_s"] = round(time.monotonic() - t0, 1)
        try:
            from ray.job_submission import JobSubmissionClient

            yield {"cluster": cluster, "client": JobSubmissionClient(cluster.dashboard), "work": work,
                   "bucket": f"s3://{s3env['MACDIFF_TEST_BUCKET']}", "state": {}, "jobs": {}}
        finally:
            TIMELINE["tier_s"] = round(time.monotonic() - t_start, 1)
            (work / "timeline.json").write_text(json.dumps(TIMELINE, indent=2))
            print("\ncluster simulation timeline:", json.dumps(TIMELINE, indent=2))
            cluster.stop()


def _submit(sim, entrypoint: str) -> str:
    # local://: the repository is already on every (fake) node; see the module docstring
    return sim["client"].submit_job(entrypoint=entrypoint, runtime_env={"working_dir": f"local://{REPO}"})


def _wait(sim, job_id: str, timeout: float, want: str = "SUCCEEDED") -> str:
    from ray.job_submission import JobStatus

    client = sim["client"]
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {timeout:.0f} s:\n{client.get_job_logs(job_id)[-6000:]}")
        time.sleep(POLL_S)
    logs = client.get_job_logs(job_id)
    assert status.value == want, f"job {job_id}: {status}\n{logs[-8000:]}"
    return logs


def _job_seconds(sim, job_id: str) -> float:
    """A finished job's run time as the cluster recorded it (start to end)."""
    info = sim["client"].get_job_info(job_id)
    return round((info.end_time - info.start_time) / 1000.0, 1)


def _read_json(uri: str) -> dict:
    from macdiff_ray import storage

    return json.loads(storage.read_bytes(uri).decode())


def _committed_epoch(checkpoints_uri: str):
    from macdiff_ray.train.checkpoint import committed_checkpoint_name

    name = committed_checkpoint_name(checkpoints_uri)
    return int(name.split("_")[-1]) if name else None


def test_1_prepare_into_bucket(sim):
    bucket = sim["bucket"]
    ucla = SHARED / "nw_ucla" / "all_sqe"
    if ucla.is_dir():
        cmd = f"python experiments/prepare_data.py --format ucla --input {ucla} --output {bucket}/prepared/data"
        sim["state"].update(benchmark="ucla-xview", dataset="NW-UCLA")
    else:  # real data absent: the synthetic format, same path through the bucket
        cmd = (f"python experiments/prepare_data.py --format synthetic --num-samples 160 --num-classes 4 "
               f"--output {bucket}/prepared/data")
        sim["state"].update(benchmark="synthetic", dataset="synthetic (../shared/data absent)")
    TIMELINE["dataset"] = sim["state"]["dataset"]
    t0 = time.monotonic()
    _wait(sim, _submit(sim, cmd + " --no-progress"), timeout=600)
    TIMELINE["prepare_s"] = round(time.monotonic() - t0, 1)
    from macdiff_ray.data.manifest import load_manifest

    m = load_manifest(f"{bucket}/prepared/data", verify_checksums=True)
    assert m["num_samples"] > 0 and sim["state"]["benchmark"] in m["split_counts"]


def _pretrain_cmd(sim) -> str:
    b = sim["bucket"]
    return (f"python experiments/pretrain.py --smoke-test --data {b}/prepared/data "
            f"--benchmark {sim['state']['benchmark']} --epochs {EPOCHS} --num-workers 1 --use-gpu auto "
            f"--checkpoint-every 1 --output {b}/runs/pre")


def test_2_autoscaler_node_types_are_read_on_the_cluster(sim):
    """``--use-gpu auto`` reads the node types: a job on the head sees the GPU-like resource as launchable
    although no worker is up (max_workers 2 x 1); the head offers the trial launchers' resource and no CPU."""
    from sim_cluster import ACCEL, LAUNCHERS

    from macdiff_ray.train.resources import LAUNCHER_RESOURCE

    cluster = sim["cluster"]
    assert cluster.alive_workers() == []  # the worker type starts at zero
    code = ("import json, ray; from macdiff_ray.train.resources import gpu_supply; ray.init(address='auto'); "
            f"s = gpu_supply('{ACCEL}'); g = gpu_supply('GPU'); r = ray.cluster_resources(); "
            f"print('SUPPLY', json.dumps([s.now, s.launchable, s.source, g.now, g.launchable, r.get('CPU', 0), "
            f"r.get('{LAUNCHER_RESOURCE}', 0)]))")
    logs = _wait(sim, _submit(sim, f'python -c "{code}"'), timeout=300)
    line = next(ln for ln in logs.splitlines() if ln.startswith("SUPPLY"))
    now, launchable, source, gpu_now, gpu_launchable, cpus, launchers = json.loads(line.split(" ", 1)[1])
    assert (now, launchable) == (0, 2) and "autoscaling config" in source, line
    assert (gpu_now, gpu_launchable) == (0, 0)  # no real GPU type: auto trains on CPU here
    assert (cpus, launchers) == (0, LAUNCHERS), line  # the head alone: no CPU for work, the launchers' resource


def test_3_pretrain_from_bucket_kill_worker_node_and_resume(sim):
    cluster, b = sim["cluster"], sim["bucket"]
    run = f"{b}/runs/pre"
    t0 = time.monotonic()
    job = _submit(sim, _pretrain_cmd(sim))
    first = cluster.wait_for(cluster.alive_workers, 600, "the first worker node (launched by demand)", every=POLL_S)
    TIMELINE["scale_up_s"] = round(time.monotonic() - t0, 1)  # submit -> worker node ALIVE
    node_id = first[0]["node_id"]
    committed = cluster.wait_for(lambda: _committed_epoch(f"{run}/checkpoints"), 900,
                                 "a committed checkpoint", every=POLL_S)
    others = [n["node_id"] for n in cluster.alive_workers() if n["node_id"] != node_id]
    killed = cluster.kill_node(node_id)
    t_kill = time.monotonic()
    # other_workers_alive_at_kill > 0: the autoscaler had already added a node, so no replacement had to start
    TIMELINE.update(committed_epoch_at_kill=committed, killed_pids=len(killed),
                    kill_at_s=round(t_kill - t0, 1), other_workers_alive_at_kill=len(others))
    replacement = cluster.wait_for(lambda: [n for n in cluster.alive_workers() if n["node_id"] != node_id], 900,
                                   "a replacement worker node", every=POLL_S)
    TIMELINE["replacement_node_s"] = round(time.monotonic() - t_kill, 1)
    assert replacement
    _wait(sim, job, timeout=900)
    TIMELINE["pretrain_job_s"] = round(time.monotonic() - t0, 1)
    res = _read_json(f"{run}/results.json")
    assert res["final_epoch"] == EPOCHS
    assert [h["epoch"] for h in res["history"]] == list(range(1, EPOCHS + 1))
    assert res["resumed"] is True and res["num_resumes"] >= 1
    resumed_epoch = res["resumed_from"][0]["epoch"]
    assert committed <= resumed_epoch < EPOCHS  # the last committed checkpoint (or a later one committed meanwhile)
    assert res["resumed_from"][0]["checkpoint"].endswith(f"epoch_{resumed_epoch:05d}")
    assert res["attempts"][0]["start_epoch"] == 0 and res["attempts"][1]["start_epoch"] == resumed_epoch
    assert res["devices"]["train_workers"] == "cpu" and "autoscaling config" in res["devices"]["use_gpu_decision"]
    # the killed attempt's last checkpoint (reported by the worker) against the one the run resumed from (committed)
    written = res["attempts"][0].get("last_checkpoint_epoch", 0)
    TIMELINE.update(resumed_from_epoch=resumed_epoch, killed_attempt_last_checkpoint_epoch=written,
                    checkpoints_lost=written - resumed_epoch,
                    attempts=[(a["attempt"], a["start_epoch"]) for a in res["attempts"]])
    sim["state"]["pretrain"] = res


def test_4_submit_the_jobs_that_read_the_finished_run(sim):
    """Three jobs at once, as a user queues them on one cluster: the same pretraining command again, a linear
    probe and a fine-tune, both reading the checkpoint from the bucket. The sweep of test 5 runs beside them."""
    b, bench = sim["bucket"], sim["state"]["benchmark"]
    sim["t_after_pretrain"] = time.monotonic()
    sim["jobs"]["rerun"] = _submit(sim, _pretrain_cmd(sim))
    sim["jobs"]["probe"] = _submit(
        sim, f"python experiments/linear_eval.py --smoke-test --checkpoint {b}/runs/pre --data {b}/prepared/data "
             f"--benchmark {bench} --num-workers 1 --output {b}/runs/probe")
    sim["jobs"]["finetune"] = _submit(
        sim, f"python experiments/finetune.py --smoke-test --checkpoint {b}/runs/pre --data {b}/prepared/data "
             f"--benchmark {bench} --num-workers 1 --output {b}/runs/finetune")


def test_5_sweep_of_train_trials_in_bucket_interrupted_and_resumed(sim):
    """2 trials, each a 2-worker TorchTrainer (tune.resources.workers) launched from the head; the Tune experiment
    and the trials' Train runs in the bucket. Stopped with ``ray job stop`` once the first trial has committed
    epoch 1 and lost a worker at the start of epoch 2 (the test-only fault, once; no Train retry), so the stop lands
    between that trial's epochs; resumed with ``--resume force``: both trials complete, the interrupted one from
    its committed checkpoint."""
    from macdiff_ray import storage
    from macdiff_ray.train import checkpoint as ckpt_lib

    b, work = sim["bucket"], sim["work"]
    fault = work / "sweep_fault"
    space = {
        "kind": "pretrain",
        "base": {"data_dir": f"{b}/prepared/data", "benchmark": sim["state"]["benchmark"], "preset": "tiny",
                 "epochs": SWEEP_EPOCHS, "batch_size": 16, "max_steps_per_epoch": 2, "num_frames": 32,
                 "warmup_epochs": 1.0, "checkpoint_every": 1, "keep_checkpoints": 1, "use_gpu": "no",
                 "smoke_test": True, "max_failures": 0, "fail_at_epoch": 2, "fail_rank": 1,
                 "fail_once_marker": str(fault)},
        "search": {"diffusion.tau": {"grid": [-1.0, 1.0]}},
        "tune": {"metric": "knn_top1", "mode": "max", "scheduler": "fifo", "max_concurrent": 1,
                 "resources": {"workers": 2, "cpu": 0.5, "gpu": 0}, "knn_max_train": 64},
    }
    space_file = work / "space.json"
    space_file.write_text(json.dumps(space))
    out = f"{b}/sweep"
    runs = f"{out}/sweep/trial_runs"
    cmd = f"python experiments/sweep.py --space {space_file} --output {out}"
    t0 = time.monotonic()
    job = _submit(sim, cmd + " --resume never")
    # Tuner.restore needs Tune's experiment state in the bucket (written a few seconds into the sweep)
    sim["cluster"].wait_for(lambda: any(f.startswith("experiment_state-") for f in storage.list_files(f"{out}/sweep")),
                            900, "the sweep's experiment state in the bucket", every=POLL_S)
    sim["cluster"].wait_for(fault.exists, 900, "the first trial's fault after its epoch-1 checkpoint", every=POLL_S)
    sim["client"].stop_job(job)
    _wait(sim, job, timeout=300, want="STOPPED")
    TIMELINE["sweep_interrupted_at_s"] = round(time.monotonic() - t0, 1)
    assert not storage.is_file(f"{out}/summary.json")
    (first_trial,) = {f.split("/")[0] for f in storage.list_files(runs) if f.endswith(ckpt_lib.RAY_SNAPSHOT_FILE)}
    first_ckpts = f"{runs}/{first_trial}/checkpoints_{first_trial}"
    assert _committed_epoch(first_ckpts) == 1  # interrupted between its epochs
    _wait(sim, _submit(sim, cmd + " --resume force"), timeout=900)
    TIMELINE["sweep_total_s"] = round(time.monotonic() - t0, 1)
    summary = _read_json(f"{out}/summary.json")
    assert summary["restored"] is True and summary["num_trials"] == 2
    assert summary["status_counts"]["completed"] == 2, summary
    assert storage.is_file(f"{out}/results.md") and storage.is_file(f"{out}/best_config.json")
    trials = sorted({f.split("/")[0] for f in storage.list_files(runs) if f.endswith(ckpt_lib.RAY_SNAPSHOT_FILE)})
    assert len(trials) == 2 and first_trial in trials
    resumed = {}
    for trial in trials:
        ckpts = f"{runs}/{trial}/checkpoints_{trial}"
        assert _committed_epoch(ckpts) == SWEEP_EPOCHS
        state = ckpt_lib.load_checkpoint(f"{ckpts}/epoch_{SWEEP_EPOCHS:05d}")
        assert state["config"]["num_workers"] == 2  # a 2-worker Train run per trial
        resumed[trial] = [a["start_epoch"] for a in state["run_state"]["attempts"]]
    assert resumed[first_trial][0] == 0 and resumed[first_trial][-1] == 1  # continued from its epoch-1 checkpoint
    TIMELINE["sweep_trial_attempt_start_epochs"] = resumed


def test_6_rerun_after_finish_retrains_nothing(sim):
    run = f"{sim['bucket']}/runs/pre"
    before = sim["state"]["pretrain"]
    job = sim["jobs"]["rerun"]
    _wait(sim, job, timeout=900)
    TIMELINE["rerun_job_s"] = _job_seconds(sim, job)
    res = _read_json(f"{run}/results.json")
    assert res["final_epoch"] == EPOCHS and res["final_loss"] == before["final_loss"]
    assert res["history"] == before["history"]
    assert res["attempts"][-1]["start_epoch"] == EPOCHS
    assert res["attempts"][-1]["trained"] is False  # the re-run started no Train run (no worker node for it)
    assert _committed_epoch(f"{run}/checkpoints") == EPOCHS


def test_7_linear_probe_reads_checkpoint_from_bucket(sim):
    b = sim["bucket"]
    job = sim["jobs"]["probe"]
    _wait(sim, job, timeout=900)
    TIMELINE["probe_job_s"] = _job_seconds(sim, job)
    res = _read_json(f"{b}/runs/probe/results.json")
    assert res["top1_last"] is not None and 0.0 <= res["top1_last"] <= 1.0
    assert res["config"]["checkpoint"].startswith(f"{b}/runs/pre")


def test_8_finetune_reads_checkpoint_from_bucket(sim):
    b = sim["bucket"]
    job = sim["jobs"]["finetune"]
    _wait(sim, job, timeout=900)
    TIMELINE["finetune_job_s"] = _job_seconds(sim, job)
    TIMELINE["after_pretrain_s"] = round(time.monotonic() - sim["t_after_pretrain"], 1)
    res = _read_json(f"{b}/runs/finetune/results.json")
    assert res["top1_last"] is not None and 0.0 <= res["top1_last"] <= 1.0
    assert res["config"]["checkpoint"].startswith(f"{b}/runs/pre")
