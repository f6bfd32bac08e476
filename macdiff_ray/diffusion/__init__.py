"""Gaussian diffusion: schedules (float64, precomputed once) and pure sampling/loss functions."""

from macdiff_ray.diffusion.gaussian import (
    TARGETS,
    ddim_sample,
    ddim_step,
    eps_from_x0,
    extract,
    inpaint,
    one_step_denoise,
    q_sample,
    respaced_timesteps,
    training_loss,
    x0_from_eps,
)
from macdiff_ray.diffusion.schedules import SCHEDULES, DiffusionConfig, Schedule, alpha_bar_fn, make_schedule

__all__ = [
    "DiffusionConfig",
    "Schedule",
    "SCHEDULES",
    "TARGETS",
    "alpha_bar_fn",
    "make_schedule",
    "extract",
    "q_sample",
    "x0_from_eps",
    "eps_from_x0",
    "training_loss",
    "respaced_timesteps",
    "ddim_step",
    "ddim_sample",
    "one_step_denoise",
    "inpaint",
]
