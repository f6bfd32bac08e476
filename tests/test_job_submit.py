"""End to end on this machine: `ray start --head`, `ray job submit` a smoke pretraining, `ray stop`.

`ray stop` ends every Ray process on the machine, so conftest.py runs this module before any test that uses the
session-wide local Ray (which then starts afresh). Bounded: each CLI step has its own timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.job_submit]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    exe = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(exe).exists():
        pytest.skip("the `ray` command-line tool is not installed (pip install 'ray[default]')")
    return exe


def test_ray_start_job_submit_smoke_pretrain_ray_stop(tmp_path):
    ray = _ray_cli()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    run_dir = tmp_path / "run"
    start = subprocess.run(
        [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        submit = subprocess.run(
            [ray, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(REPO),
             "--", "python", "experiments/pretrain.py", "--smoke-test", "--output", str(run_dir)],
            env=env, capture_output=True, text=True, timeout=420, cwd=REPO,
        )
        log = submit.stdout[-4000:] + submit.stderr[-2000:]
        assert submit.returncode == 0, log
        assert "succeeded" in submit.stdout, log
        results = json.loads((run_dir / "results.json").read_text())
        assert results["final_epoch"] == 2 and results["checkpoint"], results
        assert results["final_loss"] is not None and results["final_loss"] == results["final_loss"]  # not NaN
    finally:
        stop = subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr[-2000:]
