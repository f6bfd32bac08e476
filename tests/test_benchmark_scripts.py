"""The issue-16 benchmark scripts at tiny sizes: figures are checked for presence, never for speed.

- benchmarks/scale.py at a few hundred sequences: it generates NTU-style shards with a valid manifest, streams one
  epoch through the Ray Data pipeline, reports samples/s and every process's peak memory, and deletes the data;
- benchmarks/data_per_core.py --smoke-test: both paths (CPU transforms; decode only + device transforms), in
  process and through Ray Data, and the cluster.yaml arithmetic;
- benchmarks/precision.py --smoke-test: both precisions train from the same weights on the same batches.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scale_names_are_distinct_ntu_names():
    scale = load_script("scale")
    from macdiff_ray.data.benchmarks import parse_ntu_name

    names = scale.sample_names(2000, seed=0)
    assert len(set(names)) == 2000 and names == sorted(names)
    metas = [parse_ntu_name(n) for n in names]
    assert {m["label"] for m in metas} <= set(range(120)) and max(m["subject"] for m in metas) <= 106


@pytest.mark.ray
def test_scale_benchmark_small(ray_session, tmp_path):
    scale = load_script("scale")
    out = tmp_path / "scale.json"
    work = tmp_path / "work"
    r = scale.main(["--sequences", "300", "--shard-rows", "100", "--step", "none", "--batch-size", "16",
                    "--num-frames", "32", "--workdir", str(work), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    d = r["dataset"]
    assert d["sequences"] == 300 and d["shards"] == 3 and d["disk_bytes"] > 0
    train = d["split_counts"]["train"]
    assert 0 < train < 300 and d["split_counts"]["train"] + d["split_counts"]["test"] == 300
    e = r["epoch"]
    assert e["samples"] == (train // 16) * 16 and e["samples_per_s"] > 0
    roles = {p["role"] for p in r["processes"]}
    assert "driver" in roles and len(r["processes"]) > 1  # the Ray processes under this one are sampled too
    assert all(p["hwm"] > 0 for p in r["processes"]) and r["peak_total_rss_bytes"] > 0
    assert not (work / "ntu120_synthetic_300").exists()  # deleted without --keep


@pytest.mark.ray
def test_data_per_core_reports_both_paths(ray_session, tmp_path, capsys):
    per_core = load_script("data_per_core")
    out = tmp_path / "per_core.json"
    r = per_core.main(["--smoke-test", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    for path in ("cpu transform", "decode only"):
        s = r["summary"][path]
        assert s["samples_per_cpu_s"] > 0 and s["samples_per_s_wall"] > 0 and s["ray_samples_per_s_per_cpu"] > 0
        row = r["rounds"][0][path]
        assert row["in_process"]["samples"] == row["ray"]["samples"] > 0  # the same split through both
    assert r["device_transform"]["samples_per_s"] > 0
    a = r["arithmetic"]
    assert a["node"]["gpus"] >= 1 and a["data_cores_on_node"] > 0
    assert {"cores_needed", "node_delivers", "keeps_up"} <= set(a["decode only"])
    printed = capsys.readouterr().out
    assert "cpu transform" in printed and "decode only" in printed and "arithmetic:" in printed


def test_precision_benchmark_trains_both_copies_on_the_same_batches(tmp_path):
    precision = load_script("precision")
    out = tmp_path / "precision.json"
    res = precision.main(["--smoke-test", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["chunks"] == res["chunks"] and len(res["chunks"]) == 2  # 4 steps in chunks of 2
    assert [c["step"] for c in res["chunks"]] == [2, 4]
    for c in res["chunks"]:
        for name in ("fp32", "bf16"):
            assert c[name]["loss"] > 0 and c[name]["samples_per_s"] > 0
    first = res["chunks"][0]
    # same weights, batches, noise and masks: the first chunk differs only by bf16 rounding
    assert first["bf16"]["loss"] == pytest.approx(first["fp32"]["loss"], rel=0.02)
    assert res["bf16_over_fp32"] == pytest.approx(res["samples_per_s"]["bf16"] / res["samples_per_s"]["fp32"])
    assert out.with_suffix(".png").stat().st_size > 1000


def test_count_flops_includes_attention_on_the_cpu():
    """FlopCounterMode counts the CPU's fused attention as 0; count_flops runs the call under the math kernel, so
    attention's 4 N L^2 d multiply-adds (QK^T and AV, forward) are in the count."""
    import torch

    from macdiff_ray.train.perf import count_flops

    n, heads, seq, dim = 2, 4, 64, 32
    q = torch.randn(n, heads, seq, dim)
    flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * n * heads * seq * seq * dim)


def test_denoise_error_scores_the_decoder_at_each_timestep(synthetic_prepared, tmp_path):
    from macdiff_ray.augment.offline import save_random_checkpoint

    ckpt = save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path / "ckpt")
    rows = load_script("denoise_error").main(["--checkpoint", str(ckpt), "--data", str(synthetic_prepared),
                                              "--benchmark", "synthetic", "--condition", "visible",
                                              "--num-samples", "4", "--timesteps", "1,500"])
    assert [r["t"] for r in rows] == [1, 500]
    assert 1 > rows[0]["alpha_bar"] > rows[1]["alpha_bar"] > 0
    assert rows[0]["noisy_mm"] < rows[1]["noisy_mm"]  # more noise, further from the clean sequence
    assert all(r["x0_mm"] > 0 and r["eps_mse"] > 0 for r in rows)
