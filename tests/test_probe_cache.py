"""Cached probe features (issue 14): equal to fresh ones, and a cached probe agrees with the streaming one; the
fine-tuning heads and the from-scratch optimiser."""

from __future__ import annotations

import pytest
import torch

from macdiff_ray.config import from_dict
from macdiff_ray.eval.heads import BNMLPHead, Classifier, LinearHead
from macdiff_ray.eval.probe import FeatureCache, build_feature_cache, encode_batches, evaluate, evaluate_features
from macdiff_ray.model import SkeletonEncoder, model_preset


def _batches(x, pv, y, bs=4):
    return [{"x": x[i:i + bs], "person_valid": pv[i:i + bs], "label": y[i:i + bs]} for i in range(0, len(y), bs)]


def _net(kind="per_joint"):
    torch.manual_seed(0)
    cfg = model_preset("tiny", num_joints=5, num_frames=8)
    dim = cfg.width * 5 if kind == "per_joint" else cfg.width
    return Classifier(SkeletonEncoder(cfg), LinearHead(dim, 3), kind, frozen=True)


def test_cached_features_equal_fresh_ones_and_cached_eval_equals_streaming_eval():
    net = _net()
    g = torch.Generator().manual_seed(1)
    x, pv = torch.randn(10, 2, 8, 5, 3, generator=g), torch.tensor([[True, i % 2 == 0] for i in range(10)])
    y = torch.arange(10) % 3
    f, labels = encode_batches(net, _batches(x, pv, y), torch.device("cpu"))
    with torch.no_grad():
        fresh = net.features(x, pv)  # one batch of 10, not batches of 4
    assert f.shape == (10, 5 * net.encoder.cfg.width) and torch.equal(labels, y)
    torch.testing.assert_close(f, fresh, rtol=1e-5, atol=1e-5)
    net.eval()
    a = evaluate(net, _batches(x, pv, y), torch.device("cpu"))
    b = evaluate_features(net.head, f, labels, torch.device("cpu"))
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"]
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)


def test_feature_cache_batches_cover_each_view_once_per_pass():
    views = [(torch.full((6, 2), float(v)), torch.arange(6)) for v in range(3)]
    cache = FeatureCache(views)
    g = torch.Generator().manual_seed(0)
    for epoch in range(4):
        got = list(cache.batches(steps=3, batch=2, generator=g, epoch=epoch))
        labels = torch.cat([b["label"] for b in got])
        assert sorted(labels.tolist()) == list(range(6))  # a permutation of the view's rows
        assert all(float(b["f"][0, 0]) == epoch % 3 for b in got)  # the epoch's view
    more = list(cache.batches(steps=4, batch=4, generator=g, epoch=0))  # 16 > 6: wraps into new permutations
    assert len(more) == 4 and all(b["f"].shape == (4, 2) for b in more)
    with pytest.raises(ValueError):
        FeatureCache([(torch.zeros(3, 2), torch.zeros(2))])
    built = build_feature_cache(_net("pooled"), [_batches(torch.randn(4, 1, 8, 5, 3), torch.ones(4, 1, dtype=torch.bool),
                                                          torch.zeros(4, dtype=torch.long))] * 2, torch.device("cpu"))
    assert len(built.views) == 2 and torch.equal(built.views[0][0], built.views[1][0])


def test_bn_mlp_head_shapes_and_from_scratch_has_no_layer_decay(synthetic_prepared):
    head = BNMLPHead(5 * 64, 7, 2048, 0.1)
    assert head(torch.randn(4, 320)).shape == (4, 7)
    assert isinstance(head.net[2], torch.nn.BatchNorm1d) and head.net[1].out_features == 2048
    from macdiff_ray.eval.features import describe_eval_data
    from macdiff_ray.eval.finetune import FinetuneConfig
    from macdiff_ray.eval.probe import _build_optim, build_classifier

    info = describe_eval_data(str(synthetic_prepared), "synthetic")
    common = dict(data_dir=str(synthetic_prepared), benchmark="synthetic", num_frames=32, preset="tiny",
                  feature="per_joint", head="bn_mlp", output="/tmp/unused", layer_decay=0.8)
    scratch = from_dict(FinetuneConfig, dict(common, random_init=True))
    net, _ = build_classifier(scratch, info)
    assert isinstance(net.head, BNMLPHead) and net.head.net[1].in_features == 25 * net.encoder.cfg.width
    opt, _ = _build_optim(scratch, net, steps=10)
    assert {g["lr_scale"] for g in opt.param_groups} == {1.0}  # random init: nothing to protect
    from macdiff_ray.eval.heads import layer_decay_groups

    assert min(g["lr_scale"] for g in layer_decay_groups(net, 1e-3, 0.05, 0.8)) < 0.5  # the pretrained rule


@pytest.mark.ray
def test_cached_probe_agrees_with_streaming_probe(ray_session, synthetic_prepared, tmp_path):
    from macdiff_ray.eval.probe import LinearEvalConfig, run_linear_eval

    common = dict(data_dir=str(synthetic_prepared), benchmark="synthetic", num_frames=32, random_init=True,
                  preset="tiny", feature="per_joint", epochs=12, batch_size=16, augment_input=False,
                  materialize=True, use_gpu="no", checkpoint_every=100, seed=3,
                  num_workers=0)  # Ray Train's local mode, as the study runs its probes: the cache is the point

    cached = run_linear_eval(from_dict(LinearEvalConfig, dict(common, cache_views=2, output=str(tmp_path / "c"))),
                             quiet=True)
    stream = run_linear_eval(from_dict(LinearEvalConfig, dict(common, cache_views=0, output=str(tmp_path / "s"))),
                             quiet=True)
    assert cached["feature_cache_views"] == 1  # evaluation-transform views are identical: one is cached
    assert stream["feature_cache_views"] == 0
    # Same features, same epochs, same steps; only the batch order differs: the two probes land together.
    assert abs(cached["top1_last"] - stream["top1_last"]) <= 0.1
    for r in (cached, stream):  # and both heads fit their training features (the synthetic classes differ only
        # in limb phase, which a random encoder barely sees, so test accuracy alone could not tell)
        assert r["history"][-1]["train_loss"] < 0.9 * r["history"][0]["train_loss"]
