"""Unit tests for checkpoints, the optimiser/schedule and the pretraining config (no Ray, no data)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from macdiff_ray.config import ConfigError, from_dict, to_dict
from macdiff_ray.data.layouts import get_layout
from macdiff_ray.train.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointNotFoundError,
    IncompatibleCheckpointError,
    build_state,
    check_compatible,
    find_latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from macdiff_ray.train.config import PretrainConfig
from macdiff_ray.train.optim import WarmupCosine, build_optimizer, param_groups


class Toy(nn.Module):
    """Linear + LayerNorm + a learnable positional embedding: every parameter-group case."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):  # x: (N, 4, 8)
        return self.norm(self.proj(x + self.pos_embed))  # (N, 4, 8)


class NotATensor:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def _model_config(preset="tiny", num_joints=20):
    from macdiff_ray.model.config import model_preset

    return model_preset(preset, num_joints=num_joints, num_frames=32)


def _state(tmp_path, *, epoch=2, step=10, preset="tiny", layout="kinect_v1_20", dataset="ucla"):
    torch.manual_seed(0)
    model = Toy()
    opt = build_optimizer(model, 1e-3, 0.05, (0.9, 0.95))
    model(torch.randn(2, 4, 8)).pow(2).mean().backward()
    opt.step()
    cfg = PretrainConfig(data_dir=str(tmp_path), benchmark="ucla-xview", preset=preset, output=str(tmp_path))
    lay = get_layout(layout)
    data = {"dataset": dataset, "benchmark": "ucla-xview", "layout": lay, "stats": {"mean": [0.0] * 3,
            "std": [1.0] * 3}, "num_classes": 10}
    state = build_state(model, opt, None, epoch=epoch, step=step, config=cfg,
                        model_config=_model_config(preset, lay.num_joints), data=data, version="test")
    return model, opt, state


def test_round_trip_weights_only(tmp_path):
    model, opt, state = _state(tmp_path)
    d = save_checkpoint(state, tmp_path / "ck")
    assert (d / CHECKPOINT_FILE).is_file() and json.loads((d / "meta.json").read_text())["epoch"] == 2
    # the file loads with the strict unpickler (no arbitrary objects inside)
    raw = torch.load(d / CHECKPOINT_FILE, weights_only=True)
    assert set(raw) >= {"model", "optimizer", "scaler", "epoch", "step", "config", "model_config", "data",
                        "code_version"}
    loaded = load_checkpoint(d)
    fresh = Toy()
    fresh.load_state_dict(loaded["model"])
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    opt2 = build_optimizer(fresh, 1e-3, 0.05, (0.9, 0.95))
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # config survives as a plain dict that rebuilds strictly
    assert from_dict(PretrainConfig, loaded["config"]) == from_dict(PretrainConfig, state["config"])
    assert loaded["data"]["layout"]["name"] == "kinect_v1_20" and loaded["epoch"] == 2 and loaded["step"] == 10


def test_unwrap_strips_wrappers(tmp_path):
    class Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    inner = Toy()
    assert unwrap_model(nn.DataParallel(Wrap(inner))) is inner
    _, _, state = _state(tmp_path)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])


def test_weights_only_refuses_pickled_objects(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()
    torch.save({"model": NotATensor()}, d / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(d)


def test_missing_keys_refused(tmp_path):
    d = tmp_path / "partial"
    d.mkdir()
    torch.save({"model": {}}, d / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="missing key"):
        load_checkpoint(d)


def test_latest_resolution(tmp_path):
    run = tmp_path / "run"
    for epoch, name in [(2, "epoch_00002"), (10, "epoch_00010"), (4, "epoch_00004")]:
        _, _, state = _state(tmp_path, epoch=epoch, step=epoch * 5)
        save_checkpoint(state, run / "checkpoints" / name)
    (run / "checkpoints" / "epoch_00099").mkdir()  # an incomplete upload: no checkpoint.pt
    assert find_latest_checkpoint(run).name == "epoch_00010"  # by epoch in meta.json, not by name order
    assert find_latest_checkpoint(run / "checkpoints").name == "epoch_00010"
    assert resolve_checkpoint(run) == run / "checkpoints" / "epoch_00010" / CHECKPOINT_FILE
    assert resolve_checkpoint(run / "checkpoints" / "epoch_00004") == run / "checkpoints" / "epoch_00004" / CHECKPOINT_FILE
    pt = run / "checkpoints" / "epoch_00002" / CHECKPOINT_FILE
    assert resolve_checkpoint(pt) == pt
    assert load_checkpoint(run)["epoch"] == 10
    # a URI (file://) goes through the pyarrow filesystem path
    assert load_checkpoint(f"file://{run}")["epoch"] == 10
    assert load_checkpoint(f"file://{run}/checkpoints/epoch_00004")["epoch"] == 4
    assert find_latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint in"):
        resolve_checkpoint(tmp_path / "empty")


def test_compat_checks(tmp_path):
    _, _, state = _state(tmp_path)
    ok_cfg = _model_config("tiny", 20)
    check_compatible(state, ok_cfg, get_layout("kinect_v1_20"), dataset="ucla", benchmark="ucla-xview")
    check_compatible(state, to_dict(ok_cfg), "kinect_v1_20")  # dict / name forms
    with pytest.raises(IncompatibleCheckpointError, match=r"model config differs.*'tiny'.*width"):
        check_compatible(state, _model_config("small", 20), get_layout("kinect_v1_20"))
    with pytest.raises(IncompatibleCheckpointError, match="joint layout differs: checkpoint 'kinect_v1_20'"):
        check_compatible(state, None, get_layout("msr20"))
    with pytest.raises(IncompatibleCheckpointError, match="dataset differs"):
        check_compatible(state, ok_cfg, "kinect_v1_20", dataset="ntu60")
    with pytest.raises(IncompatibleCheckpointError, match="benchmark differs"):
        check_compatible(state, ok_cfg, "kinect_v1_20", benchmark="custom")
    # run-time switches never refuse; architecture_only ignores objective/regularisation settings
    from macdiff_ray.config import replace

    check_compatible(state, replace(ok_cfg, use_compile=True), "kinect_v1_20")
    with pytest.raises(IncompatibleCheckpointError, match="drop_path"):
        check_compatible(state, replace(ok_cfg, drop_path=0.3), "kinect_v1_20")
    check_compatible(state, replace(ok_cfg, drop_path=0.3), "kinect_v1_20", architecture_only=True)


def test_param_groups_no_decay_on_bias_norm_embedding():
    m = Toy()
    groups = {g["name"]: g for g in param_groups(m, 0.05)}
    decay_ids = {id(p) for p in groups["decay"]["params"]}
    assert decay_ids == {id(m.proj.weight)}
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(m.pos_embed), id(m.proj.bias), id(m.norm.weight),
                                                            id(m.norm.bias)}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0


def test_warmup_cosine_values():
    s = WarmupCosine(peak=1e-3, floor=1e-5, warmup_steps=10, total_steps=110)
    assert s.lr(0) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert s.lr(9) == pytest.approx(1e-3)
    assert s.lr(10) == pytest.approx(1e-3)
    assert s.lr(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way down the cosine
    assert s.lr(110) == pytest.approx(1e-5) and s.lr(500) == pytest.approx(1e-5)
    lrs = [s.lr(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError):
        WarmupCosine(1e-3, 1e-5, 20, 10)


def test_pretrain_config_strict_and_derived(tmp_path):
    cfg = from_dict(PretrainConfig, {"data_dir": "d", "benchmark": "ucla-xview", "batch_size": 32, "num_workers": 2,
                                     "diffusion": {"schedule": "cosine"}, "betas": [0.9, 0.95]})
    assert cfg.effective_lr == pytest.approx(2.5e-4) and cfg.per_worker_batch == 16
    assert cfg.diffusion.schedule == "cosine" and cfg.betas == (0.9, 0.95)
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg
    assert from_dict(PretrainConfig, {"lr_scaling": "none", "batch_size": 32}).effective_lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(PretrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="not divisible"):
        from_dict(PretrainConfig, {"batch_size": 33, "num_workers": 2})
    with pytest.raises(ConfigError, match="fail_once_marker"):
        from_dict(PretrainConfig, {"fail_at_epoch": 2})
    with pytest.raises(ConfigError, match="use_gpu"):
        from_dict(PretrainConfig, {"use_gpu": "maybe"})
    with pytest.raises(ConfigError, match="num_joints"):
        from_dict(PretrainConfig, {"model_overrides": {"num_joints": 3}})


def test_resolve_model_config_overrides():
    from macdiff_ray.train.config import resolve_model_config

    cfg = from_dict(PretrainConfig, {"preset": "tiny", "num_frames": 32, "model_overrides": {"dec_depth": 1}})
    mc = resolve_model_config(cfg, 20)
    assert mc.num_joints == 20 and mc.num_frames == 32 and mc.dec_depth == 1 and mc.width == 64
    with pytest.raises(ConfigError, match="unknown ModelConfig key"):
        resolve_model_config(from_dict(PretrainConfig, {"model_overrides": {"depth": 1}}), 20)
    assert not math.isnan(mc.mask_ratio)
