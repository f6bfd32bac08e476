"""Unit tests of the evaluation protocols' pieces (no Ray)."""

from __future__ import annotations

import json

import pytest
import torch

from macdiff_ray.config import ConfigError, from_dict
from macdiff_ray.eval.features import encode_persons
from macdiff_ray.eval.finetune import FinetuneConfig, mean_std
from macdiff_ray.eval.heads import Classifier, LinearHead, layer_decay_groups
from macdiff_ray.eval.knn import knn_scores
from macdiff_ray.eval.probe import LinearEvalConfig, _mix_chunks, plan_steps, summarize, topk_correct
from macdiff_ray.eval.report import build_report, load_runs
from macdiff_ray.eval.transfer import JointMap, LayoutMismatchError, apply_joint_map, check_alignment, check_transfer
from macdiff_ray.model import SkeletonEncoder, model_preset


def test_topk_and_summary():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])  # (3, 3)
    labels = torch.tensor([0, 0, 1])
    assert topk_correct(logits, labels, (1, 2, 5)) == [1, 2, 3]
    hist = [{"epoch": 1, "top1": 0.5, "top5": 0.9}, {"epoch": 2, "top1": 0.7, "top5": 0.8},
            {"epoch": 3, "top1": None, "top5": None}, {"epoch": 4, "top1": 0.6, "top5": 0.95}]
    s = summarize(hist)
    assert (s["top1_last"], s["top1_best"], s["best_epoch_top1"]) == (0.6, 0.7, 2)
    assert (s["top5_last"], s["top5_best"], s["best_epoch_top5"]) == (0.95, 0.95, 4)


def test_encode_persons_averages_valid_persons_only():
    cfg = model_preset("tiny", num_joints=5, num_frames=8)
    enc = SkeletonEncoder(cfg).eval()
    x = torch.randn(2, 2, 8, 5, 3)  # (B, M, T, V, C)
    pv = torch.tensor([[True, False], [True, True]])
    with torch.no_grad():
        f = encode_persons(enc, x, pv, "pooled")  # (2, D)
        one = enc.pooled(x[0, :1])[0]
        both = enc.pooled(x[1]).mean(0)
        pj = encode_persons(enc, x, pv, "per_joint")
    assert torch.allclose(f[0], one, atol=1e-5) and torch.allclose(f[1], both, atol=1e-5)
    assert pj.shape == (2, 5, cfg.width)
    raw = encode_persons(None, x, pv, "raw")
    assert torch.allclose(raw[0], x[0, 0])


def test_frozen_classifier_keeps_encoder_in_eval_and_untrainable():
    cfg = model_preset("tiny", num_joints=5, num_frames=8, drop_path=0.2)
    model = Classifier(SkeletonEncoder(cfg), LinearHead(cfg.width, 4), "pooled", frozen=True)
    model.train()
    assert not model.encoder.training and model.head.training
    assert all(not p.requires_grad for p in model.encoder.parameters())
    out = model(torch.randn(3, 1, 8, 5, 3), torch.ones(3, 1, dtype=torch.bool))
    out.sum().backward()
    assert model.head.fc.weight.grad is not None
    assert not model.head.bn.affine


def test_layer_decay_groups_scale_by_depth():
    cfg = model_preset("tiny", num_joints=5, num_frames=8)
    model = Classifier(SkeletonEncoder(cfg), LinearHead(cfg.width, 4), "pooled", frozen=False)
    groups = layer_decay_groups(model, 1e-3, 0.05, 0.5)
    depth = cfg.enc_depth
    scales = {g["name"]: g["lr_scale"] for g in groups}
    assert scales["layer0_no_wd"] == pytest.approx(0.5 ** (depth + 1))
    assert scales[f"layer{depth + 1}"] == 1.0
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_knn_scores_find_the_right_cluster():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 5
    ytr = torch.arange(3).repeat_interleave(10)
    ftr = centers[ytr] + torch.randn(30, 16, generator=g) * 0.1
    yte = torch.tensor([2, 0, 1])
    fte = centers[yte] + torch.randn(3, 16, generator=g) * 0.1
    s = knn_scores(ftr, ytr, fte, 3, k=5)
    assert s.argmax(1).tolist() == [2, 0, 1]


def test_transfer_between_layouts_refused_without_map():
    ntu = {"name": "ntu25", "joint_names": [f"j{i}" for i in range(25)]}
    ucla = {"name": "kinect_v1_20", "joint_names": [f"k{i}" for i in range(20)]}
    with pytest.raises(LayoutMismatchError, match=r"'ntu25' \(25 joints\).*'kinect_v1_20' \(20 joints\).*--joint-map"):
        check_transfer(ntu, ucla, None)
    jm = JointMap("ntu25", "kinect_v1_20", tuple(i % 20 for i in range(25)))
    assert check_transfer(ntu, ucla, jm) is jm
    with pytest.raises(LayoutMismatchError, match="entries"):
        check_transfer(ntu, ucla, JointMap("ntu25", "kinect_v1_20", (0, 1)))
    assert check_transfer(ucla, ucla, None) is None
    x = torch.randn(2, 1, 8, 20, 3)
    assert apply_joint_map(x, jm).shape == (2, 1, 8, 25, 3)


def test_alignment_of_checkpoint_and_data_must_agree():
    check_alignment({"align": "y"}, {"align": "y"})
    check_alignment({"align": None}, {"align": None})
    check_alignment({"dataset": "ucla"}, {"align": "y"})  # written before the option: not checked
    with pytest.raises(LayoutMismatchError, match=r"d/: the checkpoint's pretraining data was turned about y "
                                                  r"\(--option align=y\), this dataset was not turned"):
        check_alignment({"align": "y"}, {"align": None}, "d/")
    with pytest.raises(LayoutMismatchError, match="was not turned .*this dataset was turned about z"):
        check_alignment({"align": None}, {"align": "z"})
    with pytest.raises(LayoutMismatchError, match=r"stood upright \(--option align=full\), this dataset was turned "
                                                  r"about y"):
        check_alignment({"align": "full"}, {"align": "y"})


def test_configs_are_strict():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(LinearEvalConfig, {"feature": "raw", "lr_typo": 1})
    with pytest.raises(ConfigError, match="random_init"):
        from_dict(LinearEvalConfig, {"random_init": True})
    with pytest.raises(ConfigError, match="checkpoint"):
        from_dict(LinearEvalConfig, {"feature": "pooled"})
    with pytest.raises(ConfigError, match="raw"):
        from_dict(FinetuneConfig, {"feature": "raw"})
    with pytest.raises(ConfigError, match="labeled_fraction"):
        from_dict(FinetuneConfig, {"random_init": True, "preset": "tiny", "labeled_fraction": 1.5})
    with pytest.raises(ConfigError, match="aug_condition"):
        from_dict(FinetuneConfig, {"checkpoint": "c", "augment": True, "aug_condition": "zeroed"})
    full = from_dict(FinetuneConfig, {"checkpoint": "c", "augment": True, "aug_condition": "full"})
    assert full.aug_condition == "full"


def test_plan_steps_and_mixing():
    cfg = from_dict(LinearEvalConfig, {"feature": "raw", "batch_size": 32, "num_workers": 2})
    assert plan_steps(cfg, 100, 2) == (3, 16)
    assert plan_steps(cfg, 10, 2) == (1, 5)  # labelled subset smaller than a batch
    aug = {"x": torch.zeros(7, 1, 4, 2, 3), "person_valid": torch.ones(7, 1, dtype=torch.bool),
           "label": torch.arange(7)}
    chunks = _mix_chunks(aug, 3)
    assert sum(c["label"].shape[0] for c in chunks) == 7
    assert torch.equal(torch.cat([c["label"] for c in chunks]), torch.arange(7))
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.1414213562))


def _fake_result(tmp, name, **kw):
    d = tmp / name
    d.mkdir()
    r = {"top1_last": 0.5, "top1_best": 0.6, "top5_last": 0.9, "top5_best": 0.95, "best_epoch_top1": 3,
         "best_epoch_top5": 4, "protocol": "linear", "label": name,
         "data": {"dataset": "ucla", "benchmark": "ucla-xview", "num_classes": 10, "labeled_fraction": None},
         "source": {"source": "checkpoint", "pretrain_data": {"dataset": "ucla", "benchmark": "ucla-xview"}}}
    for k, v in kw.items():
        r[k] = v
    (d / "results.json").write_text(json.dumps(r))
    return d


def test_report_tables_from_fixture_results(tmp_path):
    _fake_result(tmp_path, "macdiff")
    _fake_result(tmp_path, "rand", top1_last=0.2, top1_best=0.31, source={"source": "random"})
    _fake_result(tmp_path, "xfer", source={"source": "checkpoint", "pretrain_data": {"dataset": "ntu60"}})
    _fake_result(tmp_path, "semi", protocol="finetune", top1_last_std=0.02, num_seeds=3,
                 data={"dataset": "ucla", "benchmark": "ucla-xview", "num_classes": 10, "labeled_fraction": 0.1})
    md = build_report(load_runs([tmp_path]))
    assert "### Table 1. Linear evaluation" in md and "| macdiff | 50.0 / 60.0 |" in md
    assert "| rand | 20.0 / 31.0 |" in md
    assert "### Table 3. Transfer" in md and "ntu60 → ucla ucla-xview" in md
    assert "### Table 4. Semi-supervised" in md and "ucla-xview 10%" in md and "50.0 ± 2.0 / 60.0" in md
    assert "last epoch / best epoch" in md
    assert "Table 2" not in md
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="lacks"):
        load_runs([tmp_path / "bad"])
