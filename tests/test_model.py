"""MacDiff model: configs and presets, shapes, masking, conditioning, encoder export (fast CPU unit tests)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from macdiff_ray.config import ConfigError, from_dict, replace, to_dict
from macdiff_ray.diffusion import DiffusionConfig, make_schedule
from macdiff_ray.model import (
    PRESETS,
    MacDiff,
    ModelConfig,
    SkeletonEncoder,
    count_parameters,
    encoder_state_dict,
    model_preset,
    patchify,
    unpatchify,
)

torch.set_num_threads(2)
SCHED = make_schedule(DiffusionConfig())


def small_cfg(**kw) -> ModelConfig:
    """A very small model for fast tests: 16 frames, patch 4 -> Tp = 4, V = 25 -> L = 100, K = 10."""
    return model_preset("tiny", num_frames=16, **kw)


def batch(cfg: ModelConfig, n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cfg.num_frames, cfg.num_joints, cfg.channels, generator=g)  # (N, T, V, C)


# ----------------------------------------------------------------------------------------------- configs
def test_invalid_configs_raise():
    with pytest.raises(ConfigError, match="mask_ratio"):
        ModelConfig(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="mask_ratio"):
        ModelConfig(mask_ratio=1.5)
    with pytest.raises(ConfigError, match="num_frames"):
        ModelConfig(num_frames=122, patch_len=4)
    with pytest.raises(ConfigError, match="width"):
        ModelConfig(width=100, enc_heads=8)
    with pytest.raises(ConfigError, match="dec_width"):
        ModelConfig(dec_width=100, dec_heads=8)
    with pytest.raises(ConfigError, match="loss_on"):
        ModelConfig(loss_on="visible")
    with pytest.raises(ConfigError, match="loss_on"):
        from_dict(ModelConfig, {"loss_on": "visible"})
    with pytest.raises(ConfigError, match="target"):
        from_dict(ModelConfig, {"target": "v"})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ModelConfig, {"mask_ration": 0.5})
    with pytest.raises(ConfigError, match="preset"):
        model_preset("huge")
    with pytest.raises(ConfigError, match="unknown key"):
        model_preset("tiny", depth=3)
    with pytest.raises(ConfigError, match="masked"):  # nothing masked: the masked-token loss is undefined
        ModelConfig(mask_ratio=0.0, loss_on="masked")
    assert ModelConfig(mask_ratio=0.0, loss_on="all").num_visible == 750


def test_config_round_trip_and_derived_values():
    cfg = model_preset("small", num_joints=20, mask_ratio=0.8, loss_on="all", target="x0")
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert replace(cfg, drop_path=0.3).drop_path == 0.3
    paper = model_preset("paper")
    assert (paper.num_patches, paper.num_tokens, paper.num_visible, paper.patch_dim) == (30, 750, 75, 12)
    assert set(PRESETS) == {"paper", "small", "tiny"}


def _block_params(d: int, hidden: int) -> int:
    attn = d * 3 * d + 3 * d + d * d + d
    mlp = d * hidden + hidden + hidden * d + d
    return attn + mlp


def test_paper_parameter_counts():
    """Paper preset at V = 25: ~6.3M encoder, ~5.6M decoder.

    Exact count from the architecture (pre-LN blocks; AdaLN: one (Dt -> 4D) and one (D -> 4D) linear per decoder
    block, Dt = 64), and within +-0.05M of the paper's figures: they are given to two significant digits, so any
    count that rounds to them is within half a unit of the last digit.
    """
    cfg = model_preset("paper")
    m = MacDiff(cfg)
    d, h, dt, p, l_pos = 256, 1024, 64, 12, 30 + 25
    enc = 8 * (_block_params(d, h) + 4 * d) + (p * d + d) + l_pos * d + 2 * d
    dec = (5 * (_block_params(d, h) + dt * 4 * d + 4 * d + d * 4 * d + 4 * d)
           + (p * d + d) + l_pos * d + 2 * (dt * dt + dt) + 2 * d + (d * p + p))
    assert count_parameters(m.encoder) == enc == 6_336_000
    assert count_parameters(m.decoder) == dec == 5_621_644
    assert abs(enc - 6.3e6) <= 0.05e6 and abs(dec - 5.6e6) <= 0.05e6


# ----------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("v", [15, 20, 25])
def test_shapes_for_joint_counts(v):
    cfg = small_cfg(num_joints=v)
    m = MacDiff(cfg)
    x = batch(cfg)
    z_local, ids_keep, ids_restore = m.encoder.forward_masked(x)
    k, l = cfg.num_visible, cfg.num_tokens
    assert z_local.shape == (3, k, cfg.width) and ids_keep.shape == (3, k) and ids_restore.shape == (3, l)
    assert m.encoder.forward_features(x).shape == (3, cfg.num_patches, v, cfg.width)
    assert m.encoder.pooled(x).shape == (3, cfg.width)
    assert m.encoder.per_joint(x).shape == (3, v, cfg.width)
    z, mask = m.condition(x)
    assert z.shape == (3, l, cfg.width) and mask.shape == (3, l) and mask.dtype == torch.bool
    pred = m.denoise(x, torch.tensor([0, 10, 999]), z)
    assert pred.shape == x.shape
    out = m.forward_loss(x, x, SCHED)
    assert set(out) == {"loss", "mse", "uniformity"} and all(o.shape == () for o in out.values())
    out["loss"].backward()


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_every_preset_forward_backward(name):
    cfg = model_preset(name)
    m = MacDiff(cfg)
    x = batch(cfg, n=1)
    out = m.forward_loss(x, x, SCHED, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_wrong_input_shape_raises():
    cfg = small_cfg()
    m = MacDiff(cfg)
    with pytest.raises(ValueError, match=r"\(N, 16, 25, 3\)"):
        m.encoder.pooled(torch.zeros(2, 16, 20, 3))
    with pytest.raises(ValueError, match="t:"):
        m.denoise(batch(cfg), torch.tensor([1]))


def test_patchify_token_order():
    x = torch.arange(2 * 8 * 5 * 3, dtype=torch.float32).reshape(2, 8, 5, 3)  # (N, T, V, C)
    p = patchify(x, 4)  # (N, 2, 5, 12)
    assert p.shape == (2, 2, 5, 12)
    # token (tp=1, v=3) holds frames 4..7 of joint 3, frame-major
    torch.testing.assert_close(p[0, 1, 3], x[0, 4:8, 3].reshape(-1))
    assert torch.equal(unpatchify(p, 4), x)


# ----------------------------------------------------------------------------------------------- masking
def test_masking_keeps_k_tokens_and_restores_order():
    cfg = small_cfg(mask_ratio=0.75)
    m = MacDiff(cfg)
    x = batch(cfg, n=4)
    g = torch.Generator().manual_seed(3)
    z_local, ids_keep, ids_restore = m.encoder.forward_masked(x, generator=g)
    k, l = cfg.num_visible, cfg.num_tokens
    assert k == round(0.25 * l) == 25
    for i in range(4):
        assert len(set(ids_keep[i].tolist())) == k  # K distinct tokens
        assert sorted(ids_restore[i].tolist()) == list(range(l))  # a permutation
    # ids_restore undoes the shuffle: shuffle = argsort(ids_restore), shuffle[:K] = ids_keep
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :k], ids_keep)
    seq = torch.arange(l).expand(4, l)
    shuffled = torch.gather(seq, 1, ids_shuffle)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore), seq)
    # z_local is the encoder's output at the kept positions (same as running only those tokens)
    tok = m.encoder.embed(x)
    vis = torch.gather(tok, 1, ids_keep[:, :, None].expand(-1, -1, cfg.width))
    torch.testing.assert_close(z_local, m.encoder._run(vis))
    # same generator seed -> same mask
    _, keep2, _ = m.encoder.forward_masked(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(keep2, ids_keep)


def test_condition_unshuffles_and_fills_with_global_mean():
    cfg = small_cfg()
    m = MacDiff(cfg).eval()
    x = batch(cfg, n=2)
    c = m.encode(x, generator=torch.Generator().manual_seed(0))
    z = c.dense()  # (N, L, D)
    mask = c.mask
    assert int((~mask).sum(1).unique()) == cfg.num_visible
    for i in range(2):
        torch.testing.assert_close(z[i, c.ids_keep[i]], c.z_local[i])
        g = c.z_local[i].mean(0)
        torch.testing.assert_close(z[i, mask[i]], g.expand(int(mask[i].sum()), -1))


def test_compact_condition_equals_dense():
    cfg = small_cfg()
    m = MacDiff(cfg).eval()
    x = batch(cfg, n=2)
    c = m.encode(x, generator=torch.Generator().manual_seed(1))
    rows, index = c.compact()
    t = torch.tensor([3, 600])
    torch.testing.assert_close(m.denoise(x, t, rows, index), m.denoise(x, t, c.dense()), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- conditioning
def test_gradient_reaches_encoder_through_condition():
    cfg = small_cfg(uniformity_weight=0.0, cond_drop_prob=0.0)
    m = MacDiff(cfg).train()
    x = batch(cfg)
    out = m.forward_loss(x, x, SCHED, generator=torch.Generator().manual_seed(0))
    out["mse"].backward()
    for name, p in m.encoder.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_dropped_condition_ignores_encoder_input():
    cfg = small_cfg(uniformity_weight=0.0, cond_drop_prob=1.0)
    m = MacDiff(cfg).train()
    x = batch(cfg, seed=0)
    t = torch.tensor([10, 400, 900])
    noise = batch(cfg, seed=1)
    a = m.forward_loss(x, batch(cfg, seed=2), SCHED, t=t, noise=noise, generator=torch.Generator().manual_seed(5))
    b = m.forward_loss(x, batch(cfg, seed=3), SCHED, t=t, noise=noise, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a["mse"], b["mse"])
    a["mse"].backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in m.encoder.parameters())
    # denoise(z=None) is the dropped condition: identical to z = 0, independent of any encoder input
    m.eval()
    zeros = torch.zeros(3, cfg.num_tokens, cfg.width)
    torch.testing.assert_close(m.denoise(x, t, None), m.denoise(x, t, zeros))
    z, _ = m.condition(batch(cfg, seed=4))
    assert not torch.allclose(m.denoise(x, t, z), m.denoise(x, t, None))


def test_condition_dropout_only_in_training():
    cfg = small_cfg(cond_drop_prob=1.0, uniformity_weight=0.0)
    m = MacDiff(cfg).eval()
    x, t, noise = batch(cfg), torch.tensor([10, 400, 900]), batch(cfg, seed=1)
    a = m.forward_loss(x, batch(cfg, seed=2), SCHED, t=t, noise=noise, generator=torch.Generator().manual_seed(5))
    b = m.forward_loss(x, batch(cfg, seed=3), SCHED, t=t, noise=noise, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(a["mse"], b["mse"])  # eval: z is used, so the encoder input matters


def test_loss_variants_and_determinism():
    x, t = batch(small_cfg()), torch.tensor([1, 500, 999])
    vals = {}
    for loss_on in ("masked", "all"):
        for target in ("eps", "x0"):
            torch.manual_seed(0)
            m = MacDiff(small_cfg(loss_on=loss_on, target=target)).eval()
            o1 = m.forward_loss(x, x, SCHED, t=t, generator=torch.Generator().manual_seed(1))
            o2 = m.forward_loss(x, x, SCHED, t=t, generator=torch.Generator().manual_seed(1))
            assert torch.equal(o1["loss"], o2["loss"])
            torch.testing.assert_close(o1["loss"], o1["mse"] + 0.02 * o1["uniformity"])
            vals[(loss_on, target)] = float(o1["mse"].detach())
    assert len(set(vals.values())) == 4
    assert 0.0 < vals[("masked", "eps")] and 0.0 <= min(vals.values())


def test_uniformity_of_identical_tokens_is_one():
    from macdiff_ray.model import token_uniformity

    z = torch.randn(2, 1, 8).expand(2, 5, 8)
    torch.testing.assert_close(token_uniformity(z), torch.tensor(1.0))
    e = torch.eye(8)[None]  # orthogonal tokens: only the K self-pairs count, 1/K of K*K
    torch.testing.assert_close(token_uniformity(e), torch.tensor(1 / 8))


def test_bf16_autocast_is_dtype_clean():
    cfg = small_cfg()
    m = MacDiff(cfg).train()
    x = batch(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.forward_loss(x, x, SCHED, generator=torch.Generator().manual_seed(0))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad.dtype == torch.float32 for p in m.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------------------------- encoder export
def test_encoder_loads_from_macdiff_state_dict():
    cfg = small_cfg()
    m = MacDiff(cfg).eval()
    x = batch(cfg)
    enc = SkeletonEncoder.from_state_dict(cfg, m.state_dict()).eval()
    torch.testing.assert_close(enc.pooled(x), m.encoder.pooled(x))
    enc2 = SkeletonEncoder.from_state_dict(cfg, encoder_state_dict(m), prefix="").eval()
    torch.testing.assert_close(enc2.per_joint(x), m.encoder.per_joint(x))
    # fine-tuning config (drop path) loads the same weights
    ft = SkeletonEncoder.from_state_dict(replace(cfg, drop_path=0.3), m.state_dict())
    assert ft.blocks[-1].drop_path.p == pytest.approx(0.3)


def test_encoder_loading_is_strict():
    cfg = small_cfg()
    sd = MacDiff(cfg).state_dict()
    broken = {k: v for k, v in sd.items() if k != "encoder.norm.weight"}
    with pytest.raises(ValueError, match="missing.*norm.weight"):
        SkeletonEncoder.from_state_dict(cfg, broken)
    extra = dict(sd, **{"encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected.*extra.weight"):
        SkeletonEncoder.from_state_dict(cfg, extra)
    with pytest.raises(ValueError, match="shape mismatch"):
        SkeletonEncoder.from_state_dict(small_cfg(num_joints=20), sd)
    with pytest.raises(ValueError, match="no key starting with"):
        SkeletonEncoder.from_state_dict(cfg, sd, prefix="backbone.")


def test_drop_path_only_in_training():
    cfg = small_cfg(drop_path=0.5)
    enc = SkeletonEncoder(cfg)
    x = batch(cfg, n=8)
    enc.eval()
    assert torch.equal(enc.pooled(x), enc.pooled(x))
    enc.train()
    torch.manual_seed(0)
    a = enc.pooled(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, enc.pooled(x))


def test_attention_runs_in_float32_under_cpu_bf16_autocast():
    """The CPU bf16 path computes attention in float32 (returned in bf16); "bf16" leaves torch's bf16 kernel."""
    from macdiff_ray.model import layers

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 60, 16, generator=g).bfloat16().requires_grad_() for _ in range(3))
    in_fp32 = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).bfloat16()  # (2, 4, 60, 16)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    out, err = {}, {}
    for mode in ("fp32", "bf16"):
        before = layers.set_cpu_bf16_attention(mode)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out[mode] = layers.attention(q, k, v)
            (grad,) = torch.autograd.grad(out[mode].float().sum(), [q])
            assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()
        finally:
            layers.set_cpu_bf16_attention(before)
        assert out[mode].dtype == torch.bfloat16 and out[mode].shape == q.shape
        err[mode] = float((out[mode].double() - exact).abs().mean())
    assert torch.equal(out["fp32"], in_fp32)  # float32 attention, one rounding of its output
    assert not torch.equal(out["bf16"], in_fp32)  # torch's bf16 kernel: rounded inside too
    assert err["fp32"] < err["bf16"], err  # measured 2.2e-4 against 3.1e-4
    with pytest.raises(ValueError, match="fp16"):
        layers.set_cpu_bf16_attention("fp16")


def _attention_under_autocast(layers, mode, q, k, v, g):
    """(output, (dq, dk, dv)) of ``layers.attention`` under CPU bf16 autocast in ``mode``."""
    before = layers.set_cpu_bf16_attention(mode)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layers.attention(q, k, v)
        grads = torch.autograd.grad(out, [q, k, v], g)
    finally:
        layers.set_cpu_bf16_attention(before)
    return out, grads


def _grad_fn_names(t):
    """Names of every autograd node behind ``t``."""
    names, todo = set(), [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is not None and type(f).__name__ not in names:
            names.add(type(f).__name__)
            todo += [n for n, _ in f.next_functions]
    return names


def test_sliced_attention_matches_float32_attention_within_its_rounding():
    """The default "sliced" CPU bf16 attention (scores and softmax in float32, the other matmuls in bf16) has about
    the error of torch's bf16 kernel, in the output and in all three gradients (measured 0.7-1.2x; scores rounded to
    bf16 as well gave 1.9-2.5x); the no-grad path gives the same output."""
    from macdiff_ray.model import layers

    assert layers.CPU_BF16_ATTENTION_CHOICES[0] == "sliced" == layers._cpu_bf16_attention
    gen = torch.Generator().manual_seed(0)
    n, h, l, dh = 2, 3, layers.SLICED_MIN_TOKENS + 44, 16
    q, k, v = ((1.5 * torch.randn(n, h, l, dh, generator=gen)).bfloat16().requires_grad_() for _ in range(3))
    g = torch.randn(n, h, l, dh, generator=gen).bfloat16()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q64, k64, v64)
    ref_grads = torch.autograd.grad(ref, [q64, k64, v64], g.double())
    res = {m: _attention_under_autocast(layers, m, q, k, v, g) for m in ("sliced", "bf16")}
    out, grads = res["sliced"]
    assert "_SlicedAttentionBackward" in _grad_fn_names(out)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert all(gr.dtype == torch.bfloat16 and gr.shape == q.shape and torch.isfinite(gr).all() for gr in grads)

    def errors(o, gs):
        return [float((a.double() - b).abs().mean()) for a, b in zip((o, *gs), (ref, *ref_grads))]

    e_sliced, e_bf16 = errors(*res["sliced"]), errors(*res["bf16"])
    for name, es, eb in zip(("output", "dq", "dk", "dv"), e_sliced, e_bf16):
        assert es < 1.5 * eb, (name, es, eb)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(layers.attention(q, k, v), out)


def test_sliced_attention_falls_back_to_float32_for_few_tokens_and_large_calls(monkeypatch):
    """Under SLICED_MIN_TOKENS keys, or when the kept probabilities would pass SLICED_MAX_BYTES, "sliced" runs the
    "fp32" path: the same output, bit for bit, and no sliced autograd node."""
    from macdiff_ray.model import layers

    gen = torch.Generator().manual_seed(1)

    def both(l):
        q, k, v = (torch.randn(2, 2, l, 8, generator=gen).bfloat16().requires_grad_() for _ in range(3))
        g = torch.ones(2, 2, l, 8, dtype=torch.bfloat16)
        return [_attention_under_autocast(layers, m, q, k, v, g)[0] for m in ("sliced", "fp32")]

    few = both(layers.SLICED_MIN_TOKENS - 1)
    assert torch.equal(few[0], few[1]) and "_SlicedAttentionBackward" not in _grad_fn_names(few[0])
    many = both(layers.SLICED_MIN_TOKENS)
    assert "_SlicedAttentionBackward" in _grad_fn_names(many[0])
    monkeypatch.setattr(layers, "SLICED_MAX_BYTES", 2 * 2 * layers.SLICED_MIN_TOKENS ** 2 * 2 - 1)
    large = both(layers.SLICED_MIN_TOKENS)
    assert torch.equal(large[0], large[1]) and "_SlicedAttentionBackward" not in _grad_fn_names(large[0])
