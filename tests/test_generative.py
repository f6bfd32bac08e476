"""Generative-task drivers (macdiff_ray.generate) and classifier features (generate.features).

Tiny randomly initialised models on the synthetic dataset: the numbers mean nothing, the plumbing and the
invariants (known joints kept exactly, the right table rows, finite samples from 2 Ray actors) are checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from macdiff_ray.config import ConfigError
from macdiff_ray.generate import ReconstructConfig, SampleConfig, run_reconstruct, run_sample
from macdiff_ray.generate.inpainting import (
    draw_visible_subset, reconstruct_batch, visible_condition, visible_token_mask,
)
from macdiff_ray.generate.workers import run_chunks

T0 = 16  # frames of the tiny test checkpoint (save_random_checkpoint's default)


@pytest.fixture(scope="module")
def tiny_ckpt(synthetic_prepared, tmp_path_factory):
    from macdiff_ray.augment.offline import save_random_checkpoint

    return save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path_factory.mktemp("gen") / "ckpt")


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt):
    from macdiff_ray.augment.pool import _build_model, model_bundle
    from macdiff_ray.train.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    return _build_model(model_bundle(load_checkpoint(tiny_ckpt)), torch.device("cpu"))


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------------------------
def test_visible_token_mask_partial_patch_counts_as_occluded():
    known = torch.ones(1, 8, 3, 2, dtype=torch.bool)  # (N, T, V, C), patch_len 4 -> Tp = 2, L = 6
    known[0, 5, 1, 0] = False  # one coordinate of joint 1 in frame 5 (patch 1)
    vis = visible_token_mask(known, 4)  # (1, 6): token index = tp * V + v
    assert vis.tolist() == [[True, True, True, True, False, True]]
    with pytest.raises(ValueError, match="multiple of patch_len"):
        visible_token_mask(torch.ones(1, 6, 3, 2, dtype=torch.bool), 4)


def test_visible_condition_equals_pretraining_condition(tiny_model):
    """With 'visible = the tokens a random mask keeps', the condition equals MacDiff.condition's (dense form)."""
    model, _ = tiny_model
    x = torch.randn(3, T0, model.cfg.num_joints, 3)  # (N, T, V, C)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z_ref, masked = model.condition(x, generator=g)  # (N, L, D), (N, L)
        rows, index = visible_condition(model, x, ~masked)  # (N, K+1, D), (N, L)
        z = torch.gather(rows, 1, index[:, :, None].expand(-1, -1, rows.shape[-1]))  # (N, L, D)
    torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same number"):
        bad = ~masked
        bad[0, torch.nonzero(bad[0])[0]] = False  # row 0 now has one visible token fewer
        visible_condition(model, x, bad)


def test_draw_visible_subset_takes_min_k_of_the_visible_tokens():
    g = torch.Generator().manual_seed(0)
    vis = torch.rand(6, 40, generator=g) < 0.6  # (n, L)
    vis[0] = False  # no visible token
    vis[1, :] = False
    vis[1, :3] = True  # fewer than k
    counts = vis.sum(1)
    draws = [draw_visible_subset(vis, 5, g) for _ in range(50)]
    for d in draws:
        assert not bool((d & ~vis).any())  # only visible tokens
        assert d.sum(1).tolist() == counts.clamp(max=5).tolist()
    assert torch.equal(draws[0][1], vis[1])  # rows with <= k visible tokens keep them all
    # every visible token of a large row gets drawn sometimes, and the draws differ
    seen = torch.stack(draws).any(0)  # (n, L)
    assert torch.equal(seen[2:], vis[2:])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])


@pytest.mark.parametrize("condition,guidance", [("visible", 0.0), ("visible", 2.0), ("visible-all", 0.0),
                                                ("zeroed", 0.0), ("none", 1.0)])
def test_reconstruct_batch_keeps_known_entries_exactly(tiny_model, condition, guidance):
    from macdiff_ray.generate.occlusion import random_frame_occlusion_masks

    model, schedule = tiny_model
    V = model.cfg.num_joints
    x = torch.randn(4, T0, V, 3)  # (N, T, V, C)
    known = torch.from_numpy(random_frame_occlusion_masks(T0, V, 3, 5, batch_size=4, seed=1))  # starts differ
    kw = dict(condition=condition, steps=3, recon_guidance=guidance)
    out = reconstruct_batch(model, schedule, x, known, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(out[known], x[known])
    assert torch.isfinite(out).all()
    assert not torch.equal(out[~known], x[~known])  # the occluded part was actually generated
    # occluded input values never reach the result: changing them changes nothing
    x2 = torch.where(known, x, torch.full_like(x, 1e3))
    out2 = reconstruct_batch(model, schedule, x2, known, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(out2[~known], out[~known])
    # the same generator seed reproduces the result (subset draws included)
    out3 = reconstruct_batch(model, schedule, x, known, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(out3, out)


def test_reconstruct_batch_interpolation_start(tiny_model):
    """init 'interpolation' (SDEdit) starts from the linear interpolation of the gap: with a short chain the result
    stays near it, and a row whose joint has no known frame (a body part) is refused."""
    from macdiff_ray.generate.occlusion import linear_interpolation_fill, part_occlusion_mask, \
        random_frame_occlusion_masks
    from macdiff_ray.data.layouts import get_layout

    model, schedule = tiny_model
    V = model.cfg.num_joints
    x = torch.randn(4, T0, V, 3)  # (N, T, V, C)
    known = torch.from_numpy(random_frame_occlusion_masks(T0, V, 3, 5, batch_size=4, seed=1))
    lin = linear_interpolation_fill(torch.where(known, x, torch.zeros_like(x)), known)
    gen = torch.Generator().manual_seed(0)
    near = reconstruct_batch(model, schedule, x, known, condition="none", steps=20, init="interpolation",
                             init_strength=0.05, generator=gen)
    far = reconstruct_batch(model, schedule, x, known, condition="none", steps=20, generator=gen)
    assert torch.equal(near[known], x[known])
    d_near, d_far = (float((o - lin)[~known].abs().mean()) for o in (near, far))
    assert d_near < 0.5 * d_far, (d_near, d_far)
    part = torch.from_numpy(part_occlusion_mask(get_layout("ntu25"), "left_arm", T0, 3)).expand_as(x)
    with pytest.raises(ValueError, match="no known frame"):
        reconstruct_batch(model, schedule, x, part, condition="none", steps=2, init="interpolation",
                          init_strength=0.5)
    with pytest.raises(ConfigError, match="init"):
        reconstruct_batch(model, schedule, x, known, condition="none", steps=2, init="mean", init_strength=0.5)


def test_visible_condition_draws_pretraining_sized_subsets(tiny_model, monkeypatch):
    """'visible' shows the encoder at most K = num_visible observed tokens (the pretraining count), a fresh draw at
    every model call; 'visible-all' shows every observed token, the same at every call."""
    import macdiff_ray.generate.inpainting as gen

    model, schedule = tiny_model
    V, k_model = model.cfg.num_joints, model.cfg.num_visible
    x = torch.randn(2, T0, V, 3)
    known = torch.ones_like(x, dtype=torch.bool)
    known[:, 4:8] = False  # one of the 4 temporal patches occluded: 3 * V observed tokens > K
    assert 3 * V > k_model
    seen = {"visible": [], "visible-all": []}
    real = gen.visible_condition
    for cond in seen:
        def spy(model_, x_, vis_, cond=cond):
            seen[cond].append(vis_.clone())
            return real(model_, x_, vis_)

        monkeypatch.setattr(gen, "visible_condition", spy)
        reconstruct_batch(model, schedule, x, known, condition=cond, steps=3,
                          generator=torch.Generator().manual_seed(0))
    occluded_tokens = ~visible_token_mask(known, model.cfg.patch_len)  # (N, L)
    assert len(seen["visible"]) == 3 and len(seen["visible-all"]) == 1  # one draw per DDIM step vs one in all
    for v in seen["visible"]:
        assert v.sum(1).tolist() == [k_model, k_model] and not bool((v & occluded_tokens).any())
    assert not torch.equal(seen["visible"][0], seen["visible"][1])
    assert seen["visible-all"][0].sum(1).tolist() == [3 * V, 3 * V]


def test_configs_validate():
    base = dict(checkpoint="c", data_dir="d", benchmark="b", output="o")
    with pytest.raises(ConfigError, match="condition"):
        ReconstructConfig(**base, condition="masked")
    with pytest.raises(ConfigError, match="parts"):
        ReconstructConfig(**base, parts=("tail",))
    with pytest.raises(ConfigError, match="resample"):
        ReconstructConfig(**base, resample=0)
    with pytest.raises(ConfigError, match="recon_guidance"):
        ReconstructConfig(**base, recon_guidance=-0.5)
    with pytest.raises(ConfigError, match="init"):
        ReconstructConfig(**base, init="mean")
    with pytest.raises(ConfigError, match="strength below 1"):
        ReconstructConfig(**base, init="interpolation")
    with pytest.raises(ConfigError, match="init_strength"):
        ReconstructConfig(**base, init="interpolation", init_strength=1.5)
    with pytest.raises(ConfigError, match="num_samples"):
        SampleConfig(**base, num_samples=3)  # not more than k = 3
    with pytest.raises(ConfigError, match="checkpoint"):
        SampleConfig(data_dir="d", benchmark="b", output="o")


# ----------------------------------------------------------------------------------------------------------------
# Drivers
# ----------------------------------------------------------------------------------------------------------------
def test_reconstruct_driver_table_and_pictures(tiny_ckpt, synthetic_prepared, tmp_path):
    out = tmp_path / "rec"
    cfg = ReconstructConfig(checkpoint=str(tiny_ckpt), data_dir=str(synthetic_prepared), benchmark="synthetic",
                            output=str(out), frames=(4, 8), parts=("trunk", "left_arm"), steps=2, workers=0,
                            num_samples=6, render=1, chunk_size=4)
    res = run_reconstruct(cfg)
    assert [r["name"] for r in res["rows"]] == ["frames-4", "frames-8", "part-trunk", "part-left_arm"]
    for r in res["rows"]:
        assert np.isfinite(r["macdiff_mm"]) and r["macdiff_mm"] == pytest.approx(1000 * r["macdiff_m"])
        assert r["mean_pose_mm"] > 0
        assert (r["linear_interp_mm"] is None) == r["name"].startswith("part-")
    assert res["num_persons"] >= 6
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["config"]["frames"] == [4, 8] and "wall_time_s" in on_disk and "code_version" in on_disk
    md = (out / "reconstruction.md").read_text()
    assert all(f"| {r['name']} |" in md for r in res["rows"])
    pngs = [p for p in res["pictures"] if p.endswith(".png")]
    assert len(pngs) == 4 and len(res["pictures"]) == 8
    with Image.open(pngs[0]) as im:  # render_grid: 8 panels of 120 px, 2 rows of (caption 18 + 120)
        assert im.size == (8 * 120, 2 * (18 + 120))
    with pytest.raises(ConfigError, match="T0=16"):
        run_reconstruct(ReconstructConfig(**{**cfg.__dict__, "frames": (16,), "output": str(tmp_path / "x")}))


def test_ray_workers_keep_known_and_sample_finite(ray_session, tiny_ckpt, synthetic_prepared, tmp_path):
    """2 Ray actors: inpainting keeps the known joints exactly; sampling returns N finite samples; the results do
    not depend on the number of workers (per-chunk seeds)."""
    from macdiff_ray.augment.pool import model_bundle
    from macdiff_ray.generate.common import chunk_seed
    from macdiff_ray.generate.occlusion import part_occlusion_mask
    from macdiff_ray.generate.workers import kill_workers as _kill
    from macdiff_ray.generate.workers import make_workers as _make_workers
    from macdiff_ray.train.checkpoint import load_checkpoint

    bundle = model_bundle(load_checkpoint(tiny_ckpt))
    V = int(bundle["model_config"]["num_joints"])
    layout = json.loads((synthetic_prepared / "manifest.json").read_text())["layout"]
    x = np.random.default_rng(0).standard_normal((6, T0, V, 3)).astype(np.float32)  # (P, T, V, C)
    known = np.broadcast_to(part_occlusion_mask(layout, "right_arm", T0, 3), x.shape).copy()  # (P, T, V, C)
    calls = [(x[a : a + 3], known[a : a + 3], chunk_seed(0, 0, j), "visible", 2, 1, 1.0)
             for j, a in enumerate(range(0, 6, 3))]
    handles = _make_workers(bundle, 2, 0.5)
    try:
        rec = np.concatenate(run_chunks(handles, "reconstruct", calls))  # (6, T, V, C)
        samples = np.concatenate(run_chunks(handles, "sample", [(3, 11, 2, 0.0), (2, 12, 2, 0.0)]))
        pids = {info["pid"] for info in __import__("ray").get([h.info.remote() for h in handles])}
    finally:
        _kill(handles)
    assert len(pids) == 2
    assert np.array_equal(rec[known], x[known]) and np.isfinite(rec).all()
    assert samples.shape == (5, T0, V, 3) and np.isfinite(samples).all()
    local = _make_workers(bundle, 0, 0.0)
    np.testing.assert_allclose(np.concatenate(run_chunks(local, "sample", [(3, 11, 2, 0.0)])), samples[:3],
                               rtol=1e-5, atol=1e-5)

    out = tmp_path / "sample"
    res = run_sample(SampleConfig(checkpoint=str(tiny_ckpt), data_dir=str(synthetic_prepared),
                                  benchmark="synthetic", output=str(out), num_samples=10, steps=2, workers=2,
                                  chunk_size=4, kid_subsets=3, render=1))
    names = [(r["a"], r["b"]) for r in res["rows"]]
    assert names == [("generated", "real (all)"), ("generated (size-matched)", "real half B"),
                     ("real half A (reference)", "real half B")]
    assert res["rows"][0]["metrics"]["num_fake"] == 10
    assert res["features"]["fallback"] is True and "FALLBACK" in (out / "generation.md").read_text()
    saved = np.load(out / "samples.npy")
    assert saved.shape == (10, T0, V, 3) and np.isfinite(saved).all()


# ----------------------------------------------------------------------------------------------------------------
# Classifier features
# ----------------------------------------------------------------------------------------------------------------
def _finetune_ckpt(tiny_ckpt, directory):
    """A fine-tuning-format checkpoint: Classifier(encoder + MLP head) state + eval_state.protocol."""
    from macdiff_ray.eval.features import build_encoder
    from macdiff_ray.eval.heads import Classifier, MLPHead
    from macdiff_ray.train.checkpoint import build_state, load_checkpoint, save_checkpoint

    pre = load_checkpoint(tiny_ckpt)
    enc, src = build_encoder(checkpoint=None, preset=None, num_joints=pre["model_config"]["num_joints"],
                             num_frames=T0, state=pre)
    net = Classifier(enc, MLPHead(enc.cfg.width, 4, 24, 0.3), "pooled", frozen=False)
    state = build_state(net, None, None, epoch=3, step=9, config={"feature": "pooled", "joint_map": None},
                        model_config=src["model_config"], data=pre["data"])
    state["eval_state"] = {"history": [], "protocol": "finetune"}
    return save_checkpoint(state, directory), net


def test_classifier_features_sources_and_normalisation(tiny_ckpt, tmp_path):
    from macdiff_ray.generate.features import load_feature_extractor

    fb = load_feature_extractor(tiny_ckpt)
    assert fb.source == "pretrain-encoder-fallback" and fb.describe()["fallback"]
    with pytest.raises(ConfigError, match="fallback"):
        load_feature_extractor(tiny_ckpt, allow_fallback=False)
    with pytest.raises(ConfigError, match="penultimate"):
        load_feature_extractor(tiny_ckpt, kind="penultimate")

    path, net = _finetune_ckpt(tiny_ckpt, tmp_path / "ft")
    ft = load_feature_extractor(path)
    pen = load_feature_extractor(path, kind="penultimate")
    assert ft.source == "finetuned-classifier" and not ft.describe()["fallback"]
    V = ft.encoder.cfg.num_joints
    x = torch.randn(5, T0, V, 3)  # (N, T, V, C) in the classifier's own normalisation
    f = ft.features(x, ft.stats)
    assert f.shape == (5, ft.encoder.cfg.width)
    net.eval()
    with torch.no_grad():
        want = net.encoder.pooled(x).double().numpy()  # (N, D)
        hid = torch.nn.functional.gelu(net.head.net[1](net.encoder.pooled(x))).double().numpy()  # (N, H)
    np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pen.features(x, ft.stats), hid, rtol=1e-5, atol=1e-6)
    # the same motion in metres, given in another normalisation, gives the same features
    other = {"mean": [0.1, -0.2, 3.0], "std": [0.5, 2.0, 1.5]}
    m_c, s_c = (torch.tensor(ft.stats[k], dtype=torch.float32) for k in ("mean", "std"))
    x_other = (x * s_c + m_c - torch.tensor(other["mean"])) / torch.tensor(other["std"])  # (N, T, V, C)
    np.testing.assert_allclose(ft.features(x_other, other), f, rtol=1e-4, atol=1e-4)
    # a different T is resampled to the classifier's T0
    assert ft.features(torch.randn(2, 2 * T0, V, 3), ft.stats).shape == (2, ft.encoder.cfg.width)


def test_generate_cli_passes_reconstruction_and_sampling_flags(synthetic_prepared, tiny_ckpt, tmp_path):
    """experiments/generate.py: --guidance, --condition and --eta reach the saved run config (in-process workers)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_cli", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    common = ["--checkpoint", str(tiny_ckpt), "--data", str(synthetic_prepared), "--benchmark", "synthetic",
              "--workers", "0", "--steps", "2", "--render", "0"]
    rec = cli.main(["reconstruct", *common, "--output", str(tmp_path / "rec"), "--num-samples", "4",
                    "--frames", "4", "--parts", "trunk", "--guidance", "1.5", "--condition", "visible-all",
                    "--resample", "2", "--init", "interpolation", "--init-strength", "0.4"])
    assert rec["config"]["recon_guidance"] == 1.5 and rec["config"]["condition"] == "visible-all"
    assert rec["config"]["resample"] == 2 and rec["protocol"]["resample"] == 2
    assert rec["protocol"]["init"] == "interpolation" and rec["protocol"]["init_strength"] == 0.4
    md = (tmp_path / "rec" / "reconstruction.md").read_text()
    assert "started from the linear interpolation, 0.4 of the chain" in md
    saved = json.loads((tmp_path / "rec" / "results.json").read_text())["config"]
    assert saved["recon_guidance"] == 1.5
    smp = cli.main(["sample", *common, "--output", str(tmp_path / "smp"), "--num-samples", "8", "--eta", "0"])
    assert smp["config"]["eta"] == 0.0
    assert cli.parse_args(["sample", *common, "--output", "o"]).eta == 1.0  # the default: stochastic sampling
    with pytest.raises(SystemExit):
        cli.parse_args(["reconstruct", *common, "--output", "o", "--condition", "masked"])
