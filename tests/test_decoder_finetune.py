"""Decoder fine-tuning (paper Sec. 4.4; macdiff_ray.train.decoder_finetune) and the generation protocols of each
checkpoint kind (fine-tuned decoder, baselines). Tiny untrained 16-frame models on the synthetic dataset, in this
process (no Ray): the numbers mean nothing; the invariants are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from macdiff_ray.config import ConfigError, replace
from macdiff_ray.generate import RESAMPLE, ReconstructConfig, SampleConfig, run_reconstruct, run_sample
from macdiff_ray.train.checkpoint import load_checkpoint
from macdiff_ray.train.decoder_finetune import DecoderFinetuneConfig, run_decoder_finetune


@pytest.fixture(scope="module")
def source(synthetic_prepared, tmp_path_factory):
    from macdiff_ray.augment.offline import save_random_checkpoint

    return save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path_factory.mktemp("decft") / "pretrain")


@pytest.fixture(scope="module")
def finetuned(source, synthetic_prepared, tmp_path_factory):
    torch.set_num_threads(2)
    cfg = DecoderFinetuneConfig(checkpoint=str(source), data_dir=str(synthetic_prepared),
                                output=str(tmp_path_factory.mktemp("decft") / "run"), epochs=2, batch_size=16,
                                max_steps_per_epoch=2)
    return cfg, run_decoder_finetune(cfg)


def _split(sd: dict) -> tuple[dict, dict]:
    return ({k: v for k, v in sd.items() if k.startswith("encoder.")},
            {k: v for k, v in sd.items() if k.startswith("decoder.")})


def test_encoder_unchanged_bit_for_bit_and_decoder_trained(source, finetuned):
    cfg, res = finetuned
    enc0, dec0 = _split(load_checkpoint(source)["model"])
    state = load_checkpoint(cfg.output)
    enc1, dec1 = _split(state["model"])
    assert enc0.keys() == enc1.keys() and enc0
    assert all(torch.equal(enc0[k], enc1[k]) for k in enc0)  # bit for bit
    assert any(not torch.equal(dec0[k], dec1[k]) for k in dec0)  # the decoder learnt
    ft = state["decoder_finetune"]
    assert (ft["condition"], ft["encoder_view"], ft["source_epoch"]) == ("global", "masked", 0)
    assert res["encoder_unchanged"] and res["final_epoch"] == 2 and len(res["history"]) == 2
    assert state["epoch"] == 2 and state["config"]["diffusion"]  # the pretraining run's config travels on
    on_disk = json.loads((Path(cfg.output) / "results.json").read_text())
    assert on_disk["encoder_sha256"] == ft["encoder_sha256"]


def test_resume_continues_and_refusals(source, finetuned, synthetic_prepared, tmp_path):
    cfg, _ = finetuned
    more = run_decoder_finetune(replace(cfg, epochs=3))  # same output: resumes after epoch 2
    assert more["start_epoch"] == 2 and more["final_epoch"] == 3 and more["encoder_unchanged"]
    assert [h["epoch"] for h in more["history"]] == [1, 2, 3]
    with pytest.raises(ConfigError, match="another config"):
        run_decoder_finetune(replace(cfg, lr=1e-3))
    with pytest.raises(ConfigError, match="already a fine-tuned decoder"):
        run_decoder_finetune(replace(cfg, checkpoint=cfg.output, output=str(tmp_path / "again")))
    from macdiff_ray.augment.offline import save_random_checkpoint

    ddim = save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path / "ddim", method="ddim")
    with pytest.raises(ConfigError, match="needs a MacDiff"):
        run_decoder_finetune(replace(cfg, checkpoint=str(ddim), output=str(tmp_path / "d")))


def test_schedule_option_is_what_the_checkpoint_and_generation_use(source, synthetic_prepared, tmp_path):
    """--schedule cosine: the decoder trains on the cosine schedule, the checkpoint's config says so (the pretraining
    source's stays tau), and the generation drivers build that schedule from it; a bad name is refused."""
    from macdiff_ray.augment.pool import _build_model, model_bundle
    from macdiff_ray.diffusion import DiffusionConfig, make_schedule

    assert load_checkpoint(source)["config"]["diffusion"]["schedule"] == "tau"
    cfg = DecoderFinetuneConfig(checkpoint=str(source), data_dir=str(synthetic_prepared), output=str(tmp_path / "cos"),
                                epochs=1, batch_size=16, max_steps_per_epoch=1, schedule="cosine")
    res = run_decoder_finetune(cfg)
    assert res["encoder_unchanged"] and res["diffusion"]["schedule"] == "cosine"
    state = load_checkpoint(cfg.output)
    assert state["config"]["diffusion"]["schedule"] == "cosine"
    assert state["decoder_finetune"]["schedule"] == "cosine" and state["decoder_finetune"]["source_schedule"] == "tau"
    _, schedule = _build_model(model_bundle(state), torch.device("cpu"))
    cosine = make_schedule(DiffusionConfig(schedule="cosine"))
    assert torch.allclose(schedule.alphas_cumprod, cosine.alphas_cumprod)
    assert float(schedule.alphas_cumprod[0]) > 0.9999  # the inverse-cosine's is 0.998
    with pytest.raises(ConfigError, match="schedule"):
        DecoderFinetuneConfig(checkpoint="c", data_dir="d", output="o", schedule="sigmoid")


def test_generate_drivers_take_the_finetuned_checkpoint(finetuned, synthetic_prepared, tmp_path):
    """reconstruct: the paper's protocol by default (global condition, RePaint, no guidance), the old visible
    condition with guidance on request, and the table says which; sample: the fine-tuned decoder samples."""
    cfg, _ = finetuned
    base = dict(checkpoint=cfg.output, data_dir=str(synthetic_prepared), benchmark="synthetic", frames=(4,),
                parts=("trunk",), steps=2, workers=0, num_samples=4, render=0)
    paper = run_reconstruct(ReconstructConfig(**base, output=str(tmp_path / "paper")))
    assert paper["protocol"]["condition"] == "global" and paper["protocol"]["guidance"] == 0
    assert paper["protocol"]["resample"] == RESAMPLE > 1  # RePaint's resampling by default
    assert f"resample {RESAMPLE}," in (tmp_path / "paper" / "reconstruction.md").read_text()
    assert paper["protocol"]["paper_protocol"] and paper["checkpoint"]["decoder_finetune"]["condition"] == "global"
    assert "the paper's protocol" in (tmp_path / "paper" / "reconstruction.md").read_text()
    old = run_reconstruct(ReconstructConfig(**base, condition="visible", recon_guidance=3.0,
                                            output=str(tmp_path / "visible")))
    assert (old["protocol"]["condition"], old["protocol"]["guidance"]) == ("visible", 3.0)
    assert not old["protocol"]["paper_protocol"]
    for res in (paper, old):
        assert all(r["macdiff_native_mm"] is not None for r in res["rows"])
    gen = run_sample(SampleConfig(checkpoint=cfg.output, data_dir=str(synthetic_prepared), benchmark="synthetic",
                                  output=str(tmp_path / "sample"), num_samples=8, steps=2, workers=0, render=0))
    assert gen["checkpoint"]["decoder_finetune"] is not None
    assert "fine-tuned decoder" in (tmp_path / "sample" / "generation.md").read_text()


def test_global_condition_is_z_global_for_every_token(synthetic_prepared, source):
    from macdiff_ray.augment.pool import _build_model, model_bundle
    from macdiff_ray.generate.inpainting import _condition_groups

    model, _ = _build_model(model_bundle(load_checkpoint(source)), torch.device("cpu"))
    x = torch.randn(3, 16, model.cfg.num_joints, 3)
    known = torch.ones_like(x, dtype=torch.bool)
    known[:, 8:12] = False
    for idx, cond_fn, draws in _condition_groups(model, x, known, "global", torch.Generator().manual_seed(0)):
        rows, index = cond_fn()
        assert rows.shape == (len(idx), 1, model.cfg.width) and bool((index == 0).all()) and draws
        vis_rows, _ = _condition_groups(model, x, known, "visible", torch.Generator().manual_seed(0))[0][1]()
        torch.testing.assert_close(rows[:, 0], vis_rows[:, -1])  # the same draw's z_global


def test_baseline_checkpoints_in_the_generate_drivers(synthetic_prepared, tmp_path):
    """ddim / mdm reconstruct unconditionally and sample; mae reconstructs by regression and cannot sample; mamp
    does neither (it predicts motion)."""
    from macdiff_ray.augment.offline import save_random_checkpoint

    base = dict(data_dir=str(synthetic_prepared), benchmark="synthetic", frames=(4,), parts=(), steps=2, workers=0,
                num_samples=4, render=0)
    ck = {m: str(save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path / m, method=m))
          for m in ("ddim", "mae", "mamp")}
    ddim = run_reconstruct(ReconstructConfig(**base, checkpoint=ck["ddim"], output=str(tmp_path / "r_ddim")))
    assert ddim["protocol"]["condition"] == "none" and ddim["checkpoint"]["method"] == "ddim"
    with pytest.raises(ConfigError, match="does not fit"):
        run_reconstruct(ReconstructConfig(**base, checkpoint=ck["ddim"], condition="visible",
                                          output=str(tmp_path / "x")))
    mae = run_reconstruct(ReconstructConfig(**base, checkpoint=ck["mae"], output=str(tmp_path / "r_mae")))
    assert mae["protocol"]["condition"] == "visible" and "regression" in mae["protocol"]["inpainting"]
    assert (ddim["protocol"]["resample"], mae["protocol"]["resample"]) == (RESAMPLE, 1)
    with pytest.raises(ConfigError, match="resample"):  # a regression has no steps to repeat
        run_reconstruct(ReconstructConfig(**base, checkpoint=ck["mae"], resample=3, output=str(tmp_path / "m3")))
    with pytest.raises(ConfigError, match="cannot reconstruct"):
        run_reconstruct(ReconstructConfig(**base, checkpoint=ck["mamp"], output=str(tmp_path / "y")))
    sample = dict(data_dir=str(synthetic_prepared), benchmark="synthetic", num_samples=8, steps=2, workers=0,
                  render=0)
    with pytest.raises(ConfigError, match="cannot generate"):
        run_sample(SampleConfig(**sample, checkpoint=ck["mae"], output=str(tmp_path / "s_mae")))
    with pytest.raises(ConfigError, match="classifier"):  # no encoder for fallback features
        run_sample(SampleConfig(**sample, checkpoint=ck["ddim"], output=str(tmp_path / "s_ddim")))
    from macdiff_ray.augment.pool import _build_model, model_bundle
    from macdiff_ray.generate.sampling import sample_batch

    model, schedule = _build_model(model_bundle(load_checkpoint(ck["ddim"])), torch.device("cpu"))
    out = sample_batch(model, schedule, 3, seed=0, steps=2)
    assert out.shape == (3, 16, model.cfg.num_joints, 3) and bool(torch.isfinite(out).all())
