"""Generic arrays in ``.npz`` (read with ``allow_pickle=False``): bring your own skeleton data.

Keys: ``x`` float ``(N, T, V, C)`` or ``(N, M, T, V, C)`` zero-padded; ``y`` int ``(N,)`` 0-based labels;
optional ``lengths`` int ``(N,)`` (default: up to the last frame with a non-zero value), ``subject``, ``view``
int ``(N,)``, ``split`` str ``(N,)`` of ``train``/``test``/``""`` (the ``custom`` benchmark), ``sample_id`` str
``(N,)`` (default ``<file stem>_<i>``). A person whose every value is zero is absent.

Options: ``units`` (``m``/``cm``/``mm``, converted to metres); ``layout``: a name for
:func:`~macdiff_ray.data.layouts.get_layout`, or a ``.json`` layout file read strictly by
:func:`~macdiff_ray.data.layouts.load_layout_json` (joint names, parents, root joint, body parts); default
``ntu25`` when V = 25, else a generic layout of V joints; ``center`` (default true): translate each sequence so
that the layout's root joint (``center_joint``) in the first tracked frame of the first person is the origin,
or, for a layout without bones (the generic one), the mean of its joints in that frame. Camera coordinates put
bodies metres from the origin, where random rotations swing the whole body (issue 14: 18.5% probe accuracy
uncentred, 61.9% centred); ``center=false`` keeps them.
The ``ctrgcn-npz`` format reuses :func:`samples_from_arrays`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.layouts import JointLayout, generic_layout, get_layout, load_layout_json
from macdiff_ray.data.samples import DataFormatError, RawSample, center_on_body, center_option

UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def unit_scale(options: dict) -> float:
    units = options["units"] if "units" in options else "m"
    if units not in UNIT_SCALE:
        raise ValueError(f"units must be one of {sorted(UNIT_SCALE)}, got {units!r}")
    return UNIT_SCALE[units]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` without pickle; a pickled (object) member is a :class:`DataFormatError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError:  # numpy's own text advises an unsafe load: not repeated here
                    raise DataFormatError(path, f"field {k}", "cannot be read without pickle: it holds Python "
                                          "objects (an object array), not numbers; save plain numeric arrays") from None
            return out
    except DataFormatError:
        raise
    except ValueError:  # not a zip at all: numpy falls back to pickle and refuses it (its text advises allow_pickle)
        raise DataFormatError(path, "", "not a readable .npz file (not a zip archive of .npy arrays)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataFormatError(path, "", f"not a readable .npz file ({e})") from e


def valid_lengths(x: np.ndarray) -> np.ndarray:
    """``x (N, M, T, V, C)`` -> int ``(N,)``: index of the last frame with any non-zero value, plus one."""
    nz = np.any(x != 0, axis=(1, 3, 4))  # (N, T)
    t = x.shape[2]
    return np.where(nz.any(axis=1), t - np.argmax(nz[:, ::-1], axis=1), 0)


def samples_from_arrays(path: Path, x: np.ndarray, y: np.ndarray, *, lengths: np.ndarray | None = None,
                        subject=None, view=None, split=None, sample_id=None, scale: float = 1.0,
                        prefix: str = "") -> list[RawSample]:
    """Split padded arrays ``x (N, M, T, V, C)`` into :class:`RawSample` (absent persons and padding dropped)."""
    n = x.shape[0]
    for name, arr in (("y", y), ("lengths", lengths), ("subject", subject), ("view", view), ("split", split),
                      ("sample_id", sample_id)):
        if arr is not None and (arr.ndim != 1 or arr.shape[0] != n):
            raise DataFormatError(path, f"field {name}", f"expected shape ({n},), got {arr.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(path, "field y", f"labels must be integers, got dtype {y.dtype}")
    lens = valid_lengths(x) if lengths is None else lengths.astype(np.int64)
    if lengths is not None and ((lens < 0) | (lens > x.shape[2])).any():
        i = int(np.flatnonzero((lens < 0) | (lens > x.shape[2]))[0])
        raise DataFormatError(path, f"field lengths[{i}]", f"{lens[i]} outside [0, {x.shape[2]}]")
    out = []
    for i in range(n):
        xi = x[i, :, : lens[i]]  # (M, T_i, V, C)
        present = np.any(xi != 0, axis=(1, 2, 3)) | ~np.isfinite(xi).all(axis=(1, 2, 3))  # (M,) NaN counts
        sid = str(sample_id[i]) if sample_id is not None else f"{prefix}{i:06d}"
        out.append(RawSample(
            sid, (xi[present] * scale).astype(np.float32), int(y[i]),
            subject=int(subject[i]) if subject is not None else -1,
            view=int(view[i]) if view is not None else -1,
            split=str(split[i]) if split is not None else "",
        ))
    return out


def list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    return files_matching(input_path, "*.npz", ".npz files"), []


def read(path: Path, options: dict) -> list[RawSample]:
    z = load_npz(path)
    for key in ("x", "y"):
        if key not in z:
            raise DataFormatError(path, f"field {key}", f"missing (keys present: {sorted(z)})")
    x = z["x"]
    if x.ndim == 4:
        x = x[:, None]  # (N, 1, T, V, C)
    if x.ndim != 5:
        raise DataFormatError(path, "field x", f"expected (N, T, V, C) or (N, M, T, V, C), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataFormatError(path, "field x", f"expected floats, got dtype {x.dtype}")
    opt = {k: z[k] for k in ("lengths", "subject", "view", "split", "sample_id") if k in z}
    samples = samples_from_arrays(path, x, z["y"], scale=unit_scale(options), prefix=f"{path.stem}_", **opt)
    if center_option(options):
        center_samples(samples, _layout(options, x.shape[3], path))
    return samples


def center_samples(samples: list[RawSample], layout: JointLayout) -> None:
    """Centre each sample in place on ``layout``'s root joint (``center_joint``) in the first tracked frame of
    its first person, or on the mean of its joints there when the layout has no bones (no tree, no root)."""
    joint = layout.center_joint if layout.bones else None
    for s in samples:
        s.x = center_on_body(s.x, joint)


def _layout(options: dict, num_joints: int, path: Path) -> JointLayout:
    """The layout option (a built-in name or a ``.json`` file), else ``ntu25`` for 25 joints, else generic."""
    if "layout" in options:
        value = str(options["layout"])
        if value.endswith(".json") or Path(value).is_file():
            lay = load_layout_json(value)
        else:
            lay = get_layout(value)
        if lay.num_joints != num_joints:
            raise DataFormatError(path, f"option layout={value}", f"layout {lay.name!r} has {lay.num_joints} "
                                                                   f"joints, the data has {num_joints}")
        return lay
    return get_layout("ntu25") if num_joints == 25 else generic_layout(max(num_joints, 1))


def layout_from(options: dict, samples: list[RawSample]) -> JointLayout:
    v = samples[0].x.shape[2] if samples[0].x.ndim == 4 else 0
    return _layout(options, v, Path(samples[0].sample_id))


ARRAYS_FORMAT = FormatSpec(
    name="arrays",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "custom",
    layout=layout_from,
    num_classes=None,
    max_persons=1,
    option_names=frozenset({"units", "layout", "center"}),
)
