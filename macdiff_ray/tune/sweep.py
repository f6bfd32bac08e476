"""Hyperparameter sweeps with Ray Tune: pretraining (noise schedule, mask ratio, decoder depth, lr) and fine-tuning
augmentation (t_s, L).

How a pretraining trial runs (RAY-NOTES hang 2). Early stopping a Tune trial that wraps a multi-worker
``TorchTrainer`` leaks the Train run's CPUs unless the dashboard is on. So a trial here calls the SAME importable
``macdiff_ray.train.pretrain.train_func`` directly in the trial process (world size 1, no TorchTrainer, no process
group; Ray 2.60 refuses ``ray.train.get_context/report/get_checkpoint`` inside a Tune function, even through a
local-mode trainer), after :func:`macdiff_ray.train.pretrain.set_trial_hooks` installs :class:`TrialHooks`, which
- gives the device (CUDA when the trial was given a GPU fraction and ``use_gpu`` allows it) and the Ray Datasets,
- restores from ``ray.tune.get_checkpoint()`` (a resumed or restored trial continues from its last epoch),
- adds the kNN proxy (:class:`macdiff_ray.tune.proxy.KnnProxy`) to each epoch's metrics, and
- reports through ``ray.tune.report`` (metrics every epoch, a ``tune.Checkpoint`` every ``checkpoint_every``).
When ASHA stops a trial, Tune ends the trial actor, and with it everything the trial used: nothing leaks, and no
dashboard is needed. The trial declares its resources (``tune.resources``: CPU and GPU fractions) with
``tune.with_resources``. ``TorchTrainer`` with ``train_func`` is the same function's multi-worker path
(``experiments/pretrain.py``).

Tune over Train (``tune.resources.workers: N``, Ray 2.60's pattern, RAY-NOTES "Tune"): each trial is a function
trainable that builds the pretraining ``TorchTrainer`` (:func:`macdiff_ray.train.pretrain.build_trainer`) with its
own ``ScalingConfig`` (N workers of ``tune.resources.cpu`` CPUs and ``tune.resources.gpu`` GPUs), a run name with
the trial id (``checkpoints_<trial_id>``) and storage under the sweep's (``OUT/sweep/trial_runs/<trial_id>/``,
local or a bucket), and ``callbacks=[TuneReportCallback()]`` (``ray.tune.integration.ray_train``), which passes rank
0's per-epoch report to Tune. Its workers run :func:`train_trial_worker`: ``train_func`` with a quiet console and
the kNN proxy on rank 0. Train's own ``FailureConfig`` restarts the worker group after a node loss; a resumed or
restarted trial builds the same run again, and Ray Train continues it from its committed checkpoint (Tune itself
holds no checkpoint of such a trial). The trial process only launches: it asks for 1 ``trial_launcher`` (the head's
resource, :data:`macdiff_ray.train.resources.LAUNCHER_RESOURCE`) and no CPU, or 0.01 CPU on a Ray without that
resource (:func:`launcher_resources`); its Train controller runs on the same node. ASHA stopping such a trial needs
the dashboard (``ray[default]``) to free the Train run's resources (RAY-NOTES hang 2).

Augment trials (``kind: augment``) call ``macdiff_ray.eval.finetune.run_finetune`` (its own TorchTrainer, with
the diffusion augmenter of ``macdiff_ray.augment.pool``) and report its final top-1 once; FIFO only.

Outputs under ``--output`` (OUT): ``OUT/<name>/`` (Tune experiment: trial dirs, checkpoints, state for
``Tuner.restore``), ``OUT/space.json`` (the validated space and its fingerprint), ``OUT/results.md`` and
``OUT/results.csv`` (ranked table), ``OUT/best_config.json`` (accepted by ``experiments/pretrain.py --config``;
``experiments/finetune.py --config`` for augment sweeps) and ``OUT/summary.json``; Tune-over-Train trials' runs
(checkpoints, TensorBoard events) in ``OUT/<name>/trial_runs/<trial_id>/``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Literal, Optional

from macdiff_ray import console
from macdiff_ray.config import ConfigError, from_dict, to_dict
from macdiff_ray import storage
from macdiff_ray.storage import absolute
from macdiff_ray.train.logging import read_json, write_json
from macdiff_ray.train.tracking import TrackingConfig, end_parent_run, resolve_uri, start_parent_run
from macdiff_ray.tune.space import SearchSpace, build_config, parse_space, to_tune_space

RUN_NAME = "sweep"
TRIAL_RUNS = "trial_runs"  # OUT/<name>/trial_runs/<trial_id>/: the Train runs of Tune-over-Train trials
# Tune FailureConfig.max_failures per trial: a trial on a lost (spot) node restarts from its last checkpoint. Not
# unlimited: a trial that fails for a real bug must end in error, not loop.
TRIAL_MAX_FAILURES = 3


# --------------------------------------------------------------------------------------------------------------
# Trial side
# --------------------------------------------------------------------------------------------------------------
class TrialHooks:
    """The Tune side of ``train_func`` in a trial process (see module docstring). ``proxy(net, epoch, device)``
    returns extra metrics or ``{}``; the last proxy value is carried forward so every report has the metric."""

    def __init__(self, datasets: dict, device: Any, proxy: Any = None):
        from macdiff_ray.tune.proxy import ProxyMetrics

        self.datasets = datasets
        self._device = device
        self.proxy = proxy
        self._proxy_metrics = ProxyMetrics(proxy) if proxy is not None else None

    def device(self):
        return self._device

    def get_dataset_shard(self, name: str):
        if name not in self.datasets:
            raise KeyError(f"trial dataset {name!r} not built; have {sorted(self.datasets)}")
        return self.datasets[name]

    def get_checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()

    def epoch_metrics(self, net: Any, epoch: int, device: Any) -> dict:
        """The proxy on its epochs (and on a trial's first report, so ASHA always has a value); the last value
        (with ``knn_epoch``, the epoch it was measured at) on the others
        (:class:`~macdiff_ray.tune.proxy.ProxyMetrics`)."""
        return self._proxy_metrics(net, epoch, device) if self._proxy_metrics is not None else {}

    def report(self, metrics: dict, checkpoint_dir: Optional[str], checkpoint_name: Optional[str]) -> None:
        import ray.tune

        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        ckpt = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(clean, checkpoint=ckpt)  # persists the checkpoint before the temp dir goes away


def _make_proxy(px: dict, cfg: Any):
    """The kNN proxy of a trial (``px`` = param_space["proxy"]), or None when the sweep's metric is not kNN."""
    from macdiff_ray.tune.proxy import KnnProxy

    if not px["enabled"]:
        return None
    return KnnProxy(cfg.data_dir, cfg.benchmark, cfg.num_frames, cfg.persons, k=px["k"],
                    temperature=px["temperature"], every=px["every"], last_epoch=cfg.epochs,
                    max_train=px["max_train"], seed=cfg.seed)


def pretrain_trial(config: dict) -> None:
    """Tune function trainable of ``kind: pretrain``. ``config`` = ``{"base", "params", "proxy", "trial"}``
    (param_space); ``trial["workers"]`` set: a Tune-over-Train trial (:func:`_train_trial`)."""
    import ray.tune

    from macdiff_ray.train import pretrain as pt
    from macdiff_ray.train.config import PretrainConfig
    from macdiff_ray.train.resources import trial_device

    ctx = ray.tune.get_context()
    trial = config.get("trial") or {}
    if trial.get("workers"):
        return _train_trial(config, ctx)
    trial_dir = ctx.get_trial_dir()
    base = dict(config["base"], output=str(Path(trial_dir) / "run"))
    if config.get("tracking"):  # MLflow: this trial's run is a child of the sweep's run
        base["tracking"] = dict(config["tracking"], run_name=f"trial {ctx.get_trial_id()}")
    cfg = build_config("pretrain", base, config["params"], where=f"trial {ctx.get_trial_id()}: ")
    assert isinstance(cfg, PretrainConfig)
    proxy = _make_proxy(config["proxy"], cfg)
    # CUDA only if Ray gave this trial a GPU: Ray 2.60 shows every GPU to a zero-GPU trial too (issue 13, fix 5)
    device = trial_device(cfg.use_gpu, where=f"trial {ctx.get_trial_id()}: ")
    pt.set_trial_hooks(TrialHooks(pt.build_datasets(cfg), device, proxy))
    try:
        pt.train_func(to_dict(cfg))  # the same function TorchTrainer runs on each worker
    finally:
        pt.set_trial_hooks(None)


def trial_storage(runs: str, trial_id: str) -> str:
    """Run directory (``PretrainConfig.output``, the Train run's ``storage_path``) of a Tune-over-Train trial."""
    return storage.join(runs, trial_id)


def _train_trial(config: dict, ctx: Any) -> None:
    """A Tune-over-Train trial: the pretraining ``TorchTrainer`` of ``trial["workers"]`` workers, reporting to Tune
    through ``TuneReportCallback`` (see the module docstring)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from macdiff_ray.train import pretrain as pt

    trial, trial_id = config["trial"], ctx.get_trial_id()
    where = f"trial {trial_id}: "
    base = dict(config["base"], output=trial_storage(trial["runs"], trial_id), num_workers=trial["workers"],
                cpus_per_worker=trial["cpu"])
    if config.get("tracking"):
        base["tracking"] = dict(config["tracking"], run_name=f"trial {trial_id}")
    cfg = build_config("pretrain", base, config["params"], where=where)
    if cfg.use_gpu == "yes" and trial["gpu"] <= 0:
        raise ConfigError(f"{where}use_gpu 'yes' but tune.resources.gpu is 0")
    use_gpu = trial["gpu"] > 0 and cfg.use_gpu != "no"
    trainer = pt.build_trainer(
        cfg, use_gpu=use_gpu, gpus_per_worker=trial["gpu"], name=f"{pt.RUN_NAME}_{trial_id}",
        callbacks=[TuneReportCallback()], train_loop=train_trial_worker,
        loop_config={"pretrain": to_dict(cfg), "proxy": config["proxy"]},
    )
    result = trainer.fit()  # restores from the run's committed checkpoint when the trial is resumed or restarted
    if result.error is not None:
        raise result.error


class _WorkerExtras:
    """``train.pretrain.set_worker_extras`` of a Tune-over-Train worker: quiet, and ``metrics`` (the kNN proxy
    on rank 0) as extra per-epoch metrics."""

    quiet = True

    def __init__(self, metrics: Any = None):
        self.metrics = metrics

    def epoch_metrics(self, net: Any, epoch: int, device: Any) -> dict:
        return self.metrics(net, epoch, device) if self.metrics is not None else {}


def train_trial_worker(config: dict) -> dict:
    """Ray Train worker function of a Tune-over-Train trial: ``train_func(config["pretrain"])`` with a quiet console
    and, on rank 0 (whose report ``TuneReportCallback`` passes to Tune), the kNN proxy of ``config["proxy"]``."""
    import ray.train

    from macdiff_ray.train import pretrain as pt
    from macdiff_ray.train.config import PretrainConfig
    from macdiff_ray.tune.proxy import ProxyMetrics

    metrics = None
    if ray.train.get_context().get_world_rank() == 0:
        proxy = _make_proxy(config["proxy"], from_dict(PretrainConfig, config["pretrain"]))
        metrics = ProxyMetrics(proxy) if proxy is not None else None
    pt.set_worker_extras(_WorkerExtras(metrics))
    try:
        return pt.train_func(config["pretrain"])
    finally:
        pt.set_worker_extras(None)


def augment_trial(config: dict) -> None:
    """Tune function trainable of ``kind: augment``: one fine-tuning run with diffusion augmentation (t_s =
    ``t_start``, L = ``aug_ratio``), reported once at the end."""
    import ray
    import ray.tune

    ctx = ray.tune.get_context()
    base = dict(config["base"], output=str(Path(ctx.get_trial_dir()) / "run"))
    if config.get("tracking"):
        base["tracking"] = dict(config["tracking"], run_name=f"trial {ctx.get_trial_id()}")
    cfg = build_config("augment", base, config["params"], where=f"trial {ctx.get_trial_id()}: ")
    # Outside the trial's placement group: the augmenter's actors and the fine-tuning trainer declare their own
    # resources, which the trial's small bundle would otherwise have to hold (child tasks are captured by default).
    task = ray.remote(num_cpus=0)(_run_finetune_dict).options(scheduling_strategy="DEFAULT")
    res = ray.get(task.remote(to_dict(cfg)))
    keys = ("top1_last", "top1_best", "top5_last", "top5_best", "wall_time_s")
    ray.tune.report({k: float(res[k]) for k in keys if isinstance(res.get(k), (int, float))}
                    | {"epoch": int(cfg.epochs)})


def _run_finetune_dict(cfg_dict: dict) -> dict:
    from macdiff_ray.config import from_dict
    from macdiff_ray.eval.finetune import FinetuneConfig, run_finetune

    res = run_finetune(from_dict(FinetuneConfig, cfg_dict), quiet=True)
    return {k: v for k, v in res.items() if isinstance(v, (int, float, str, bool))}


# --------------------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------------------
def _check_cpus(space: SearchSpace) -> None:
    """Refuse settings that would starve Ray Data of CPUs (RAY-NOTES hang 1)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    t = space.tune
    workers = t.resources.workers or 1
    # a Tune-over-Train trial's launcher takes 0.01 CPU where no node offers the launcher resource
    launcher = 0.01 if t.resources.train_trial and "cpu" in launcher_resources() else 0.0
    used = t.max_concurrent * (workers * t.resources.cpu + launcher)
    if space.kind == "pretrain" and total and used > total - 0.25:
        per = (f"resources.workers {workers} x resources.cpu {t.resources.cpu:g}" if t.resources.train_trial
               else f"resources.cpu {t.resources.cpu:g}")
        raise ConfigError(
            f"tune: max_concurrent {t.max_concurrent} x {per} = {used:g} of the "
            f"cluster's {total:g} CPUs leaves under 0.25 CPU for the Ray Data read/transform tasks of the trials "
            "(they would hang); lower tune.max_concurrent or tune.resources.cpu"
        )
    if space.kind == "augment" and total:
        # per trial: its 0.01 CPU, the fine-tuning workers, the augmenter's actors (0.5 CPU each, augment/pool.py)
        cfg = build_config("augment", space.base, {})
        used = t.max_concurrent * (0.01 + cfg.num_workers * cfg.cpus_per_worker
                                   + (0.5 * cfg.augment_actors if cfg.augment else 0.0))
        if total - used < 1.0:
            raise ConfigError(
                f"tune/base: {t.max_concurrent} concurrent fine-tuning trial(s) hold {used:g} of the cluster's "
                f"{total:g} CPUs, leaving under 1 CPU for Ray Data tasks (observed hang on 2 CPUs); lower "
                "base.cpus_per_worker (e.g. 0.25), base.augment_actors or tune.max_concurrent"
            )
    if t.resources.gpu > 0:  # demand decides: GPUs the cluster has now or its autoscaler can launch
        from macdiff_ray.train.resources import gpu_supply

        supply = gpu_supply("GPU")
        if workers * t.resources.gpu > supply.capacity:
            raise ConfigError(f"tune.resources.gpu: {workers * t.resources.gpu:g} per trial but the cluster has "
                              f"{supply.describe()}")


def launcher_resources() -> dict:
    """What a trial that only launches a ``TorchTrainer`` asks Tune for (Ray must be initialised): 1 of the head's
    ``trial_launcher`` and no CPU where the cluster offers it (cluster.yaml: the head has 0 CPUs), else 0.01 CPU (a
    Ray placement group refuses an all-zero bundle)."""
    import ray

    from macdiff_ray.train.resources import LAUNCHER_RESOURCE

    if ray.cluster_resources().get(LAUNCHER_RESOURCE, 0) >= 1:
        return {"cpu": 0, "gpu": 0, LAUNCHER_RESOURCE: 1}
    return {"cpu": 0.01, "gpu": 0}


def _trainable(space: SearchSpace):
    from ray import tune

    fn = pretrain_trial if space.kind == "pretrain" else augment_trial
    res = {"cpu": space.tune.resources.cpu, "gpu": space.tune.resources.gpu}
    if space.kind == "augment" or space.tune.resources.train_trial:
        res = launcher_resources()  # the TorchTrainer's workers take their own resources
    return tune.with_resources(fn, res)


def _param_space(space: SearchSpace, tracking: Optional[dict] = None, experiment: str = "") -> dict:
    """``experiment``: the Tune experiment folder (``OUT/<name>``), parent of the Train trials' runs."""
    t = space.tune
    r = t.resources
    return {
        "tracking": tracking,
        "base": space.base,
        "params": to_tune_space(space),
        "proxy": {"enabled": space.kind == "pretrain" and t.metric.startswith("knn"), "k": t.knn_k,
                  "temperature": t.knn_temperature, "every": t.proxy_every, "max_train": t.knn_max_train},
        "trial": ({"workers": r.workers, "cpu": r.cpu, "gpu": r.gpu, "runs": storage.join(experiment, TRIAL_RUNS)}
                  if r.train_trial else None),
    }


def _max_epochs(space: SearchSpace) -> int:
    cfg = build_config(space.kind, space.base, {})
    return int(cfg.epochs)


def build_tuner(space: SearchSpace, output: str, *, name: str = RUN_NAME, stop: Any = None,
                callbacks: Optional[list] = None, tracking: Optional[dict] = None):
    """A fresh ``Tuner`` for ``space`` writing to ``output/name`` (Ray must be initialised)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    t = space.tune
    if t.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=_max_epochs(space), grace_period=t.grace_period,
                                  reduction_factor=t.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    searcher = None
    if any(p.kind != "grid" for p in space.params):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        searcher = BasicVariantGenerator(random_state=t.search_seed, max_concurrent=t.max_concurrent)
    return tune.Tuner(
        _trainable(space),
        param_space=_param_space(space, tracking, storage.join(absolute(output), name)),
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, scheduler=scheduler, search_alg=searcher,
                                    num_samples=t.num_samples, max_concurrent_trials=t.max_concurrent),
        run_config=tune.RunConfig(
            name=name, storage_path=absolute(output), stop=stop, callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            # a trial whose node was lost (spot preemption) restarts from its last checkpoint, a few times
            failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES), verbose=0,
        ),
    )


def _flatten_params(config: dict) -> dict:
    return dict(config.get("params", {}))


def ranked_rows(space: SearchSpace, result_grid: Any) -> list[dict]:
    """One row per trial, best first: ``rank, trial_id, <searched params>, <metric>_last, <metric>_best, loss,
    epochs, status``. Status: ``completed``, ``stopped`` (early, by ASHA or an interruption) or ``error``."""
    metric, mode = space.tune.metric, space.tune.mode
    max_epochs = _max_epochs(space)
    rows = []
    for r in result_grid:
        m = r.metrics or {}
        df = r.metrics_dataframe
        best = None
        if df is not None and metric in df.columns and df[metric].notna().any():
            best = float(df[metric].max() if mode == "max" else df[metric].min())
        epochs = int(m.get("epoch", 0) or 0)
        status = "error" if r.error is not None else ("completed" if epochs >= max_epochs else "stopped")
        row = {"trial_id": m.get("trial_id") or Path(r.path).name}
        row.update({p.path: _flatten_params(r.config).get(p.path) for p in space.params})
        row.update({f"{metric}_last": m.get(metric), f"{metric}_best": best, "loss": m.get("loss"),
                    "epochs": epochs, "status": status})
        rows.append(row)
    sign = -1.0 if mode == "max" else 1.0

    def key(row: dict):
        v = row[f"{metric}_best"]
        return (row["status"] == "error", v is None or (isinstance(v, float) and math.isnan(v)),
                sign * v if v is not None else 0.0)

    rows.sort(key=key)
    for i, row in enumerate(rows):
        row["rank"] = i + 1
    return [{"rank": row.pop("rank"), **row} for row in rows]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_tables(rows: list[dict], output: str) -> tuple[str, str]:
    """``results.md`` and ``results.csv`` under ``output`` (a local folder or a URI)."""
    cols = list(rows[0]) if rows else ["rank", "trial_id"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    storage.write_bytes(storage.join(output, "results.csv"), buf.getvalue().encode())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k in cols) + " |" for row in rows]
    storage.write_bytes(storage.join(output, "results.md"), ("\n".join(lines) + "\n").encode())
    return storage.join(output, "results.md"), storage.join(output, "results.csv")


def best_config(space: SearchSpace, row: dict) -> dict:
    """The config file of the best trial: the base with its searched values, without ``output`` (give
    ``--output`` on the command line)."""
    params = {p.path: row[p.path] for p in space.params}
    cfg = build_config(space.kind, space.base, params, where="best config: ")
    d = to_dict(cfg)
    d.pop("output", None)
    return d


def _space_record(space: SearchSpace) -> dict:
    return {"fingerprint": space.fingerprint(), "source": space.source, "space": space.to_file_dict()}


def run_sweep(space: SearchSpace, output: str, *, resume: Literal["auto", "never", "force"] = "auto",
              name: str = RUN_NAME, stop: Any = None, callbacks: Optional[list] = None,
              quiet: bool = True, tracking: Optional[TrackingConfig] = None, progress: bool = False) -> dict:
    """Run (or resume) a sweep; returns the summary (also ``OUTPUT/summary.json``).

    ``resume``: ``auto`` restores ``OUTPUT/name`` with ``Tuner.restore`` when it holds an earlier sweep (unfinished
    and errored trials are resumed from their last checkpoint; finished ones are kept), else starts fresh;
    ``never`` refuses an OUTPUT that already holds a sweep; ``force`` requires one. A restored sweep must have the
    same space (fingerprint in ``OUTPUT/space.json``). ``stop``/``callbacks``: a Tune stopper and Tune callbacks for a
    fresh sweep (tests interrupt one with a callback that sends SIGINT, as Ctrl-C would).

    ``tracking`` (``mlflow=True``): a parent MLflow run for the sweep (its id kept in ``OUTPUT/mlflow.json``, so a
    resumed sweep adds to the same one) and each trial's run as its child. ``progress``: a bar of trials done
    with the best metric so far.
    """
    from ray import tune

    from macdiff_ray.train.runtime import init_ray

    if resume not in ("auto", "never", "force"):
        raise ConfigError(f"resume: {resume!r} is not one of ['auto', 'never', 'force']")
    t0 = time.perf_counter()
    out = storage.absolute(output)  # a local folder (made absolute: trials do not share our cwd) or a URI
    exp = storage.join(out, name)
    record_path = storage.join(out, "space.json")
    if storage.is_uri(out) and tracking is not None and tracking.mlflow:
        raise ConfigError(f"--output {out}: MLflow tracking of a sweep keeps its record in a local --output; "
                          "use a local folder (or no --mlflow) for a sweep on object storage")
    init_ray(quiet=quiet)
    _check_cpus(space)
    restorable = tune.Tuner.can_restore(exp)
    if restorable and resume == "never":
        raise ConfigError(f"{exp}: already holds a sweep; use another --output or --resume auto")
    if not restorable and resume == "force":
        raise ConfigError(f"{exp}: no sweep to resume there")
    track = _sweep_tracking(space, Path(out), tracking, restorable, name) if not storage.is_uri(out) else None
    bar = SweepProgress(space) if progress and not restorable else None  # Tuner.restore takes no callbacks
    if restorable:
        saved = read_json(record_path)
        if saved is None or saved.get("fingerprint") != space.fingerprint():
            raise ConfigError(
                f"{record_path}: this sweep was started with another search space (fingerprint "
                f"{saved.get('fingerprint') if saved else None} vs now {space.fingerprint()}); "
                "use a new --output or the original space file"
            )
        tuner = tune.Tuner.restore(exp, trainable=_trainable(space), resume_unfinished=True,
                                   resume_errored=True, param_space=_param_space(space, track, exp))
    else:
        write_json(record_path, _space_record(space))
        tuner = build_tuner(space, out, name=name, stop=stop,
                            callbacks=list(callbacks or []) + ([bar] if bar else []), tracking=track)
    try:
        with console.prints_to_log():  # Tune's experiment banner and trial tables: Ray internals
            grid = tuner.fit()
    finally:
        if bar is not None:
            bar.close()
    rows = ranked_rows(space, grid)
    md, csv_path = write_tables(rows, out)
    summary = {
        "experiment": str(exp),
        "restored": bool(restorable),
        "num_trials": len(rows),
        "status_counts": {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped", "error")},
        "metric": space.tune.metric,
        "mode": space.tune.mode,
        "table_md": str(md),
        "table_csv": str(csv_path),
        "best": rows[0] if rows else None,
        "best_config": None,
        "errors": [str(r.error) for r in grid if r.error is not None],
        "wall_time_s": time.perf_counter() - t0,
    }
    ok = [r for r in rows if r["status"] != "error" and r[f"{space.tune.metric}_best"] is not None]
    if ok:
        path = storage.join(out, "best_config.json")
        write_json(path, best_config(space, ok[0]))
        summary["best_config"] = str(path)
    if track:
        best = rows[0] if rows else {}
        end_parent_run(from_dict(TrackingConfig, {k: v for k, v in track.items() if k != "parent_run_id"}),
                       out, track["parent_run_id"],
                       {f"best_{space.tune.metric}": best.get(f"{space.tune.metric}_best"),
                        "num_trials": len(rows)}, status="FAILED" if summary["errors"] else "FINISHED")
        summary["mlflow"] = {"parent_run_id": track["parent_run_id"], "tracking_uri": track["uri"],
                             "experiment": track["experiment"], "run_id": track["parent_run_id"]}
    write_json(storage.join(out, "summary.json"), summary)
    return summary


# --------------------------------------------------------------------------------------------------------------
# Console and tracking of a sweep (driver side)
# --------------------------------------------------------------------------------------------------------------
def _sweep_tracking(space: SearchSpace, out: Path, tracking: Optional[TrackingConfig], restorable: bool,
                    name: str) -> Optional[dict]:
    """The ``tracking`` section every trial gets (``None`` when off): a concrete URI (the sweep folder's local
    store unless a server was given) and the parent run's id, created once and kept in ``OUT/mlflow.json``."""
    if tracking is None or not tracking.mlflow:
        return None
    out.mkdir(parents=True, exist_ok=True)
    record = out / "mlflow.json"
    saved = json.loads(record.read_text()) if record.is_file() and restorable else None
    if saved is not None:
        return saved
    uri = resolve_uri(tracking, str(out.resolve()))
    parent = start_parent_run(tracking, str(out.resolve()), f"sweep {out.name}",
                              {"kind": space.kind, "space": space.source, "fingerprint": space.fingerprint(),
                               "metric": space.tune.metric, "base": space.base,
                               "search": {p.path: f"{p.kind} {list(p.values)}" for p in space.params}})
    section = {"mlflow": True, "uri": uri, "experiment": tracking.experiment, "parent_run_id": parent}
    write_json(str(record), section)
    return section


def _trial_count(space: SearchSpace) -> int:
    grid = 1
    for p in space.params:
        if p.kind == "grid":
            grid *= len(p.values)
    return grid * space.tune.num_samples


def _sweep_callback_base():
    from ray.tune import Callback

    return Callback


class SweepProgress(_sweep_callback_base()):
    """A console bar of a sweep (Tune callback, driver side): trials done out of the total, with the best value of
    the sweep's metric so far and the trial that reached it."""

    def __init__(self, space: SearchSpace):
        from tqdm.auto import tqdm

        self.metric, self.mode = space.tune.metric, space.tune.mode
        self.best: Optional[float] = None
        self.best_trial = ""
        self._bar = tqdm(total=_trial_count(space), desc="sweep", unit="trial", dynamic_ncols=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        v = result.get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            if self.best is None or (v > self.best if self.mode == "max" else v < self.best):
                self.best, self.best_trial = float(v), trial.trial_id
        self._postfix(running=trial.trial_id, epoch=result.get("epoch"))

    def _postfix(self, **extra):
        best = {} if self.best is None else {f"best {self.metric}": f"{self.best:.4g} ({self.best_trial})"}
        self._bar.set_postfix({**best, **{k: v for k, v in extra.items() if v is not None}})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._bar.update(1)
        self._postfix()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._bar.update(1)
        self._postfix(errors=sum(t.status == "ERROR" for t in trials))

    def close(self):
        self._bar.close()

    # Tune pickles RunConfig callbacks into tuner.pkl. A live tqdm bar does not survive that: Tuner.restore of a
    # CLI sweep died with RecursionError in tqdm.utils.__getattr__ while unpickling it (seen on the simulated
    # cluster). The bar stays out of the pickle; a restored copy gets a disabled bar (run_sweep draws none then).
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_bar"}

    def __setstate__(self, state):
        from tqdm.auto import tqdm

        self.__dict__.update(state)
        self._bar = tqdm(disable=True)


__all__ = ["TrialHooks", "pretrain_trial", "augment_trial", "build_tuner", "run_sweep", "ranked_rows",
           "write_tables", "best_config", "parse_space", "RUN_NAME"]
