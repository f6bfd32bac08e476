"""Loading user files fails with a message that names the file and never advises an unsafe load (numpy's
``allow_pickle``, torch's ``weights_only=False``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from macdiff_ray.config import ConfigError, load_file
from macdiff_ray.data.formats.arrays import load_npz
from macdiff_ray.data.samples import DataFormatError
from macdiff_ray.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
UNSAFE = ("allow_pickle", "weights_only=False", "pickle.load")


def _safe(msg: str, path: Path) -> None:
    assert str(path) in msg
    for word in UNSAFE:
        assert word not in msg, msg


@pytest.mark.parametrize("content", [b"this is not a zip archive", b"PK\x03\x04 truncated zip", b""])
def test_arrays_reader_names_a_non_npz_file(tmp_path, content):
    bad = tmp_path / "skeletons.npz"
    bad.write_bytes(content)
    with pytest.raises(DataFormatError) as e:
        load_npz(bad)
    _safe(str(e.value), bad)


def test_arrays_reader_refuses_object_arrays_without_advising_pickle(tmp_path):
    bad = tmp_path / "objects.npz"
    np.savez(bad, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError) as e:
        load_npz(bad)
    _safe(str(e.value), bad)
    assert "field x" in str(e.value)


def test_prepare_data_cli_reports_a_corrupt_npz(tmp_path):
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"\x80\x04 not numpy")
    proc = subprocess.run([sys.executable, "experiments/prepare_data.py", "--format", "arrays", "--input", str(bad),
                           "--output", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    _safe(proc.stderr, bad)
    assert "Traceback" not in proc.stderr


class _Foreign:
    pass


def test_checkpoint_with_foreign_objects_is_refused_without_unsafe_advice(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    torch.save({"model": _Foreign()}, bad)
    with pytest.raises(ValueError) as e:
        load_checkpoint(bad)
    _safe(str(e.value), bad)


def test_invalid_yaml_config_names_file_and_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("epochs: 3\nlr: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_file(bad)
    assert str(bad) in str(e.value) and "line" in str(e.value)
