"""Every entry script's ``--help`` teaches: it ends with one complete example command (the script's own) and says
where the outputs go."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "experiments").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_an_example_and_the_outputs(script):
    proc = subprocess.run([sys.executable, f"experiments/{script}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "example:" in lines and "outputs:" in lines, proc.stdout[-1500:]
    example = lines[lines.index("example:") + 1].strip()
    assert example.startswith(f"python experiments/{script} ")  # a complete command of this very script
    assert lines[lines.index("outputs:") + 1].strip()  # and a non-empty statement of where outputs go
