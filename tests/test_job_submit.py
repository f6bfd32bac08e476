"""End to end on this machine, as a user runs it: the README's local steps under Ray 2.60's default token auth.

The shell is a user's: no ``RAY_*`` variable from the test session (conftest.py and .ci/run set
``RAY_AUTH_MODE=disabled`` for the session-wide local Ray; that override is removed here), and a fresh home folder,
so ``ray get-auth-token --generate`` really creates the token. Then: ``export RAY_AUTH_MODE=token``,
``ray start --head``, a client without the variable is refused, ``ray job submit`` of a smoke pretraining succeeds.

Two departures from the README, both for a shared test machine: the head gets free ports for every port Ray would
otherwise fix (so the client is given ``--address``), and it runs under ``ray start --block`` and is stopped by signalling that process, because
``ray stop`` stops every Ray process on the machine, other people's included. conftest.py still runs this module
first. Bounded: each CLI step has its own timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sim_cluster import free_ports  # n distinct free TCP ports (tests/sim_cluster.py)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.job_submit]


# Every fixed default port of a Ray node (GCS 6379, dashboard 8265, agent 52365, client 10001, ...): another Ray on
# a shared machine may hold any of them, and the node then starts without a job agent ("No available agent").
_PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
               "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port",
               "--node-manager-port", "--object-manager-port")


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")  # the CLI of this interpreter, not whatever `ray` PATH finds first
    if not exe.exists():
        pytest.skip("the `ray` command-line tool is not installed (pip install 'ray[default]')")
    return str(exe)


def _user_env(home: Path) -> dict:
    """A user's shell: no Ray variables, a fresh HOME, this interpreter's `python` first on PATH (the job's
    `python` is the cluster's: RAY-NOTES "Jobs")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _readme_local_steps() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"Locally \(Ray 2\.60 token auth.*?```bash\n(.*?)```", text, re.S)
    assert m, "README.md: the local cluster steps block is missing"
    return m.group(1)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:  # 401/403: up, and asking for the token
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def test_readme_steps_run_under_default_token_auth(tmp_path):
    steps = _readme_local_steps()
    for line in ("export RAY_AUTH_MODE=token", "ray get-auth-token --generate",
                 "ray start --head --num-cpus=2 --disable-usage-stats",
                 "ray job submit --working-dir . -- python experiments/pretrain.py --smoke-test --output /tmp/run"):
        assert line in steps, f"README local steps lack {line!r}; this test runs them"
    ray = _ray_cli()
    home = tmp_path / "home"
    home.mkdir()
    env = _user_env(home)
    gen = subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert (home / ".ray" / "auth_token").is_file()
    token_env = dict(env, RAY_AUTH_MODE="token")  # `export RAY_AUTH_MODE=token`
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS))))
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    run_dir = tmp_path / "run"
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())],
        env=token_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        _wait_http(f"{address}/api/version", timeout=180)
        # A client without RAY_AUTH_MODE=token (Ray's default client) sends no token and is refused: the head really
        # runs with token auth, so the success below is the token's doing.
        refused = subprocess.run([ray, "job", "list", "--address", address], env=env, capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode != 0, refused.stdout[-2000:]
        assert "uthentication" in refused.stdout + refused.stderr, (refused.stdout + refused.stderr)[-2000:]
        deadline = time.monotonic() + 120
        while True:  # the dashboard answers a few seconds before the node's job agent has registered
            submit = subprocess.run(
                [ray, "job", "submit", "--address", address, "--working-dir", ".",
                 "--", "python", "experiments/pretrain.py", "--smoke-test", "--output", str(run_dir)],
                env=token_env, capture_output=True, text=True, timeout=420, cwd=REPO,
            )
            if "No available agent to submit job" not in submit.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        log = submit.stdout[-4000:] + submit.stderr[-2000:]
        assert submit.returncode == 0, log
        assert "succeeded" in submit.stdout, log
        results = json.loads((run_dir / "results.json").read_text())
        assert results["final_epoch"] == 2 and results["checkpoint"], results
        assert results["final_loss"] is not None and results["final_loss"] == results["final_loss"]  # not NaN
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` shuts its own node down on SIGTERM
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
