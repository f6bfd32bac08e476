"""Search-space files for sweeps: a strict YAML/JSON format that the user edits (no code change per sweep).

Format (every key is checked; an unknown key anywhere is a :class:`ConfigError` naming the key and the file)::

    kind: pretrain            # or "augment" (fine-tuning with diffusion augmentation; see below)
    base: {preset: tiny, epochs: 6, benchmark: ucla-xview, ...}   # PretrainConfig keys (FinetuneConfig for augment)
    search:                   # dotted parameter path -> one distribution
      diffusion.tau: {grid: [-1.0, 0.0, 1.0]}
      model.mask_ratio: {choice: [0.8, 0.9]}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
    tune: {num_samples: 1, metric: knn_top1, mode: max, scheduler: asha, grace_period: 2, max_concurrent: 1,
           resources: {cpu: 1, gpu: 0}}

Per-trial resources (``tune.resources``, ``kind: pretrain``):

- ``{cpu: C, gpu: G}`` (no ``workers``): a single-process trial. The trial process itself trains (world size 1)
  and holds C CPUs and G GPUs (fractions allowed: ``gpu: 0.5`` packs two trials per GPU).
- ``{workers: N, cpu: C, gpu: G}``: a Tune-over-Train trial. The trial launches a ``TorchTrainer`` of N workers,
  each holding C CPUs and G GPUs (``use_gpu`` when G > 0), with its own Train fault tolerance and checkpoints in
  the sweep's storage (``OUT/sweep/trial_runs/<trial_id>/``). The trial process only launches it: it holds 1
  ``trial_launcher`` (the head's resource in cluster.yaml) and no CPU, or 0.01 CPU where no node offers that
  resource. ``base.num_workers`` / ``base.cpus_per_worker`` are set from here (leave them out of ``base``).
  ASHA's early stop of such a trial needs Ray's dashboard (``ray[default]``; RAY-NOTES hang 2).

``kind: augment`` trials always run their own fine-tuning ``TorchTrainer`` (``base.num_workers``,
``base.cpus_per_worker``) from a launcher; ``tune.resources`` does not apply to them.

Dotted paths (``kind: pretrain``): a top-level ``PretrainConfig`` field (``lr``, ``batch_size``, ...),
``diffusion.<DiffusionConfig field>`` (``diffusion.tau``, ``diffusion.schedule``) or ``model.<ModelConfig field>``
(``model.mask_ratio``, ``model.dec_depth``; stored in ``PretrainConfig.model_overrides``). ``kind: augment``:
``FinetuneConfig`` fields, typically ``t_start`` (t_s) and ``aug_ratio`` (L).

Distributions: ``grid: [..]`` (every value, crossed with other grids), ``choice: [..]`` (sampled), ``uniform:
[lo, hi]``, ``loguniform: [lo, hi]`` (lo > 0), ``randint: [lo, hi]`` (hi exclusive). ``grid`` and ``choice`` values
are each checked by building the config with that value, so a wrong type or an invalid value fails at load time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from macdiff_ray.config import ConfigError, from_dict, load_file, to_dict

KINDS = ("pretrain", "augment")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
TOP_KEYS = ("kind", "base", "search", "tune")
# Set from the dataset / run settings, never searched (PretrainConfig.__post_init__ refuses them as overrides).
_MODEL_FIXED = frozenset({"num_joints", "num_frames", "use_compile"})


@dataclass(frozen=True)
class Resources:
    """What each trial declares to Ray (fractions allowed; see the module docstring). ``workers`` None: the trial
    process trains and holds ``cpu``/``gpu``; ``workers`` N: a ``TorchTrainer`` of N workers, each holding
    ``cpu``/``gpu``."""

    cpu: float = 1.0
    gpu: float = 0.0
    workers: Optional[int] = None

    def __post_init__(self) -> None:
        if not 0 < self.cpu <= 64:
            raise ConfigError(f"tune.resources.cpu: {self.cpu!r} must be in (0, 64]")
        if not 0 <= self.gpu <= 8:
            raise ConfigError(f"tune.resources.gpu: {self.gpu!r} must be in [0, 8]")
        if self.workers is not None and not 1 <= self.workers <= 256:
            raise ConfigError(f"tune.resources.workers: {self.workers!r} must be in [1, 256] or null")

    @property
    def train_trial(self) -> bool:
        """True when each trial launches a multi-worker ``TorchTrainer`` (Tune over Train)."""
        return self.workers is not None

    def worker_overrides(self) -> dict:
        """The ``PretrainConfig`` keys a Tune-over-Train trial takes from here."""
        return {"num_workers": self.workers, "cpus_per_worker": self.cpu}


@dataclass(frozen=True)
class TuneSettings:
    """The ``tune:`` section. ``metric`` is the proxy reported every ``proxy_every`` epochs (``knn_top1``) or any
    per-epoch metric (``loss``); augment sweeps report ``top1_best``/``top1_last`` once at the end."""

    num_samples: int = 1
    metric: str = "knn_top1"
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = 1  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0  # ASHA
    max_concurrent: int = 1
    resources: Resources = field(default_factory=Resources)
    proxy_every: int = 1  # epochs between kNN proxy evaluations (the last epoch always has one)
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_max_train: Optional[int] = None  # cap on training rows used as kNN neighbours (stratified; None = all)
    search_seed: int = 0  # seed of the random sampling of choice/uniform/... (grids are exhaustive)
    keep_checkpoints: int = 1  # Tune checkpoints kept per trial (resume after interruption needs >= 1)

    def __post_init__(self) -> None:
        for name in ("num_samples", "grace_period", "max_concurrent", "proxy_every", "knn_k", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tune.{name}: {getattr(self, name)!r} must be >= 1")
        if self.reduction_factor <= 1:
            raise ConfigError(f"tune.reduction_factor: {self.reduction_factor!r} must be > 1")
        if not self.knn_temperature > 0:
            raise ConfigError(f"tune.knn_temperature: {self.knn_temperature!r} must be > 0")
        if self.knn_max_train is not None and self.knn_max_train < 1:
            raise ConfigError(f"tune.knn_max_train: {self.knn_max_train!r} must be >= 1 or null")
        if not self.metric:
            raise ConfigError("tune.metric: empty")


@dataclass(frozen=True)
class Param:
    """One searched parameter: dotted ``path``, distribution ``kind`` and its ``values`` (list or [lo, hi])."""

    path: str
    kind: str
    values: tuple


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file. ``base`` is the plain dict of the base config's keys (as written, validated)."""

    kind: Literal["pretrain", "augment"]
    base: dict
    params: tuple[Param, ...]
    tune: TuneSettings
    source: str = ""

    @property
    def config_class(self) -> type:
        return config_class(self.kind)

    def fingerprint(self) -> str:
        """Hash of what defines the sweep (kind, base, search, tune): a resumed sweep must have the same one."""
        blob = json.dumps({"kind": self.kind, "base": self.base,
                           "search": {p.path: {p.kind: list(p.values)} for p in self.params},
                           "tune": to_dict(self.tune)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_file_dict(self) -> dict:
        return {"kind": self.kind, "base": self.base,
                "search": {p.path: {p.kind: list(p.values)} for p in self.params}, "tune": to_dict(self.tune)}


def config_class(kind: str) -> type:
    if kind == "pretrain":
        from macdiff_ray.train.config import PretrainConfig

        return PretrainConfig
    if kind == "augment":
        from macdiff_ray.eval.finetune import FinetuneConfig

        return FinetuneConfig
    raise ConfigError(f"kind: {kind!r} is not one of {list(KINDS)}")


def valid_paths(kind: str) -> list[str]:
    """Every dotted path the ``search`` section accepts for ``kind``."""
    cls = config_class(kind)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    out = [n for n in names if n not in ("diffusion", "model_overrides")]
    if kind == "pretrain":
        from macdiff_ray.diffusion import DiffusionConfig
        from macdiff_ray.model import ModelConfig

        out += [f"diffusion.{f.name}" for f in dataclasses.fields(DiffusionConfig) if f.init]
        out += [f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.init and f.name not in _MODEL_FIXED]
    return sorted(out)


def apply_params(kind: str, base: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
    """``base`` (config keys) with each dotted ``path -> value`` of ``params`` set; returns a new dict.

    ``model.X`` goes to ``model_overrides[X]``; ``diffusion.X`` into the nested ``diffusion`` mapping.
    """
    out = json.loads(json.dumps(dict(base)))  # deep copy of plain data
    for path, value in params.items():
        head, _, rest = path.partition(".")
        if not rest:
            out[head] = value
        elif kind == "pretrain" and head == "model":
            out.setdefault("model_overrides", {})[rest] = value
        elif kind == "pretrain" and head == "diffusion":
            out.setdefault("diffusion", {})[rest] = value
        else:
            raise ConfigError(f"search: {path!r} is not a valid parameter path")
    return out


def build_config(kind: str, base: Mapping[str, Any], params: Mapping[str, Any], where: str = "") -> Any:
    """The strict config of one trial (``from_dict`` of :func:`apply_params`); errors name ``where``."""
    cls = config_class(kind)
    values = apply_params(kind, base, params)
    try:
        cfg = from_dict(cls, values)
        if kind == "pretrain" and cfg.model_overrides:
            from macdiff_ray.train.config import resolve_model_config

            resolve_model_config(cfg, 25)  # ModelConfig type/range checks of the model.* overrides
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from e


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_param(kind: str, path: str, spec: Any, base: dict, valid: list[str], src: str) -> Param:
    if path not in valid:
        raise ConfigError(f"{src}: search: unknown parameter {path!r} for kind {kind!r}; valid paths are {valid}")
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(f"{src}: search.{path}: expected one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
    (dist, values), = spec.items()
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{src}: search.{path}: unknown distribution {dist!r}; valid: {list(DISTRIBUTIONS)}")
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{src}: search.{path}.{dist}: expected a non-empty list, got {values!r}")
    if dist in ("grid", "choice"):
        for v in values:  # each value must make a valid config
            build_config(kind, base, {path: v}, where=f"{src}: search.{path}.{dist} value {v!r}: ")
    else:
        if len(values) != 2 or not all(_number(v) for v in values) or not values[0] < values[1]:
            raise ConfigError(f"{src}: search.{path}.{dist}: expected [low, high] numbers with low < high, "
                              f"got {values!r}")
        if dist == "loguniform" and values[0] <= 0:
            raise ConfigError(f"{src}: search.{path}.loguniform: low must be > 0, got {values[0]!r}")
        if dist == "randint" and not all(float(v).is_integer() for v in values):
            raise ConfigError(f"{src}: search.{path}.randint: bounds must be integers, got {values!r}")
        probe = int(values[0]) if dist == "randint" else values[0]
        build_config(kind, base, {path: probe}, where=f"{src}: search.{path}.{dist} low {probe!r}: ")
    return Param(path=path, kind=dist, values=tuple(values))


def parse_space(data: Mapping[str, Any], source: str = "<space>") -> SearchSpace:
    """Validate a space dict (the file's content). Every error names ``source`` and the offending key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: top level must be a mapping")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; valid keys are {list(TOP_KEYS)}")
    kind = data.get("kind", "pretrain")
    if kind not in KINDS:
        raise ConfigError(f"{source}: kind: {kind!r} is not one of {list(KINDS)}")
    base = data.get("base") or {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"{source}: base: expected a mapping of {config_class(kind).__name__} keys")
    base = json.loads(json.dumps(dict(base)))
    for k in ("output",):
        if k in base:
            raise ConfigError(f"{source}: base.{k}: set by the sweep (each trial's directory); remove it")
    if kind == "pretrain" and ("num_workers" in base or "cpus_per_worker" in base):
        raise ConfigError(f"{source}: base.num_workers / base.cpus_per_worker: a pretraining trial takes its workers "
                          "from tune.resources ({workers: N, cpu: C, gpu: G} for a TorchTrainer of N workers per "
                          "trial; no workers for a single-process trial); remove them from base")
    build_config(kind, base, {}, where=f"{source}: base: ")
    search = data.get("search") or {}
    if not isinstance(search, Mapping) or not search:
        raise ConfigError(f"{source}: search: expected a non-empty mapping of parameter path -> distribution")
    valid = valid_paths(kind)
    params = tuple(_parse_param(kind, str(p), spec, base, valid, source) for p, spec in search.items())
    tune_raw = data.get("tune") or {}
    try:
        tune = from_dict(TuneSettings, tune_raw, _path="tune")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    if tune.resources.train_trial:
        if kind != "pretrain":
            raise ConfigError(f"{source}: tune.resources.workers: only for kind: pretrain (an augment trial's "
                              "fine-tuning TorchTrainer takes base.num_workers / base.cpus_per_worker)")
        build_config(kind, {**base, **tune.resources.worker_overrides()}, {},
                     where=f"{source}: base with tune.resources.workers {tune.resources.workers}: ")
        if base.get("use_gpu") == "yes" and tune.resources.gpu <= 0:
            raise ConfigError(f"{source}: base.use_gpu 'yes' but tune.resources.gpu is {tune.resources.gpu:g} "
                              "(the GPUs of each Train worker)")
    if (kind == "pretrain" and tune.scheduler == "asha" and tune.metric.startswith("knn")
            and tune.grace_period % tune.proxy_every):
        raise ConfigError(f"{source}: tune.grace_period: {tune.grace_period} is not a multiple of tune.proxy_every "
                          f"{tune.proxy_every}; ASHA would judge trials on a stale kNN value")
    if kind == "augment":
        if tune.scheduler != "fifo":
            raise ConfigError(f"{source}: tune.scheduler: {tune.scheduler!r}; augment trials report once at the end "
                              "(fine-tuning runs on its own TorchTrainer), so only 'fifo' is supported")
        if tune.metric.startswith("knn"):
            raise ConfigError(f"{source}: tune.metric: {tune.metric!r}; augment trials report top1_best, "
                              "top1_last, top5_best, top5_last")
    return SearchSpace(kind=kind, base=base, params=params, tune=tune, source=source)


def load_space(path: str | os.PathLike, overrides: Optional[Mapping[str, Any]] = None) -> SearchSpace:
    """Read and validate a space file; ``overrides`` (e.g. ``{"data_dir": ...}`` from the command line) are set in
    ``base`` before validation."""
    data = load_file(path)
    base = dict(data.get("base") or {})
    base.update(overrides or {})
    for key in ("data_dir", "checkpoint"):  # trials run in their own working directory: make local paths absolute
        v = base.get(key)
        if isinstance(v, str) and v and "://" not in v and not os.path.isabs(v):
            base[key] = os.path.abspath(v)
    if "base" in data or base:
        data = dict(data, base=base)
    return parse_space(data, source=str(Path(path)))


def to_tune_space(space: SearchSpace) -> dict:
    """``{dotted path: ray.tune domain}`` for the Tuner's ``param_space["params"]``."""
    from ray import tune

    out = {}
    for p in space.params:
        v = list(p.values)
        if p.kind == "grid":
            out[p.path] = tune.grid_search(v)
        elif p.kind == "choice":
            out[p.path] = tune.choice(v)
        elif p.kind == "uniform":
            out[p.path] = tune.uniform(float(v[0]), float(v[1]))
        elif p.kind == "loguniform":
            out[p.path] = tune.loguniform(float(v[0]), float(v[1]))
        else:
            out[p.path] = tune.randint(int(v[0]), int(v[1]))
    return out
