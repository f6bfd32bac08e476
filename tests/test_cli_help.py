"""Every entry script's ``--help`` teaches: it ends with one complete example command (the script's own) and says
where the outputs go.

The scripts run as ``__main__`` with ``--help``, all in ONE subprocess (a fresh interpreter, cwd the repository, as
a user runs them): each would otherwise pay its own torch import, about 3 s apiece on a 2-core box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "experiments").glob("*.py"))

_RUNNER = r"""
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    buf, err = io.StringIO(), io.StringIO()
    sys.argv = [f"experiments/{script}", "--help"]
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(f"experiments/{script}", run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as e:  # a script that fails to import or parse: reported per script
            code, err = 1, io.StringIO(f"{type(e).__name__}: {e}")
    out[script] = {"code": code, "stdout": buf.getvalue(), "stderr": err.getvalue()[-2000:]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict:
    proc = subprocess.run([sys.executable, "-c", _RUNNER, *SCRIPTS], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_an_example_and_the_outputs(script, helps):
    h = helps[script]
    assert h["code"] == 0, h["stderr"]
    lines = h["stdout"].splitlines()
    assert "example:" in lines and "outputs:" in lines, h["stdout"][-1500:]
    example = lines[lines.index("example:") + 1].strip()
    assert example.startswith(f"python experiments/{script} ")  # a complete command of this very script
    assert lines[lines.index("outputs:") + 1].strip()  # and a non-empty statement of where outputs go
