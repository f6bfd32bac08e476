"""The env_vars a driver gives its Ray workers (train/runtime.py)."""

from macdiff_ray.train import runtime


def test_worker_env_shortens_train_poll_unless_user_set(monkeypatch):
    monkeypatch.delenv(runtime.TRAIN_POLL_ENV, raising=False)
    env = runtime.worker_env({"X": "1"})
    assert env == {runtime.TRAIN_POLL_ENV: runtime.TRAIN_POLL_S, "X": "1"}
    assert float(env[runtime.TRAIN_POLL_ENV]) < 2.0  # below Ray Train V2's default poll interval
    monkeypatch.setenv(runtime.TRAIN_POLL_ENV, "3.5")
    assert runtime.worker_env({})[runtime.TRAIN_POLL_ENV] == "3.5"
