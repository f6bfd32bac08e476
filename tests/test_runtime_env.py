"""The env_vars a driver gives its Ray workers (train/runtime.py)."""

from macdiff_ray.train import runtime


def test_worker_env_shortens_train_poll_unless_user_set(monkeypatch):
    monkeypatch.delenv(runtime.TRAIN_POLL_ENV, raising=False)
    monkeypatch.delenv(runtime.PG_CLEANER_ENV, raising=False)
    env = runtime.worker_env({"X": "1"})
    assert env == {runtime.TRAIN_POLL_ENV: runtime.TRAIN_POLL_S, "X": "1"}
    assert float(env[runtime.TRAIN_POLL_ENV]) < 2.0  # below Ray Train V2's default poll interval
    monkeypatch.setenv(runtime.TRAIN_POLL_ENV, "3.5")
    assert runtime.worker_env({})[runtime.TRAIN_POLL_ENV] == "3.5"


def test_local_ray_trainer_has_no_placement_group_cleaner(monkeypatch):
    """MACDIFF_TRAIN_PG_CLEANER=0 (set by init_ray for a local Ray): Train runs leave out Ray's placement-group
    cleaner, whose stop cost about 12 s per run; unset (a joined cluster): Ray's own TorchTrainer, cleaner included.
    The switch reaches the workers, where Tune-over-Train trials build their Train runs."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    def callbacks(cls):
        return [type(c) for c in cls(lambda: None, scaling_config=ScalingConfig(num_workers=1))
                ._create_default_callbacks()]

    monkeypatch.delenv(runtime.PG_CLEANER_ENV, raising=False)
    assert runtime.trainer_class() is TorchTrainer
    assert PlacementGroupCleanerCallback in callbacks(TorchTrainer)
    assert runtime.PG_CLEANER_ENV not in runtime.worker_env({})
    monkeypatch.setenv(runtime.PG_CLEANER_ENV, "0")
    local = runtime.trainer_class()
    assert issubclass(local, TorchTrainer) and local is not TorchTrainer
    kept = callbacks(local)
    assert PlacementGroupCleanerCallback not in kept
    assert set(kept) == set(callbacks(TorchTrainer)) - {PlacementGroupCleanerCallback}  # nothing else dropped
    assert runtime.worker_env({})[runtime.PG_CLEANER_ENV] == "0"
