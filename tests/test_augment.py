"""Unit tests of diffusion-based augmentation (macdiff_ray/augment/core.py; AugmentWorker in-process). No Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from macdiff_ray.augment import (
    AugmentWorker,
    augment_batch,
    epoch_chunk_seed,
    masked_passes_predict,
    num_augmented,
    num_mask_passes,
    one_step_gap_bound,
    plan_sources,
    unmasked_condition,
)
from macdiff_ray.config import to_dict
from macdiff_ray.diffusion import DiffusionConfig, make_schedule, q_sample
from macdiff_ray.model import MacDiff, model_preset

T0, V = 16, 20


@pytest.fixture(scope="module")
def model() -> MacDiff:
    torch.manual_seed(0)
    return MacDiff(model_preset("tiny", num_joints=V, num_frames=T0)).eval()


@pytest.fixture(scope="module")
def schedule():
    return make_schedule(DiffusionConfig())


def _batch(n: int = 3, m: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, T0, V, 3, generator=g)  # (N, M, T0, V, C)
    valid = torch.ones(n, m, dtype=torch.bool)  # (N, M)
    valid[0, 1] = False
    valid[2, 1] = False
    x[~valid] = 0
    return x, valid


def test_t_start_zero_returns_the_source_exactly(model, schedule):
    x, valid = _batch()
    out = augment_batch(model, schedule, x, valid, 0, torch.Generator().manual_seed(1))
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


def test_shapes_finite_absent_zero_and_differs(model, schedule):
    x, valid = _batch()
    out = augment_batch(model, schedule, x, valid, 500, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[~valid]) == 0  # absent persons stay exactly zero
    diff = (out - x)[valid]  # (P, T0, V, C)
    assert diff.abs().amax(dim=(1, 2, 3)).min() > 0  # every present person changed


@pytest.mark.parametrize("t_s", [100, 500, 900])
def test_one_step_identity_and_distance_bound(model, schedule, t_s):
    """x0_hat - x0 = sqrt(1/ab - 1) (eps - eps_hat) exactly, hence the triangle-inequality bound per person."""
    x, valid = _batch(seed=2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))  # (N, M, T0, V, C)
    out = augment_batch(model, schedule, x, valid, t_s, noise=noise, condition="full")
    x0, eps = x[valid], noise[valid]  # (P, T0, V, C)
    t = torch.full((x0.shape[0],), t_s, dtype=torch.long)
    with torch.no_grad():
        eps_hat = model.denoise(q_sample(schedule, x0, t, eps), t, unmasked_condition(model, x0))  # (P, T0, V, C)
    k = float(schedule.sqrt_recipm1_ab[t_s])
    torch.testing.assert_close(out[valid] - x0, k * (eps - eps_hat), atol=2e-4 * max(k, 1.0), rtol=1e-4)
    rms = lambda a: a.pow(2).mean(dim=(1, 2, 3)).sqrt()  # noqa: E731 - (P,)
    gap = rms(out[valid] - x0)  # (P,)
    for p in range(x0.shape[0]):
        bound = one_step_gap_bound(schedule, t_s, float(rms(eps)[p]), float(rms(eps_hat)[p]))
        assert 0 < float(gap[p]) <= bound * (1 + 1e-5)
    # Larger t_s moves samples further: the bound's factor sqrt(1/ab - 1) grows with t.
    assert one_step_gap_bound(schedule, 100, 1.0, 1.0) < one_step_gap_bound(schedule, 500, 1.0, 1.0)


class _EpsOracle(nn.Module):
    """A 'perfect' eps predictor for known clean persons x0 (P, T, V, C): eps = (x_t - sqrt(ab) x0) / sqrt(1-ab)."""

    def __init__(self, x0: torch.Tensor, schedule, target: str = "eps"):
        super().__init__()
        self.x0, self.s = x0, schedule
        self.cfg = type("Cfg", (), {"target": target})()
        self.encoder = self  # forward_features below
        self.seen_z = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1, keepdim=True).reshape(x.shape[0], x.shape[1] // 4, 4, x.shape[2]).mean(2)[..., None]

    def denoise(self, x_t, t, z=None):
        self.seen_z = z
        ab = self.s.alphas_cumprod[t].float().reshape(-1, 1, 1, 1)  # (P, 1, 1, 1)
        return (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()  # (P, T, V, C)


def test_perfect_eps_oracle_gives_back_the_source(schedule):
    x, valid = _batch(seed=4)
    oracle = _EpsOracle(x[valid], schedule)
    out = augment_batch(oracle, schedule, x, valid, 500, torch.Generator().manual_seed(5), condition="full")
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)
    # the condition handed to the decoder is each person's own unmasked encoding (P, L, D)
    torch.testing.assert_close(oracle.seen_z, unmasked_condition(oracle, x[valid]))


def test_each_person_conditioned_on_itself(model, schedule):
    """Augmenting a batch equals augmenting each sample alone with the same noise (no cross-sample leakage),
    and persons-per-pass chunking does not change the result."""
    x, valid = _batch(n=3, seed=6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    cfg = model.cfg
    masks = torch.rand(num_mask_passes(cfg.num_tokens, cfg.num_visible), *x.shape[:2], cfg.num_tokens,
                       generator=torch.Generator().manual_seed(8))  # (P, N, M, L)
    for condition in ("masked", "full"):
        kw = dict(noise=noise, condition=condition, mask_noise=masks if condition == "masked" else None)
        whole = augment_batch(model, schedule, x, valid, 300, **kw)
        alone = torch.cat([augment_batch(model, schedule, x[i : i + 1], valid[i : i + 1], 300, noise=noise[i : i + 1],
                                         condition=condition,
                                         mask_noise=masks[:, i : i + 1] if condition == "masked" else None)
                           for i in range(3)])
        chunked = augment_batch(model, schedule, x, valid, 300, max_persons_per_pass=1, **kw)
        torch.testing.assert_close(whole, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=1e-5)


def test_masked_condition_takes_each_token_from_a_pass_where_it_was_masked(model, schedule):
    """Spy on the decoder: every token's eps comes from a pass whose condition masked it; the passes together mask
    every token; each pass shows the encoder exactly K tokens (the pretraining count)."""
    cfg = model.cfg
    x0 = torch.randn(2, T0, V, 3, generator=torch.Generator().manual_seed(11))
    t = torch.full((2,), 400, dtype=torch.long)
    x_t = q_sample(schedule, x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(12)))
    passes = num_mask_passes(cfg.num_tokens, cfg.num_visible)
    assert passes == 2  # mask ratio 0.9
    r = torch.rand(passes, 2, cfg.num_tokens, generator=torch.Generator().manual_seed(13))
    calls = []

    class Spy:
        def __init__(self, inner):
            self.cfg, self.encoder, self.inner = inner.cfg, inner.encoder, inner

        def encode_visible(self, x, visible):
            return self.inner.encode_visible(x, visible)

        def denoise(self, x_t, t, rows, index):
            pred = self.inner.denoise(x_t, t, rows, index)
            calls.append((pred, index >= rows.shape[1] - 1))  # index K = the z_global row = masked token
            return pred

    with torch.no_grad():
        out = masked_passes_predict(Spy(model), x0, x_t, t, r)
    assert len(calls) == passes
    from macdiff_ray.model.layers import token_mask_to_elements

    covered = torch.zeros(2, cfg.num_tokens, dtype=torch.bool)
    expect = torch.zeros_like(out)
    for pred, masked in calls:
        assert masked.sum(1).tolist() == [cfg.num_tokens - cfg.num_visible] * 2
        el = token_mask_to_elements(masked & ~covered, cfg.num_patches, cfg.num_joints, cfg.patch_len)
        expect = torch.where(el, pred, expect)
        covered |= masked
    assert bool(covered.all())
    torch.testing.assert_close(out, expect)
    # the two passes differ (fresh masks), so the result differs from either single pass somewhere
    assert not torch.equal(out, calls[0][0]) and not torch.equal(out, calls[1][0])
    with pytest.raises(ValueError, match="mask_noise"):
        masked_passes_predict(model, x0, x_t, t, r[:1])
    assert num_mask_passes(10, 6) == 3  # mask ratio 0.4: 4, then 4, then the last 2 tokens
    for bad in (0, 10):
        with pytest.raises(ValueError, match="visible"):
            num_mask_passes(10, bad)


def test_fresh_noise_per_seed_and_reproducible(model, schedule):
    x, valid = _batch(seed=8)
    a = augment_batch(model, schedule, x, valid, 500, torch.Generator().manual_seed(epoch_chunk_seed(0, 0, 0)))
    b = augment_batch(model, schedule, x, valid, 500, torch.Generator().manual_seed(epoch_chunk_seed(0, 0, 0)))
    c = augment_batch(model, schedule, x, valid, 500, torch.Generator().manual_seed(epoch_chunk_seed(0, 1, 0)))
    assert torch.equal(a, b)
    assert not torch.allclose(a[valid], c[valid])


def test_invalid_inputs_raise(model, schedule):
    x, valid = _batch()
    for bad in (-1, 1000, True, 2.5):
        with pytest.raises(ValueError, match="t_start"):
            augment_batch(model, schedule, x, valid, bad)
    with pytest.raises(ValueError, match="condition"):
        augment_batch(model, schedule, x, valid, 100, condition="zeroed")
    with pytest.raises(ValueError, match="person_valid"):
        augment_batch(model, schedule, x, valid[:, :1], 100)
    with pytest.raises(ValueError, match="person_valid"):
        augment_batch(model, schedule, x, valid.long(), 100)
    with pytest.raises(ValueError, match=r"\(N, M, T, V, C\)"):
        augment_batch(model, schedule, x[:, 0], valid, 100)
    with pytest.raises(ValueError, match="noise"):
        augment_batch(model, schedule, x, valid, 100, noise=torch.zeros(1, 2, T0, V, 3))


def test_plan_sources_counts_and_freshness():
    n = 40
    two = plan_sources(n, 2.0, seed=0, epoch=0)
    assert two.shape == (80,) and np.array_equal(np.bincount(two, minlength=n), np.full(n, 2))
    q0, q1 = plan_sources(n, 0.25, 0, 0), plan_sources(n, 0.25, 0, 1)
    assert q0.shape == (10,) and len(np.unique(q0)) == 10
    assert not np.array_equal(np.sort(q0), np.sort(q1))  # a different quarter each epoch
    assert np.array_equal(q0, plan_sources(n, 0.25, 0, 0))  # deterministic
    frac = np.bincount(plan_sources(n, 1.5, 3, 2), minlength=n)
    assert frac.sum() == 60 and set(frac.tolist()) == {1, 2}
    assert num_augmented(3, 0.01) == 1
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            plan_sources(n, bad, 0, 0)
    seeds = {epoch_chunk_seed(0, e, k) for e in range(5) for k in range(5)}
    assert len(seeds) == 25 and all(0 <= s < 2**63 for s in seeds)


def test_worker_renormalises_between_data_and_checkpoint_stats(model):
    """Transfer: data stats differ from the checkpoint's; t_s = 0 must round-trip to the source, absent persons 0."""
    bundle = {
        "model": model.state_dict(),
        "model_config": to_dict(model.cfg),
        "diffusion": to_dict(DiffusionConfig()),
        "stats": {"mean": [0.1, -0.2, 3.0], "std": [0.4, 0.5, 0.3]},
    }
    x, valid = _batch(n=4, seed=9)
    xs, vs = x.numpy(), valid.numpy()
    rows = np.array([3, 0, 2], np.int64)
    same = AugmentWorker(bundle, 0, bundle["stats"])
    assert not same._renorm
    assert np.array_equal(same.augment(xs, vs, rows, 1), xs[rows])
    other = AugmentWorker(bundle, 0, {"mean": [0.0, 0.0, 2.5], "std": [0.3, 0.6, 0.2]})
    assert other._renorm
    np.testing.assert_allclose(other.augment(xs, vs, rows, 1), xs[rows], atol=1e-5)
    moved = AugmentWorker(bundle, 400, {"mean": [0.0, 0.0, 2.5], "std": [0.3, 0.6, 0.2]}).augment(xs, vs, rows, 1)
    assert np.isfinite(moved).all() and np.count_nonzero(moved[~vs[rows]]) == 0
    assert np.abs(moved - xs[rows])[vs[rows]].max() > 0
