"""Evaluation protocols end to end on tiny runs over real NW-UCLA data (the raw probe's resume over the small
synthetic set), on the local Ray (``ray_session``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from macdiff_ray.config import from_dict

T = 32  # frames: keeps the tiny encoder fast on 2 cores


@pytest.fixture(scope="module")
def ucla_ckpt(tmp_path_factory, ucla_prepared):
    """A tiny MacDiff checkpoint in the pretraining format for NW-UCLA (untrained weights: tests the plumbing)."""
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.model import MacDiff, model_preset
    from macdiff_ray.train import checkpoint as ck

    m = load_manifest(ucla_prepared)
    torch.manual_seed(0)
    cfg = model_preset("tiny", num_joints=m["num_joints"], num_frames=T)
    net = MacDiff(cfg)
    data = {"dataset": m["dataset"], "benchmark": "ucla-xview", "layout": m["layout"],
            "stats": m["stats"]["ucla-xview"], "num_classes": m["num_classes"]}
    state = ck.build_state(net, None, None, epoch=1, step=1, config={"preset": "tiny"}, model_config=cfg, data=data)
    out = tmp_path_factory.mktemp("pre") / "checkpoints" / "epoch_00001"
    ck.save_checkpoint(state, out)
    return out.parent.parent, state


def _common(ucla_prepared, out, **kw):
    return dict({"data_dir": str(ucla_prepared), "benchmark": "ucla-xview", "num_frames": T, "epochs": 1,
                 "batch_size": 32, "max_steps_per_epoch": 2, "materialize": True, "output": str(out),
                 "use_gpu": "no"}, **kw)


def test_linear_probe_per_joint_from_checkpoint_and_random_init(ray_session, ucla_prepared, ucla_ckpt, tmp_path):
    from macdiff_ray.eval.probe import LinearEvalConfig, run_linear_eval

    run_dir, _ = ucla_ckpt
    # Ray Train's local mode (num_workers=0), as the study runs its probes; the one-worker Train path is the raw
    # probe's below
    res = run_linear_eval(from_dict(LinearEvalConfig, _common(ucla_prepared, tmp_path / "a", checkpoint=str(run_dir),
                                                              feature="per_joint", num_workers=0)), quiet=True)
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    for k in ("top1_last", "top1_best", "top5_last", "top5_best"):
        assert 0.0 <= saved[k] <= 1.0
    assert saved["top5_best"] >= saved["top1_best"]
    assert res["source"]["source"] == "checkpoint" and res["data"]["num_train_used"] > 900
    assert res["history"][0]["train_samples"] == 64  # 2 steps x 32


@pytest.mark.extended  # Ray Train's resume path is the default run's in test_pretrain_ray (rerun resumes)
def test_raw_linear_probe_resumes_from_its_checkpoint(ray_session, synthetic_prepared, tmp_path):
    from macdiff_ray.eval.probe import LinearEvalConfig, run_linear_eval

    # The resume is the point here, not the data: the small synthetic set (120 training sequences, 2 steps of 32
    # per epoch as on NW-UCLA) and one cached view (each augmented view is a pass over the training split).
    cfg = dict(_common(synthetic_prepared, tmp_path / "raw", feature="raw", cache_views=1), benchmark="synthetic")
    first = run_linear_eval(from_dict(LinearEvalConfig, cfg), quiet=True)
    assert first["start_epoch"] == 0 and len(first["history"]) == 1
    second = run_linear_eval(from_dict(LinearEvalConfig, dict(cfg, epochs=2)), quiet=True)
    assert second["start_epoch"] == 1 and second["resumed"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]  # restored from the checkpoint, not recomputed


class FakeAugmenter:
    """Stands in for the diffusion actor pool: appends each hook call to a log file (the worker runs a pickled
    copy, so the file is how the test sees the calls) and returns random normalised samples."""

    def __init__(self, n, m, v, log):
        self.n, self.m, self.v, self.log = n, m, v, str(log)

    def _note(self, what, epoch):
        with open(self.log, "a") as f:
            f.write(f"{what} {epoch}\n")

    def prefetch(self, epoch):
        self._note("prefetch", epoch)

    def collect(self, epoch):
        self._note("collect", epoch)
        return {"x": torch.randn(self.n, self.m, T, self.v, 3),
                "person_valid": torch.ones(self.n, self.m, dtype=torch.bool), "label": torch.arange(self.n) % 10}


def test_semi_supervised_finetune_with_augmenter_hook(ray_session, ucla_prepared, ucla_ckpt, tmp_path):
    """The hook protocol is driven in order; augmented rows join the batches; the subset is the stratified one."""
    import ray

    from macdiff_ray.data.pipeline import select_split
    from macdiff_ray.eval.finetune import FinetuneConfig, run_finetune

    run_dir, _ = ucla_ckpt
    cfg = from_dict(FinetuneConfig, _common(ucla_prepared, tmp_path / "ft", checkpoint=str(run_dir),
                                            labeled_fraction=0.1, epochs=2, warmup_epochs=1.0))

    @ray.remote(num_cpus=0)
    def subset_ids():  # in another process: the subset must be identical
        from macdiff_ray.eval.finetune import labeled_indices

        return labeled_indices(cfg).sample_ids.tolist()

    sel = select_split(cfg.data_dir, cfg.benchmark, "train", labeled_fraction=0.1, subset_seed=0)
    assert ray.get(subset_ids.remote()) == sel.sample_ids.tolist()
    full = select_split(cfg.data_dir, cfg.benchmark, "train")
    for c in np.unique(full.labels):  # class-stratified: every class kept, ~10% of each
        n_c = int((full.labels == c).sum())
        assert int((sel.labels == c).sum()) == max(1, round(0.1 * n_c))
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    log = tmp_path / "aug_calls.txt"
    res = run_finetune(cfg, augmenter=FakeAugmenter(6, 2, 20, log), quiet=True)
    calls = log.read_text().split("\n")[:-1]
    assert calls == ["prefetch 0", "prefetch 1", "collect 0", "collect 1"]
    steps = res["steps_per_epoch"]
    assert res["data"]["num_train_used"] == len(sel)
    assert res["history"][0]["train_samples"] == steps * min(32, len(sel)) + 6
    assert res["aug_wait_total_s"] >= 0 and 0 <= res["aug_stalled_fraction"] <= 1
    assert "aug_wait_s" in res["history"][0]


def test_knn_and_embed_through_actor_pool(ray_session, ucla_prepared, ucla_ckpt, tmp_path):
    import pyarrow.parquet as pq

    from macdiff_ray.eval.embed import write_embeddings
    from macdiff_ray.eval.knn import KnnConfig, run_knn

    run_dir, state = ucla_ckpt
    meta = write_embeddings(str(ucla_prepared), "ucla-xview", str(tmp_path / "emb"), splits=("test",),
                            checkpoint=str(run_dir), num_frames=T, num_actors=2, batch_size=64)
    t = pq.read_table(tmp_path / "emb" / "test")
    assert meta["splits"]["test"] == t.num_rows > 400
    assert set(t.column_names) == {"sample_id", "label", "feature"}
    f = np.stack(t.column("feature").to_numpy(zero_copy_only=False))
    assert f.shape == (t.num_rows, state["model_config"]["width"]) and np.isfinite(f).all()
    res = run_knn(from_dict(KnnConfig, {"data_dir": str(ucla_prepared), "benchmark": "ucla-xview",
                                        "checkpoint": str(run_dir), "num_frames": T, "output": str(tmp_path / "knn")}))
    assert res["top1_last"] == res["top1_best"] and 0 <= res["top1_last"] <= res["top5_last"] <= 1
    assert json.loads((tmp_path / "knn" / "results.json").read_text())["protocol"] == "knn"


def test_transfer_to_another_layout_fails_clearly(ucla_prepared, ucla_ckpt, tmp_path):
    """An NTU-layout checkpoint evaluated on NW-UCLA is refused before any Ray work, naming both layouts."""
    from macdiff_ray.eval.probe import LinearEvalConfig, run_linear_eval
    from macdiff_ray.eval.transfer import LayoutMismatchError
    from macdiff_ray.model import MacDiff, model_preset
    from macdiff_ray.train import checkpoint as ck

    _, ucla_state = ucla_ckpt
    from macdiff_ray.data.layouts import get_layout

    cfg = model_preset("tiny", num_joints=25, num_frames=T)
    data = dict(ucla_state["data"], dataset="ntu60", benchmark="ntu60-xsub", layout=get_layout("ntu25").to_dict())
    state = ck.build_state(MacDiff(cfg), None, None, epoch=1, step=1, config={}, model_config=cfg, data=data)
    ck.save_checkpoint(state, tmp_path / "ntu_ckpt")
    c = from_dict(LinearEvalConfig, _common(ucla_prepared, tmp_path / "x", checkpoint=str(tmp_path / "ntu_ckpt")))
    with pytest.raises(LayoutMismatchError, match=r"'ntu25' \(25 joints\).*20 joints.*--joint-map"):
        run_linear_eval(c, quiet=True)
    assert not (tmp_path / "x" / "config.json").exists()


def test_checkpoint_pretrained_on_turned_data_is_refused_on_unturned_data(ucla_prepared, ucla_ckpt, tmp_path):
    from macdiff_ray.eval.probe import LinearEvalConfig, run_linear_eval
    from macdiff_ray.eval.transfer import LayoutMismatchError
    from macdiff_ray.train import checkpoint as ck

    _, state = ucla_ckpt
    turned = dict(state, data=dict(state["data"], align="y"))  # as pretraining on --option align=true data writes
    ck.save_checkpoint(turned, tmp_path / "turned" / "checkpoints" / "epoch_00001")
    cfg = from_dict(LinearEvalConfig, _common(ucla_prepared, tmp_path / "out", checkpoint=str(tmp_path / "turned"),
                                              feature="per_joint"))
    with pytest.raises(LayoutMismatchError, match="turned about y .*this dataset was not turned"):
        run_linear_eval(cfg, quiet=True)
    assert not (tmp_path / "out" / "results.json").exists()
