"""Masking strategies (macdiff_ray.model.masking; paper Table 7): token counts and structure, fast CPU unit tests.

Token index l = tp * V + v (time-major). Each test reads the kept set back from ``ids_restore`` (masked where
``ids_restore >= K``) and checks it against ``ids_keep``.
"""

from __future__ import annotations

import pytest
import torch

from macdiff_ray.config import ConfigError
from macdiff_ray.diffusion import DiffusionConfig, make_schedule
from macdiff_ray.model import MacDiff, ModelConfig, model_preset
from macdiff_ray.model.masking import (
    MASKINGS, mask_tokens, num_kept, spatial_temporal_shape, token_motion,
)

TP, V, PATCH = 30, 25, 4  # the paper's shapes: 120 frames, patch 4, 25 joints


def _kept(ids_keep: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """(N, Tp, V) bool kept grid, checked against the two index tensors."""
    n, k = ids_keep.shape
    kept = ids_restore < k  # (N, L)
    from_ids = torch.zeros_like(kept)
    from_ids[torch.arange(n)[:, None], ids_keep] = True
    assert torch.equal(kept, from_ids)
    assert bool((kept.sum(1) == k).all())
    return kept.reshape(n, -1, V)


def _draw(strategy: str, ratio: float = 0.9, n: int = 16, seed: int = 0, x=None, **kw):
    x = torch.randn(n, TP * PATCH, V, 3, generator=torch.Generator().manual_seed(seed + 100)) if x is None else x
    ids_keep, ids_restore = mask_tokens(strategy, x, patch_len=PATCH, num_joints=V, ratio=ratio,
                                        generator=torch.Generator().manual_seed(seed), **kw)
    assert ids_keep.shape == (x.shape[0], num_kept(strategy, ratio, TP, V))
    assert ids_restore.shape == (x.shape[0], TP * V)
    assert ids_keep.dtype == ids_restore.dtype == torch.int64
    return _kept(ids_keep, ids_restore)


def test_counts_at_the_paper_shapes():
    assert num_kept("random", 0.9, TP, V) == 75
    assert num_kept("motion_aware", 0.9, TP, V) == 75
    assert num_kept("temporal", 0.9, TP, V) == 3 * V  # 3 of 30 patches, all joints
    assert num_kept("tube", 0.9, TP, V) == 2 * TP  # round(2.5) = 2 joints per patch
    assert spatial_temporal_shape(0.9, TP, V) == (8, 10)  # 8 of 25 joints x 10 of 30 patches
    assert num_kept("spatial_temporal", 0.9, TP, V) == 80
    for s in MASKINGS:  # ratio 0 keeps everything; every K is at least 1
        assert num_kept(s, 0.0, TP, V) == TP * V
        assert num_kept(s, 0.999, TP, V) >= 1
    with pytest.raises(ValueError, match="masking"):
        num_kept("checkerboard", 0.9, TP, V)


def test_random_keeps_a_uniform_subset():
    kept = _draw("random", n=400)
    assert int(kept[0].sum()) == 75
    freq = kept.float().mean(0)  # (Tp, V): every token kept with probability 0.1
    assert float((freq - 0.1).abs().max()) < 0.07


def test_temporal_keeps_whole_patches():
    kept = _draw("temporal")
    per_patch = kept.sum(2)  # (N, Tp)
    assert bool(((per_patch == 0) | (per_patch == V)).all())  # a patch is all kept or all masked
    assert bool(((per_patch == V).sum(1) == 3).all())
    assert not torch.equal(kept[0], kept[1])  # per-sample draws


@pytest.mark.parametrize("tp", [TP, 32])  # 32 = 6 runs of 5 + a run of 2
def test_tube_masks_the_same_joints_over_runs_of_five(tp):
    x = torch.randn(8, tp * PATCH, V, 3)
    ids_keep, ids_restore = mask_tokens("tube", x, patch_len=PATCH, num_joints=V, ratio=0.9,
                                        generator=torch.Generator().manual_seed(1))
    kept = _kept(ids_keep, ids_restore)  # (N, tp, V)
    assert bool((kept.sum(2) == 2).all())  # kv = 2 joints in every patch
    for start in range(0, tp, 5):
        run = kept[:, start:start + 5]  # (N, <=5, V)
        assert bool((run == run[:, :1]).all())  # one joint mask per run
    runs = [kept[:, s] for s in range(0, tp, 5)]
    assert any(not torch.equal(runs[0], r) for r in runs[1:])  # runs draw their own joints


def test_spatial_temporal_keeps_a_joint_by_patch_product():
    kept = _draw("spatial_temporal")
    for k in kept:  # (Tp, V)
        joints, patches = k.any(0), k.any(1)
        assert int(joints.sum()) == 8 and int(patches.sum()) == 10
        assert torch.equal(k, patches[:, None] & joints[None, :])  # exactly the product set
    # other shapes follow the stated rule: kv = round(V sqrt(1 - r)), kp = ceil(K_random / kv)
    assert spatial_temporal_shape(0.5, 30, 25) == (18, 21)
    assert spatial_temporal_shape(0.9, 8, 20) == (6, 3)


def test_token_motion_is_the_mean_absolute_frame_difference():
    x = torch.zeros(1, 8, 2, 3)  # (N, T, V, C), patch 4 -> Tp = 2, L = 4
    x[0, 5:, 1, 0] = 1.0  # joint 1 jumps by 1 in x at frame 5 (patch 1)
    m = token_motion(x, 4)  # (1, 4): token = tp * V + v
    assert torch.allclose(m, torch.tensor([[0.0, 0.0, 0.0, 1.0 / 12]]))


def test_motion_aware_masks_high_motion_tokens_more_often():
    """Tokens of a moving joint (joint 0, every frame) are masked more often than still ones; and the bias grows as
    the temperature falls. Fixed seeds; margins far from the measured frequencies."""
    n = 200
    x = torch.randn(n, TP * PATCH, V, 3, generator=torch.Generator().manual_seed(3)) * 0.01  # small jitter
    x[:, :, 0, :] += torch.randn(n, TP * PATCH, 3, generator=torch.Generator().manual_seed(4))  # joint 0 moves
    masked = {}
    for tau in (0.2, 0.75, 100.0):
        kept = _draw("motion_aware", n=n, x=x, temperature=tau)
        masked[tau] = 1.0 - kept.float().mean(0)  # (Tp, V) masking frequency
    moving, still = masked[0.2][:, 0].mean(), masked[0.2][:, 1:].mean()
    assert moving > 0.99 and still < 0.9  # p ~ e^5 more mass on a moving token: always masked
    assert masked[0.75][:, 0].mean() > masked[0.75][:, 1:].mean() + 0.05
    # a high temperature flattens the softmax towards random masking (0.9 everywhere)
    assert abs(float(masked[100.0][:, 0].mean()) - 0.9) < 0.05
    with pytest.raises(ValueError, match="temperature"):
        _draw("motion_aware", x=x[:2], temperature=0.0)


def test_model_config_masking_fields_and_forward():
    with pytest.raises(ConfigError, match="masking"):
        ModelConfig(masking="checkerboard")
    with pytest.raises(ConfigError, match="motion_temperature"):
        ModelConfig(masking="motion_aware", motion_temperature=0.0)
    assert model_preset("paper", masking="spatial_temporal").num_visible == 80
    assert ModelConfig(mask_ratio=0.0, loss_on="all", masking="tube").num_visible == 750
    # pretraining uses the strategy: the condition's kept tokens have its structure
    cfg = model_preset("tiny", num_frames=40, masking="temporal")  # Tp = 10 -> 1 patch kept
    model = MacDiff(cfg)
    x = torch.randn(4, 40, 25, 3)
    cond = model.encode(x, generator=torch.Generator().manual_seed(0))
    kept = ~cond.mask.reshape(4, 10, 25)
    assert bool((kept.sum(2) % 25 == 0).all()) and bool((kept.sum((1, 2)) == 25).all())
    out = model.forward_loss(x, x, make_schedule(DiffusionConfig()))
    assert torch.isfinite(out["loss"])


def test_table7_sweep_files_load_and_build_every_trial():
    """configs/sweeps/masking.yaml (five strategies) and mask_ratio.yaml (0-95 %, ratio 0 included) are valid space
    files whose every grid value resolves to a model (NW-UCLA's 20 joints at 32 frames: L = 160)."""
    from pathlib import Path

    from macdiff_ray.train.config import resolve_model_config
    from macdiff_ray.tune.space import build_config, load_space

    root = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
    got = {}
    for name in ("masking.yaml", "mask_ratio.yaml"):
        space = load_space(root / name)
        (param,) = space.params
        for v in param.values:
            mc = resolve_model_config(build_config("pretrain", space.base, {param.path: v}), 20)
            got[v] = mc.num_visible
    assert got == {"random": 16, "temporal": 20, "tube": 16, "spatial_temporal": 18, "motion_aware": 16,
                   0.0: 160, 0.5: 80, 0.8: 32, 0.9: 16, 0.95: 8}
