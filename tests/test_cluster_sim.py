"""The cluster-simulation tier (issue 13 "Proof"): the cloud workflow of docs/CLUSTER.md on one machine.

- an S3-compatible server on 127.0.0.1 (tests/s3_server.py), reached by every node through ``AWS_ENDPOINT_URL``
  and the credential variables, as MinIO would be;
- an autoscaling Ray cluster from Ray's fake multi-node provider (tests/sim_cluster.py): a head with 0 CPUs (it
  takes no work) and a worker type ``sim.worker.accel`` that starts at zero and advertises a GPU-like resource.

Every step is a job submitted through Ray's job API (``JobSubmissionClient``, what ``ray job submit`` calls) with
``working_dir`` = this repository: prepare NW-UCLA (synthetic data where ../shared/data is absent) into the bucket;
pretrain from the bucket with checkpoints in the bucket (the worker node is launched by demand); kill that node
after a committed checkpoint, the run completes from it and results.json says so; re-run the finished command
(nothing retrained); a 2-trial sweep stored in the bucket, stopped and resumed with ``--resume``; a linear probe
reading the checkpoint from the bucket. The measured timeline is printed (``pytest -s``) and written to
``timeline.json`` in the test's tmp folder.

Steps share one cluster and run in file order; a failed step fails the ones after it.
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

EPOCHS = 5
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
    with s3_server(log_path=str(work / "s3.log")) as s3env, patched_environ(s3env):
        cluster = SimCluster(work, _user_env(s3env), max_workers=2)
        t0 = time.monotonic()
        cluster.start()
        TIMELINE["head_start_s"] = round(time.monotonic() - t0, 1)
        try:
            from ray.job_submission import JobSubmissionClient

            yield {"cluster": cluster, "client": JobSubmissionClient(cluster.dashboard), "work": work,
                   "bucket": f"s3://{s3env['MACDIFF_TEST_BUCKET']}", "state": {}}
        finally:
            (work / "timeline.json").write_text(json.dumps(TIMELINE, indent=2))
            print("\ncluster simulation timeline:", json.dumps(TIMELINE, indent=2))
            cluster.stop()


def _submit(sim, entrypoint: str) -> str:
    return sim["client"].submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO)})


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
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status.value == want, f"job {job_id}: {status}\n{logs[-8000:]}"
    return logs


def _read_json(uri: str) -> dict:
    from macdiff_ray import storage

    return json.loads(storage.read_bytes(uri).decode())


def _committed_epoch(run_uri: str):
    from macdiff_ray.train.checkpoint import committed_checkpoint_name

    name = committed_checkpoint_name(f"{run_uri}/checkpoints")
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
    although no worker is up (max_workers 2 x 1)."""
    from sim_cluster import ACCEL

    cluster = sim["cluster"]
    assert cluster.alive_workers() == []  # the worker type starts at zero
    code = ("import json, ray; from macdiff_ray.train.resources import gpu_supply; ray.init(address='auto'); "
            f"s = gpu_supply('{ACCEL}'); g = gpu_supply('GPU'); "
            "print('SUPPLY', json.dumps([s.now, s.launchable, s.source, g.now, g.launchable]))")
    logs = _wait(sim, _submit(sim, f'python -c "{code}"'), timeout=300)
    line = next(ln for ln in logs.splitlines() if ln.startswith("SUPPLY"))
    now, launchable, source, gpu_now, gpu_launchable = json.loads(line.split(" ", 1)[1])
    assert (now, launchable) == (0, 2) and "autoscaling config" in source, line
    assert (gpu_now, gpu_launchable) == (0, 0)  # no real GPU type: auto trains on CPU here


def test_3_pretrain_from_bucket_kill_worker_node_and_resume(sim):
    cluster, b = sim["cluster"], sim["bucket"]
    run = f"{b}/runs/pre"
    t0 = time.monotonic()
    job = _submit(sim, _pretrain_cmd(sim))
    first = cluster.wait_for(cluster.alive_workers, 600, "the first worker node (launched by demand)")
    TIMELINE["scale_up_s"] = round(time.monotonic() - t0, 1)  # submit -> worker node ALIVE
    node_id = first[0]["node_id"]
    committed = cluster.wait_for(lambda: (_committed_epoch(run) or 0) >= 2 and _committed_epoch(run), 900,
                                 "a committed checkpoint of epoch >= 2", every=0.5)
    killed = cluster.kill_node(node_id)
    t_kill = time.monotonic()
    TIMELINE.update(committed_epoch_at_kill=committed, killed_pids=len(killed),
                    kill_at_s=round(t_kill - t0, 1))
    replacement = cluster.wait_for(lambda: [n for n in cluster.alive_workers() if n["node_id"] != node_id], 900,
                                   "a replacement worker node")
    TIMELINE["replacement_node_s"] = round(time.monotonic() - t_kill, 1)
    assert replacement
    _wait(sim, job, timeout=900)
    TIMELINE["pretrain_job_s"] = round(time.monotonic() - t0, 1)
    res = _read_json(f"{run}/results.json")
    assert res["final_epoch"] == EPOCHS
    assert [h["epoch"] for h in res["history"]] == list(range(1, EPOCHS + 1))
    assert res["resumed"] is True and res["num_resumes"] >= 1
    resumed_epoch = res["resumed_from"][0]["epoch"]
    assert resumed_epoch >= committed  # from the last committed checkpoint (or a later one committed meanwhile)
    assert res["resumed_from"][0]["checkpoint"].endswith(f"epoch_{resumed_epoch:05d}")
    assert res["devices"]["train_workers"] == "cpu" and "autoscaling config" in res["devices"]["use_gpu_decision"]
    TIMELINE.update(resumed_from_epoch=resumed_epoch, attempts=[(a["attempt"], a["start_epoch"])
                                                                  for a in res["attempts"]])
    sim["state"]["pretrain"] = res


def test_4_rerun_after_finish_retrains_nothing(sim):
    run = f"{sim['bucket']}/runs/pre"
    before = sim["state"]["pretrain"]
    t0 = time.monotonic()
    _wait(sim, _submit(sim, _pretrain_cmd(sim)), timeout=900)
    TIMELINE["rerun_s"] = round(time.monotonic() - t0, 1)
    res = _read_json(f"{run}/results.json")
    assert res["final_epoch"] == EPOCHS and res["final_loss"] == before["final_loss"]
    assert res["history"] == before["history"]
    assert res["attempts"][-1]["start_epoch"] == EPOCHS
    assert _committed_epoch(run) == EPOCHS


def test_5_sweep_in_bucket_interrupted_and_resumed(sim):
    from macdiff_ray import storage

    b, work = sim["bucket"], sim["work"]
    space = {
        "kind": "pretrain",
        "base": {"data_dir": f"{b}/prepared/data", "benchmark": sim["state"]["benchmark"], "preset": "tiny",
                 "epochs": 3, "batch_size": 16, "max_steps_per_epoch": 2, "num_frames": 32, "warmup_epochs": 1.0,
                 "checkpoint_every": 1, "keep_checkpoints": 1, "use_gpu": "no", "smoke_test": True},
        "search": {"diffusion.tau": {"grid": [-1.0, 1.0]}},
        "tune": {"metric": "knn_top1", "mode": "max", "scheduler": "fifo", "max_concurrent": 1,
                 "resources": {"cpu": 1, "gpu": 0}, "knn_max_train": 64},
    }
    space_file = work / "space.json"
    space_file.write_text(json.dumps(space))
    out = f"{b}/sweep"
    cmd = f"python experiments/sweep.py --space {space_file} --output {out}"
    t0 = time.monotonic()
    job = _submit(sim, cmd + " --resume never")
    # interrupt once the first trial has a checkpoint in the bucket
    sim["cluster"].wait_for(lambda: any("checkpoint_" in f for f in storage.list_files(f"{out}/sweep")), 900,
                            "a trial checkpoint in the bucket", every=1)
    time.sleep(5)  # let Tune write its experiment state after that checkpoint
    sim["client"].stop_job(job)
    _wait(sim, job, timeout=300, want="STOPPED")
    TIMELINE["sweep_interrupted_at_s"] = round(time.monotonic() - t0, 1)
    assert not storage.is_file(f"{out}/summary.json")
    _wait(sim, _submit(sim, cmd + " --resume force"), timeout=900)
    TIMELINE["sweep_total_s"] = round(time.monotonic() - t0, 1)
    summary = _read_json(f"{out}/summary.json")
    assert summary["restored"] is True and summary["num_trials"] == 2
    assert summary["status_counts"]["completed"] == 2, summary
    assert storage.is_file(f"{out}/results.md") and storage.is_file(f"{out}/best_config.json")


def test_6_linear_probe_reads_checkpoint_from_bucket(sim):
    b = sim["bucket"]
    t0 = time.monotonic()
    cmd = (f"python experiments/linear_eval.py --smoke-test --checkpoint {b}/runs/pre --data {b}/prepared/data "
           f"--benchmark {sim['state']['benchmark']} --num-workers 1 --output {b}/runs/probe")
    _wait(sim, _submit(sim, cmd), timeout=900)
    TIMELINE["probe_s"] = round(time.monotonic() - t0, 1)
    res = _read_json(f"{b}/runs/probe/results.json")
    assert res["top1_last"] is not None and 0.0 <= res["top1_last"] <= 1.0
