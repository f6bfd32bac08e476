"""Pretraining step of ours and of the released MacDiff code, timed in turns in one process; prints the ratio.

    python benchmarks/released_step.py --released-repo /path/to/MacDiff --batch-size 8 --threads 2
    python benchmarks/released_step.py --released-repo /path/to/MacDiff --batch-size 64 --device cuda --bf16
    python benchmarks/released_step.py --released-repo /path/to/MacDiff --ours-precision auto   # what each user gets

``--released-repo`` is a checked-out tree of the released code (the authors' MacDiff release, or a fork):
this script imports it from there and builds its model from its own pretraining config (default
``config/ntu60_xsub_joint/pretrain_madiff.yaml``); nothing of it is copied into this repository. Both models get
the same random clean sequences and views (N, 120 frames, 25 joints, 3 channels; the released model takes them as
(N, C, T, V, M) with a zero second person, as its NTU feeder gives them, and keeps person 1) and each its own AdamW
as its own training builds it. One step is forward (noising, masking, encoder, decoder, loss) + backward + AdamW.

After a warm-up of both, each of ``--rounds`` rounds times ``--steps`` steps of ours, then ``--steps`` of the
released model, and a 2048^3 matmul. Per round it prints each model's samples/s (median step of the round), the
ratio ours/theirs and the matmul rate; at the end the median over rounds of each and of the per-round ratio, the
FLOPs per sample of each step (``FlopCounterMode``: matmuls, convolutions, attention) and both parameter counts,
with a warning when these differ by more than 10%. ``--ours-precision auto`` runs ours as our pretraining runs on
the CPU (``cpu_precision: auto``: bf16 autocast where the CPU has native bf16 kernels) and the
released model as its own training runs on the CPU (fp32: its autocast is ``torch.cuda.amp``, a no-op there); the
default, ``match``, gives both the precision of ``--bf16``. Only figures measured in this run are printed. Interleaving
makes the ratio meaningful on a shared machine: whatever else runs there slows both models within the same minute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.diffusion import DiffusionConfig, make_schedule  # noqa: E402
from macdiff_ray.model import MacDiff, count_parameters, model_preset  # noqa: E402
from macdiff_ray.train.config import PretrainConfig  # noqa: E402
from macdiff_ray.train.optim import build_optimizer  # noqa: E402
from macdiff_ray.train.perf import count_flops, matmul_flops  # noqa: E402
from macdiff_ray.train.pretrain import resolve_cpu_precision  # noqa: E402
from macdiff_ray.train.perf import sync as _sync  # noqa: E402

DEFAULT_RELEASED_CONFIG = "config/ntu60_xsub_joint/pretrain_madiff.yaml"
PARAM_TOLERANCE = 0.10  # a larger gap in parameter counts means the two are not the same architecture

Step = Callable[[], torch.Tensor]


def import_released(repo: Path, dotted: str) -> type:
    """The class ``dotted`` (e.g. ``model.transformer_macdiff.Transformer``) imported from the released tree.

    The released code imports its own top-level packages (``model``, ``guided_diffusion``, ``util``) by name, and
    ``model`` imports its modules relatively, so the tree's root goes first on ``sys.path`` and the package is
    imported by its dotted name. It needs torch and numpy only (``guided_diffusion.logger`` imports tensorflow
    inside a function that the model never calls), so nothing is stubbed. A package of the same name imported from
    elsewhere earlier would shadow it: that is refused, and so is a class that resolves outside the tree.
    """
    module_name, _, class_name = dotted.rpartition(".")
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    if loaded is not None and repo not in Path(getattr(loaded, "__file__", "") or "/").resolve().parents:
        raise SystemExit(f"error: a module {top!r} is already imported from {loaded.__file__}, not from {repo}")
    sys.path.insert(0, str(repo))
    module = importlib.import_module(module_name)
    if repo not in Path(module.__file__).resolve().parents:
        raise SystemExit(f"error: {module_name} was imported from {module.__file__}, outside {repo}")
    return getattr(module, class_name)


def released_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The released ``main_pretrain.py``'s groups (timm 0.3.2 ``add_weight_decay``): no decay on 1-d tensors and
    on ``*.bias``; decay on everything else, its learnable positional/temporal embeddings included."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def released_mask_ratio(value: object) -> float:
    """The config's ``mask_ratio``: a number or a one-element list (``engine_pretrain.py`` accepts both)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SystemExit(f"error: the released config's mask_ratio must be one number to time a fixed step, "
                         f"got {value!r}")
    return float(value)


def to_released_layout(x: torch.Tensor) -> torch.Tensor:
    """(N, T, V, C) -> (N, C, T, V, M=2), person 2 all zeros: the layout of the released NTU feeder."""
    x = x.permute(0, 3, 1, 2)  # (N, C, T, V)
    return torch.stack([x, torch.zeros_like(x)], dim=-1).contiguous()  # (N, C, T, V, 2)


def build_ours(device: torch.device, x: torch.Tensor, x_view: torch.Tensor, bf16: bool) -> tuple[nn.Module, Step]:
    """Our ``paper`` preset with the optimiser of our pretraining (``train.optim.build_optimizer``)."""
    cfg = model_preset("paper")
    model = MacDiff(cfg).to(device).train()
    schedule = make_schedule(DiffusionConfig()).to(device)
    tc = PretrainConfig()
    opt = build_optimizer(model, tc.effective_lr, tc.weight_decay, tc.betas)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.forward_loss(x, x_view, schedule)["loss"]  # ()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


def build_theirs(repo: Path, config: Path, device: torch.device, x: torch.Tensor, x_view: torch.Tensor,
                 bf16: bool, quiet: contextlib.AbstractContextManager) -> tuple[nn.Module, Step]:
    """The released model from its config, with the AdamW of its ``main_pretrain.py`` (lr and weight decay of the
    config, betas (0.9, 0.95), torch's default implementation)."""
    with open(config) as f:
        rc = yaml.safe_load(f)
    with quiet:  # its constructor prints ~17 kB (its 1000 loss weights among them)
        model = import_released(repo, rc["model"])(**rc["model_args"]).to(device).train()
    if (model.num_frames, model.num_joints) != tuple(x.shape[1:3]):
        raise SystemExit(f"error: {config} builds a model of {model.num_frames} frames x {model.num_joints} "
                         f"joints; this benchmark feeds both models {tuple(x.shape[1:3])}")
    # Its per-timestep loss weights are a plain tensor attribute, left on the CPU by .to(device), and indexed by
    # the device's timesteps; torch 2 refuses CPU-tensor[CUDA-index] (torch 1.8, which it was written for, did
    # not). Moving the weights changes no value.
    if isinstance(getattr(model, "loss_reweight", None), torch.Tensor):
        model.loss_reweight = model.loss_reweight.to(device)
    # yaml (1.1) reads `lr: 1e-3` as a string; main_pretrain's argparse turns it into a float the same way
    opt = torch.optim.AdamW(released_param_groups(model, float(rc["weight_decay"])), lr=float(rc["lr"]),
                            betas=(0.9, 0.95))
    mask_ratio = released_mask_ratio(rc["mask_ratio"])
    tau = float(rc["motion_aware_tau"])
    xr, xr_view = to_released_layout(x), to_released_layout(x_view)  # (N, C, T, V, 2)

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # engine_pretrain.py's call; motion_stride is main_pretrain's default (the config does not set it)
            loss = model(xr, xr_view, mask_ratio=mask_ratio, motion_stride=1, motion_aware_tau=tau)[0]  # ()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


def time_steps(step: Step, steps: int, device: torch.device, who: str) -> float:
    """Median wall time of ``steps`` steps, each ended by a device sync; a non-finite loss stops the run."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)} in the {who} steps")
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--released-repo", type=Path, required=True, help="checked-out tree of the released MacDiff")
    ap.add_argument("--released-config", default=DEFAULT_RELEASED_CONFIG,
                    help="its pretraining config, relative to --released-repo")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast of both forward passes (CUDA or CPU)")
    ap.add_argument("--ours-precision", choices=("match", "auto"), default="match",
                    help="match: ours in the released model's precision (--bf16 or fp32); auto: what our "
                         "pretraining uses on this device (bf16 on a CPU with native bf16)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of each model before the rounds")
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each model per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    repo = args.released_repo.expanduser().resolve()
    if not repo.is_dir():
        ap.error(f"--released-repo {args.released_repo}: no such directory")
    config = repo / args.released_config
    if not config.is_file():
        ap.error(f"--released-config: {config} does not exist (is {repo} a tree of the released MacDiff code?)")
    for name in ("batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)  # the released model draws with numpy's global generator (its debug prints)
    device = torch.device(args.device)
    n = args.batch_size
    x = torch.randn(n, 120, 25, 3, device=device)  # (N, T, V, C)
    x_view = x + 0.01 * torch.randn_like(x)  # (N, T, V, C)

    with open(os.devnull, "w") as devnull:
        # The released forward prints tensors and losses at random (np.random.rand() < 0.01 and rarer): its
        # stdout goes to /dev/null so that this script's lines stay readable; the printing itself still runs.
        def quiet() -> contextlib.AbstractContextManager:
            return contextlib.redirect_stdout(devnull)

        ours_bf16 = args.bf16
        if args.ours_precision == "auto":
            ours_bf16 = device.type == "cpu" and resolve_cpu_precision("auto") == "bf16"
        ours_model, ours = build_ours(device, x, x_view, ours_bf16)
        theirs_model, theirs = build_theirs(repo, config, device, x, x_view, args.bf16, quiet())
        ours_params, theirs_params = count_parameters(ours_model), count_parameters(theirs_model)

        # count_flops runs the call under the math attention kernel (FlopCounterMode counts the CPU's fused kernel
        # as 0), i.e. as the two batched matmuls that the released code writes out, so both counts include
        # attention alike. These two steps are not timed.
        ours_flops = count_flops(ours) / n
        with quiet():
            theirs_flops = count_flops(theirs) / n
        for _ in range(args.warmup):
            ours()
        with quiet():
            for _ in range(args.warmup):
                theirs()
        _sync(device)

        dtype = torch.bfloat16 if args.bf16 else torch.float32
        ours_dtype = torch.bfloat16 if ours_bf16 else torch.float32
        print(f"device={device} threads={args.threads} batch={n} ours bf16={ours_bf16} released bf16={args.bf16} "
              f"T=120 V=25 C=3 "
              f"warmup={args.warmup} steps={args.steps} rounds={args.rounds}")
        print(f"released: {repo} ({args.released_config})")
        ours_sps, theirs_sps, ratios, peaks, ours_peaks = [], [], [], [], []
        for r in range(args.rounds):
            o = n / time_steps(ours, args.steps, device, "ours")
            with quiet():
                t = n / time_steps(theirs, args.steps, device, "released")
            peak = matmul_flops(device, dtype)
            ours_peaks.append(peak if ours_dtype == dtype else matmul_flops(device, ours_dtype))
            ours_sps.append(o)
            theirs_sps.append(t)
            ratios.append(o / t)
            peaks.append(peak)
            print(f"round {r + 1}/{args.rounds}: ours {o:.4g} samples/s, theirs {t:.4g} samples/s, "
                  f"ratio ours/theirs {o / t:.4g}, matmul {peak / 1e9:.1f} GFLOP/s")

    mo, mt, mr, mp = (statistics.median(v) for v in (ours_sps, theirs_sps, ratios, peaks))
    print(f"median over {args.rounds} rounds: ours {mo:.4g} samples/s, theirs {mt:.4g} samples/s, "
          f"ratio ours/theirs {mr:.4g} (the median of the rounds' ratios)")
    mop = statistics.median(ours_peaks)
    for who, flops, sps, bf16, peak in (("ours", ours_flops, mo, ours_bf16, mop),
                                        ("theirs", theirs_flops, mt, args.bf16, mp)):
        print(f"{who}: {flops / 1e9:.2f} GFLOP per sample (fwd+bwd, FlopCounterMode), {flops * sps / 1e9:.1f} "
              f"GFLOP/s = {flops * sps / peak:.1%} of the median {'bf16' if bf16 else 'fp32'} 2048^3 matmul "
              f"({peak / 1e9:.1f} GFLOP/s)")
    print(f"params: ours {ours_params:,} theirs {theirs_params:,}")
    if abs(ours_params - theirs_params) > PARAM_TOLERANCE * max(ours_params, theirs_params):
        print(f"WARNING: parameter counts differ by more than {PARAM_TOLERANCE:.0%}: ours {ours_params:,}, theirs "
              f"{theirs_params:,}; the two steps do not train the same architecture and the ratio compares "
              "different models")
    if not all(math.isfinite(v) and v > 0 for v in ours_sps + theirs_sps):
        raise RuntimeError("a measured throughput is not a positive finite number")


if __name__ == "__main__":
    main()
