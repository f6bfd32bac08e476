"""What the paper's tables run: :class:`PaperConfig`, the pretraining variants and :class:`PaperRun`, which runs
each piece once under OUTPUT and reads it back afterwards (:mod:`macdiff_ray.paper.tables` has the whole picture)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal, Optional

from macdiff_ray.config import ConfigError, from_dict
from macdiff_ray.paper import published as P
from macdiff_ray.train.logging import join, read_json

__all__ = ["TABLES", "PaperConfig", "PaperRun", "smoke_overrides", "variant_overrides"]

log = logging.getLogger(__name__)

TABLES = tuple(range(1, 11))


@dataclass(frozen=True)
class PaperConfig:
    table: int = 1
    data_dir: str = ""
    benchmark: str = ""
    output: str = ""
    preset: Literal["paper", "small", "tiny"] = "tiny"
    num_frames: Optional[int] = None  # None: suggested from the manifest's length statistics
    budget_minutes: float = 10.0  # wall-clock budget of EACH pretraining variant
    max_epochs: int = 3000
    batch_size: Optional[int] = None  # None: the study's fit_batch of the training split
    seeds: tuple[int, ...] = (0,)
    probe_epochs: int = 100
    finetune_epochs: int = 100
    decoder_epochs: int = 100  # decoder fine-tuning (Sec. 4.4: "another 100 epochs")
    recon_samples: int = 128  # test sequences of the reconstruction table (0 = all)
    gen_samples: int = 256
    steps: int = 50  # DDIM steps of reconstruction and generation
    target_data: str = ""  # Table 3: the transfer target (prepared dataset) and its benchmark
    target_benchmark: str = ""
    ray_train: bool = False  # pretrain on Ray Train instead of in this process
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    max_steps_per_epoch: Optional[int] = None
    smoke_test: bool = False

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ConfigError(f"PaperConfig.table (--table): {self.table!r} is not one of {list(TABLES)}")
        for f in ("data_dir", "benchmark", "output"):
            if not getattr(self, f):
                raise ConfigError(f"PaperConfig.{f}: empty; give --{f.replace('_dir', '')}")
        if not self.budget_minutes > 0:
            raise ConfigError("PaperConfig.budget_minutes: must be > 0")
        for f in ("max_epochs", "probe_epochs", "finetune_epochs", "decoder_epochs", "gen_samples", "steps"):
            if getattr(self, f) < 1:
                raise ConfigError(f"PaperConfig.{f}: must be >= 1")
        if not self.seeds:
            raise ConfigError("PaperConfig.seeds: give at least one seed")
        if bool(self.target_data) != bool(self.target_benchmark):
            raise ConfigError("PaperConfig.target_data / target_benchmark: give both or neither")


def smoke_overrides() -> dict:
    """Seconds per run: one-epoch pretrainings of two steps, one-epoch protocols, a few generated sequences."""
    return {"preset": "tiny", "num_frames": 16, "budget_minutes": 0.5, "max_epochs": 1, "batch_size": 16,
            "probe_epochs": 1, "finetune_epochs": 1, "decoder_epochs": 1, "recon_samples": 4, "gen_samples": 8,
            "steps": 2, "max_steps_per_epoch": 2, "use_gpu": "no", "smoke_test": True}


# --------------------------------------------------------------------------------------------------------------
# Pretraining variants
# --------------------------------------------------------------------------------------------------------------
def variant_overrides(name: str, preset_dec_depth: int) -> dict:
    """PretrainConfig keys of variant ``name`` (module docstring); ``macdiff`` is {}."""
    if name in ("macdiff", "mask_random", "tau_1", f"depth_{preset_dec_depth}"):
        return {}
    if name in ("mamp", "mae", "ddim", "mdm", "mdm_orig"):
        return {"method": name}
    if name.startswith("mask_"):
        return {"model_overrides": {"masking": name[len("mask_"):]}}
    if name.startswith("ratio_"):
        return {"model_overrides": {"mask_ratio": float(name[len("ratio_"):]), "loss_on": "all"}}
    if name.startswith("tau_"):
        return {"diffusion": {"schedule": "tau", "tau": float(name[len("tau_"):])}}
    if name == "linear":
        return {"diffusion": {"schedule": "linear"}}
    if name.startswith("depth_"):
        return {"model_overrides": {"dec_depth": int(name[len("depth_"):])}}
    raise ConfigError(f"pretraining variant: unknown {name!r}")


def _canonical(name: str, preset_dec_depth: int) -> str:
    """Variants equal to the default share its run (``mask_random`` = ``tau_1`` = the preset's depth = macdiff)."""
    return "macdiff" if not variant_overrides(name, preset_dec_depth) else name


class PaperRun:
    """The runs of one OUTPUT folder, each run once and then read back (see module docstring)."""

    def __init__(self, cfg: PaperConfig):
        from macdiff_ray.data.lengths import suggest_num_frames
        from macdiff_ray.data.manifest import load_manifest
        from macdiff_ray.eval.features import describe_eval_data
        from macdiff_ray.eval.study import StudyConfig, fit_batch
        from macdiff_ray.model import model_preset

        self.cfg = cfg
        self.info = describe_eval_data(cfg.data_dir, cfg.benchmark)
        self.num_frames = cfg.num_frames or suggest_num_frames(load_manifest(cfg.data_dir), benchmark=cfg.benchmark)
        self.batch = cfg.batch_size or fit_batch(self.info["num_train"])
        self.dec_depth = model_preset(cfg.preset).dec_depth
        # the learning study's row runners read these fields
        self.study = from_dict(StudyConfig, {
            "data_dir": cfg.data_dir, "benchmark": cfg.benchmark, "output": cfg.output, "preset": cfg.preset,
            "num_frames": self.num_frames, "batch_size": self.batch, "seeds": list(cfg.seeds),
            "probe_epochs": cfg.probe_epochs, "finetune_epochs": cfg.finetune_epochs, "use_gpu": cfg.use_gpu,
            "max_steps_per_epoch": cfg.max_steps_per_epoch, "smoke_test": cfg.smoke_test,
            **({"probe_cache_views": 1} if cfg.smoke_test else {})})  # smoke: one cached training view

    # ---- pretraining -------------------------------------------------------------------------------------
    def pretrain(self, variant: str) -> tuple[str, dict]:
        """(run directory, results.json) of a pretraining variant, trained here unless done before."""
        from macdiff_ray.train import PretrainConfig, run_pretrain
        from macdiff_ray.train.local import run_pretrain_local

        name = _canonical(variant, self.dec_depth)
        out = join(self.cfg.output, "pretrain", name)
        done = read_json(join(out, "results.json"))
        if done is not None and done.get("final_epoch"):
            return out, done
        c = self.cfg
        values = {"data_dir": c.data_dir, "benchmark": c.benchmark, "preset": c.preset,
                  "num_frames": self.num_frames, "epochs": c.max_epochs, "budget_minutes": c.budget_minutes,
                  "batch_size": self.batch, "lr": 1e-3, "lr_scaling": "none",
                  "warmup_epochs": 0.0 if c.smoke_test else 10.0, "checkpoint_every": 50, "keep_checkpoints": 1,
                  "num_workers": 1, "use_gpu": c.use_gpu, "output": out, "max_steps_per_epoch": c.max_steps_per_epoch,
                  "smoke_test": c.smoke_test, **variant_overrides(name, self.dec_depth)}
        if "diffusion" in values:
            values["diffusion"] = {"schedule": "tau", "tau": 1.0, **values["diffusion"]}
        pc = from_dict(PretrainConfig, values)
        log.warning("paper: pretraining %s (%s min budget)", name, c.budget_minutes)
        return out, (run_pretrain(pc, quiet=True) if c.ray_train else run_pretrain_local(pc))

    # ---- evaluation rows (the study's runners) ------------------------------------------------------------
    def probe(self, variant: str, *, data: Optional[tuple[str, str]] = None) -> dict:
        from macdiff_ray.config import replace
        from macdiff_ray.eval.study import _seeded_probe

        run_dir, _ = self.pretrain(variant)
        study, tag = self.study, ""
        if data is not None:  # transfer: probe on another dataset
            study, tag = replace(study, data_dir=data[0], benchmark=data[1]), f"_to_{data[1]}"
        name = f"probe_{_canonical(variant, self.dec_depth)}{tag}"
        return _seeded_probe(study, name, self.num_frames, list(self.cfg.seeds), checkpoint=run_dir,
                             feature="per_joint")

    def finetune(self, variant: str, fraction: Optional[float] = None, *, t_start: int = 0,
                 ratio: float = 0.0) -> dict:
        """A fine-tune of the variant's encoder (``fraction`` of the labels; diffusion augmentation from t_start
        with lambda ``ratio`` when both are > 0)."""
        from macdiff_ray.eval.study import _finetune, fit_batch

        run_dir, _ = self.pretrain(variant)
        n = self.info["num_train"]
        kw: dict = {"checkpoint": run_dir}
        name = f"finetune_{_canonical(variant, self.dec_depth)}"
        if fraction is not None:
            kw.update(labeled_fraction=fraction, batch_size=self.cfg.batch_size or fit_batch(max(1, round(fraction * n))))
            name += f"_semi{fraction:g}"
        if t_start > 0 and ratio > 0:
            kw.update(augment=True, t_start=t_start, aug_ratio=ratio, augment_actors=1)
            name += f"_aug_t{t_start}_l{ratio:g}"
        return _finetune(self.study, name, self.num_frames, n, list(self.cfg.seeds), **kw)

    def classifier(self) -> str:
        """A fine-tuned MacDiff classifier checkpoint for the generation metrics' features (one Ray Train worker:
        the local mode keeps no checkpoint)."""
        from macdiff_ray.eval.finetune import FinetuneConfig, recipe_values, run_finetune
        from macdiff_ray.eval.study import _eval_common

        run_dir, _ = self.pretrain("macdiff")
        out = join(self.cfg.output, "rows", "classifier")
        if read_json(join(out, "results.json")) is None:
            values = {**recipe_values("auto", self.info["num_train"]), **_eval_common(self.study, self.num_frames),
                      "num_workers": 1, "epochs": self.cfg.finetune_epochs, "checkpoint_every": self.cfg.finetune_epochs,
                      "checkpoint": run_dir, "output": out}
            run_finetune(from_dict(FinetuneConfig, values), quiet=True)
        return out

    def decoder_finetuned(self) -> str:
        from macdiff_ray.train.decoder_finetune import DecoderFinetuneConfig, run_decoder_finetune

        run_dir, _ = self.pretrain("macdiff")
        out = join(self.cfg.output, "decoder_finetune")
        done = read_json(join(out, "results.json"))
        if done is None or done.get("final_epoch") != self.cfg.decoder_epochs:
            run_decoder_finetune(from_dict(DecoderFinetuneConfig, {
                "checkpoint": run_dir, "data_dir": self.cfg.data_dir, "benchmark": self.cfg.benchmark,
                "output": out, "epochs": self.cfg.decoder_epochs, "batch_size": self.batch,
                "max_steps_per_epoch": self.cfg.max_steps_per_epoch,
                "device": "cpu" if self.cfg.use_gpu == "no" else "auto", "smoke_test": self.cfg.smoke_test}))
        return out

    def _generate(self, name: str, run: Callable[[str], dict]) -> dict:
        out = join(self.cfg.output, "generate", name)
        done = read_json(join(out, "results.json"))
        return done if done is not None else run(out)

    def reconstruct(self, name: str, checkpoint: str) -> dict:
        from macdiff_ray.generate import ReconstructConfig, run_reconstruct

        frames = tuple(sorted({max(1, min(self.num_frames - 1, round(n * self.num_frames / 120)))
                               for n in P.T5_FRAMES}))
        return self._generate(f"reconstruct_{name}", lambda out: run_reconstruct(ReconstructConfig(
            checkpoint=checkpoint, data_dir=self.cfg.data_dir, benchmark=self.cfg.benchmark, output=out,
            frames=frames, steps=self.cfg.steps, num_samples=self.cfg.recon_samples, workers=0, render=0)))

    def sample(self, name: str, checkpoint: str) -> dict:
        from macdiff_ray.generate import SampleConfig, run_sample

        classifier = self.classifier()
        return self._generate(f"sample_{name}", lambda out: run_sample(SampleConfig(
            checkpoint=checkpoint, data_dir=self.cfg.data_dir, benchmark=self.cfg.benchmark, output=out,
            classifier=classifier, num_samples=self.cfg.gen_samples, steps=self.cfg.steps, workers=0, render=0,
            kid_subset_size=min(1000, self.cfg.gen_samples))))
