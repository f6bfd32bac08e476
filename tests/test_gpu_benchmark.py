"""benchmarks/gpu.py end to end on the CPU with tiny settings, in a Python where ``import ray`` fails.

The GPU script must run the first time on a bare GPU box that has torch, numpy and pyarrow but no Ray (issue 16).
A ``sitecustomize`` on PYTHONPATH makes ``ray`` (and the project's other optional dependencies: tqdm, yaml,
tensorboardX, mlflow, PIL, scipy) unimportable before the script starts. Figures are checked for presence and
sanity only, never for speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("ray", "tqdm", "yaml", "tensorboardX", "mlflow", "PIL", "scipy")

# None in sys.modules: `import ray` raises ModuleNotFoundError and importlib.util.find_spec("ray") returns None,
# which is exactly what a Python without the package does (torch probes optional packages with find_spec).
SHIM = '''
import sys
for name in {blocked!r}:
    sys.modules[name] = None
'''


def shimmed_env(tmp_path: Path) -> dict:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM.format(blocked=BLOCKED))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO)])
    return env


def test_gpu_benchmark_runs_without_ray_and_writes_every_figure(tmp_path):
    env = shimmed_env(tmp_path)
    control = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True, text=True)
    assert control.returncode != 0 and "ModuleNotFoundError" in control.stderr  # the shim is in force

    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--smoke-test", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["ray_modules_imported"] == []
    assert r["environment"]["device"] == "cpu" and r["environment"]["torch"]
    assert set(r["matmul"]["flops_per_s"]) == {"bf16", "fp32"} and min(r["matmul"]["flops_per_s"].values()) > 0
    assert r["model"]["flops_per_sample"] > 0 and r["model"]["preset"] == "tiny"
    rows = {(s["precision"], s["batch_size"]): s for s in r["steps"]}
    assert set(rows) == {(p, n) for p in ("bf16", "fp32") for n in (2, 4)}
    for row in rows.values():
        assert row["samples_per_s"] > 0 and 0 < row["mfu"] and math.isfinite(row["loss"])
        assert row["peak_memory_bytes"] > 0 and row["achieved_flops"] > 0
    train = r["train"]
    assert train["benchmark"] == "synthetic" and len(train["epochs"]) == 2
    assert all(math.isfinite(e["loss"]) and e["samples_per_s"] > 0 for e in train["epochs"])
    for name in ("pretrained", "init"):
        assert 0.0 <= train["probe"][name]["test_top1"] <= 1.0 and train["probe"][name]["num_test"] > 0
    assert "samples/s" in proc.stdout and "Ray modules imported: none" in proc.stdout
