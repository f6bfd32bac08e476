"""Shared pieces of the thin ``experiments/*.py`` scripts: config-file/flag merging and smoke-test data."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from macdiff_ray.config import load_file


# Flags of every command that are not config keys (console and tracking options).
CONSOLE_FLAGS = ("verbose", "mlflow", "mlflow_uri", "mlflow_experiment")


def merge_values(args: argparse.Namespace, smoke: dict, skip: Iterable[str] = ()) -> dict:
    """Config values in precedence order: ``--config`` file < ``--smoke-test`` overrides < flags given.

    Flags left at ``None`` (not given) do not override; ``config``/``smoke_test`` and ``skip`` are not config keys.
    Unknown keys are left in, so the strict ``from_dict`` that follows names them.
    """
    values: dict = load_file(args.config) if getattr(args, "config", None) else {}
    if getattr(args, "smoke_test", False):
        values.update(smoke)
    ignored = {"config", "smoke_test", *CONSOLE_FLAGS, *skip}
    values.update({k: v for k, v in vars(args).items() if k not in ignored and v is not None})
    from macdiff_ray.train.tracking import tracking_values

    tracking = tracking_values(args).get("tracking")  # --mlflow / --mlflow-uri given: they override the file
    if tracking:
        values["tracking"] = {**values.get("tracking", {}), **tracking}
    return values


def smoke_dataset(num_samples: int = 96, num_classes: int = 4, prefix: str = "macdiff_smoke_") -> str:
    """A small synthetic prepared dataset in a new temp folder (benchmark ``synthetic``); returns its path."""
    from macdiff_ray.data.prepare import prepare_dataset

    data = Path(tempfile.mkdtemp(prefix=prefix)) / "synthetic"
    prepare_dataset("synthetic", None, data, progress=False,
                    synthetic_options={"num_samples": num_samples, "num_classes": num_classes, "seed": 0})
    return str(data)


def add_console_flags(p: argparse.ArgumentParser) -> None:
    """``--verbose``: Ray's internal logging on the console too (it always goes to ``RUN_DIR/ray.log``)."""
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray's internal logging (execution plans, worker logs); by default it goes to "
                        "RUN_DIR/ray.log and the console shows progress bars and summaries")


def start_console(args: argparse.Namespace, run_dir: Optional[str]) -> None:
    """Route the console of a command whose run directory is ``run_dir`` (see :mod:`macdiff_ray.console`)."""
    from macdiff_ray import console

    console.setup(console.log_path_for(run_dir) if run_dir else None,
                  verbose=bool(getattr(args, "verbose", False)) or console.env_verbose())


def mlflow_line(info: Optional[dict]) -> Optional[str]:
    """Where a run's MLflow record is, for a command's closing summary (None when tracking was off)."""
    if not info:
        return None
    uri = info["tracking_uri"]
    where = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
    return f"run {info.get('run_id')} in experiment {info.get('experiment')!r}: {where}"


def epilog(example: str, outputs: str) -> str:
    """The end of a script's ``--help``: one complete example command and where the outputs go."""
    return f"example:\n  {example}\n\noutputs:\n  {outputs}"


def parser(description: str, example: str, outputs: str) -> argparse.ArgumentParser:
    """An entry script's parser whose ``--help`` ends with :func:`epilog`."""
    return argparse.ArgumentParser(description=description, epilog=epilog(example, outputs),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
