"""Pictures of real sequences or of saved samples (``generate.py render``): PNG strips and GIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from macdiff_ray.config import ConfigError
from macdiff_ray.generate.data import load_split

__all__ = ["render_sequences"]


def render_sequences(data_dir: str, output: str, *, benchmark: Optional[str] = None, split: str = "test",
                     count: int = 4, seed: int = 0, samples: Optional[str] = None, num_frames: int = 120,
                     crop: float = 0.95) -> list[str]:
    """PNG strips + GIFs of ``count`` sequences, bones and parts from ``data_dir``'s manifest layout.

    ``samples``: a ``samples.npy`` (S, T, V, C) in metres written by :func:`run_sample` (generated sequences);
    otherwise ``count`` seeded real samples of ``benchmark``/``split`` (EvalTransform with the dataset's stats,
    shown in metres; all persons)."""
    from macdiff_ray.data.layouts import JointLayout
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.data.pipeline import dataset_stats
    from macdiff_ray.viz.render import render_gif, render_strip

    if count < 1:
        raise ConfigError(f"count (--num-samples): expected >= 1, got {count}")
    layout = JointLayout.from_dict(load_manifest(data_dir)["layout"])
    folder = Path(output)
    if samples:
        try:
            arr = np.load(samples, allow_pickle=False)  # (S, T, V, C) metres
        except (ValueError, OSError, EOFError) as e:  # numpy's text for object data advises an unsafe load
            kind = "holds Python objects, not a numeric array" if isinstance(e, ValueError) else str(e)
            raise ValueError(f"{samples}: not a readable .npy array of samples ({kind})") from None
        if arr.ndim != 4 or arr.shape[2] != layout.num_joints:
            raise ValueError(f"{samples}: expected (S, T, V={layout.num_joints}, C), got {arr.shape}")
        seqs = [(f"generated_{i}", arr[i]) for i in range(min(count, arr.shape[0]))]
    else:
        if not benchmark:
            raise ConfigError("render: give --benchmark (real sequences) or --samples samples.npy")
        st = dataset_stats(data_dir, benchmark)
        stats = {"mean": list(st.mean), "std": list(st.std)}
        sp = load_split(data_dir, benchmark, split, stats=stats, num_frames=num_frames, crop=crop, limit=count,
                        seed=seed)
        mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))
        seqs = []
        for i in range(sp["x"].shape[0]):
            x_m = (sp["x"][i] * std + mean) * sp["person_valid"][i][:, None, None, None]  # (M, T, V, C) absent = 0
            seqs.append((f"real_{sp['sample_id'][i]}", x_m))
    paths = []
    for name, seq in seqs:
        paths.append(str(render_strip(seq, layout, folder / f"{name}.png", title=name)))
        paths.append(str(render_gif(seq, layout, folder / f"{name}.gif", title=name, stride=2)))
    return paths
