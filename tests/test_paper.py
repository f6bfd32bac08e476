"""experiments/paper.py's library (macdiff_ray.paper): the variants, in-process pretraining, and the smoke test that
produces every row of every table from one shared tiny synthetic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macdiff_ray.config import ConfigError, from_dict, replace
from macdiff_ray.paper import TABLES, PaperConfig, run_all, smoke_overrides
from macdiff_ray.paper.runs import _canonical, variant_overrides


def test_variants_and_config():
    assert variant_overrides("macdiff", 2) == {} and _canonical("mask_random", 2) == "macdiff"
    assert _canonical("tau_1", 2) == "macdiff" and _canonical("depth_2", 2) == "macdiff"
    assert variant_overrides("depth_5", 2) == {"model_overrides": {"dec_depth": 5}}
    assert variant_overrides("ratio_0", 2) == {"model_overrides": {"mask_ratio": 0.0, "loss_on": "all"}}
    assert variant_overrides("mask_tube", 2) == {"model_overrides": {"masking": "tube"}}
    assert variant_overrides("tau_-0.5", 2) == {"diffusion": {"schedule": "tau", "tau": -0.5}}
    assert variant_overrides("mdm_orig", 2) == {"method": "mdm_orig"}
    with pytest.raises(ConfigError, match="variant"):
        variant_overrides("simclr", 2)
    base = dict(data_dir="d", benchmark="b", output="o")
    with pytest.raises(ConfigError, match="table"):
        PaperConfig(table=11, **base)
    with pytest.raises(ConfigError, match="target"):
        PaperConfig(target_data="x", **base)


def test_in_process_pretraining_resumes(synthetic_prepared, tmp_path):
    from macdiff_ray.train import PretrainConfig
    from macdiff_ray.train.checkpoint import checkpoint_method, load_checkpoint
    from macdiff_ray.train.local import run_pretrain_local

    cfg = from_dict(PretrainConfig, dict(data_dir=str(synthetic_prepared), benchmark="synthetic", preset="tiny",
                                         method="mae", num_frames=16, epochs=2, batch_size=16, max_steps_per_epoch=2,
                                         warmup_epochs=0.0, output=str(tmp_path / "run")))
    first = run_pretrain_local(cfg)
    assert first["final_epoch"] == 2 and [h["epoch"] for h in first["history"]] == [1, 2]
    assert checkpoint_method(load_checkpoint(first["checkpoint"])) == "mae"
    assert run_pretrain_local(cfg)["wall_time_s"] == first["wall_time_s"]  # finished: read back, not retrained
    more = run_pretrain_local(replace(cfg, epochs=3))
    assert more["start_epoch"] == 2 and [h["epoch"] for h in more["history"]] == [1, 2, 3]


EXPECTED_ROWS = {1: 3, 2: 3, 3: 3, 4: 4, 5: 6, 6: 6, 7: 10, 8: 6, 9: 14, 10: 4}


def _check_tables(results: list[dict], tables: tuple[int, ...], out: Path) -> None:
    assert [r["table"] for r in results] == list(tables)
    for res in results:
        n = res["table"]
        assert len(res["rows"]) == EXPECTED_ROWS[n], (n, [r["row"] for r in res["rows"]])
        md = (out / f"table_{n}.md").read_text()
        assert all(f"| {r['row']} |" in md for r in res["rows"]) and "paper:" in md and "ours" in md
        assert json.loads((out / f"table_{n}.json").read_text())["table"] == n


def _smoke_config(tmp_path) -> PaperConfig:
    from macdiff_ray.cli import smoke_dataset

    return from_dict(PaperConfig, dict(smoke_overrides(), data_dir=smoke_dataset(), benchmark="synthetic",
                                       output=str(tmp_path / "paper")))


# Tables 7, 8 and 10 are probe rows of pretraining variants (masking, schedule, decoder depth): the same
# _accuracy_table path as Table 1, with variants whose objectives test_masking / test_diffusion / test_model cover.
# They add 16 pretrainings, so the default tier runs the other seven tables and the extended tier all ten.
DEFAULT_TABLES = (1, 2, 3, 4, 5, 6, 9)


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_produces_every_row_of_the_protocol_tables(ray_session, tmp_path):
    cfg = _smoke_config(tmp_path)
    results = run_all(cfg, tables=DEFAULT_TABLES)
    _check_tables(results, DEFAULT_TABLES, tmp_path / "paper")
    t1 = results[0]["rows"]
    assert [r["paper"][0] for r in t1] == [74.8, 84.9, 86.4] and all(0 <= r["ours_top1_last"] <= 1 for r in t1)
    t5 = results[4]["rows"]
    assert "paper's protocol" in t5[3]["protocol"] and all(v is not None for v in t5[3]["ours_mm"])
    # resumable: a second call reads every run back
    again = run_all(replace(cfg, table=1), tables=(1,))
    assert again[0]["rows"] == results[0]["rows"]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.extended  # the ablation tables' 16 extra pretrainings; the protocol tables above run by default
def test_smoke_produces_every_row_of_every_table(ray_session, tmp_path):
    results = run_all(_smoke_config(tmp_path))
    _check_tables(results, TABLES, tmp_path / "paper")
    # shared runs: Table 7's random row, Table 8's tau 1 and Table 10's preset depth are the macdiff pretraining
    pre = sorted(p.name for p in (tmp_path / "paper" / "pretrain").iterdir())
    assert "mask_random" not in pre and "tau_1" not in pre and "macdiff" in pre
