"""Baselines as presets of the same code (ModelConfig.method; paper Tables 1-6): each builds and trains a step,
the decoder-only ones have no encoder parameter, checkpoints record the method and a mismatched load is refused.
Fast CPU unit tests on a 16-frame tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from macdiff_ray.config import ConfigError, from_dict, to_dict
from macdiff_ray.diffusion import DiffusionConfig, make_schedule
from macdiff_ray.model import METHOD_PRESETS, MacDiff, ModelConfig, count_parameters, method_overrides, model_preset
from macdiff_ray.model.masking import frame_differences
from macdiff_ray.train.checkpoint import (
    IncompatibleCheckpointError, build_state, check_compatible, checkpoint_method, load_checkpoint, save_checkpoint,
)

torch.set_num_threads(2)
SCHED = make_schedule(DiffusionConfig())
DATA = {"dataset": "synthetic", "benchmark": "synthetic", "layout": {"name": "ntu25"},
        "stats": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "num_classes": 4}


def cfg_of(method: str, **kw) -> ModelConfig:
    return model_preset("tiny", num_frames=16, **method_overrides(method), **kw)


@pytest.mark.parametrize("method", METHOD_PRESETS)
def test_each_preset_builds_and_trains_a_step(method):
    torch.manual_seed(0)
    cfg = cfg_of(method)
    model = MacDiff(cfg)
    x = torch.randn(4, 16, 25, 3)  # (N, T, V, C)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model.forward_loss(x, x + 0.01 * torch.randn_like(x), SCHED)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    # every parameter takes part in the loss (DDP without find_unused_parameters needs it)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("decoder.") for k in changed)
    assert any(k.startswith("encoder.") for k in changed) == cfg.has_encoder


@pytest.mark.parametrize("method", ["ddim", "mdm", "mdm_orig"])
def test_decoder_only_methods_have_no_encoder_parameters(method):
    model = MacDiff(cfg_of(method))
    assert model.encoder is None
    assert not [n for n in model.state_dict() if not n.startswith("decoder.")]
    assert all(blk.z_mod is None for blk in model.decoder.blocks)  # no condition weights either
    if method != "mdm_orig":  # same token layout: MacDiff's decoder minus its condition weights, exactly
        macdiff = MacDiff(cfg_of("macdiff"))
        z_mod = sum(count_parameters(blk.z_mod) for blk in macdiff.decoder.blocks)
        assert count_parameters(model) == count_parameters(macdiff.decoder) - z_mod
    with pytest.raises(ValueError, match="no encoder"):
        model.encode(torch.randn(2, 16, 25, 3))
    with pytest.raises(ValueError, match="unconditional"):
        model.denoise(torch.randn(2, 16, 25, 3), torch.zeros(2, dtype=torch.int64), torch.randn(2, 100, 64))


def test_mdm_orig_attends_over_time_only():
    model = MacDiff(cfg_of("mdm_orig"))
    assert model.decoder.num_tokens == 4  # Tp = 16 / 4 tokens, each holding all 25 joints
    x = torch.randn(2, 16, 25, 3)
    out = model.denoise(x, torch.tensor([3, 700]))
    assert out.shape == x.shape
    # a token mixes joints: changing one joint of frame 0 moves the prediction of other joints in that patch
    x2 = x.clone()
    x2[:, 0, 5] += 1.0
    with torch.no_grad():
        delta = (model.denoise(x2, torch.tensor([3, 700])) - out).abs()
    assert float(delta[:, :4, 7].max()) > 0


def test_method_settings_are_checked():
    with pytest.raises(ConfigError, match="target"):
        ModelConfig(method="mamp", target="x0", cond_drop_prob=0.0, uniformity_weight=0.0)
    with pytest.raises(ConfigError, match="target"):
        ModelConfig(target="motion")  # motion targets belong to mamp
    with pytest.raises(ConfigError, match="loss_on"):
        ModelConfig(method="ddim", uniformity_weight=0.0)  # loss_on 'masked' without a mask
    with pytest.raises(ConfigError, match="cond_drop_prob"):
        ModelConfig(method="mae", target="x0", uniformity_weight=0.0)
    with pytest.raises(ConfigError, match="dec_tokens"):
        ModelConfig(dec_tokens="frame")
    with pytest.raises(ConfigError, match="method"):
        method_overrides("simclr")
    mamp = cfg_of("mamp")
    assert (mamp.masking, mamp.target, mamp.is_diffusion, mamp.has_encoder) == ("motion_aware", "motion", False, True)
    assert from_dict(ModelConfig, to_dict(mamp)) == mamp


def test_mamp_regresses_motion_and_mae_coordinates():
    """With the decoder's prediction replaced by the target itself, the regression loss is 0: mae's target is the
    clean sequence, mamp's its frame differences."""
    x = torch.randn(3, 16, 25, 3)
    for method, goal in (("mae", x), ("mamp", frame_differences(x))):
        model = MacDiff(cfg_of(method))
        model.regress = lambda rows, index, shape, goal=goal: goal  # type: ignore[method-assign]
        out = model.forward_loss(x, x, SCHED)
        assert float(out["mse"]) == 0.0
    assert torch.equal(frame_differences(x)[:, 0], torch.zeros(3, 25, 3))


def test_pretrain_config_method_resolution():
    from macdiff_ray.train.config import PretrainConfig, resolve_model_config

    mc = resolve_model_config(PretrainConfig(preset="tiny", method="mamp", num_frames=32), 25)
    assert (mc.method, mc.masking, mc.target, mc.cond_drop_prob) == ("mamp", "motion_aware", "motion", 0.0)
    mc = resolve_model_config(PretrainConfig(preset="tiny", method="mamp", num_frames=32,
                                             model_overrides={"motion_temperature": 0.8}), 25)
    assert mc.motion_temperature == 0.8  # user overrides win over the method preset
    with pytest.raises(ConfigError, match="method"):
        resolve_model_config(PretrainConfig(preset="tiny", model_overrides={"method": "mae"}), 25)
    with pytest.raises(ConfigError):
        from_dict(PretrainConfig, {"method": "simclr"})


def test_checkpoints_record_the_method_and_refuse_a_mismatch(tmp_path):
    from macdiff_ray.eval.features import build_encoder

    paths = {}
    for method in ("mae", "ddim"):
        cfg = cfg_of(method)
        state = build_state(MacDiff(cfg), None, None, epoch=1, step=1, config={"method": method},
                            model_config=cfg, data=DATA)
        paths[method] = save_checkpoint(state, tmp_path / method)
        assert json.loads((paths[method] / "meta.json").read_text())["method"] == method
        assert checkpoint_method(load_checkpoint(paths[method])) == method
    mae = load_checkpoint(paths["mae"])
    with pytest.raises(IncompatibleCheckpointError, match="method"):
        check_compatible(mae, cfg_of("macdiff"), None)
    with pytest.raises(IncompatibleCheckpointError, match="method"):  # probes compare the architecture keys
        check_compatible(mae, cfg_of("macdiff"), None, architecture_only=True)
    check_compatible(mae, cfg_of("mae"), None)
    # probes: the mae encoder loads; ddim has none to load
    enc, info = build_encoder(checkpoint=str(paths["mae"]), preset=None, num_joints=25, num_frames=16)
    assert info["source"] == "checkpoint"
    with pytest.raises(ConfigError, match="no encoder"):
        build_encoder(checkpoint=str(paths["ddim"]), preset=None, num_joints=25, num_frames=16)


def test_a_checkpoint_from_before_the_method_field_is_macdiff(tmp_path):
    cfg = cfg_of("macdiff")
    state = build_state(MacDiff(cfg), None, None, epoch=1, step=1, config={}, model_config=cfg, data=DATA)
    for key in ("method", "masking", "motion_temperature", "dec_tokens"):
        del state["model_config"][key]
    check_compatible(state, cfg, None)  # read as MacDiff with random masking: no refusal
    assert checkpoint_method(state) == "macdiff"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.extended  # 37 s on the slow AMD box; test_pretrain_ray takes the 2-worker Train path (macdiff)
@pytest.mark.parametrize("method", ["ddim"])
def test_baselines_pretrain_through_ray_train(method, ray_session, synthetic_prepared, tmp_path):
    """The same run_pretrain (experiments/pretrain.py --method M) trains a baseline on 2 DDP workers (every
    parameter takes part: DDP would fail otherwise); its checkpoint records the method; a re-run with another method
    into the same run directory is refused. ``ddim``, the method without an encoder, is the one whose Train path
    differs; every method's DDP condition (all parameters get a gradient) is checked in-process by
    test_each_preset_builds_and_trains_a_step, which costs no Ray Train start-up (about 50 s per method here)."""
    from macdiff_ray.train import PretrainConfig, run_pretrain

    cfg = from_dict(PretrainConfig, dict(
        data_dir=str(synthetic_prepared), benchmark="synthetic", preset="tiny", method=method, num_frames=16,
        output=str(tmp_path / "run"), epochs=1, batch_size=16, num_workers=2, use_gpu="no", warmup_epochs=0.0,
        max_steps_per_epoch=2, seed=0))
    res = run_pretrain(cfg, quiet=True)
    assert res["final_epoch"] == 1 and res["model_config"]["method"] == ("mamp" if method == "mamp" else "ddim")
    state = load_checkpoint(cfg.output)
    assert checkpoint_method(state) == method
    assert any(k.startswith("encoder.") for k in state["model"]) == (method == "mamp")
    with pytest.raises(ConfigError, match="method"):
        run_pretrain(from_dict(PretrainConfig, dict(to_dict(cfg), method="macdiff", epochs=2)), quiet=True)
