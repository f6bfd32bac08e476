"""A local cluster that behaves like the cloud one (tests/test_cluster_sim.py): Ray's fake multi-node autoscaler
(``FakeMultiNodeProvider``, the provider behind ``ray.cluster_utils.AutoscalingCluster``) with a head that takes no
work (0 CPUs; like cluster.yaml's head it offers only ``trial_launcher`` for the sweeps' trial launchers) and one
worker node type that starts at zero, advertises a GPU-like resource (``accel``: no CUDA behind it) and is
launched by demand; plus the S3 server of tests/s3_server.py, reached through the AWS variables of every node.

Failure detection is tightened for the tests (a lost node is noticed in seconds, not half a minute): the GCS
health-checks raylets every second and declares one dead after 3 failed checks (defaults 3 s and 5), and the
autoscaler terminates a node whose heartbeats stopped 10 s ago (default 30 s), updating every second (default 5).

Not ``AutoscalingCluster`` itself: its config generator needs a file the Ray 2.60 wheel lacks (below), and its
``start()`` runs ``ray stop --force`` first, which ends every Ray process on the machine
(other people's too). The same config is started here with ``ray start --head --block`` on free ports and stopped by
signalling that process; the worker nodes' processes are found by this cluster's GCS address and ended with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

from macdiff_ray.train.resources import LAUNCHER_RESOURCE

WORKER_TYPE = "sim.worker.accel"
ACCEL = "accel"  # the GPU-like custom resource of the worker type
LAUNCHERS = 16  # the head's trial_launcher resource, as in cluster.yaml

# Environment of the head (GCS, raylet, monitor) and so of the worker nodes the monitor starts (see module docstring).
FAST_FAILURE_DETECTION = {"AUTOSCALER_UPDATE_INTERVAL_S": "1", "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10",
                          "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}

_PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
               "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port",
               "--node-manager-port", "--object-manager-port")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_ip() -> str:
    import ray._private.services as services

    return services.get_node_ip_address()


def _proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (ppid, argv) of every process we can read."""
    table = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            argv = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0") if a]
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(d.name)] = (ppid, argv)
    return table


def _descendants(table: dict, root: int) -> list[int]:
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [pid for pid, (ppid, _) in table.items() if ppid == p]
        out += kids
        frontier += kids
    return out


class SimCluster:
    def __init__(self, workdir: Path, env: dict, *, worker_cpus: float = 2, max_workers: int = 1,
                 object_store_mb: int = 256):
        self.workdir = Path(workdir)
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS))))
        self.ip = node_ip()
        self.gcs_address = f"{self.ip}:{self.ports['--port']}"
        self.dashboard = f"http://127.0.0.1:{self.ports['--dashboard-port']}"
        self.env = env
        self.head: Optional[subprocess.Popen] = None
        # The config AutoscalingCluster would generate, written out here: its generator reads
        # fake_multi_node/example.yaml, which the Ray 2.60 wheel does not ship (and so does the monitor, through
        # the "fake_multinode" provider type's defaults). The "external" provider type loads the same
        # FakeMultiNodeProvider class (through tests/sim_provider.py, which fixes one status tag) with built-in
        # defaults instead.
        self.config = {
            "cluster_name": "macdiff-sim",
            "max_workers": max_workers,
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 10,
            "provider": {"type": "external",
                         "module": "sim_provider.SimNodeProvider",  # FakeMultiNodeProvider, one fix
                         "gcs_address": self.gcs_address,  # the fake provider's default is port 6379
                         # No SSH "updaters" (there is no machine to log in to): a node that stops heartbeating
                         # is terminated, as a reclaimed spot instance is, and demand brings up a new one.
                         # With updaters on, the v1 autoscaler tries to restart Ray on it over SSH and its
                         # update loop fails on every pass.
                         "disable_node_updaters": True,
                         "disable_launch_config_check": True,
                         # All fake nodes share one IP: key the autoscaler's heartbeats by node id, or a dead
                         # node's staleness is never seen and it is never replaced.
                         "use_node_id_as_ip": True},
            "head_node_type": "ray.head.default",
            "available_node_types": {
                # the head takes no work: 0 CPUs for Train workers, Ray Data tasks and CPU trials; it hosts the
                # sweeps' trial launchers (macdiff_ray.train.resources.LAUNCHER_RESOURCE), as cluster.yaml's does
                "ray.head.default": {"resources": {"CPU": 0, LAUNCHER_RESOURCE: LAUNCHERS}, "node_config": {},
                                     "max_workers": 0},
                WORKER_TYPE: {"resources": {"CPU": worker_cpus, ACCEL: 1,
                                            "object_store_memory": object_store_mb * 2 ** 20},
                              "node_config": {}, "min_workers": 0, "max_workers": max_workers},
            },
            "auth": {"ssh_user": "ray"}, "file_mounts": {}, "cluster_synced_files": [], "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }
        self.config_path = self.workdir / "autoscaling.json"
        self.object_store_mb = object_store_mb

    def start(self, timeout: float = 240, tries: int = 3) -> None:
        """Start the head; on a loaded machine Ray's fixed 30 s raylet registration wait can expire
        (ray/_private/node.py), so a head that exits during start-up is retried on fresh ports."""
        for attempt in range(1, tries + 1):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                self.stop()
                if attempt == tries:
                    raise
                self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS))))
                self.gcs_address = f"{self.ip}:{self.ports['--port']}"
                self.dashboard = f"http://127.0.0.1:{self.ports['--dashboard-port']}"
                self.config["provider"]["gcs_address"] = self.gcs_address

    def _start_once(self, timeout: float) -> None:
        self.config_path.write_text(json.dumps(self.config))
        ray = str(Path(sys.executable).with_name("ray"))
        tests_dir = str(Path(__file__).resolve().parent)  # the monitor imports sim_provider from here
        pythonpath = os.pathsep.join(p for p in (tests_dir, self.env.get("PYTHONPATH", "")) if p)
        env = dict(self.env, RAY_FAKE_CLUSTER="1", PYTHONPATH=pythonpath, **FAST_FAILURE_DETECTION)
        self.head_log = open(self.workdir / "head.log", "ab")
        self.head = subprocess.Popen(
            [ray, "start", "--head", "--block", f"--autoscaling-config={self.config_path}", "--num-cpus=0",
             f"--resources={json.dumps({LAUNCHER_RESOURCE: LAUNCHERS})}",
             f"--object-store-memory={self.object_store_mb * 2 ** 20}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", "--disable-usage-stats",
             *(f"{k}={v}" for k, v in self.ports.items())],
            env=env, stdout=self.head_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:  # the job agent registers a few seconds after the dashboard answers
            try:
                from ray.job_submission import JobSubmissionClient

                JobSubmissionClient(self.dashboard).list_jobs()
                if self.nodes():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if self.head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulated cluster did not start (see {self.workdir / 'head.log'})")
            time.sleep(2)

    # -- state ---------------------------------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        """The state API's node list (``/api/v0/nodes``): node_id, state, is_head_node, resources_total..."""
        with urllib.request.urlopen(f"{self.dashboard}/api/v0/nodes?limit=100&detail=1", timeout=30) as r:
            data = json.loads(r.read())
        return data["data"]["result"]["result"]

    def alive_workers(self) -> list[dict]:
        return [n for n in self.nodes() if n["state"] == "ALIVE" and not n["is_head_node"]]

    def wait_for(self, predicate, timeout: float, what: str, every: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)

    # -- faults ----------------------------------------------------------------------------------------------------
    def kill_node(self, node_id: str) -> list[int]:
        """SIGKILL a worker node's raylet and every process under it (its workers and agents), as a reclaimed spot
        instance disappears. Returns the pids killed."""
        table = _proc_table()
        raylets = [pid for pid, (_, argv) in table.items()
                   if argv and argv[0].endswith("raylet") and f"--node_id={node_id}" in argv
                   and f"--gcs-address={self.gcs_address}" in argv]
        if len(raylets) != 1:
            raise RuntimeError(f"expected one raylet for node {node_id}, found {raylets}")
        victims = _descendants(table, raylets[0]) + raylets
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return victims

    # -- teardown --------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.head is None:
            return
        try:
            os.killpg(self.head.pid, signal.SIGTERM)  # `ray start --block` shuts its node down on SIGTERM
            self.head.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.head.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Worker nodes were started by the head's monitor process with no reaper: end what still names this GCS.
        time.sleep(2)
        table = _proc_table()
        for pid, (_, argv) in table.items():
            joined = " ".join(argv)
            if self.gcs_address in joined and pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.head_log.close()
        self.head = None
