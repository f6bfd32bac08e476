"""The learning study (issue 14): one resumable command that pretrains within a wall-clock budget and runs every
protocol that says whether the representation learned, on one dataset.

Rows (``StudyConfig.rows`` selects; each row is a run directory under ``OUTPUT/rows/<row>/`` and is skipped when
its ``results.json`` exists, so a re-run resumes where it stopped):

==================  ===============================================================================================
``probe``           linear probe of the pretrained encoder (per-joint features, cached views), over the seeds
``probe_pooled``    the same on pooled features
``probe_random``    the same for a randomly initialised encoder of the preset (the baseline pretraining must beat)
``probe_raw``       linear probe of the normalised coordinates
``knn``             weighted cosine kNN (k=20) on the pretrained per-joint features
``nn_raw``          1-NN on raw coordinates (Euclidean, evaluation transform)
``finetune``        fine-tuning of the pretrained encoder (recipe ``auto``), over the seeds
``scratch``         the same encoder and recipe trained from a random init (no layer decay), over the seeds
``semi``            at each of ``semi_fractions``: pretrained fine-tune without and with diffusion augmentation
                    (one row per ``aug_t_start`` value), and from scratch, over the seeds
==================  ===============================================================================================

The learning curve probes the checkpoints the pretraining kept (``curve_points`` of them, evenly spaced, plus the
random init as epoch 0) with one seed. Outputs: ``OUTPUT/study.md`` (the table), ``OUTPUT/study.json`` and
``OUTPUT/curves.png`` (pretraining loss; probe accuracy over pretraining epochs). Headline numbers are the LAST
epoch's; best-on-test is reported beside them and labelled so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from macdiff_ray.config import ConfigError, absolute_paths, from_dict, replace, to_dict
from macdiff_ray.train.logging import join, log, read_json, write_json, write_text

ROWS = ("probe", "probe_pooled", "probe_random", "probe_raw", "knn", "nn_raw", "finetune", "scratch", "semi")
# METHOD.md: lambda (augmented samples per real one) 2.0 / 0.5 / 0.25 at 1% / 2% / 10% labels.
AUG_RATIO = {0.01: 2.0, 0.02: 0.5, 0.05: 0.5, 0.1: 0.25}


@dataclass(frozen=True)
class StudyConfig:
    data_dir: str = ""
    benchmark: str = ""
    output: str = ""
    preset: Literal["paper", "small", "tiny"] = "tiny"
    num_frames: Optional[int] = None  # None: suggested from the manifest's length statistics
    budget_minutes: float = 60.0  # pretraining wall-clock budget
    # pretraining epoch cap inside the budget: the budget ends the run. 3,000 (the cap until the tenth session)
    # stopped UTKinect's 60-minute pretraining after 54.5 minutes, before its lr cosine over the budget had ended
    max_epochs: int = 100_000
    pretrain_batch_size: Optional[int] = None  # None: fit_batch(training split), at most 64
    pretrained: Optional[str] = None  # an existing pretraining run directory instead of pretraining here
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    rows: tuple[str, ...] = ROWS
    probe_epochs: int = 100
    # the probes' frozen-feature cache: augmented passes over the training split, encoded once (0: streaming,
    # fresh crops every epoch, the paper's protocol). On NW-UCLA's 35-minute checkpoint (seeds 0-2), 4 views gave
    # 67.4 +- 1.2, 16 gave 69.7 +- 1.8, 32 69.8 +- 1.9 and streaming 69.8 +- 2.4 at 5x the cost of 16
    probe_cache_views: int = 16
    finetune_epochs: int = 100
    batch_size: Optional[int] = None  # None: fit_batch(training split), at most 64
    semi_fractions: tuple[float, ...] = (0.05, 0.1)
    # t_s of the one-step denoise (METHOD.md: 500); several values give one augmented row each, the paper's t_s
    # ablation (its Table 9: 0 / 100 / 300 / 500 / 900)
    aug_t_start: Union[int, tuple[int, ...]] = 500
    recipe: Literal["auto", "paper", "small"] = "auto"
    curve_points: int = 5
    eval_every: int = 10  # fine-tunes: test-split evaluation every k epochs and after the last (probes: every epoch)
    checkpoint_every: int = 25  # pretraining epochs between kept checkpoints (the learning curve's points)
    max_steps_per_epoch: Optional[int] = None  # smoke tests
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    # pretrain on Ray Train (the default: DDP, preemption, retries), or in this process (the framework-free loop;
    # the smoke test's few steps, where a Train run's start-up would cost more than the training)
    ray_train: bool = True
    smoke_test: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rows) - set(ROWS))
        if unknown:
            raise ConfigError(f"StudyConfig.rows: unknown row(s) {unknown}; choose from {list(ROWS)}")
        if not self.seeds:
            raise ConfigError("StudyConfig.seeds: give at least one seed")
        for name in ("max_epochs", "probe_epochs", "finetune_epochs", "batch_size", "pretrain_batch_size",
                     "checkpoint_every", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"StudyConfig.{name}: {getattr(self, name)!r} must be >= 1")
        if not self.budget_minutes > 0:
            raise ConfigError(f"StudyConfig.budget_minutes: {self.budget_minutes!r} must be > 0")
        if any(not 0 < f < 1 for f in self.semi_fractions):
            raise ConfigError(f"StudyConfig.semi_fractions: {list(self.semi_fractions)} must lie in (0, 1)")
        if self.curve_points < 0:
            raise ConfigError("StudyConfig.curve_points: must be >= 0")
        if isinstance(self.probe_cache_views, bool) or self.probe_cache_views < 0:
            raise ConfigError(f"StudyConfig.probe_cache_views: {self.probe_cache_views!r} must be >= 0 "
                              "(0: no cache, fresh augmentation every epoch)")
        ts = self.aug_t_starts
        if not ts or any(not 0 < t < 1000 for t in ts) or len(set(ts)) != len(ts):
            raise ConfigError(f"StudyConfig.aug_t_start: {self.aug_t_start!r} must be one step or distinct steps, "
                              "each in (0, 1000)")

    @property
    def aug_t_starts(self) -> tuple[int, ...]:
        """``aug_t_start`` as a tuple (one augmented semi-supervised row per value)."""
        return (self.aug_t_start,) if isinstance(self.aug_t_start, int) else tuple(self.aug_t_start)


def fit_batch(num_train: int, cap: int = 64, min_steps: int = 8) -> int:
    """The batch size for a training split of ``num_train`` rows: the largest power of two in [8, ``cap``] that
    still gives ``min_steps`` full batches per epoch (8 if none does).

    A fixed 64 gave UTKinect's 100 training segments one step per epoch (drop_last discards the rest): a 15-minute
    budget bought 151 optimiser steps. NW-UCLA's 1,020 keep 64 (15 steps)."""
    b = cap
    while b > 8 and num_train // b < min_steps:
        b //= 2
    return max(8, b)


def smoke_overrides() -> dict:
    """Seconds per row: two seeds, two-epoch protocols, a few pretraining steps (synthetic data)."""
    return {"budget_minutes": 0.3, "max_epochs": 3, "pretrain_batch_size": 16, "batch_size": 16, "seeds": [0, 1],
            "probe_epochs": 2, "probe_cache_views": 2, "finetune_epochs": 2, "semi_fractions": [0.5],
            "max_steps_per_epoch": 2, "curve_points": 1, "checkpoint_every": 1, "num_frames": 32, "ray_train": False,
            "smoke_test": True}


# --------------------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------------------
def _row_dir(cfg: StudyConfig, name: str) -> str:
    return join(cfg.output, "rows", name)


def _cached(out: str, run: Callable[[], dict]) -> dict:
    """The row's ``results.json`` if it exists (a resumed study), else run it."""
    done = read_json(join(out, "results.json"))
    if done is not None and "top1_last" in done:
        log.warning("study: %s done before, kept", out)
        return done
    return run()


def _eval_common(cfg: StudyConfig, num_frames: int) -> dict:
    # num_workers 0: Ray Train's local mode over in-memory splits; a small dataset's pass costs less than
    # scheduling its Ray Data tasks, and every row of the study is a small-data run.
    return {"data_dir": cfg.data_dir, "benchmark": cfg.benchmark, "num_frames": num_frames, "num_workers": 0,
            "batch_size": cfg.batch_size, "materialize": True, "use_gpu": cfg.use_gpu,
            "max_steps_per_epoch": cfg.max_steps_per_epoch, "smoke_test": cfg.smoke_test}


def _seeded_probe(cfg: StudyConfig, name: str, num_frames: int, seeds, **kw) -> dict:
    """A linear probe over ``seeds``: ``OUT/seed_<s>`` each, mean ± std in ``OUT/results.json``."""
    from macdiff_ray.eval.finetune import seed_means
    from macdiff_ray.eval.probe import LinearEvalConfig, run_linear_eval

    out = _row_dir(cfg, name)

    def run() -> dict:
        runs = []
        for s in seeds:
            sub = join(out, f"seed_{s}")
            runs.append(_cached(sub, lambda: run_linear_eval(from_dict(LinearEvalConfig, dict(
                _eval_common(cfg, num_frames), epochs=cfg.probe_epochs, checkpoint_every=cfg.probe_epochs,
                cache_views=cfg.probe_cache_views, seed=s, output=sub, **kw)), quiet=True)))
        res = {"protocol": "linear", "label": runs[0]["label"], "seeds": list(seeds), "num_seeds": len(runs),
               "wall_time_s": sum(r.get("wall_time_s") or 0.0 for r in runs)}
        res.update(seed_means(runs))
        write_json(join(out, "results.json"), res)
        return res

    return _cached(out, run)


def _finetune(cfg: StudyConfig, name: str, num_frames: int, num_train: int, seeds, **kw) -> dict:
    from macdiff_ray.eval.finetune import FinetuneConfig, recipe_values, run_finetune

    out = _row_dir(cfg, name)
    values = {**recipe_values(cfg.recipe, num_train), **_eval_common(cfg, num_frames),
              "epochs": cfg.finetune_epochs, "checkpoint_every": cfg.finetune_epochs, "seeds": list(seeds),
              "eval_every": min(cfg.eval_every, cfg.finetune_epochs),
              "output": out, **kw}
    return _cached(out, lambda: run_finetune(from_dict(FinetuneConfig, values), quiet=True))


def aug_ratio(fraction: float) -> float:
    """lambda for a label fraction: METHOD.md's values where given, else the nearest given fraction's."""
    return AUG_RATIO[min(AUG_RATIO, key=lambda f: abs(math.log(f) - math.log(fraction)))]


# --------------------------------------------------------------------------------------------------------------
# Pretraining and the learning curve
# --------------------------------------------------------------------------------------------------------------
def _pretrain(cfg: StudyConfig, num_frames: int) -> tuple[str, dict]:
    """(run directory, its results.json): the given ``pretrained`` run, or a budgeted pretraining here."""
    from macdiff_ray.train import PretrainConfig, run_pretrain
    from macdiff_ray.train.local import run_pretrain_local

    if cfg.pretrained:
        res = read_json(join(cfg.pretrained, "results.json"))
        if res is None:
            raise ConfigError(f"StudyConfig.pretrained: {cfg.pretrained} has no results.json (not a finished "
                              "pretraining run)")
        return cfg.pretrained, res
    out = join(cfg.output, "pretrain")
    done = read_json(join(out, "results.json"))
    if done is not None and done.get("final_epoch"):
        return out, done
    pc = from_dict(PretrainConfig, {
        "data_dir": cfg.data_dir, "benchmark": cfg.benchmark, "preset": cfg.preset, "num_frames": num_frames,
        "epochs": cfg.max_epochs, "budget_minutes": cfg.budget_minutes, "batch_size": cfg.pretrain_batch_size,
        "lr": 1e-3, "lr_scaling": "none", "warmup_epochs": 1.0 if cfg.smoke_test else 10.0,
        "checkpoint_every": cfg.checkpoint_every, "keep_checkpoints": 10_000, "num_workers": 1,
        "use_gpu": cfg.use_gpu, "output": out, "max_steps_per_epoch": cfg.max_steps_per_epoch,
        "smoke_test": cfg.smoke_test})
    return out, (run_pretrain(pc, quiet=True) if cfg.ray_train else run_pretrain_local(pc))


def _checkpoint_epochs(run_dir: str) -> list[tuple[int, str]]:
    """(epoch, checkpoint dir) of every checkpoint a local run directory kept, by epoch."""
    from macdiff_ray.train.checkpoint import CHECKPOINTS_SUBDIR

    root = Path(run_dir) / CHECKPOINTS_SUBDIR
    found = []
    for d in root.glob("epoch_*") if root.is_dir() else []:
        if (d / "checkpoint.pt").is_file():
            found.append((int(d.name.split("_")[1]), str(d)))
    return sorted(found)


def _curve(cfg: StudyConfig, run_dir: str, num_frames: int) -> list[dict]:
    """Per-joint probe accuracy (the study's first seed) at up to ``curve_points`` kept checkpoints."""
    kept = _checkpoint_epochs(run_dir)
    if cfg.curve_points == 0 or not kept:
        return []
    pick = sorted({kept[round(i * (len(kept) - 1) / max(1, cfg.curve_points - 1))] for i in range(cfg.curve_points)}
                  if cfg.curve_points > 1 else {kept[-1]})
    points = []
    s = cfg.seeds[0]
    for epoch, path in pick:
        r = _seeded_probe(cfg, f"curve/epoch_{epoch:05d}", num_frames, [s], checkpoint=path, feature="per_joint")
        points.append({"epoch": epoch, "seed": s, "top1_last": r["top1_last"]})
    return points


def _plot(path: str, history: list[dict], curve: list[dict], random_top1: Optional[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    if history:
        a.plot([h["epoch"] for h in history], [h["loss"] for h in history], lw=1)
        a.set_yscale("log")
    a.set(xlabel="pretraining epoch", ylabel="loss (log)", title="pretraining loss")
    if curve:
        b.plot([p["epoch"] for p in curve], [100 * p["top1_last"] for p in curve], "o-", label="pretrained probe")
    if random_top1 is not None:
        b.axhline(100 * random_top1, color="grey", ls="--", label="random-init probe")
    b.set(xlabel="pretraining epoch", ylabel="linear probe top-1 (%)", title="probe over pretraining")
    if curve or random_top1 is not None:
        b.legend(loc="lower right")
    else:  # curve_points 0 and no random-init row: say why the panel is empty (no legend without artists)
        b.text(0.5, 0.5, "no probe curve in this study\n(curve_points 0, no random-init row)", ha="center",
               va="center", transform=b.transAxes, color="grey")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if "://" in path:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        with fs.open_output_stream(p) as f:
            f.write(buf.getvalue())
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------
def _pct(r: dict, key: str) -> str:
    v = r.get(key)
    if v is None:
        return "-"
    sd = r.get(f"{key}_std")
    n = r.get("num_seeds", 1)
    return f"{100 * v:.1f} ± {100 * sd:.1f}" if sd is not None and n and n > 1 else f"{100 * v:.1f}"


def table(rows: list[tuple[str, dict]], header: str) -> str:
    lines = [header, "", "| row | top-1, last epoch (mean ± std over seeds) | best-on-test (labelled: selected on the "
             "test split) | seeds | wall s |", "|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {_pct(r, 'top1_last')} | {_pct(r, 'top1_best')} | {r.get('num_seeds', 1)} | "
                     f"{(r.get('wall_time_s') or 0):.0f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------
def run_study(cfg: StudyConfig) -> dict:
    """Run (or resume) every selected row; writes and returns ``study.json``."""
    from macdiff_ray.data.lengths import suggest_num_frames
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.eval.features import describe_eval_data
    from macdiff_ray.eval.knn import KnnConfig, raw_nearest_neighbour, run_knn

    if not cfg.output:
        raise ConfigError("StudyConfig.output: empty; give a run directory (--output)")
    cfg = absolute_paths(cfg, "data_dir", "output", "pretrained")
    t0 = time.perf_counter()
    info = describe_eval_data(cfg.data_dir, cfg.benchmark)
    num_frames = cfg.num_frames or suggest_num_frames(load_manifest(cfg.data_dir), benchmark=cfg.benchmark)
    fitted = fit_batch(info["num_train"])
    user_batch = cfg.batch_size
    cfg = replace(cfg, pretrain_batch_size=cfg.pretrain_batch_size or fitted, batch_size=cfg.batch_size or fitted)
    write_json(join(cfg.output, "study_config.json"), to_dict(cfg) | {"num_frames_used": num_frames})
    log.warning("study: %s/%s at %d frames, preset %s, pretraining budget %.0f min, seeds %s, batch %d "
                "(pretraining %d)", info["dataset"], cfg.benchmark, num_frames, cfg.preset, cfg.budget_minutes,
                list(cfg.seeds), cfg.batch_size, cfg.pretrain_batch_size)
    run_dir, pre = _pretrain(cfg, num_frames)
    ckpt = run_dir
    seeds = list(cfg.seeds)
    results: list[tuple[str, dict]] = []

    budget = (pre.get("config") or {}).get("budget_minutes") if cfg.pretrained else cfg.budget_minutes
    header = (f"### {info['dataset']} / {cfg.benchmark}: preset {cfg.preset}, {num_frames} frames, pretraining "
              f"{pre.get('final_epoch')} epochs in {(pre.get('wall_time_s') or 0) / 60:.1f} min "
              f"(budget {budget if budget is not None else 'none'} min"
              f"{', run ' + cfg.pretrained if cfg.pretrained else ''}), "
              f"final loss {pre.get('final_loss') or float('nan'):.4f}")

    def row(label: str, res: dict) -> None:
        results.append((label, res))
        log.warning("study: %-48s top-1 last %s", label, _pct(res, "top1_last"))
        write_text(join(cfg.output, "study.md"), table(results, header) + "\n(in progress)\n")  # partial table

    if "probe" in cfg.rows:
        row("linear probe, pretrained (per-joint)",
            _seeded_probe(cfg, "probe", num_frames, seeds, checkpoint=ckpt, feature="per_joint"))
    if "probe_pooled" in cfg.rows:
        row("linear probe, pretrained (pooled)",
            _seeded_probe(cfg, "probe_pooled", num_frames, seeds, checkpoint=ckpt, feature="pooled"))
    random_res = None
    if "probe_random" in cfg.rows:
        random_res = _seeded_probe(cfg, "probe_random", num_frames, seeds, random_init=True, preset=cfg.preset,
                                   feature="per_joint")
        row(f"linear probe, random-init {cfg.preset} (per-joint)", random_res)
    if "probe_raw" in cfg.rows:
        row("linear probe, raw coordinates", _seeded_probe(cfg, "probe_raw", num_frames, seeds, feature="raw"))
    if "knn" in cfg.rows:
        out = _row_dir(cfg, "knn")
        row("kNN (k=20), pretrained (per-joint)", _cached(out, lambda: run_knn(from_dict(KnnConfig, {
            "data_dir": cfg.data_dir, "benchmark": cfg.benchmark, "checkpoint": ckpt, "feature": "per_joint",
            "num_frames": num_frames, "output": out}))))
    if "nn_raw" in cfg.rows:
        out = _row_dir(cfg, "nn_raw")
        row("1-NN, raw coordinates", _cached(out, lambda: raw_nearest_neighbour(
            cfg.data_dir, cfg.benchmark, num_frames, output=out)))
    n = info["num_train"]
    if "finetune" in cfg.rows:
        row("fine-tune, pretrained", _finetune(cfg, "finetune", num_frames, n, seeds, checkpoint=ckpt))
    if "scratch" in cfg.rows:
        row(f"from scratch ({cfg.preset})", _finetune(cfg, "scratch", num_frames, n, seeds, random_init=True,
                                                      preset=cfg.preset))
    if "semi" in cfg.rows:
        for frac in cfg.semi_fractions:
            pct = f"{100 * frac:g}%"
            kb = {"batch_size": user_batch or fit_batch(max(1, round(frac * n)))}  # the labelled subset's size
            row(f"{pct} labels: fine-tune, pretrained", _finetune(
                cfg, f"semi_{frac:g}_pretrained", num_frames, n, seeds, checkpoint=ckpt, labeled_fraction=frac, **kb))
            lam = aug_ratio(frac)
            for t_s in cfg.aug_t_starts:  # the row's folder names its t_s: a resumed study with another t_s reruns it
                row(f"{pct} labels: + diffusion augmentation (t_s {t_s}, lambda {lam:g})", _finetune(
                    cfg, f"semi_{frac:g}_aug_t{t_s}", num_frames, n, seeds, checkpoint=ckpt, labeled_fraction=frac,
                    augment=True, t_start=t_s, aug_ratio=lam, augment_actors=1, **kb))
            row(f"{pct} labels: from scratch", _finetune(
                cfg, f"semi_{frac:g}_scratch", num_frames, n, seeds, random_init=True, preset=cfg.preset,
                labeled_fraction=frac, **kb))
    curve = _curve(cfg, run_dir, num_frames)
    md = table(results, header)
    if curve:
        md += f"\nprobe over pretraining (seed {curve[0]['seed']}, per-joint, last epoch): " + ", ".join(
            f"epoch {p['epoch']}: {100 * p['top1_last']:.1f}" for p in curve) + "\n"
    write_text(join(cfg.output, "study.md"), md)
    _plot(join(cfg.output, "curves.png"), pre.get("history") or [], curve,
          random_res["top1_last"] if random_res else None, header.lstrip("# "))
    out = {"config": to_dict(cfg), "num_frames": num_frames, "pretrain_run": run_dir,
           "pretrain": {k: pre.get(k) for k in ("final_epoch", "final_loss", "wall_time_s", "samples_per_s_mean")},
           "rows": [{"row": name, **{k: v for k, v in r.items() if k != "history"}} for name, r in results],
           "curve": curve, "wall_time_s": time.perf_counter() - t0, "table_md": md}
    write_json(join(cfg.output, "study.json"), out)
    return out
