"""Shared pieces of the thin ``experiments/*.py`` scripts: config-file/flag merging and smoke-test data."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Iterable

from macdiff_ray.config import load_file


def merge_values(args: argparse.Namespace, smoke: dict, skip: Iterable[str] = ()) -> dict:
    """Config values in precedence order: ``--config`` file < ``--smoke-test`` overrides < flags given.

    Flags left at ``None`` (not given) do not override; ``config``/``smoke_test`` and ``skip`` are not config keys.
    Unknown keys are left in, so the strict ``from_dict`` that follows names them.
    """
    values: dict = load_file(args.config) if getattr(args, "config", None) else {}
    if getattr(args, "smoke_test", False):
        values.update(smoke)
    ignored = {"config", "smoke_test", *skip}
    values.update({k: v for k, v in vars(args).items() if k not in ignored and v is not None})
    return values


def smoke_dataset(num_samples: int = 96, num_classes: int = 4, prefix: str = "macdiff_smoke_") -> str:
    """A small synthetic prepared dataset in a new temp folder (benchmark ``synthetic``); returns its path."""
    from macdiff_ray.data.prepare import prepare_dataset

    data = Path(tempfile.mkdtemp(prefix=prefix)) / "synthetic"
    prepare_dataset("synthetic", None, data, progress=False,
                    synthetic_options={"num_samples": num_samples, "num_classes": num_classes, "seed": 0})
    return str(data)
