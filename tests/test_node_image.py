"""The cluster's node image (docker/Dockerfile): what can be checked without building it.

No Docker daemon runs where these tests run, so the image is never built here. What is checked instead, by
``check_dockerfile`` (each rule shown to fire on a mutated copy of the real files):
- Python, torch and Ray pins of the Dockerfile, and every line of docker/constraints.txt, fall inside pyproject.toml's
  ranges (``requires-python`` and ``dependencies``), and every dependency of the project is pinned;
- torch is installed before the project (else pyproject's range would pick the build), from the CPU index only in the
  ``cpu`` variant;
- the project's package is copied and installed; data and runs stay out of the build context (.dockerignore);
- cluster.yaml runs the image under the tags docs/CLUSTER.md builds (``cpu-VERSION`` with ``TORCH_VARIANT=cpu``,
  ``gpu-VERSION`` with ``TORCH_VARIANT=cuda``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
CONSTRAINTS = REPO / "docker" / "constraints.txt"
DOCKERIGNORE = REPO / ".dockerignore"
CLUSTER_YAML = REPO / "cluster.yaml"
CLUSTER_MD = REPO / "docs" / "CLUSTER.md"
PROJECT_DIR = "/opt/macdiff-ray"  # where the Dockerfile copies the project


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for ln in joined.splitlines():
        if ln.strip():
            word, _, rest = ln.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(ins: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def _pinned(ins: list[tuple[str, str]], name: str) -> int | None:
    """Index of the first RUN that pip-installs ``name`` (a requirement word starting with it)."""
    pat = re.compile(rf"""pip install\b[^;|&]*?["']?{re.escape(name)}(\[|==|\s|["']|$)""")
    for i, (word, rest) in enumerate(ins):
        if word == "RUN" and pat.search(rest):
            return i
    return None


def _project(pyproject: dict) -> tuple[dict[str, Requirement], str, str]:
    deps = {Requirement(d).name.lower(): Requirement(d) for d in pyproject["project"]["dependencies"]}
    return deps, pyproject["project"]["requires-python"], pyproject["project"]["version"]


def check_dockerfile(dockerfile: str, constraints: str, pyproject: dict, dockerignore: str) -> list[str]:
    """The project's rules for the node image; one message per violation."""
    errors: list[str] = []
    ins = instructions(dockerfile)
    args = _args(ins)
    deps, requires_python, _ = _project(pyproject)

    # --- Python, torch, Ray ---
    froms = [rest for word, rest in ins if word == "FROM"]
    if len(froms) != 1 or not froms[0].startswith("python:${PYTHON_VERSION}"):
        errors.append(f"FROM {froms}: expected one official python:${{PYTHON_VERSION}} base")
    py = args.get("PYTHON_VERSION", "")
    if not re.fullmatch(r"3\.\d+", py) or Version(py) < Version("3.11"):
        errors.append(f"ARG PYTHON_VERSION={py!r}: the locked stack (numpy 2.4, pyarrow) needs Python 3.11+")
    elif not Requirement(f"python{requires_python}").specifier.contains(py):
        errors.append(f"ARG PYTHON_VERSION={py}: outside pyproject's requires-python {requires_python!r}")
    for arg, dep in (("TORCH_VERSION", "torch"), ("RAY_VERSION", "ray")):
        v = args.get(arg)
        if not v:
            errors.append(f"ARG {arg} missing: the image must pin {dep}")
        elif not deps[dep].specifier.contains(v):
            errors.append(f"ARG {arg}={v}: outside pyproject's {deps[dep]}")
    ray_run = [rest for word, rest in ins if word == "RUN" and "${RAY_VERSION}" in rest]
    m = re.search(r"ray\[([^\]]*)\]==\$\{RAY_VERSION\}", " ".join(ray_run))
    if not m or set(m.group(1).split(",")) != set(deps["ray"].extras):
        errors.append(f"Ray install: extras {m.group(1) if m else None!r}, pyproject has {sorted(deps['ray'].extras)}")

    # --- torch first, the right index per variant ---
    torch_at = _pinned(ins, "torch")
    project_at = next((i for i, (w, r) in enumerate(ins) if w == "RUN" and re.search(
        rf"pip install\b.*\s{re.escape(PROJECT_DIR)}(\s|$|&)", r)), None)
    if project_at is None:
        errors.append(f"no RUN pip-installs the project ({PROJECT_DIR})")
    if torch_at is None:
        errors.append("no RUN pip-installs torch")
    elif project_at is not None and torch_at > project_at:
        errors.append("torch is installed after the project: pyproject's range would choose the torch build")
    if torch_at is not None:
        run = ins[torch_at][1]
        cuda = re.search(r"cuda\)([^;]*);;", run)
        cpu = re.search(r"cpu\)([^;]*);;", run)
        if not cuda or not cpu:
            errors.append("the torch RUN must branch on TORCH_VARIANT (cpu) / (cuda)")
        else:
            if "whl/cpu" in cuda.group(1):
                errors.append("TORCH_VARIANT=cuda installs the CPU torch build")
            if "whl/cpu" not in cpu.group(1):
                errors.append("TORCH_VARIANT=cpu does not install the CPU torch build "
                              "(multi-GB CUDA wheels on the head)")
    copied = " ".join(rest for word, rest in ins if word == "COPY")
    for part in ("pyproject.toml", "macdiff_ray"):
        if not re.search(rf"(^|\s){part}(\s|$)", copied):
            errors.append(f"COPY: {part} is not copied into the image")

    # --- every dependency pinned, inside pyproject's ranges ---
    pins: dict[str, str] = {}
    for ln in constraints.splitlines():
        ln = ln.split("#", 1)[0].strip()
        if not ln:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", ln)
        if not m:
            errors.append(f"constraints.txt: {ln!r} is not NAME==VERSION")
            continue
        pins[m.group(1).lower()] = m.group(2)
    if project_at is not None:
        segment = next(s for s in ins[project_at][1].split("&&") if PROJECT_DIR in s and "pip install" in s)
        if f"-c {PROJECT_DIR}/docker/constraints.txt" not in segment:
            errors.append("the project is installed without -c docker/constraints.txt")
    for name, req in deps.items():
        if name in ("torch", "ray"):
            continue
        if name not in pins:
            errors.append(f"constraints.txt: dependency {name} is not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            errors.append(f"constraints.txt: {name}=={pins[name]} is outside pyproject's {req}")

    # --- data, runs and git history stay out of the build context ---
    ignored = {ln.strip().strip("/") for ln in dockerignore.splitlines() if ln.strip() and not ln.startswith("#")}
    for path in ("prepared", "runs", "**/.git"):
        if path not in ignored:
            errors.append(f".dockerignore: {path} is not excluded (it would be copied into the build context)")
    return errors


def _real() -> tuple[str, str, dict, str]:
    return (DOCKERFILE.read_text(), CONSTRAINTS.read_text(), tomllib.loads((REPO / "pyproject.toml").read_text()),
            DOCKERIGNORE.read_text())


def test_dockerfile_follows_project_rules():
    errors = check_dockerfile(*_real())
    assert not errors, "docker/Dockerfile breaks project rules:\n" + "\n".join(errors)


def _sub(pattern: str, repl: str, which: int = 0):
    def f(parts):
        parts = list(parts)
        new = re.sub(pattern, repl, parts[which], count=1, flags=re.M)
        assert new != parts[which], f"mutation {pattern!r} changed nothing"
        parts[which] = new
        return parts

    return f


def _swap_torch_and_project(parts):
    d = parts[0]
    torch_block = re.search(r"^RUN case \"\$TORCH_VARIANT\".*?esac\n", d, flags=re.M | re.S).group(0)
    d = d.replace(torch_block, "")
    d = d.replace("\nUSER ray", "\n" + torch_block + "USER ray")
    return [d, *parts[1:]]


def _pyproject_edit(fn):
    def f(parts):
        import copy

        py = copy.deepcopy(parts[2])
        fn(py)
        return [parts[0], parts[1], py, parts[3]]

    return f


@pytest.mark.parametrize("mutate, expected", [
    (_sub(r"^ARG PYTHON_VERSION=3\.11", "ARG PYTHON_VERSION=3.10"), "needs Python 3.11+"),
    (_pyproject_edit(lambda p: p["project"].update({"requires-python": ">=3.12"})), "requires-python"),
    (_sub(r"^ARG TORCH_VERSION=2\.13\.0", "ARG TORCH_VERSION=2.14.0"), "ARG TORCH_VERSION=2.14.0: outside"),
    (_sub(r"^ARG RAY_VERSION=2\.60\.0", "ARG RAY_VERSION=2.30.0"), "ARG RAY_VERSION=2.30.0: outside"),
    (_sub(r"^ARG RAY_VERSION=2\.60\.0\n", ""), "ARG RAY_VERSION missing"),
    (_sub(r"ray\[default,train,tune,data\]", "ray[train,tune]"), "extras"),
    (_swap_torch_and_project, "installed after the project"),
    (_sub(r'cuda\) python -m pip install "torch==\$\{TORCH_VERSION\}"',
          'cuda) python -m pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu'),
     "cuda installs the CPU"),
    (_sub(r" --index-url https://download\.pytorch\.org/whl/cpu ;;", " ;;"), "cpu does not install the CPU"),
    (_sub(r"^COPY macdiff_ray .*\n", ""), "macdiff_ray is not copied"),
    (_sub(r"-c /opt/macdiff-ray/docker/constraints\.txt /opt/macdiff-ray", "/opt/macdiff-ray"), "without -c"),
    (_sub(r"^numpy==.*\n", "", 1), "numpy is not pinned"),
    (_sub(r"^pyarrow==.*$", "pyarrow==12.0.0", 1), "pyarrow==12.0.0 is outside"),
    (_sub(r"^tqdm==.*$", "tqdm>=4", 1), "is not NAME==VERSION"),
    (_sub(r"^prepared\n", "", 3), "prepared is not excluded"),
    (_sub(r"^runs\n", "", 3), "runs is not excluded"),
], ids=["python-3.10", "requires-python", "torch-out-of-range", "ray-out-of-range", "ray-unpinned", "ray-extras",
        "torch-after-project", "cuda-variant-cpu-wheel", "cpu-variant-cuda-wheel", "package-not-copied",
        "no-constraints", "numpy-unpinned", "pyarrow-out-of-range", "loose-pin", "data-in-context", "runs-in-context"])
def test_checker_rejects_mutated_image(mutate, expected):
    errors = check_dockerfile(*mutate(_real()))
    assert any(expected in e for e in errors), f"expected a violation mentioning {expected!r}, got {errors}"


def test_cluster_yaml_runs_the_documented_image_tags():
    """cluster.yaml's images are the tags docs/CLUSTER.md builds, each from the matching TORCH_VARIANT, for the
    project's version."""
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    docs = CLUSTER_MD.read_text()
    builds = dict(re.findall(r"docker build -f docker/Dockerfile --build-arg TORCH_VARIANT=(\w+) -t (\S+) \.", docs))
    assert set(builds) == {"cpu", "cuda"}, builds
    documented = re.search(r"^\s*VERSION=(\S+)", docs, flags=re.M)
    assert documented and documented.group(1) == version, "docs/CLUSTER.md builds another version than pyproject's"
    for key, variant, tag in (("head_image", "cpu", "cpu"), ("worker_image", "cuda", "gpu")):
        image = cfg["docker"][key]
        assert image.endswith(f"/macdiff-ray:{tag}-{version}"), (key, image)
        assert builds[variant].endswith(f"/macdiff-ray:{tag}-$VERSION"), (variant, builds[variant])
        assert f"docker push {builds[variant]}" in docs, f"docs/CLUSTER.md never pushes {builds[variant]}"
