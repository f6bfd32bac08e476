"""The paper's Tables 1-10 as commands (``experiments/paper.py``): :mod:`tables` runs what each needs on one
prepared dataset, resumably, and prints it beside the published values of :mod:`published`."""

from macdiff_ray.paper.tables import TABLES, PaperConfig, run_all, run_table, smoke_overrides

__all__ = ["TABLES", "PaperConfig", "run_all", "run_table", "smoke_overrides"]
