"""Batch-in/batch-out training and evaluation transforms over numpy dicts (METHOD.md "Training").

These callables are what Ray Data runs in ``map_batches(fn, batch_format="numpy")``; they are plain numpy, fully
vectorised over the batch (no Python loop over samples or frames), and can be called directly on dicts of arrays.

Input keys (the prepared Parquet columns, ARCHITECTURE.md): ``x`` (B, M, T_max, V, C) in metres in whatever form
Ray hands it over (see :func:`decode_batch`), ``length`` (B,), ``label`` (B,), and ``num_persons`` (B,) (when
absent, a person counts as present if any of its valid frames is non-zero).

Output keys: ``x`` float32 (B, M', T0, V, C), the normalised clean target; ``x_view`` float32 (B, M', T0, V, C),
the normalised encoder view (``x`` plus sensor noise in training, ``x`` itself in evaluation); ``label`` int64
(B,); ``person_valid`` bool (B, M'). M' = M, or 1 with ``persons="first"`` (the released code pretrains on the
first actor only). Absent persons are exactly zero in ``x`` and ``x_view``.

Order of operations in training (all in metres until the last step):
1. valid-frame crop: ratio p ~ U[crop_min, crop_max] of the valid length, at least ``min(min_frames, length)``
   frames (``min_frames`` defaults to ``round(64 / 120 * num_frames)``, the paper's share), random start, then linear resize (``align_corners=False``, as ``F.interpolate(mode="linear")``) to
   ``num_frames``;
2. one rotation per sample, one angle per axis ~ U(-rot, rot) rad, R = Rz @ Ry @ Rx about the origin of the
   stored coordinates, the same for all persons and for clean and view alike;
3. ``x_view = x + N(0, noise_std^2)`` on present persons only (the diffusion target stays clean);
4. ``(x - mean) / std`` with the benchmark's training statistics (C,), absent persons set back to 0.

Randomness: a transform built with an integer ``seed`` draws each batch's randomness from
``np.random.default_rng([seed, epoch, call_counter, fingerprint(sample_id)])``. ``call_counter`` counts calls on
this instance, so repeated calls on the same batch (a second epoch in-process) differ while the same call order
reproduces; the sample-id fingerprint makes batches from different Ray tasks differ even though each task starts
from a fresh copy of the transform (counter 0). ``epoch`` is the explicit ``epoch`` argument, or, when that is
None, Ray Data's execution index of the running dataset (0 outside Ray), so that every new pass over the same
Ray dataset draws new crops, angles and noise. ``seed=None`` draws fresh OS entropy per batch.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np

from macdiff_ray.config import ConfigError

__all__ = [
    "NormStats",
    "TrainTransformConfig",
    "EvalTransformConfig",
    "TrainTransform",
    "EvalTransform",
    "decode_batch",
    "crop_windows_random",
    "crop_windows_center",
    "crop_resize",
    "rotation_matrices",
    "rotate",
    "person_mask",
    "OUTPUT_KEYS",
]

OUTPUT_KEYS = ("x", "x_view", "label", "person_valid")


# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NormStats:
    """Per-coordinate normalisation statistics of one benchmark's training split (manifest ``stats``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) == 0 or len(mean) != len(std):
            raise ConfigError(f"NormStats: mean and std need the same non-zero length, got {len(mean)} and {len(std)}")
        if not all(np.isfinite(mean)) or not all(np.isfinite(std)):
            raise ConfigError(f"NormStats: non-finite value in mean={mean} std={std}")
        if min(std) <= 0:
            raise ConfigError(f"NormStats.std: every value must be > 0, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def coerce(cls, stats: "NormStats | Mapping[str, Sequence[float]]") -> "NormStats":
        """Accept a ``NormStats`` or a manifest-style mapping ``{"mean": [C], "std": [C]}`` (no other keys)."""
        if isinstance(stats, NormStats):
            return stats
        if not isinstance(stats, Mapping):
            raise ConfigError(f"stats: expected a mapping with 'mean' and 'std', got {type(stats).__name__}")
        keys = set(stats)
        if keys != {"mean", "std"}:
            raise ConfigError(f"stats: expected exactly the keys ['mean', 'std'], got {sorted(keys)}")
        return cls(mean=tuple(stats["mean"]), std=tuple(stats["std"]))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (C,), std (C,)) as float32."""
        return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)


Persons = Literal["all", "first"]
# The paper crops at least 64 frames of a sequence resized to 120: the same share of any target length.
MIN_CROP_FRACTION = 64 / 120


@dataclasses.dataclass(frozen=True)
class TrainTransformConfig:
    """Training augmentation (METHOD.md "Training"); defaults are the paper's / released code's."""

    num_frames: int = 120  # T0
    # The crop keeps at least min(min_frames, length) frames. None = the paper's rule as a fraction of the target
    # length: 64 of 120 frames, i.e. round(min_crop_fraction * num_frames) (17 of 32 on NW-UCLA, whose median
    # sequence has 30 frames: a fixed 64 would switch the random crop off for 85% of its sequences).
    min_frames: Optional[int] = None
    min_crop_fraction: float = MIN_CROP_FRACTION
    crop_min: float = 0.5  # p ~ U[crop_min, crop_max] of the valid length
    crop_max: float = 1.0
    rot: float = 0.3  # radians, per axis, U(-rot, rot)
    noise_std: float = 0.005  # metres, encoder view only
    persons: Persons = "all"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"TrainTransformConfig.num_frames: must be >= 1, got {self.num_frames}")
        if self.min_frames is not None and self.min_frames < 1:
            raise ConfigError(f"TrainTransformConfig.min_frames: must be >= 1 or None, got {self.min_frames}")
        if not 0.0 < self.min_crop_fraction <= 1.0:
            raise ConfigError(
                f"TrainTransformConfig.min_crop_fraction: must be in (0, 1], got {self.min_crop_fraction}"
            )
        if not 0.0 < self.crop_min <= self.crop_max <= 1.0:
            raise ConfigError(
                f"TrainTransformConfig.crop_min/crop_max: need 0 < crop_min <= crop_max <= 1, "
                f"got {self.crop_min}, {self.crop_max}"
            )
        if not 0.0 <= self.rot <= np.pi:
            raise ConfigError(f"TrainTransformConfig.rot: must be in [0, pi], got {self.rot}")
        if self.noise_std < 0:
            raise ConfigError(f"TrainTransformConfig.noise_std: must be >= 0, got {self.noise_std}")
        if self.persons not in ("all", "first"):
            raise ConfigError(f"TrainTransformConfig.persons: must be 'all' or 'first', got {self.persons!r}")

    @property
    def min_crop_frames(self) -> int:
        """The crop's minimum length in frames (before the clip to each sequence's own length)."""
        if self.min_frames is not None:
            return self.min_frames
        return max(1, int(round(self.min_crop_fraction * self.num_frames)))


@dataclasses.dataclass(frozen=True)
class EvalTransformConfig:
    """Evaluation preprocessing: centre crop of ``crop`` x the valid length, resize, normalise, no noise."""

    num_frames: int = 120
    crop: float = 0.95
    persons: Persons = "all"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"EvalTransformConfig.num_frames: must be >= 1, got {self.num_frames}")
        if not 0.0 < self.crop <= 1.0:
            raise ConfigError(f"EvalTransformConfig.crop: must be in (0, 1], got {self.crop}")
        if self.persons not in ("all", "first"):
            raise ConfigError(f"EvalTransformConfig.persons: must be 'all' or 'first', got {self.persons!r}")


# ----------------------------------------------------------------------------------------------------------------
# Decoding what Ray (or pyarrow) hands over
# ----------------------------------------------------------------------------------------------------------------
def _arrow_to_numpy(col: Any) -> np.ndarray:
    """A pyarrow (Chunked)Array, possibly a tensor extension type, -> numpy with the tensor shape restored."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(col, pa.FixedShapeTensorArray):
        return col.to_numpy_ndarray()
    if isinstance(col, pa.ExtensionArray):
        # Ray's own ArrowTensorArray (and friends) know how to become numpy.
        if hasattr(col, "to_numpy"):
            try:
                return np.asarray(col.to_numpy())
            except Exception:  # noqa: BLE001 - fall back on the storage array below
                pass
        col = col.storage
    if pa.types.is_fixed_size_list(col.type):
        dims = []
        values = col
        while pa.types.is_fixed_size_list(values.type):
            dims.append(values.type.list_size)
            values = values.flatten()
        return values.to_numpy(zero_copy_only=False).reshape(len(col), *dims)
    return col.to_numpy(zero_copy_only=False)


def _decode_x(x: Any) -> np.ndarray:
    """Coordinates column in any of the forms Ray hands over -> float32 (B, M, T_max, V, C)."""
    try:
        import pyarrow as pa

        if isinstance(x, (pa.Array, pa.ChunkedArray)):
            x = _arrow_to_numpy(x)
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    if isinstance(x, (list, tuple)):
        x = np.stack([np.asarray(r, dtype=np.float32) for r in x]) if len(x) else np.zeros((0, 1, 1, 1, 1), np.float32)
    x = np.asarray(x)
    if x.dtype == object:
        # Ray falls back on an object array of per-row ndarrays when shapes vary or the type is unknown.
        x = np.stack([np.asarray(r, dtype=np.float32) for r in x]) if len(x) else np.zeros((0, 1, 1, 1, 1), np.float32)
    if x.ndim != 5:
        raise ValueError(f"decode_batch: column 'x' must decode to (B, M, T, V, C), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def decode_batch(batch: Any) -> dict[str, np.ndarray]:
    """Parquet columns (numpy dict, pyarrow Table/RecordBatch or mapping of Arrow columns) -> numpy dict.

    ``x`` becomes float32 (B, M, T_max, V, C) whatever Ray hands over: a (B, M, T, V, C) ndarray, an object array
    of per-row arrays, a pyarrow ``fixed_shape_tensor``/Ray tensor extension array or nested fixed-size lists. Other
    columns become 1-D numpy arrays (strings as object arrays).
    """
    try:
        import pyarrow as pa

        if isinstance(batch, (pa.Table, pa.RecordBatch)):
            batch = {name: batch.column(name) for name in batch.column_names}
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(batch, Mapping):
        raise TypeError(f"decode_batch: expected a mapping of columns or a pyarrow Table, got {type(batch).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, col in batch.items():
        if key == "x":
            out[key] = _decode_x(col)
            continue
        try:
            import pyarrow as pa

            if isinstance(col, (pa.Array, pa.ChunkedArray)):
                col = _arrow_to_numpy(col)
        except ImportError:  # pragma: no cover
            pass
        out[key] = np.asarray(col)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Pure, vectorised building blocks
# ----------------------------------------------------------------------------------------------------------------
def _lengths(length: np.ndarray, t_max: int) -> np.ndarray:
    length = np.asarray(length).astype(np.int64).reshape(-1)  # (B,)
    if length.size and (length.min() < 1 or length.max() > t_max):
        bad = length[(length < 1) | (length > t_max)][0]
        raise ValueError(f"column 'length': every value must be in [1, T_max={t_max}], found {bad}")
    return length


def crop_windows_random(
    length: np.ndarray, p: np.ndarray, u: np.ndarray, min_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random valid-frame windows.

    Args: ``length`` (B,) valid frames; ``p`` (B,) crop ratios; ``u`` (B,) uniforms in [0, 1) for the start.
    Returns ``(start (B,), crop_len (B,))`` int64 with ``crop_len = clip(floor(length * p), min(min_frames,
    length), length)`` and ``start`` uniform in ``[0, length - crop_len]``.
    """
    length = np.asarray(length, np.int64)  # (B,)
    crop_len = np.floor(length * np.asarray(p, np.float64)).astype(np.int64)  # (B,)
    crop_len = np.clip(crop_len, np.minimum(min_frames, length), length)  # (B,)
    crop_len = np.maximum(crop_len, 1)  # (B,)
    start = np.floor(np.asarray(u, np.float64) * (length - crop_len + 1)).astype(np.int64)  # (B,)
    start = np.minimum(start, length - crop_len)  # (B,) guards u == 1.0
    return start, crop_len


def crop_windows_center(length: np.ndarray, crop: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre windows: ``bias = floor((1 - crop) * length / 2)``, ``start = bias``, ``crop_len = length - 2 bias``.

    Returns ``(start (B,), crop_len (B,))`` int64.
    """
    length = np.asarray(length, np.int64)  # (B,)
    bias = np.floor((1.0 - crop) * length / 2.0).astype(np.int64)  # (B,)
    crop_len = np.maximum(length - 2 * bias, 1)  # (B,)
    return bias, crop_len


def crop_resize(x: np.ndarray, start: np.ndarray, crop_len: np.ndarray, num_frames: int) -> np.ndarray:
    """Crop frames ``[start, start + crop_len)`` of each sample and resize them linearly to ``num_frames``.

    Linear interpolation with ``align_corners=False`` (source position ``(j + 0.5) * L / T0 - 0.5`` clamped to
    ``[0, L - 1]``), as ``torch.nn.functional.interpolate(mode="linear")``. A one-frame window repeats that frame.

    Args: ``x`` (B, M, T, V, C); ``start``, ``crop_len`` (B,) int. Returns float32 (B, M, num_frames, V, C).
    """
    B = x.shape[0]
    start = np.asarray(start, np.int64)[:, None]  # (B, 1)
    L = np.asarray(crop_len, np.int64)[:, None]  # (B, 1)
    j = np.arange(num_frames, dtype=np.float64)[None, :] + 0.5  # (1, T0)
    src = j * (L / num_frames) - 0.5  # (B, T0) position inside the window
    src = np.clip(src, 0.0, L - 1)  # (B, T0)
    i0 = np.floor(src).astype(np.int64)  # (B, T0)
    w = (src - i0).astype(np.float32)  # (B, T0) weight of the next frame
    i1 = np.minimum(i0 + 1, L - 1)  # (B, T0)
    b = np.arange(B)[:, None]  # (B, 1)
    # Advanced indices on axes 0 and 2 around a slice: the broadcast index dims come first.
    g0 = x[b, :, start + i0]  # (B, T0, M, V, C)
    g1 = x[b, :, start + i1]  # (B, T0, M, V, C)
    w = w[:, :, None, None, None]  # (B, T0, 1, 1, 1)
    out = g0 + (g1 - g0) * w  # (B, T0, M, V, C)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3, 4), dtype=np.float32)  # (B, M, T0, V, C)


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """Angles (B, 3) about x, y, z in radians -> rotation matrices R = Rz @ Ry @ Rx, float32 (B, 3, 3)."""
    a = np.asarray(angles, np.float64)  # (B, 3)
    c, s = np.cos(a), np.sin(a)  # (B, 3) each
    B = a.shape[0]
    one, zero = np.ones(B), np.zeros(B)
    rx = np.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], -1).reshape(B, 3, 3)
    ry = np.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], -1).reshape(B, 3, 3)
    rz = np.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], -1).reshape(B, 3, 3)
    return (rz @ ry @ rx).astype(np.float32)  # (B, 3, 3)


def rotate(x: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Rotate every point of each sample by its matrix: ``x @ R^T``. ``x`` (B, M, T, V, 3), ``rot`` (B, 3, 3)."""
    B = x.shape[0]
    if x.shape[-1] != 3:
        raise ValueError(f"rotate: needs C = 3 coordinates, got x of shape {x.shape}")
    flat = x.reshape(B, -1, 3)  # (B, M*T*V, 3)
    out = np.matmul(flat, rot.transpose(0, 2, 1))  # (B, M*T*V, 3)
    return out.reshape(x.shape).astype(np.float32, copy=False)  # (B, M, T, V, 3)


def person_mask(x: np.ndarray, length: np.ndarray, num_persons: np.ndarray | None) -> np.ndarray:
    """Which persons are present: ``m < num_persons`` (persons are stored first to last), or, without that column,
    any non-zero coordinate in the valid frames. ``x`` (B, M, T, V, C) -> bool (B, M)."""
    B, M, T = x.shape[:3]
    if num_persons is not None:
        n = np.asarray(num_persons).astype(np.int64).reshape(-1)  # (B,)
        return np.arange(M)[None, :] < n[:, None]  # (B, M)
    frames = np.arange(T)[None, :] < np.asarray(length)[:, None]  # (B, T)
    nonzero = np.any(x != 0, axis=(3, 4))  # (B, M, T)
    return np.any(nonzero & frames[:, None, :], axis=2)  # (B, M)


def _fingerprint(batch: Mapping[str, Any]) -> int:
    """A stable 32-bit fingerprint of the batch's sample ids (0 when there is no ``sample_id`` column)."""
    ids = batch.get("sample_id")
    if ids is None:
        return 0
    text = "\x1f".join(str(v) for v in np.asarray(ids).reshape(-1).tolist())
    return zlib.crc32(text.encode("utf-8"))


def _ray_execution_index() -> int:
    """Ray Data's execution counter of the running dataset (one more per completed pass), 0 outside Ray.

    Ray uses the same (private) counter to reseed its own random operators per execution
    (``RandomSeedConfig(reseed_after_execution=True)``); it reaches task workers with the dataset's DataContext.
    """
    try:
        from ray.data import DataContext

        return int(getattr(DataContext.get_current(), "_execution_idx", 0) or 0)
    except Exception:  # noqa: BLE001 - no Ray, or an API change: fall back to a constant epoch key
        return 0


# ----------------------------------------------------------------------------------------------------------------
# The transforms
# ----------------------------------------------------------------------------------------------------------------
class _BaseTransform:
    def __init__(self, stats: NormStats | Mapping[str, Sequence[float]]):
        self.stats = NormStats.coerce(stats)
        self._mean, self._std = self.stats.arrays()  # (C,), (C,)

    def _prepare(self, batch: Any, persons: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        data = decode_batch(batch)
        for key in ("x", "length", "label"):
            if key not in data:
                raise KeyError(f"{type(self).__name__}: batch lacks column {key!r}; has {sorted(data)}")
        x = data["x"]  # (B, M, T_max, V, C)
        C = x.shape[-1]
        if C != self._mean.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: x has C={C} coordinates but stats have {self._mean.shape[0]} "
                f"(mean={self.stats.mean})"
            )
        length = _lengths(data["length"], x.shape[2])  # (B,)
        valid = person_mask(x, length, data.get("num_persons"))  # (B, M)
        if persons == "first":
            x, valid = x[:, :1], valid[:, :1]  # (B, 1, T_max, V, C), (B, 1)
        label = np.asarray(data["label"]).astype(np.int64).reshape(-1)  # (B,)
        return x, length, valid, label, data

    def _normalise(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = (x - self._mean) / self._std  # (B, M, T0, V, C)
        out *= valid[:, :, None, None, None]  # absent persons -> exactly 0
        return out.astype(np.float32, copy=False)


class TrainTransform(_BaseTransform):
    """Random crop + resize, rotation, view noise, normalisation. See the module docstring for the order.

    ``TrainTransform(stats, num_frames=120, min_frames=None, min_crop_fraction=64/120, crop_min=0.5, crop_max=1.0, rot=0.3,
    noise_std=0.005, persons="all", seed=0, epoch=None)``; ``stats`` is a :class:`NormStats` or the manifest's
    ``{"mean": [C], "std": [C]}``. Call it on a batch dict; returns the OUTPUT_KEYS dict.
    """

    def __init__(
        self,
        stats: NormStats | Mapping[str, Sequence[float]],
        num_frames: int = 120,
        *,
        min_frames: Optional[int] = None,
        min_crop_fraction: float = MIN_CROP_FRACTION,
        crop_min: float = 0.5,
        crop_max: float = 1.0,
        rot: float = 0.3,
        noise_std: float = 0.005,
        persons: Persons = "all",
        seed: int | None = 0,
        epoch: int | None = None,
    ):
        super().__init__(stats)
        self.config = TrainTransformConfig(
            num_frames=num_frames, min_frames=min_frames, min_crop_fraction=min_crop_fraction, crop_min=crop_min, crop_max=crop_max, rot=rot,
            noise_std=noise_std, persons=persons,
        )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigError(f"TrainTransform.seed: expected a non-negative integer or None, got {seed!r}")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0):
            raise ConfigError(f"TrainTransform.epoch: expected a non-negative integer or None, got {epoch!r}")
        self.seed = None if seed is None else int(seed)
        self.epoch = None if epoch is None else int(epoch)
        self._calls = 0

    @classmethod
    def from_config(
        cls, stats: NormStats | Mapping[str, Sequence[float]], cfg: TrainTransformConfig, *, seed: int | None = 0,
        epoch: int | None = None,
    ) -> "TrainTransform":
        return cls(stats, seed=seed, epoch=epoch, **dataclasses.asdict(cfg))

    def _rng(self, batch: Mapping[str, Any]) -> np.random.Generator:
        counter = self._calls
        self._calls += 1
        if self.seed is None:
            return np.random.default_rng()
        epoch = self.epoch if self.epoch is not None else _ray_execution_index()
        return np.random.default_rng([self.seed, epoch, counter, _fingerprint(batch)])

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        cfg = self.config
        x, length, valid, label, data = self._prepare(batch, cfg.persons)
        B = x.shape[0]
        rng = self._rng(data)
        # Fixed draw order (crop, start, angles, noise) so that e.g. rot=0 and rot>0 share the same crops.
        p = rng.uniform(cfg.crop_min, cfg.crop_max, size=B)  # (B,)
        u = rng.random(B)  # (B,)
        angles = rng.uniform(-1.0, 1.0, size=(B, 3)) * cfg.rot  # (B, 3)
        start, crop_len = crop_windows_random(length, p, u, cfg.min_crop_frames)  # (B,), (B,)
        clean = crop_resize(x, start, crop_len, cfg.num_frames)  # (B, M, T0, V, C) metres
        if x.shape[-1] == 3 and cfg.rot > 0:
            clean = rotate(clean, rotation_matrices(angles))  # (B, M, T0, V, C)
        view = clean
        if cfg.noise_std > 0:
            noise = rng.standard_normal(size=clean.shape, dtype=np.float32)  # (B, M, T0, V, C)
            noise *= np.float32(cfg.noise_std) * valid[:, :, None, None, None]  # present persons only
            view = clean + noise  # (B, M, T0, V, C)
        return {
            "x": self._normalise(clean, valid),  # (B, M, T0, V, C)
            "x_view": self._normalise(view, valid),  # (B, M, T0, V, C)
            "label": label,  # (B,)
            "person_valid": valid,  # (B, M)
        }


class EvalTransform(_BaseTransform):
    """Deterministic centre crop (``crop`` x valid length), resize, normalisation; ``x_view`` equals ``x``.

    ``EvalTransform(stats, num_frames=120, crop=0.95, persons="all")``.
    """

    def __init__(
        self,
        stats: NormStats | Mapping[str, Sequence[float]],
        num_frames: int = 120,
        *,
        crop: float = 0.95,
        persons: Persons = "all",
    ):
        super().__init__(stats)
        self.config = EvalTransformConfig(num_frames=num_frames, crop=crop, persons=persons)

    @classmethod
    def from_config(cls, stats: NormStats | Mapping[str, Sequence[float]], cfg: EvalTransformConfig) -> "EvalTransform":
        return cls(stats, **dataclasses.asdict(cfg))

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        cfg = self.config
        x, length, valid, label, _ = self._prepare(batch, cfg.persons)
        start, crop_len = crop_windows_center(length, cfg.crop)  # (B,), (B,)
        clean = crop_resize(x, start, crop_len, cfg.num_frames)  # (B, M, T0, V, C)
        out = self._normalise(clean, valid)  # (B, M, T0, V, C)
        return {"x": out, "x_view": out.copy(), "label": label, "person_valid": valid}
