"""Hyperparameter sweeps with Ray Tune (see :mod:`macdiff_ray.tune.sweep` for how trials run).

- :mod:`.space`: the strict search-space file format (``load_space``, ``parse_space``, ``valid_paths``).
- :mod:`.proxy`: ``KnnProxy``, the cheap kNN top-1 proxy reported during pretraining.
- :mod:`.sweep`: ``run_sweep`` (fresh or ``Tuner.restore``), the trial functions, ranked tables, best config.
"""

from macdiff_ray.tune.space import SearchSpace, TuneSettings, load_space, parse_space, valid_paths

__all__ = ["SearchSpace", "TuneSettings", "load_space", "parse_space", "valid_paths", "run_sweep"]


def __getattr__(name: str):  # lazy: importing the space format must not import Ray Tune
    if name == "run_sweep":
        from macdiff_ray.tune.sweep import run_sweep

        return run_sweep
    raise AttributeError(name)
