"""Diffusion core: schedules against METHOD.md reference values, forward/inverse identities, samplers."""

from __future__ import annotations

import pytest
import torch

from macdiff_ray.config import ConfigError, from_dict, to_dict
from macdiff_ray.diffusion import (
    DiffusionConfig,
    ddim_sample,
    eps_from_x0,
    inpaint,
    make_schedule,
    one_step_denoise,
    q_sample,
    respaced_timesteps,
    training_loss,
    x0_from_eps,
)

STEPS = [0, 100, 250, 500, 750, 900, 999]
# METHOD.md reference values of alpha_bar (3 decimals; "~0" at t = 999).
INV_COS = [0.998, 0.826, 0.652, 0.506, 0.355, 0.174, 0.0]
COSINE = [1.0, 0.972, 0.846, 0.492, 0.143, 0.024, 0.0]


@pytest.mark.parametrize(
    "cfg, ref", [(DiffusionConfig(schedule="tau", tau=1.0), INV_COS), (DiffusionConfig(schedule="cosine"), COSINE)]
)
def test_alpha_bar_matches_reference(cfg, ref):
    s = make_schedule(cfg)
    got = [float(s.alphas_cumprod[t]) for t in STEPS]
    for t, g, r in zip(STEPS, got, ref):
        assert abs(g - r) <= 0.0005 + 1e-9, f"t={t}: {g:.5f} vs reference {r}"
    assert got[-1] < 1e-3


def test_buffers_are_float64_and_consistent():
    s = make_schedule(DiffusionConfig())
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_ab", "sqrt_1m_ab"):
        buf = getattr(s, name)
        assert buf.dtype == torch.float64 and buf.shape == (1000,), name
    assert float(s.betas.max()) <= 0.999 and float(s.betas.min()) > 0
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])
    torch.testing.assert_close(s.sqrt_ab**2 + s.sqrt_1m_ab**2, torch.ones(1000, dtype=torch.float64))
    assert float(s.alphas_cumprod_prev[0]) == 1.0


def test_tau_minus_one_is_cosine():
    a = make_schedule(DiffusionConfig(schedule="tau", tau=-1.0))
    b = make_schedule(DiffusionConfig(schedule="cosine"))
    torch.testing.assert_close(a.alphas_cumprod, b.alphas_cumprod, atol=1e-12, rtol=0)


def test_linear_schedule_is_ddpm():
    s = make_schedule(DiffusionConfig(schedule="linear"))
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)


def test_invalid_configs_raise():
    with pytest.raises(ConfigError, match="schedule"):
        DiffusionConfig(schedule="sigmoid")
    with pytest.raises(ConfigError, match="schedule"):
        from_dict(DiffusionConfig, {"schedule": "quadratic"})
    with pytest.raises(ConfigError, match="num_steps"):
        DiffusionConfig(num_steps=1)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(DiffusionConfig, {"num_step": 10})
    # tau < -1 makes alpha_bar negative before u = 1: refused, not silently clipped.
    with pytest.raises(ConfigError, match="positive and decreasing"):
        make_schedule(DiffusionConfig(schedule="tau", tau=-1.5))


def test_config_round_trip():
    cfg = DiffusionConfig(num_steps=200, schedule="cosine", tau=0.5)
    assert from_dict(DiffusionConfig, to_dict(cfg)) == cfg


def test_q_sample_and_inverses():
    s = make_schedule(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 8, 5, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 8, 5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 998])
    x_t = q_sample(s, x0, t, eps)
    ab = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    torch.testing.assert_close(x0_from_eps(s, x_t, t, eps), x0)
    torch.testing.assert_close(eps_from_x0(s, x_t, t, x0), eps)


def test_training_loss_weighting():
    s = make_schedule(DiffusionConfig())
    x0 = torch.randn(2, 4, 3, 3)
    noise = torch.randn(2, 4, 3, 3)
    t = torch.tensor([5, 700])
    w = torch.zeros(2, 4, 3, 1)
    w[:, :2] = 1.0
    pred = torch.randn(2, 4, 3, 3)
    out = training_loss(s, lambda x_t, tt: pred, x0, t, noise, "eps", w)
    want = ((pred - noise) ** 2)[:, :2].reshape(2, -1).mean(1)
    torch.testing.assert_close(out["per_sample"], want)
    perfect = training_loss(s, lambda x_t, tt: x0, x0, t, noise, "x0", None)
    assert float(perfect["loss"]) == 0.0
    with pytest.raises(ValueError, match="target"):
        training_loss(s, lambda x_t, tt: pred, x0, t, noise, "v", None)


def _oracle(s, x0):
    """An exact eps oracle for a fixed clean batch x0: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    return lambda x_t, t: eps_from_x0(s, x_t, t, x0)


def test_one_step_denoise_with_perfect_oracle_returns_x0():
    s = make_schedule(DiffusionConfig())
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 8, 5, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 8, 5, 3, generator=g, dtype=torch.float64)
    for t_s in (100, 500, 900):
        torch.testing.assert_close(one_step_denoise(s, _oracle(s, x0), x0, t_s, noise), x0)
    # t_s = 0 means "no noise": x0 back exactly, and the model is not needed.
    assert torch.equal(one_step_denoise(s, lambda *a: 1 / 0, x0, 0, noise), x0)
    mixed = one_step_denoise(s, lambda x_t, t: torch.zeros_like(x_t), x0, torch.tensor([0, 500, 0]), noise)
    assert torch.equal(mixed[0], x0[0]) and torch.equal(mixed[2], x0[2]) and not torch.equal(mixed[1], x0[1])


def test_respaced_timesteps():
    seq = respaced_timesteps(1000, 50)
    assert len(seq) == 50 and seq[0] == 0 and seq[-1] == 999 and seq == sorted(seq)
    assert respaced_timesteps(1000, 1) == [999]  # one step starts at the top too
    with pytest.raises(ValueError):
        respaced_timesteps(1000, 0)


def test_ddim_eta0_is_deterministic_and_recovers_oracle_sample():
    s = make_schedule(DiffusionConfig())
    x0 = torch.randn(2, 8, 5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shape = tuple(x0.shape)
    a = ddim_sample(s, _oracle(s, x0), shape, steps=20, eta=0.0, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    b = ddim_sample(s, _oracle(s, x0), shape, steps=20, eta=0.0, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, x0)  # the oracle's data point is the fixed point of DDIM
    # eta = 0: the result depends on x_T only, not on the generator's later draws.
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    m = lambda x_t, t: 0.5 * x_t  # noqa: E731
    c = ddim_sample(s, m, shape, steps=10, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(5))
    d = ddim_sample(s, m, shape, steps=10, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(6))
    assert torch.equal(c, d)
    e = ddim_sample(s, m, shape, steps=10, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(5))
    f = ddim_sample(s, m, shape, steps=10, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(e, f)


def test_ddim_x0_target_and_guidance():
    s = make_schedule(DiffusionConfig())
    x0 = torch.randn(2, 8, 5, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = ddim_sample(s, lambda x_t, t: x0, tuple(x0.shape), steps=10, target="x0", dtype=torch.float64,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0)
    # Guidance with identical conditional and unconditional models changes nothing.
    x_T = torch.randn(x0.shape, dtype=torch.float64)
    m = _oracle(s, x0)
    g0 = ddim_sample(s, m, tuple(x0.shape), steps=10, x_T=x_T)
    g1 = ddim_sample(s, m, tuple(x0.shape), steps=10, x_T=x_T, model_fn_uncond=m, guidance_weight=3.0)
    torch.testing.assert_close(g0, g1)
    g2 = ddim_sample(s, m, tuple(x0.shape), steps=10, x_T=x_T,
                     model_fn_uncond=lambda x_t, t: torch.zeros_like(x_t), guidance_weight=1.0)
    assert not torch.allclose(g0, g2)


@pytest.mark.parametrize("resample", [1, 3])
def test_inpaint_keeps_known_entries(resample):
    s = make_schedule(DiffusionConfig())
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 12, 5, 3, generator=g)
    known = torch.ones(2, 12, 5, 1, dtype=torch.bool)
    known[:, 4:8] = False  # occlude 4 frames
    out = inpaint(s, lambda x_t, t: 0.3 * x_t, x, known, steps=8, resample=resample, generator=g)
    k = known.expand_as(x)
    assert torch.equal(out[k], x[k])
    assert torch.isfinite(out).all() and not torch.allclose(out[~k], x[~k])
    # With the exact oracle of x, the unknown entries are recovered too.
    rec = inpaint(s, _oracle(s, x.double()), x.double(), known, steps=8, resample=resample, eta=0.0, generator=g)
    torch.testing.assert_close(rec, x.double())


def test_inpaint_sdedit_start_runs_the_chain_from_the_first_guess():
    """init_strength s < 1 (SDEdit): round(s * steps) DDIM steps from a forward sample of x_init at s of the way.

    Under a model that predicts eps = 0 and deterministic DDIM, every step keeps x_t / sqrt(ab_t), so the result is
    x_init plus the start's noise scaled by sqrt((1 - ab) / ab): the shorter the chain, the nearer to x_init."""
    from macdiff_ray.diffusion.gaussian import sampling_start

    s = make_schedule(DiffusionConfig())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 12, 5, 3, generator=g)
    known = torch.ones_like(x, dtype=torch.bool)
    known[:, 4:8] = False
    guess = x + 0.5 * torch.randn(x.shape, generator=g)  # a first guess, wrong on the gap
    calls = []

    def zero_eps(x_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x_t)

    spread = {}
    for strength in (0.05, 0.3, 1.0):
        for resample in (1, 2):
            calls.clear()
            out = inpaint(s, zero_eps, x, known, steps=10, resample=resample, eta=0.0, x_init=guess,
                          init_strength=strength, generator=torch.Generator().manual_seed(0))
            assert torch.equal(out[known], x[known])
            assert len(calls) == resample * max(1, round(strength * 10))
            t0 = round(strength * sampling_start(s)) if strength < 1 else sampling_start(s)
            assert max(calls) == t0
            if resample == 1:  # the exact law: guess + sqrt((1 - ab) / ab) * noise
                ab = float(s.alphas_cumprod[t0])
                spread[strength] = float((out - guess)[~known].std()) / ((1 - ab) / ab) ** 0.5
    assert spread[0.05] == pytest.approx(1.0, rel=0.2) and spread[0.3] == pytest.approx(1.0, rel=0.2)
    # from noise (s = 1) the guess is ignored; part-way it is not
    for strength, same in ((1.0, True), (0.3, False)):
        a, b = (inpaint(s, zero_eps, x, known, steps=10, eta=0.0, x_init=gs, init_strength=strength,
                        generator=torch.Generator().manual_seed(0)) for gs in (guess, guess + 5))
        assert torch.equal(a, b) == same
    with pytest.raises(ValueError, match="x_init"):
        inpaint(s, zero_eps, x, known, steps=4, init_strength=0.5)
    with pytest.raises(ValueError, match="init_strength"):
        inpaint(s, zero_eps, x, known, steps=4, x_init=guess, init_strength=0.0)
    with pytest.raises(ValueError, match="x_init"):
        inpaint(s, zero_eps, x, known, steps=4, x_init=guess[:, :6], init_strength=0.5)


def test_reconstruction_guidance_scale_and_invariants():
    """Reconstruction guidance (Ho et al. 2022 eq. 7) on a model that believes every sequence is constant in time.

    That model's x0_hat is the frame mean of x_t / sqrt(ab) at every frame, so the guided estimate is
    x0_hat - w * (known fraction) * (x0_hat - c) for a constant truth c: with half the frames known, w = 2 lands on
    c exactly at every step, while replacement alone (w = 0) keeps the unknown frames' own noise in the mean.
    """
    from macdiff_ray.diffusion.gaussian import extract

    s = make_schedule(DiffusionConfig())

    def constant_model(x_t, t):
        ab = extract(s.alphas_cumprod, t, x_t)  # (N, 1, 1, 1)
        x0 = (x_t / ab.sqrt()).mean(dim=1, keepdim=True).expand_as(x_t)  # (N, T, V, C)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    x = torch.full((3, 12, 2, 1), 1.5, dtype=torch.float64)
    known = torch.ones_like(x, dtype=torch.bool)
    known[:, 3:9] = False  # 6 of 12 frames unknown
    errs = {}
    for w in (0.0, 1.0, 2.0):
        out = inpaint(s, constant_model, x, known, steps=10, eta=0.0, generator=torch.Generator().manual_seed(0),
                      recon_guidance=w)
        assert torch.equal(out[known], x[known])
        errs[w] = float((out - x)[~known].abs().mean())
    assert errs[0.0] > 0.1
    assert errs[1.0] < errs[0.0] / 3
    assert errs[2.0] < 1e-9
    # The exact oracle of x stays exact with guidance (its x0_hat matches the known entries: zero gradient).
    g = torch.Generator().manual_seed(9)
    y = torch.randn(2, 12, 5, 3, generator=g, dtype=torch.float64)
    rec = inpaint(s, _oracle(s, y), y, known[:2, :, :1].expand(2, 12, 5, 3), steps=8, eta=0.0, generator=g,
                  recon_guidance=3.0)
    torch.testing.assert_close(rec, y)
    with pytest.raises(ValueError, match="recon_guidance"):
        inpaint(s, constant_model, x, known, steps=2, recon_guidance=-1.0)


def test_sampling_starts_where_alpha_bar_is_not_degenerate():
    from macdiff_ray.diffusion.gaussian import MIN_START_ALPHA_BAR, sampling_start

    for name in ("tau", "cosine", "linear"):
        s = make_schedule(DiffusionConfig(schedule=name))
        t0 = sampling_start(s)
        assert t0 < s.num_steps - 1  # alpha_bar(T-1) ~ 0 for all three schedules
        assert float(s.alphas_cumprod[t0]) >= MIN_START_ALPHA_BAR > float(s.alphas_cumprod[t0 + 1])
