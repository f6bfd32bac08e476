"""Occlusion masks and simple fill baselines for the motion-reconstruction task (paper Sec. 4.4, Table 5).

Mask convention (the one used by ``diffusion.inpaint``): a bool array shaped like the data, ``(T, V, C)`` for one
sequence or ``(B, T, V, C)`` for a batch, **True = known** (observed), False = occluded (to be reconstructed).
For person-kept batches ``(N, M, T, V, C)`` use ``mask[:, None]`` to broadcast over persons.

Two occlusion kinds, as in the paper: ``num_frames`` (10, 20 or 40) consecutive frames at a random start inside the
valid frames, or one body part (trunk, left arm, right arm, left leg, right leg) from the joint layout's ``parts``
over all valid frames.

Baselines that need no model: :func:`linear_interpolation_fill` (per joint and coordinate over time) and
:func:`mean_pose_fill`. Both accept numpy arrays or torch tensors and return the same kind.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from macdiff_ray.data.layouts import PART_NAMES, JointLayout

__all__ = [
    "PART_NAMES",
    "OCCLUDED_FRAME_COUNTS",
    "frame_occlusion_mask",
    "random_frame_occlusion_masks",
    "part_occlusion_mask",
    "random_part_occlusion_masks",
    "linear_interpolation_fill",
    "mean_pose_fill",
    "compute_mean_pose",
]

#: Frame-occlusion lengths evaluated in the paper (Table 5).
OCCLUDED_FRAME_COUNTS: Tuple[int, ...] = (10, 20, 40)

RngLike = Union[int, np.random.Generator]


def _rng(seed: RngLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_dims(T: int, V: int, C: int) -> None:
    for name, val in (("T", T), ("V", V), ("C", C)):
        if int(val) != val or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")


def _as_layout(layout: Union[JointLayout, Mapping[str, Any]]) -> JointLayout:
    """A JointLayout, or its ``to_dict()`` form (as stored in ``manifest.json``)."""
    if isinstance(layout, JointLayout):
        return layout
    if isinstance(layout, Mapping):
        return JointLayout.from_dict(layout)
    raise TypeError(f"layout: expected a JointLayout or its dict form, got {type(layout).__name__}")


# ----------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------


def frame_occlusion_mask(T: int, V: int, C: int, num_frames: int, start: int) -> np.ndarray:
    """Occlude frames ``[start, start + num_frames)`` of one sequence.

    Returns:
        bool ``(T, V, C)``, True = known.
    """
    _check_dims(T, V, C)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if start < 0 or start + num_frames > T:
        raise ValueError(f"occluded frames [{start}, {start + num_frames}) do not fit in T={T} frames")
    mask = np.ones((T, V, C), dtype=bool)  # (T, V, C)
    mask[start : start + num_frames] = False
    return mask


def _lengths(lengths: Optional[Sequence[int]], batch: Optional[int], T: int) -> np.ndarray:
    if lengths is None:
        if batch is None:
            raise ValueError("give lengths or batch_size")
        return np.full(int(batch), T, dtype=np.int64)
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)  # (B,)
    if batch is not None and arr.shape[0] != batch:
        raise ValueError(f"lengths has {arr.shape[0]} entries but batch_size is {batch}")
    bad = np.flatnonzero((arr < 1) | (arr > T))
    if bad.size:
        raise ValueError(f"lengths[{int(bad[0])}] = {int(arr[bad[0]])} is outside [1, T={T}]")
    return arr


def random_frame_occlusion_masks(
    T: int,
    V: int,
    C: int,
    num_frames: int,
    *,
    lengths: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
    seed: RngLike = 0,
) -> np.ndarray:
    """One random block of ``num_frames`` consecutive occluded frames per sample, inside its valid frames.

    The start is uniform on ``[0, length - num_frames]``. Frames past ``length`` (zero padding) stay known.

    Args:
        T, V, C: the padded sequence shape.
        num_frames: occluded frames per sample (10/20/40 in the paper).
        lengths: valid frames per sample ``(B,)``; default all ``T`` (then give ``batch_size``).
        batch_size: B when ``lengths`` is not given (checked against it when both are).
        seed: an int seed or a ``numpy.random.Generator``.

    Returns:
        bool ``(B, T, V, C)``, True = known. Raises ``ValueError`` naming the sample whose length is shorter than
        ``num_frames``.
    """
    _check_dims(T, V, C)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    lens = _lengths(lengths, batch_size, T)  # (B,)
    short = np.flatnonzero(lens < num_frames)
    if short.size:
        i = int(short[0])
        raise ValueError(f"sample {i} has {int(lens[i])} valid frames, fewer than num_frames={num_frames} to occlude")
    rng = _rng(seed)
    starts = rng.integers(0, lens - num_frames + 1)  # (B,) one start per sample, high exclusive
    t = np.arange(T)  # (T,)
    occluded = (t[None, :] >= starts[:, None]) & (t[None, :] < starts[:, None] + num_frames)  # (B, T)
    return np.broadcast_to(~occluded[:, :, None, None], (lens.shape[0], T, V, C)).copy()  # (B, T, V, C)


def part_occlusion_mask(
    layout: Union[JointLayout, Mapping[str, Any]],
    part: str,
    T: int = 1,
    C: int = 3,
    *,
    length: Optional[int] = None,
) -> np.ndarray:
    """Occlude the joints of one body part (``layout.parts[part]``) over the valid frames.

    Args:
        layout: a ``JointLayout`` (any: ntu25, kinect_v1_20, msr20, ...) or its dict form.
        part: one of ``trunk``, ``left_arm``, ``right_arm``, ``left_leg``, ``right_leg``.
        T: frames; the default 1 gives a ``(1, V, C)`` mask that broadcasts over time.
        C: coordinates.
        length: valid frames (default T); frames past it stay known.

    Returns:
        bool ``(T, V, C)``, True = known.
    """
    lay = _as_layout(layout)
    _check_dims(T, lay.num_joints, C)
    if part not in PART_NAMES:
        raise ValueError(f"part {part!r} is not one of {list(PART_NAMES)}")
    joints = list(lay.parts[part])
    if not joints:
        raise ValueError(f"layout {lay.name!r}: part {part!r} has no joints, nothing to occlude")
    length = T if length is None else int(length)
    if not 1 <= length <= T:
        raise ValueError(f"length {length} is outside [1, T={T}]")
    mask = np.ones((T, lay.num_joints, C), dtype=bool)  # (T, V, C)
    mask[:length, joints] = False
    return mask


def random_part_occlusion_masks(
    layout: Union[JointLayout, Mapping[str, Any]],
    T: int,
    C: int = 3,
    *,
    lengths: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
    parts: Sequence[str] = PART_NAMES,
    seed: RngLike = 0,
) -> Tuple[np.ndarray, list]:
    """One body part drawn uniformly from ``parts`` per sample, occluded over its valid frames.

    Returns:
        ``(masks, names)``: bool ``(B, T, V, C)`` (True = known) and the B part names drawn.
    """
    lay = _as_layout(layout)
    lens = _lengths(lengths, batch_size, T)  # (B,)
    if not parts:
        raise ValueError("parts must name at least one body part")
    rng = _rng(seed)
    choice = rng.integers(0, len(parts), size=lens.shape[0])  # (B,)
    names = [parts[int(i)] for i in choice]
    masks = np.stack(
        [part_occlusion_mask(lay, name, T, C, length=int(n)) for name, n in zip(names, lens)]
    )  # (B, T, V, C)
    return masks, names


# ----------------------------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> Tuple[np.ndarray, Any]:
    """Array or tensor -> (numpy array, function mapping a numpy result back to the input's kind)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        import torch

        dtype, device = x.dtype, x.device
        return x.detach().cpu().numpy(), lambda a: torch.as_tensor(a, dtype=dtype, device=device)
    arr = np.asarray(x)
    return arr, lambda a: a.astype(arr.dtype, copy=False)


def _known(known_mask: Any, shape: Tuple[int, ...]) -> np.ndarray:
    km, _ = _to_numpy(known_mask)
    if km.dtype != np.bool_:
        raise ValueError(f"known_mask: expected a bool mask (True = known), got dtype {km.dtype}")
    try:
        return np.broadcast_to(km, shape)
    except ValueError as e:
        raise ValueError(f"known_mask shape {km.shape} does not broadcast to x shape {shape}") from e


def linear_interpolation_fill(x: Any, known_mask: Any) -> Any:
    """Fill unknown entries by linear interpolation over time between the nearest known frames.

    Works per joint and coordinate, vectorised over all leading axes. Before the first / after the last known
    frame the nearest known value is held; a (joint, coordinate) series with no known frame at all (e.g. a fully
    occluded body part) is filled with 0. Unknown input values are never read, so passing the ground truth as
    ``x`` does not leak it.

    Args:
        x: ``(..., T, V, C)`` array or tensor.
        known_mask: bool, broadcastable to ``x.shape``, True = known.

    Returns:
        Same shape and kind (numpy/torch, dtype, device) as ``x``.
    """
    arr, back = _to_numpy(x)
    if arr.ndim < 3:
        raise ValueError(f"x: expected shape (..., T, V, C), got {arr.shape}")
    known = _known(known_mask, arr.shape)  # (..., T, V, C)
    T = arr.shape[-3]
    xt = np.moveaxis(arr.astype(np.float64), -3, -1)  # (..., V, C, T)
    kt = np.moveaxis(known, -3, -1)  # (..., V, C, T)
    t = np.arange(T)  # (T,)
    prev = np.maximum.accumulate(np.where(kt, t, -1), axis=-1)  # (..., V, C, T) last known frame <= t, or -1
    nxt = np.minimum.accumulate(np.where(kt, t, T)[..., ::-1], axis=-1)[..., ::-1]  # first known >= t, or T
    has_prev, has_next = prev >= 0, nxt < T
    xp = np.take_along_axis(xt, np.clip(prev, 0, T - 1), axis=-1)  # (..., V, C, T)
    xn = np.take_along_axis(xt, np.clip(nxt, 0, T - 1), axis=-1)  # (..., V, C, T)
    span = np.where(has_prev & has_next & (nxt > prev), nxt - prev, 1)  # (..., V, C, T) avoid division by 0
    w = (t - prev) / span  # (..., V, C, T) in [0, 1] where both sides exist
    filled = np.where(has_prev & has_next, xp + w * (xn - xp), np.where(has_prev, xp, np.where(has_next, xn, 0.0)))
    out = np.where(kt, xt, filled)  # (..., V, C, T)
    return back(np.moveaxis(out, -1, -3))  # (..., T, V, C)


def mean_pose_fill(x: Any, known_mask: Any, mean_pose: Any) -> Any:
    """Replace unknown entries by the mean pose.

    Args:
        x: ``(..., T, V, C)`` array or tensor.
        known_mask: bool, broadcastable to ``x.shape``, True = known.
        mean_pose: ``(V, C)`` (e.g. from :func:`compute_mean_pose`) or anything broadcastable to ``x.shape``.

    Returns:
        Same shape and kind as ``x``.
    """
    arr, back = _to_numpy(x)
    if arr.ndim < 3:
        raise ValueError(f"x: expected shape (..., T, V, C), got {arr.shape}")
    known = _known(known_mask, arr.shape)
    mp, _ = _to_numpy(mean_pose)
    try:
        mp = np.broadcast_to(mp.astype(np.float64), arr.shape)  # (..., T, V, C)
    except ValueError as e:
        raise ValueError(f"mean_pose shape {mp.shape} does not broadcast to x shape {arr.shape}") from e
    return back(np.where(known, arr, mp))


def compute_mean_pose(x: Any, lengths: Optional[Sequence[int]] = None) -> np.ndarray:
    """Mean pose over the valid frames of a set of sequences.

    Args:
        x: ``(N, T, V, C)`` array or tensor (e.g. the training split).
        lengths: valid frames per sequence ``(N,)``; default all T.

    Returns:
        float64 ``(V, C)``.
    """
    arr, _ = _to_numpy(x)
    if arr.ndim != 4:
        raise ValueError(f"x: expected shape (N, T, V, C), got {arr.shape}")
    n, T = arr.shape[:2]
    lens = _lengths(lengths, n, T)  # (N,)
    valid = np.arange(T)[None, :] < lens[:, None]  # (N, T)
    total = (arr.astype(np.float64) * valid[:, :, None, None]).sum(axis=(0, 1))  # (V, C)
    return total / valid.sum()
