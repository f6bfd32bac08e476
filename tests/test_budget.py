"""Budgeted pretraining: the epoch plan (pure function) and a budgeted run on a local Ray (synthetic data)."""

from __future__ import annotations

import pytest

from macdiff_ray.config import ConfigError, from_dict
from macdiff_ray.train import PretrainConfig, load_checkpoint, run_pretrain
from macdiff_ray.train.config import plan_budget_epochs


def test_plan_uses_median_epoch_time_and_caps():
    # 10 s elapsed, epochs of 2 s (median of 1.9, 2.0, 9.0), 60 s budget -> 25 more epochs after 4 done.
    assert plan_budget_epochs(100, 4, 10.0, [1.9, 2.0, 9.0], 60.0) == 29
    assert plan_budget_epochs(20, 4, 10.0, [2.0], 60.0) == 20  # capped at the configured epochs
    assert plan_budget_epochs(20, 4, 70.0, [2.0], 60.0) == 5  # over budget already: still one more epoch
    assert plan_budget_epochs(4, 4, 70.0, [2.0], 60.0) == 4  # nothing left to do
    with pytest.raises(ValueError):
        plan_budget_epochs(10, 1, 0.0, [], 60.0)


def test_budget_config_is_checked():
    with pytest.raises(ConfigError, match="budget_minutes"):
        from_dict(PretrainConfig, {"budget_minutes": 0})


@pytest.mark.ray
def test_budgeted_run_stops_inside_budget_and_stores_plan(ray_session, synthetic_prepared, tmp_path):
    # A budget far below the cap: the plan must stop the run before `epochs` and the lr must reach min_lr there.
    cfg = from_dict(PretrainConfig, dict(
        data_dir=str(synthetic_prepared), benchmark="synthetic", preset="tiny", num_frames=32, epochs=500,
        batch_size=16, max_steps_per_epoch=2, warmup_epochs=1.0, checkpoint_every=1000, use_gpu="no",
        budget_minutes=0.15, budget_calibration_epochs=2, output=str(tmp_path / "run"), lr_scaling="none",
    ))
    res = run_pretrain(cfg, quiet=True)
    planned = res["final_epoch"]
    assert 3 <= planned < 500
    state = load_checkpoint(res["checkpoint"])
    assert state["plan"] == {"epochs": planned, "budget_minutes": 0.15}
    assert state["epoch"] == planned
    # The cosine ends at the planned last step (not at epoch 500): the last step's lr is that schedule's.
    from macdiff_ray.train.optim import WarmupCosine

    total = planned * 2
    assert res["history"][-1]["lr"] == pytest.approx(WarmupCosine(cfg.effective_lr, cfg.min_lr, 2, total).lr(total - 1))
