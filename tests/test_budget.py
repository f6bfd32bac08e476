"""Budgeted pretraining: the wall-clock cosine (pure, with a fake clock) and a budgeted run on a local Ray."""

from __future__ import annotations

import math

import pytest

from macdiff_ray.config import ConfigError, from_dict
from macdiff_ray.train import PretrainConfig, load_checkpoint, run_pretrain
from macdiff_ray.train.optim import BudgetCosine


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_budget_cosine_follows_time_not_steps():
    clock = FakeClock()
    s = BudgetCosine(1.0, 0.0, warmup_steps=4, budget_s=104.0, clock=clock)
    assert s.lr(0) == pytest.approx(0.25) and s.lr(3) == pytest.approx(1.0)  # warmup by steps
    clock.now += 4.0  # warmup took 4 s: 100 s left for the cosine
    assert s.lr(4) == pytest.approx(1.0)  # the cosine starts here
    clock.now += 50.0
    assert s.lr(5) == pytest.approx(0.5)  # half the remaining time -> half way, whatever the step
    assert s.lr(500) == pytest.approx(0.5)
    clock.now += 50.0
    assert s.lr(6) == pytest.approx(0.0, abs=1e-12) and s.progress() == 1.0
    # resume: a new schedule with the stored clock continues where the old one was
    st = s.state()
    clock2 = FakeClock()
    r = BudgetCosine(1.0, 0.0, 4, st["budget_s"], spent_s=st["spent_s"] - 75.0, warmup_end_s=st["warmup_end_s"],
                     clock=clock2)
    assert r.lr(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    with pytest.raises(ValueError):
        BudgetCosine(1.0, 0.0, 1, 0.0)


def test_budget_config_is_checked():
    with pytest.raises(ConfigError, match="budget_minutes"):
        from_dict(PretrainConfig, {"budget_minutes": 0})


@pytest.mark.ray
def test_budgeted_run_stops_inside_budget_and_stores_its_clock(ray_session, synthetic_prepared, tmp_path):
    # A 36-second budget far below the 500-epoch cap: the run must stop early, with the lr annealed near min_lr.
    cfg = from_dict(PretrainConfig, dict(
        data_dir=str(synthetic_prepared), benchmark="synthetic", preset="tiny", num_frames=32, epochs=500,
        batch_size=16, max_steps_per_epoch=2, warmup_epochs=1.0, checkpoint_every=1000, use_gpu="no",
        budget_minutes=0.6, output=str(tmp_path / "run"), lr_scaling="none",
    ))
    res = run_pretrain(cfg, quiet=True)
    final = res["final_epoch"]
    assert 1 <= final < 500
    state = load_checkpoint(res["checkpoint"])
    assert state["epoch"] == final and state["budget"]["budget_s"] == pytest.approx(36.0)
    # Stopped at (about) the budget, not at epoch 500. The slack is derived from the run's own epochs, so that a
    # loaded machine (slow epochs) does not fail the test: the run may overshoot by what one more epoch and the
    # reporting around it take.
    slack = 15.0 + 2 * max(h["epoch_time_s"] for h in res["history"])
    assert state["budget"]["spent_s"] <= 36.0 + slack
    # Down the cosine by the last epoch: at least as far as the budget the stop left unspent allows.
    lrs = [h["lr"] for h in res["history"]]
    progress = max(0.0, 1.0 - slack / 36.0)
    assert lrs[-1] <= cfg.lr * 0.5 * (1 + math.cos(math.pi * progress)) + 1e-9
