"""Source-format readers and their registry.

The reader contract
-------------------
Each format module exposes one :class:`FormatSpec` object. ``FORMATS`` maps a format name (the ``--format`` of
``experiments/prepare_data.py``) to it. ``ntu`` and ``pku`` are registered lazily: the registry imports
``macdiff_ray.data.formats.ntu`` and reads its ``NTU_FORMAT`` attribute (``.pku`` -> ``PKU_FORMAT``) the first
time the name is looked up, so a format module can be added without touching this file's imports.

A ``FormatSpec`` provides:

``list_inputs(input_path: Path, options: dict) -> (inputs: list[Path], skipped: list[dict])``
    The files to read, sorted, and the inputs skipped on purpose, each ``{"input": str, "reason": str}`` (e.g.
    an NTU sample on the official missing-skeleton list). Raises :class:`DataFormatError` when ``input_path``
    does not exist or holds no matching file.
``read(path: Path, options: dict) -> list[RawSample]``
    Parse one file into samples (``x`` float32 ``(M, T, V, C)`` in metres, no padding persons or frames,
    0-based label). Raises :class:`DataFormatError` naming the file and the line/field for anything malformed.
    A reader need not check NaN/joint count/label range: ``prepare_dataset`` runs
    :func:`~macdiff_ray.data.samples.validate_sample` on every sample (so one bad sample in a multi-sample
    file can be skipped alone with ``on_error="skip"``).
``dataset(options: dict, samples: list[RawSample]) -> str``
    The manifest ``dataset`` name (``ntu60``/``ntu120``/``pku1``/``ucla``/...), chosen once all samples are read.
    To keep memory bounded the samples it receives carry every field except the coordinates: their ``x`` is an
    empty float32 array of shape ``(0, 0, V, C)``. Decide from labels / setups / subjects only.
``layout: JointLayout``, ``max_persons: int``
    Joint layout and the person axis size M of the shards (samples with fewer persons are zero-padded).
``num_classes: int | None``
    Upper bound checked on every label (``None``: inferred as ``max(label) + 1``).
    ``classes_by_dataset`` optionally refines it per dataset name (``{"ntu60": 60, "ntu120": 120}``).
``option_names: frozenset[str]``
    Format options it accepts (``prepare_dataset(**format_options)``); any other key is an error. ``units`` is
    passed only to formats that list it.
``class_names``: optional tuple of class names (index = 0-based label), or a dict per dataset name.
``fps``: the source frame rate if the dataset documents it (``None``: unknown; never guessed).

CLI flags map to options: ``--missing-list FILE`` -> ``missing_list`` (a path string), ``--units`` -> ``units``,
``--num-samples/--num-classes/--seed`` -> the ``synthetic`` options ``num_samples``/``num_classes``/``seed``.

``options`` is a plain dict of the accepted option names only; a reader should index it with ``options[...]``
only after checking membership (no silent defaults for misspelled keys, which ``prepare_dataset`` rejects).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from macdiff_ray.data.layouts import JointLayout
from macdiff_ray.data.samples import DataFormatError, RawSample

__all__ = ["FormatSpec", "FORMATS", "get_format", "DataFormatError", "RawSample", "files_matching"]


@dataclass(frozen=True)
class FormatSpec:
    """One source format: how to list, read and describe its files (see the module docstring)."""

    name: str
    list_inputs: Callable[[Path, dict], tuple[list[Path], list[dict]]]
    read: Callable[[Path, dict], list[RawSample]]
    dataset: Callable[[dict, list[RawSample]], str]
    layout: JointLayout | Callable[[dict, list[RawSample]], JointLayout]
    num_classes: int | None
    max_persons: int = 1
    option_names: frozenset[str] = frozenset()
    classes_by_dataset: Mapping[str, int] = field(default_factory=dict)
    class_names: tuple[str, ...] | Mapping[str, tuple[str, ...]] | None = None
    fps: float | None = None  # source frame rate where the dataset documents one (manifest "fps")

    def layout_for(self, options: dict, samples: list[RawSample]) -> JointLayout:
        """The layout (a callable ``layout`` decides from the data, e.g. the ``arrays`` format)."""
        return self.layout(options, samples) if callable(self.layout) else self.layout

    def num_classes_for(self, dataset: str) -> int | None:
        return self.classes_by_dataset.get(dataset, self.num_classes)

    def class_names_for(self, dataset: str) -> list[str] | None:
        if self.class_names is None:
            return None
        if isinstance(self.class_names, Mapping):
            names = self.class_names.get(dataset)
            return list(names) if names is not None else None
        return list(self.class_names)


# name -> (module, attribute); imported on first lookup.
_REGISTERED: dict[str, tuple[str, str]] = {
    "ucla": ("macdiff_ray.data.formats.ucla", "UCLA_FORMAT"),
    "msr": ("macdiff_ray.data.formats.msr", "MSR_FORMAT"),
    "utk": ("macdiff_ray.data.formats.utk", "UTK_FORMAT"),
    "arrays": ("macdiff_ray.data.formats.arrays", "ARRAYS_FORMAT"),
    "ctrgcn-npz": ("macdiff_ray.data.formats.ctrgcn_npz", "CTRGCN_NPZ_FORMAT"),
    "pyskl": ("macdiff_ray.data.formats.pyskl", "PYSKL_FORMAT"),
    "synthetic": ("macdiff_ray.data.formats.synthetic", "SYNTHETIC_FORMAT"),
    "ntu": ("macdiff_ray.data.formats.ntu", "NTU_FORMAT"),
    "pku": ("macdiff_ray.data.formats.pku", "PKU_FORMAT"),
}


class _LazyRegistry(Mapping):
    """A read-only ``{name: FormatSpec}`` that imports each format module on first use."""

    def __init__(self, table: dict[str, tuple[str, str]]):
        self._table = table
        self._loaded: dict[str, FormatSpec] = {}

    def __getitem__(self, name: str) -> FormatSpec:
        if name not in self._loaded:
            if name not in self._table:
                raise KeyError(name)
            module, attr = self._table[name]
            spec = getattr(importlib.import_module(module), attr)
            if not isinstance(spec, FormatSpec):
                raise TypeError(f"{module}.{attr} is a {type(spec).__name__}, expected a FormatSpec")
            self._loaded[name] = spec
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


FORMATS: Mapping[str, FormatSpec] = _LazyRegistry(_REGISTERED)


def get_format(name: str) -> FormatSpec:
    """The :class:`FormatSpec` for ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in _REGISTERED:
        raise ValueError(f"unknown data format {name!r}; known formats: {sorted(_REGISTERED)}")
    return FORMATS[name]


def files_matching(input_path: Path, pattern: str, what: str) -> list[Path]:
    """Sorted files under ``input_path`` matching a glob ``pattern`` (or ``input_path`` itself if it is a file).

    Raises :class:`DataFormatError` when the path is missing or nothing matches (``what`` describes the files).
    """
    p = Path(input_path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataFormatError(p, "", f"input path does not exist (expected a folder of {what})")
    files = sorted(f for f in p.glob(pattern) if f.is_file())
    if not files:
        raise DataFormatError(p, "", f"no {what} found (pattern {pattern!r})")
    return files
