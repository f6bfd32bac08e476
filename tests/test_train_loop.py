"""train.loop: sync-free loss accounting (issue 16) and the CPU bf16 autocast step against fp32.

Unit tier: a tiny MacDiff on random tensors, no Ray.
"""

from __future__ import annotations

import math

import pytest
import torch

from macdiff_ray.diffusion import DiffusionConfig, make_schedule
from macdiff_ray.model import MacDiff, model_preset
from macdiff_ray.train.loop import DiffusionLoss, NonFiniteLossError, autocast, train_epoch
from macdiff_ray.train.optim import WarmupCosine, build_optimizer

STEPS = 7


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (on the shared 2-core box, idle OpenMP threads spinning against other
    processes made a 7-step epoch take seconds instead of tenths)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0) -> DiffusionLoss:
    torch.manual_seed(seed)
    cfg = model_preset("tiny", num_joints=5, num_frames=16)
    return DiffusionLoss(MacDiff(cfg), make_schedule(DiffusionConfig()))


def fixed_batches(n: int = STEPS, b: int = 4, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(b, 1, 16, 5, 3, generator=g)  # (B, M, T, V, C)
        out.append({"x": x, "x_view": x + 0.01 * torch.randn(x.shape, generator=g),
                    "person_valid": torch.ones(b, 1, dtype=torch.bool)})
    return out


def schedule() -> WarmupCosine:
    return WarmupCosine(1e-3, 1e-5, 2, STEPS)


def run_epoch(log_every: int, batches: list[dict], on_log=None) -> dict:
    model = tiny_model()
    opt = build_optimizer(model.net, 1e-3, 0.05, (0.9, 0.95))
    torch.manual_seed(123)  # masking, t, noise
    return train_epoch(model, opt, batches, lr_schedule=schedule(), start_step=0, max_steps=STEPS, epoch=0,
                       device=torch.device("cpu"), log_every=log_every, on_log=on_log)


def per_step_reference(batches: list[dict]) -> dict:
    """The accounting train_epoch replaced: a host read of every value after every step."""
    model = tiny_model()
    opt = build_optimizer(model.net, 1e-3, 0.05, (0.9, 0.95))
    lr_schedule, params = schedule(), [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(123)
    model.train()
    sums = {"loss": 0.0, "mse": 0.0, "uniformity": 0.0, "grad_norm": 0.0}
    for step, batch in enumerate(batches):
        lr_schedule.apply(opt, step)
        out = model(batch["x"][:, 0], batch["x_view"][:, 0])
        loss = out["loss"].float()
        sums["loss"] += loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        opt.step()
        sums["mse"] += float(out["mse"].detach())
        sums["uniformity"] += float(out["uniformity"].detach())
        sums["grad_norm"] += float(gn)
    return {k: v / len(batches) for k, v in sums.items()}


def test_sync_free_epoch_means_equal_the_per_step_accounting():
    batches = fixed_batches()
    ref = per_step_reference(batches)
    for k in (1, 3, 10):
        logged = []
        m = run_epoch(k, batches, on_log=lambda n, loss, rate: logged.append((n, loss)))
        for key in ("loss", "mse", "uniformity", "grad_norm"):
            assert m[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9), (k, key)
        assert m["steps"] == STEPS and m["samples"] == 4 * STEPS
        # one host read per log_every steps plus the end of the epoch, not one per step
        assert m["host_reads"] == math.ceil(STEPS / k)
        assert [n for n, _ in logged] == [min(k, STEPS - i) for i in range(0, STEPS, k)]
        # the window means the progress bar gets average back to the epoch mean
        assert sum(n * loss for n, loss in logged) / STEPS == pytest.approx(m["loss"], rel=1e-9)


def test_no_per_step_host_read(monkeypatch):
    """Between reads, the project's code (loop, model, diffusion) calls neither .item() nor float() on a tensor:
    on a GPU each one waits for the step to finish. (AdamW's own .item() calls read its step counters, which
    live on the host with ``capturable=False``: no device sync.)"""
    import sys

    calls = []

    def spy(real):
        def wrapper(self):
            caller = sys._getframe(1).f_code.co_filename
            if "macdiff_ray" in caller:
                calls.append(caller)
            return real(self)
        return wrapper

    model = tiny_model()
    opt = build_optimizer(model.net, 1e-3, 0.05, (0.9, 0.95))
    monkeypatch.setattr(torch.Tensor, "item", spy(torch.Tensor.item))
    monkeypatch.setattr(torch.Tensor, "__float__", spy(torch.Tensor.__float__))
    m = train_epoch(model, opt, fixed_batches(), lr_schedule=schedule(), start_step=0, max_steps=STEPS, epoch=0,
                    device=torch.device("cpu"), log_every=STEPS)
    assert m["host_reads"] == 1 and calls == []


@pytest.mark.parametrize("log_every,bad_step", [(1, 4), (3, 4), (10, 0), (10, 6)])
def test_a_nan_still_stops_the_run_and_names_its_step(log_every, bad_step):
    batches = fixed_batches()
    batches[bad_step] = dict(batches[bad_step], x=torch.full_like(batches[bad_step]["x"], float("nan")))
    with pytest.raises(NonFiniteLossError, match=rf"at epoch 1, global step {bad_step} "):
        run_epoch(log_every, batches)


def test_a_nan_raises_before_the_epoch_returns():
    """The error leaves train_epoch, so the caller never reaches its checkpoint code with NaN weights."""
    batches = fixed_batches()
    batches[-1] = dict(batches[-1], x_view=torch.full_like(batches[-1]["x_view"], float("inf")))
    returned = []
    with pytest.raises(NonFiniteLossError):
        returned.append(run_epoch(10, batches))
    assert returned == []


def test_log_every_is_validated():
    with pytest.raises(ValueError, match="log_every"):
        run_epoch(0, fixed_batches())


# ------------------------------------------------------------------------------------------- bf16 against fp32
# Tolerances of one training step (small preset, 25 joints, 32 frames, batch 6) under CPU bf16 autocast against
# fp32 on the same batch and the same masking/timestep/noise draws. bf16 keeps 8 bits of mantissa (relative
# rounding 2^-9 = 0.2%). Measured here (torch 2.13 CPU, AVX512-BF16): loss 0.06% apart, gradient vector 0.9%
# apart in relative L2 norm. The bounds leave about 10x and 5x room for other BLAS builds and seeds.
BF16_LOSS_RTOL = 0.01
BF16_GRAD_REL_L2 = 0.05
BF16_GRAD_MIN_COSINE = 0.998


def _one_step(dtype):
    torch.manual_seed(0)
    cfg = model_preset("small", num_joints=25, num_frames=32)
    net = MacDiff(cfg).train()
    sched = make_schedule(DiffusionConfig())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 32, 25, 3, generator=g)  # (N, T, V, C)
    with autocast(torch.device("cpu"), dtype):
        out = net.forward_loss(x, x + 0.01 * torch.randn(x.shape, generator=g), sched,
                               generator=torch.Generator().manual_seed(9))
    out["loss"].float().backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return float(out["loss"].detach()), grads


def test_bf16_step_agrees_with_fp32_within_tolerance():
    loss32, g32 = _one_step(None)
    loss16, g16 = _one_step(torch.bfloat16)
    assert g16.dtype == torch.float32 and g16.shape == g32.shape  # the weights' gradients stay float32
    assert loss16 == pytest.approx(loss32, rel=BF16_LOSS_RTOL)
    rel = float((g16 - g32).norm() / g32.norm())
    cos = float(torch.nn.functional.cosine_similarity(g16, g32, dim=0))
    assert rel < BF16_GRAD_REL_L2 and cos > BF16_GRAD_MIN_COSINE, (rel, cos)
    # and the comparison can fail: bf16 is not bit-identical to fp32
    assert loss16 != loss32 and rel > 0


def test_cpu_autocast_refuses_float16():
    with pytest.raises(ValueError, match="bfloat16 only"):
        autocast(torch.device("cpu"), torch.float16)


def test_pretrain_config_cpu_precision_selects_the_autocast_dtype():
    from macdiff_ray.config import ConfigError, from_dict
    from macdiff_ray.train.config import PretrainConfig
    from macdiff_ray.train.pretrain import _amp_dtype, cpu_bf16_native, cpu_precision

    cpu = torch.device("cpu")
    assert _amp_dtype(PretrainConfig(cpu_precision="fp32", preset="paper"), cpu) is None
    native = cpu_bf16_native()
    for preset in ("paper", "small", "tiny"):  # auto: bf16 wherever the CPU has native bf16 kernels
        assert _amp_dtype(PretrainConfig(preset=preset), cpu) == (torch.bfloat16 if native else None), preset
        assert cpu_precision(PretrainConfig(preset=preset)) == ("bf16" if native else "fp32")
    assert _amp_dtype(PretrainConfig(cpu_precision="bf16"), cpu) == torch.bfloat16
    assert _amp_dtype(PretrainConfig(cpu_precision="bf16"), torch.device("cuda")) == torch.bfloat16  # amp_dtype
    assert _amp_dtype(PretrainConfig(amp=False, cpu_precision="bf16"), torch.device("cuda")) is None
    with pytest.raises(ConfigError, match="cpu_precision"):
        from_dict(PretrainConfig, {"cpu_precision": "fp16"})
    with pytest.raises(ConfigError, match="log_every"):
        PretrainConfig(log_every=0)
