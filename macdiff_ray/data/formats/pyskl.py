"""PYSKL / MMAction2 skeleton annotation pickles, read with a restricted unpickler.

The file is ``{"split": {name: [frame_dir, ...]}, "annotations": [{"frame_dir", "label", "keypoint"
(M, T, V, C), "total_frames", ...}]}``. Pickle can run arbitrary code, so :class:`RestrictedUnpickler` admits
only the globals needed to rebuild numpy arrays, dtypes and scalars and a few builtin containers; any other
global (``os.system``, ``builtins.eval``, ...) raises :class:`DataFormatError` naming it before anything runs.

Options: ``train_split`` / ``test_split`` (names in the file's ``split`` dict; by default ``train`` and
``test`` or ``val`` when present), ``units``, ``layout`` (as for ``arrays``: a name or a ``.json`` file; default
``ntu25`` when V = 25, else generic), ``center`` (default true; as for ``arrays``: the layout's root joint, or the
body centre for a layout without bones, in the first tracked frame is the origin; ``center=false`` keeps the
values).
Samples in neither split keep ``split = ""``. The dataset is ``custom``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.formats.arrays import center_samples, layout_from, unit_scale
from macdiff_ray.data.samples import DataFormatError, RawSample, center_option

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text; encode is side-effect free
        ("collections", "OrderedDict"),
        *{("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                                    "int", "float", "bool", "complex")},
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only :data:`ALLOWED_GLOBALS` (numpy arrays and containers)."""

    def __init__(self, file, source: str | Path):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataFormatError(self._source, "pickle", f"refused global {module}.{name} (only numpy arrays and "
                                                        "builtin containers may be unpickled)")


def safe_load(path: Path):
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; every failure is a :class:`DataFormatError`."""
    data = Path(path).read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataFormatError:
        raise
    except Exception as e:  # malformed pickle streams raise many types (UnpicklingError, EOFError, ...)
        raise DataFormatError(path, "pickle", f"cannot be unpickled: {type(e).__name__}: {e}") from e


def list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    return files_matching(input_path, "*.pkl", "PYSKL .pkl annotation files"), []


def _split_names(path: Path, splits: dict, options: dict) -> tuple[str, str]:
    if "train_split" in options or "test_split" in options:
        if not ("train_split" in options and "test_split" in options):
            raise ValueError("pyskl options train_split and test_split go together")
        names = (options["train_split"], options["test_split"])
    else:
        test = "test" if "test" in splits else "val"
        names = ("train", test)
    for n in names:
        if n not in splits:
            raise DataFormatError(path, "field split", f"no split named {n!r}; the file has {sorted(splits)} "
                                                        "(choose with train_split= / test_split=)")
    return names


def read(path: Path, options: dict) -> list[RawSample]:
    obj = safe_load(path)
    if not isinstance(obj, dict) or "annotations" not in obj or "split" not in obj:
        raise DataFormatError(path, "top level", "expected a dict with 'split' and 'annotations'")
    splits, anns = obj["split"], obj["annotations"]
    if not isinstance(splits, dict) or not isinstance(anns, list):
        raise DataFormatError(path, "top level", "'split' must be a dict and 'annotations' a list")
    train_name, test_name = _split_names(path, splits, options)
    which = {str(f): "test" for f in splits[test_name]}
    which.update({str(f): "train" for f in splits[train_name]})
    scale = unit_scale(options)
    out = []
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            raise DataFormatError(path, where, f"expected a dict, got {type(a).__name__}")
        for key in ("frame_dir", "label", "keypoint"):
            if key not in a:
                raise DataFormatError(path, f"{where}.{key}", "missing")
        kp = a["keypoint"]
        if not isinstance(kp, np.ndarray) or kp.ndim != 4:
            raise DataFormatError(path, f"{where}.keypoint", "expected an ndarray (M, T, V, C)")
        t = int(a["total_frames"]) if "total_frames" in a else kp.shape[1]
        kp = kp[:, :t]  # (M, T, V, C)
        present = np.any(kp != 0, axis=(1, 2, 3)) | ~np.isfinite(kp).all(axis=(1, 2, 3))  # (M,)
        fd = str(a["frame_dir"])
        out.append(RawSample(fd, (kp[present] * scale).astype(np.float32), int(a["label"]), split=which.get(fd, "")))
    if center_option(options) and out:
        center_samples(out, layout_from(options, out))
    return out


PYSKL_FORMAT = FormatSpec(
    name="pyskl",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "custom",
    layout=layout_from,
    num_classes=None,
    max_persons=1,
    option_names=frozenset({"units", "layout", "train_split", "test_split", "center"}),
)
