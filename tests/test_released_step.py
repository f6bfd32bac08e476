"""benchmarks/released_step.py: ours vs the released MacDiff step, at a tiny size (figures parsed, never judged).

The run against the released code needs a checked-out tree of it, named by the environment variable
MACDIFF_RELEASED_REPO (CI machines have none: the test is skipped with the reason). The other tests need nothing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "released_step.py"
NUM = r"([-+0-9.eE]+|nan|inf)"  # a number as the script prints it (.4g), or what would make the test fail


def load_script():
    spec = importlib.util.spec_from_file_location("bench_released_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def released_repo() -> Path:
    value = os.environ.get("MACDIFF_RELEASED_REPO")
    if not value:
        pytest.skip("MACDIFF_RELEASED_REPO is not set (a checked-out tree of the released MacDiff code)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"MACDIFF_RELEASED_REPO={value}: no such directory")
    return path


def test_missing_released_repo_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exc:
        load_script().main(["--released-repo", "/nonexistent", "--threads", "1"])
    assert exc.value.code != 0
    assert "/nonexistent" in capsys.readouterr().err


def test_released_layout_keeps_person_one_and_zeros_person_two():
    x = torch.randn(2, 120, 25, 3)  # (N, T, V, C)
    xr = load_script().to_released_layout(x)
    assert xr.shape == (2, 3, 120, 25, 2)
    assert torch.equal(xr[..., 0].permute(0, 2, 3, 1), x) and not xr[..., 1].any()


@pytest.mark.slow
@pytest.mark.timeout(1500)  # 1 round of 1 + 1 steps of each model; a loaded 2-core machine has taken 13 minutes
def test_ours_and_released_step_side_by_side():
    repo = released_repo()
    cmd = [sys.executable, str(SCRIPT), "--released-repo", str(repo), "--batch-size", "2", "--threads", "1",
           "--device", "cpu", "--warmup", "1", "--steps", "1", "--rounds", "1", "--ours-precision", "auto"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for label in ("round 1/1", "median over 1 rounds"):
        m = re.search(rf"{label}: ours {NUM} samples/s, theirs {NUM} samples/s, ratio ours/theirs {NUM}", out)
        assert m, f"no {label!r} line in:\n{out}"
        ours, theirs, ratio = (float(v) for v in m.groups())
        assert all(math.isfinite(v) and v > 0 for v in (ours, theirs, ratio)), m.group(0)
        # each figure is printed to 4 significant digits: the ratio agrees with ours/theirs to ~1e-3 relative
        assert ratio == pytest.approx(ours / theirs, rel=2e-3), m.group(0)
    m = re.search(r"params: ours ([\d,]+) theirs ([\d,]+)", out)
    assert m, out
    ours_params, theirs_params = (int(v.replace(",", "")) for v in m.groups())
    assert ours_params > 1_000_000 and theirs_params > 1_000_000
    assert "WARNING" not in out, out  # the two paper configurations are the same architecture (params within 10%)
