"""Strict config round trips: unknown keys, wrong types and nested dataclasses."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from macdiff_ray.config import ConfigError, from_dict, load_file, replace, save_json, to_dict


@dataclass(frozen=True)
class Inner:
    tau: float = 1.0
    schedule: Literal["tau", "cosine", "linear"] = "tau"


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    epochs: int = 3
    betas: tuple[float, float] = (0.9, 0.95)
    dims: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    clip: Optional[float] = None


def test_round_trip_preserves_values_and_types():
    cfg = Outer(name="x", epochs=5, betas=(0.8, 0.99), dims=(3,), inner=Inner(tau=-1.0, schedule="cosine"), clip=1.0)
    d = to_dict(cfg)
    assert d["betas"] == [0.8, 0.99] and d["inner"] == {"tau": -1.0, "schedule": "cosine"}
    assert from_dict(Outer, d) == cfg


def test_fixed_length_tuple_keeps_order_and_checks_length():
    assert from_dict(Outer, {"betas": [0.1, 2]}).betas == (0.1, 2.0)
    with pytest.raises(ConfigError, match=r"betas: expected 2 items, got 3"):
        from_dict(Outer, {"betas": [0.1, 0.2, 0.3]})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epoch": 3}, r"unknown key\(s\) \['epoch'\]"),
        ({"inner": {"taux": 1}}, r"inner: unknown key\(s\) \['taux'\]"),
        ({"epochs": "3"}, r"epochs: expected an integer"),
        ({"epochs": True}, r"epochs: expected an integer"),
        ({"inner": {"schedule": "sigmoid"}}, r"inner.schedule: 'sigmoid' is not one of"),
        ({"name": 5}, r"name: expected a string"),
    ],
)
def test_invalid_input_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_replace_is_strict_and_files_round_trip(tmp_path):
    cfg = replace(Outer(), epochs=7)
    assert cfg.epochs == 7
    with pytest.raises(ConfigError):
        replace(Outer(), nope=1)
    save_json(cfg, tmp_path / "c.json")
    assert from_dict(Outer, load_file(tmp_path / "c.json")) == cfg
    (tmp_path / "c.yaml").write_text("epochs: 4\ninner:\n  tau: 0\n")
    assert from_dict(Outer, load_file(tmp_path / "c.yaml")) == Outer(epochs=4, inner=Inner(tau=0.0))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: invalid JSON at line 1"):
        load_file(tmp_path / "bad.json")


def test_shipped_pretrain_configs_parse_strictly():
    """Every configs/*_pretrain.json is a valid PretrainConfig (an unknown or mistyped key fails here)."""
    import json
    from pathlib import Path

    from macdiff_ray.train import PretrainConfig

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*_pretrain.json"))
    assert len(files) >= 2
    for f in files:
        cfg = from_dict(PretrainConfig, json.loads(f.read_text()))
        assert cfg.epochs > 0 and cfg.preset in ("tiny", "small", "paper"), f
