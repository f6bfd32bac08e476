"""Shared pytest fixtures.

Three tiers: fast unit tests (no fixture), real-data tests (``shared_data`` fixture, skipped with a reason when
``../shared/data`` is absent) and local-Ray integration tests (``ray_session``: one local Ray for the whole run,
2 CPUs, no dashboard).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import pytest

# Before any ray import: quiet, offline, no token auth for the test cluster.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The session-wide Ray below is a local one that ends with the session: no placement-group cleaner per Train run
# (macdiff_ray/train/runtime.py PG_CLEANER_ENV; about 12 s saved per fit).
os.environ.setdefault("MACDIFF_TRAIN_PG_CLEANER", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MACDIFF_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of one folder of ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real data not present: {p} (set MACDIFF_SHARED_DATA to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole pytest session (num_cpus=2, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never join a stray `ray start` cluster (or another test run's) by accident
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=int(1e9),
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
            log_to_driver=False,
        )
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ucla_prepared(tmp_path_factory, shared_data):
    """NW-UCLA converted once per session into Parquet shards (real data)."""
    from macdiff_ray.data.prepare import prepare_dataset

    src = shared_dataset("nw_ucla") / "all_sqe"
    out = tmp_path_factory.mktemp("ucla") / "prepared"
    prepare_dataset("ucla", src, out, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory):
    """A small synthetic dataset (no real data needed)."""
    from macdiff_ray.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("synthetic") / "prepared"
    prepare_dataset("synthetic", None, out, progress=False, synthetic_options={"num_samples": 240, "num_classes": 6, "seed": 0})
    return out


# The tracking tests' MLflow server, started in the background once collection has selected a test that uses the
# fixture (tests/mlflow_server.py: its start-up costs about half a minute, which the tests before them then hide).
_mlflow: Optional["object"] = None


def _start_mlflow() -> None:
    global _mlflow
    from mlflow_server import MlflowServer

    _mlflow = MlflowServer()


def pytest_collection_finish(session):
    if any("mlflow_server" in i.fixturenames for i in session.items) and importlib.util.find_spec("mlflow"):
        _start_mlflow()


def pytest_sessionfinish(session, exitstatus):
    if _mlflow is not None:
        _mlflow.stop()


@pytest.fixture(scope="session")
def mlflow_server():
    """URL of a real MLflow tracking server on 127.0.0.1 (temp SQLite store and artifact folder)."""
    pytest.importorskip("mlflow")
    if _mlflow is None:  # collection saw no test that needs it (e.g. a plugin added one later)
        _start_mlflow()
    try:
        return _mlflow.wait_ready()
    except RuntimeError as e:
        pytest.fail(str(e))


def pytest_collection_modifyitems(config, items):
    """Run the `ray start`/`ray stop` job-submission test first: `ray stop` ends every Ray on the machine, so it
    must not run while the session-wide local Ray (started lazily by ``ray_session``) is alive."""
    first = [i for i in items if i.get_closest_marker("job_submit")]
    items[:] = first + [i for i in items if not i.get_closest_marker("job_submit")]
