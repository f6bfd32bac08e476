"""Search-space files: strict validation (unknown keys are errors naming the key and the file), parameter paths,
distributions, the example spaces under configs/sweeps, and the kNN proxy's pieces that need no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macdiff_ray.config import ConfigError
from macdiff_ray.tune.space import apply_params, build_config, load_space, parse_space, to_tune_space, valid_paths

REPO = Path(__file__).resolve().parents[1]


def _space(**over):
    d = {
        "kind": "pretrain",
        "base": {"preset": "tiny", "epochs": 4, "benchmark": "ucla-xview"},
        "search": {"diffusion.tau": {"grid": [-1.0, 0.0, 1.0]}},
        "tune": {"metric": "knn_top1", "mode": "max", "scheduler": "asha", "grace_period": 1},
    }
    d.update(over)
    return d


def _write(tmp_path, data, name="space.yaml"):
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_valid_space_parses(tmp_path):
    s = load_space(_write(tmp_path, _space()))
    assert s.kind == "pretrain" and [p.path for p in s.params] == ["diffusion.tau"]
    assert s.params[0].kind == "grid" and s.params[0].values == (-1.0, 0.0, 1.0)
    assert s.tune.scheduler == "asha" and s.tune.resources.cpu == 1.0


@pytest.mark.parametrize("data, key", [
    (_space(serach={}), "serach"),
    (_space(search={"diffusion.tua": {"grid": [0.0]}}), "diffusion.tua"),
    (_space(search={"model.mask_ration": {"choice": [0.8]}}), "model.mask_ration"),
    (_space(search={"learning_rate": {"loguniform": [1e-4, 1e-3]}}), "learning_rate"),
    (_space(search={"diffusion.tau": {"gird": [0.0]}}), "gird"),
    (_space(tune={"metric": "knn_top1", "shceduler": "asha"}), "shceduler"),
    (_space(tune={"resources": {"cpu": 1, "tpu": 1}}), "tpu"),
    (_space(base={"preset": "tiny", "epoch": 3}), "epoch"),
    (_space(base={"preset": "tiny", "diffusion": {"tau": 1.0, "sched": "tau"}}), "sched"),
])
def test_unknown_keys_are_refused_naming_key_and_file(tmp_path, data, key):
    path = _write(tmp_path, data, "my_space.yaml")
    with pytest.raises(ConfigError) as e:
        load_space(path)
    assert key in str(e.value) and "my_space.yaml" in str(e.value)


@pytest.mark.parametrize("search, needle", [
    ({"diffusion.tau": {"grid": ["one"]}}, "expected a number"),
    ({"diffusion.schedule": {"choice": ["tau", "quadratic"]}}, "quadratic"),
    ({"model.mask_ratio": {"grid": [0.8, 1.5]}}, "mask_ratio"),
    ({"lr": {"loguniform": [0.0, 1e-3]}}, "low must be > 0"),
    ({"lr": {"uniform": [1e-3, 1e-4]}}, "low < high"),
    ({"lr": {"grid": []}}, "non-empty"),
    ({"lr": {"grid": [1e-3], "choice": [1e-3]}}, "expected one of"),
    ({"model.num_joints": {"grid": [25]}}, "model.num_joints"),
])
def test_invalid_values_are_refused(search, needle):
    with pytest.raises(ConfigError, match="search") as e:
        parse_space(_space(search=search), "s.yaml")
    assert needle in str(e.value)


def test_output_and_workers_in_base_refused():
    with pytest.raises(ConfigError, match="base.output"):
        parse_space(_space(base={"output": "/tmp/x"}), "s.yaml")
    for key, value in (("num_workers", 2), ("num_workers", 1), ("cpus_per_worker", 0.5)):
        with pytest.raises(ConfigError, match="tune.resources") as e:  # workers come from tune.resources only
            parse_space(_space(base={"preset": "tiny", key: value}), "s.yaml")
        assert "base.num_workers" in str(e.value)


def test_train_trial_resources():
    """tune.resources.workers: N makes every trial an N-worker TorchTrainer; cpu/gpu are then per worker."""
    single = parse_space(_space(), "s.yaml").tune.resources
    assert not single.train_trial and single.workers is None
    space = _space(tune={"scheduler": "fifo", "resources": {"workers": 4, "cpu": 2, "gpu": 1}})
    r = parse_space(space, "s").tune.resources
    assert r.train_trial and (r.workers, r.cpu, r.gpu) == (4, 2.0, 1.0)
    assert r.worker_overrides() == {"num_workers": 4, "cpus_per_worker": 2.0}
    with pytest.raises(ConfigError, match="workers"):
        parse_space(_space(tune={"resources": {"workers": 0}}), "s.yaml")
    with pytest.raises(ConfigError, match="not divisible by"):  # the global batch is split over the workers
        parse_space(_space(base={"preset": "tiny", "batch_size": 30}, tune={"resources": {"workers": 4}}), "s.yaml")
    with pytest.raises(ConfigError, match="use_gpu 'yes'"):
        parse_space(_space(base={"preset": "tiny", "use_gpu": "yes"},
                           tune={"resources": {"workers": 2, "gpu": 0}}), "s.yaml")
    augment = {"kind": "augment", "base": {"checkpoint": "/x", "epochs": 1}, "search": {"t_start": {"grid": [100]}},
               "tune": {"metric": "top1_best", "scheduler": "fifo", "resources": {"workers": 2}}}
    with pytest.raises(ConfigError, match="only for kind: pretrain"):
        parse_space(augment, "s.yaml")


def test_asha_rungs_must_fall_on_proxy_epochs():
    with pytest.raises(ConfigError, match="grace_period"):
        parse_space(_space(tune={"scheduler": "asha", "grace_period": 3, "proxy_every": 2}), "s.yaml")
    assert parse_space(_space(tune={"scheduler": "asha", "grace_period": 4, "proxy_every": 2}), "s").tune.proxy_every == 2


def test_apply_params_routes_dotted_paths():
    out = apply_params("pretrain", {"preset": "tiny", "diffusion": {"num_steps": 1000}},
                       {"diffusion.tau": -1.0, "model.mask_ratio": 0.8, "lr": 3e-4})
    assert out == {"preset": "tiny", "diffusion": {"num_steps": 1000, "tau": -1.0},
                   "model_overrides": {"mask_ratio": 0.8}, "lr": 3e-4}
    cfg = build_config("pretrain", {"preset": "tiny"}, {"diffusion.tau": 0.0, "model.dec_depth": 3})
    assert cfg.diffusion.tau == 0.0 and cfg.model_overrides == {"dec_depth": 3}
    paths = valid_paths("pretrain")
    assert {"lr", "diffusion.tau", "diffusion.schedule", "model.mask_ratio", "model.dec_depth"} <= set(paths)
    assert "model.num_frames" not in paths and "model_overrides" not in paths and "diffusion" not in paths


def test_tune_domains():
    from ray import tune

    s = parse_space(_space(search={"diffusion.tau": {"grid": [-1.0, 1.0]}, "model.mask_ratio": {"choice": [0.8, 0.9]},
                                   "lr": {"loguniform": [1e-4, 3e-3]}, "batch_size": {"randint": [8, 17]}}), "s")
    d = to_tune_space(s)
    assert d["diffusion.tau"] == {"grid_search": [-1.0, 1.0]}
    assert isinstance(d["model.mask_ratio"], tune.search.sample.Categorical)
    assert isinstance(d["lr"], tune.search.sample.Float) and isinstance(d["batch_size"], tune.search.sample.Integer)


def test_fingerprint_tracks_the_space():
    a = parse_space(_space(), "a")
    assert a.fingerprint() == parse_space(_space(), "b").fingerprint()
    assert a.fingerprint() != parse_space(_space(search={"diffusion.tau": {"grid": [0.0]}}), "a").fingerprint()


def test_augment_kind():
    base = {"checkpoint": "/some/ckpt", "augment": True, "benchmark": "ucla-xview"}
    s = parse_space({"kind": "augment", "base": base,
                     "search": {"t_start": {"grid": [100, 500]}, "aug_ratio": {"choice": [0.5, 1.0]}},
                     "tune": {"metric": "top1_best", "scheduler": "fifo"}}, "aug.yaml")
    assert [p.path for p in s.params] == ["t_start", "aug_ratio"]
    with pytest.raises(ConfigError, match="diffusion.tau"):
        parse_space({"kind": "augment", "base": base, "search": {"diffusion.tau": {"grid": [0.0]}},
                     "tune": {"metric": "top1_best", "scheduler": "fifo"}}, "aug.yaml")
    with pytest.raises(ConfigError, match="fifo"):
        parse_space({"kind": "augment", "base": base, "search": {"t_start": {"grid": [100]}},
                     "tune": {"metric": "top1_best", "scheduler": "asha"}}, "aug.yaml")
    with pytest.raises(ConfigError, match="t_start"):  # FinetuneConfig refuses t_s outside (0, 1000)
        parse_space({"kind": "augment", "base": base, "search": {"t_start": {"grid": [100, 1000]}},
                     "tune": {"metric": "top1_best", "scheduler": "fifo"}}, "aug.yaml")
    with pytest.raises(ConfigError, match="kind"):
        parse_space({"kind": "finetune", "search": {"lr": {"grid": [1e-3]}}}, "x.yaml")


@pytest.mark.parametrize("name, overrides", [
    ("tau.yaml", {}), ("pretrain.yaml", {}), ("augment.yaml", {"checkpoint": "/ckpt"}),
])
def test_example_spaces_load(name, overrides):
    s = load_space(REPO / "configs" / "sweeps" / name, overrides)
    assert s.params
    if name == "tau.yaml":
        assert s.params[0].path == "diffusion.tau" and s.params[0].values == (-1.0, 0.0, 1.0)
        assert s.base["preset"] == "tiny" and s.base["benchmark"] == "ucla-xview"


def test_relative_data_dir_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_space(_write(tmp_path, _space()), {"data_dir": "prepared"})
    assert s.base["data_dir"] == str(tmp_path / "prepared")


def test_json_space_and_bad_top_level(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(_space()))
    assert load_space(p).params[0].path == "diffusion.tau"
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="s.json"):
        load_space(p)


@pytest.mark.parametrize("cluster, expected", [
    ({"CPU": 0.0, "trial_launcher": 16.0}, {"cpu": 0, "gpu": 0, "trial_launcher": 1}),  # cluster.yaml's head
    ({"CPU": 2.0}, {"cpu": 0.01, "gpu": 0}),  # a local Ray: no launcher resource anywhere
])
def test_launcher_resources_follow_the_cluster(monkeypatch, cluster, expected):
    """A Tune-over-Train trial asks for the head's launcher resource and no CPU where the cluster offers it, else a
    token CPU; either way a bundle that Ray's placement groups accept (an all-zero bundle is refused)."""
    import ray
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory
    from ray.util.placement_group import _validate_bundles

    from macdiff_ray.train.resources import LAUNCHER_RESOURCE
    from macdiff_ray.tune.sweep import launcher_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(cluster))
    got = launcher_resources()
    assert got == expected and (LAUNCHER_RESOURCE in got) == (LAUNCHER_RESOURCE in cluster)
    _validate_bundles(resource_dict_to_pg_factory(got).bundles)
    with pytest.raises(ValueError, match="empty head|only 0 values"):
        _validate_bundles(resource_dict_to_pg_factory({"cpu": 0, "gpu": 0}).bundles)
