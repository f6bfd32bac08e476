"""MLflow experiment tracking, optional, for every training command (pretrain, linear_eval, finetune) and sweeps.

Ray's guidance (``ray.air.integrations.mlflow.setup_mlflow``) is followed: the MLflow run is opened inside the
train function, on rank 0 only; the other ranks log nothing. A run records
- params: the run config flattened to dotted keys (``diffusion.tau``), plus derived values (effective lr,
  steps per epoch, world size, train samples);
- metrics: every epoch's numeric metrics at the epoch's global step;
- artifacts: ``config.json`` and the final checkpoint (``checkpoint/``).

Where runs go (:func:`resolve_uri`): ``TrackingConfig.uri`` if set (a server such as ``http://host:5000``), else a
local store in the run directory: ``sqlite:///RUN_DIR/mlflow.db`` with artifacts in ``RUN_DIR/mlartifacts``
(``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow.db`` opens it). The command line resolves
``--mlflow-uri`` or ``MLFLOW_TRACKING_URI`` on the driver (:func:`from_flags`), so workers need no environment.

Sweeps: the driver opens a parent run for the sweep (:func:`start_parent_run`) and every Tune trial's run is its
child (the ``mlflow.parentRunId`` tag, as MLflow's nested runs), named by the trial id.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from macdiff_ray.config import ConfigError

DEFAULT_EXPERIMENT = "macdiff-ray"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow settings of one run. Off by default; resumable changes (they never alter the training)."""

    mlflow: bool = False  # log this run to MLflow
    uri: Optional[str] = None  # tracking URI; None = a local store in the run directory (see module docstring)
    experiment: str = DEFAULT_EXPERIMENT
    run_name: Optional[str] = None  # None: the run directory's name
    parent_run_id: Optional[str] = None  # set by a sweep: this run is a child of the sweep's run

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ConfigError("TrackingConfig.experiment: empty; give an MLflow experiment name")
        if self.uri is not None and not self.uri:
            raise ConfigError("TrackingConfig.uri: empty string; use null for the local store")


def from_flags(mlflow: bool, uri: Optional[str], experiment: Optional[str] = None) -> Optional[dict]:
    """The ``tracking`` config section of ``--mlflow`` / ``--mlflow-uri URI`` / ``--mlflow-experiment NAME``
    (None when tracking is off). Tracking is on with either flag; the URI is the flag's, else
    ``MLFLOW_TRACKING_URI``, else the run directory's local store."""
    if not mlflow and not uri:
        return None
    return {"mlflow": True, "uri": uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
            "experiment": experiment or DEFAULT_EXPERIMENT}


def add_flags(p) -> None:
    """``--mlflow``, ``--mlflow-uri``, ``--mlflow-experiment`` on an argparse parser."""
    g = p.add_argument_group("experiment tracking (MLflow)")
    g.add_argument("--mlflow", action="store_true",
                   help="log params, per-epoch metrics, the config and the final checkpoint to MLflow "
                        "(a local store RUN_DIR/mlflow.db unless --mlflow-uri or MLFLOW_TRACKING_URI is set)")
    g.add_argument("--mlflow-uri", dest="mlflow_uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 "
                                                           "(implies --mlflow)")
    g.add_argument("--mlflow-experiment", dest="mlflow_experiment", help=f"default {DEFAULT_EXPERIMENT!r}")


FLAG_KEYS = ("mlflow", "mlflow_uri", "mlflow_experiment")


def tracking_values(args) -> dict:
    """``{"tracking": {...}}`` for ``merge_values`` from parsed flags, or ``{}`` when tracking is off."""
    section = from_flags(bool(getattr(args, "mlflow", False)), getattr(args, "mlflow_uri", None),
                         getattr(args, "mlflow_experiment", None))
    return {"tracking": section} if section else {}


def resolve_uri(tc: TrackingConfig, output: str) -> str:
    return tc.uri or f"sqlite:///{os.path.join(output, 'mlflow.db')}"


def local_artifact_root(tc: TrackingConfig, output: str) -> Optional[str]:
    """Artifact root of a new experiment in the local store (the run directory); None for a server's own."""
    return None if tc.uri else "file://" + os.path.join(output, "mlartifacts")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict:
    """Nested dict -> ``{"a.b": value}`` with lists as strings (MLflow params are strings)."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + ".") if v else {key: "{}"})
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def _numeric(metrics: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k.replace("/", "_")] = float(v)
    return out


class RunTracker:
    """One MLflow run on rank 0 of a train function; every method is a no-op elsewhere or when tracking is off.

    ``params``: flattened config and derived values; ``config``: the run config (logged as ``config.json``).
    """

    def __init__(self, tc: TrackingConfig, output: str, *, rank: int, params: Mapping[str, Any],
                 config: Mapping[str, Any], tags: Optional[Mapping[str, str]] = None):
        self.enabled = tc.mlflow and rank == 0
        self.run_id: Optional[str] = None
        self._mlflow = None
        if not self.enabled:
            return
        from ray.air.integrations.mlflow import setup_mlflow

        all_tags = {"macdiff.run_dir": output, **(tags or {})}
        if tc.parent_run_id:
            all_tags["mlflow.parentRunId"] = tc.parent_run_id
        name = tc.run_name or os.path.basename(output.rstrip("/")) or "run"
        self._mlflow = setup_mlflow(
            None, tracking_uri=resolve_uri(tc, output), experiment_name=tc.experiment,
            artifact_location=local_artifact_root(tc, output), create_experiment_if_not_exists=True,
            run_name=name, tags=all_tags, rank_zero_only=False,  # this object is built on rank 0 only
        )
        self.run_id = self._mlflow.active_run().info.run_id
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params per call
            self._mlflow.log_params(dict(items[i:i + 100]))
        self._mlflow.log_dict(dict(config), "config.json")

    def metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        if self._mlflow is not None:
            self._mlflow.log_metrics(_numeric(metrics), step=int(step))

    def checkpoint(self, directory: str) -> None:
        """The checkpoint folder as the run's ``checkpoint/`` artifact (call with the final checkpoint)."""
        if self._mlflow is not None:
            self._mlflow.log_artifacts(directory, artifact_path="checkpoint")

    def finish(self, status: str = "FINISHED") -> None:
        if self._mlflow is not None:
            self._mlflow.end_run(status=status)
            self._mlflow = None


def start_parent_run(tc: TrackingConfig, output: str, name: str, params: Mapping[str, Any]) -> str:
    """A sweep's parent run (driver side); returns its id. The trials' runs are its children."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from macdiff_ray import console

    console.reroute()  # mlflow configured its logger on import: its store set-up notes go to the log file
    uri = resolve_uri(tc, output)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tc.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        tc.experiment, artifact_location=local_artifact_root(tc, output))
    run = client.create_run(exp_id, run_name=name, tags={"macdiff.run_dir": output, "macdiff.kind": "sweep"})
    items = list(flatten(params).items())
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in items[i:i + 100]])
    return run.info.run_id


def end_parent_run(tc: TrackingConfig, output: str, run_id: str, metrics: Mapping[str, Any],
                   status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_uri(tc, output))
    for k, v in _numeric(metrics).items():
        client.log_metric(run_id, k, v)
    client.set_terminated(run_id, status=status)
