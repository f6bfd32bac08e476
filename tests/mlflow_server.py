"""A real ``mlflow server`` on 127.0.0.1 for the tracking tests (tests/test_console_tracking.py), started early.

Its start-up (imports and the SQLite schema) takes about half a minute on 2 cores, so conftest.py starts it in
the background as soon as collection has selected a test that needs it, and the ``mlflow_server`` fixture only
waits for ``/health``. The server runs in its own process group, which is killed at the end (the ``mlflow``
launcher outlives its uvicorn worker by about 20 s on SIGTERM alone).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """One server process: a SQLite store and artifact folder in a temp folder of its own (``root``, removed by
    :meth:`stop`)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="macdiff_mlflow_server_"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "server.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination",
             str(self.root / "art")],
            cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 300.0) -> str:
        """The server's URL once ``/health`` answers 200; RuntimeError with the server's log otherwise."""
        deadline = time.monotonic() + timeout_s  # a loaded 2-core box took over 2 minutes to serve /health
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._log.flush()
                raise RuntimeError(f"mlflow server did not start (exit {self.proc.poll()}): "
                                   f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        try:  # the launcher's children, if the launcher went first
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)  # the store, artifacts and log
