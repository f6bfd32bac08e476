"""Static scan: no code path in the project deserialises untrusted bytes into arbitrary Python objects.

Rules (docs/SECURITY.md):
- ``torch.load`` only with ``weights_only=True`` (a literal True: checkpoints are dicts of tensors and containers);
- no ``pickle.load``/``pickle.loads`` (nor dill/cloudpickle/joblib/pandas.read_pickle/marshal/shelve); pyskl
  ``.pkl`` annotations are read with a subclass of ``pickle.Unpickler`` that overrides ``find_class``;
  a bare ``pickle.Unpickler(...)`` or a subclass without ``find_class`` is a violation;
- ``numpy.load`` never with ``allow_pickle`` other than a literal False;
- ``yaml.load``/``yaml.load_all`` only with ``SafeLoader``/``CSafeLoader``/``BaseLoader`` (better: ``yaml.safe_load``);
  ``yaml.unsafe_load``/``yaml.full_load`` never.

The scanner works on the syntax tree, resolving import aliases (``import numpy as np``, ``from torch import load``),
so comments and strings do not trigger it and aliases do not hide a call. It is tested on planted sources first.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("macdiff_ray", "experiments", "benchmarks")

UNPICKLING_CALLS = {
    "pickle.load", "pickle.loads", "_pickle.load", "_pickle.loads", "cPickle.load", "cPickle.loads",
    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "pandas.read_pickle",
    "marshal.load", "marshal.loads", "shelve.open", "torch.serialization.pickle.load",
}
UNPICKLER_CLASSES = {"pickle.Unpickler", "_pickle.Unpickler", "dill.Unpickler"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
UNSAFE_YAML_CALLS = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.code}"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted qualified name, from every import in the module (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:  # `import a.b` binds `a`
                    names[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _qualname(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """Dotted name of a Name/Attribute chain with import aliases resolved (``np.load`` -> ``numpy.load``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """Findings for one Python source text. A file that does not parse is itself a finding."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        return [Finding(path, e.lineno or 0, "does not parse, cannot be checked", str(e.msg))]
    aliases = _aliases(tree)
    lines = source.splitlines()
    out: list[Finding] = []

    def add(node: ast.AST, rule: str) -> None:
        code = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else ""
        out.append(Finding(path, node.lineno, rule, code))

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {_qualname(b, aliases) for b in node.bases}
            if bases & UNPICKLER_CLASSES:
                methods = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                if "find_class" not in methods:
                    add(node, "Unpickler subclass without a restricting find_class")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _qualname(node.func, aliases)
        if name is None:
            continue
        if name == "torch.load":
            if not _is_const(_kw(node, "weights_only"), True):
                add(node, "torch.load without weights_only=True")
        elif name in UNPICKLING_CALLS:
            add(node, f"{name} unpickles arbitrary objects")
        elif name in UNPICKLER_CLASSES:
            add(node, f"unrestricted {name}")
        elif name == "numpy.load":
            ap = _kw(node, "allow_pickle")
            if ap is not None and not _is_const(ap, False):
                add(node, "numpy.load with allow_pickle not False")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _kw(node, "Loader")
            if loader is None and len(node.args) >= 2:
                loader = node.args[1]
            if loader is None or _qualname(loader, aliases) not in SAFE_YAML_LOADERS:
                add(node, f"{name} without a safe Loader (use yaml.safe_load)")
        elif name in UNSAFE_YAML_CALLS or name in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"):
            add(node, f"{name} constructs arbitrary objects")
    return sorted(out, key=lambda f: f.line)


def scan_tree(root: Path, dirs: tuple[str, ...] = SCANNED_DIRS) -> tuple[list[Finding], int]:
    """(findings, number of files scanned) over every ``*.py`` under ``root/dir`` for each dir."""
    findings: list[Finding] = []
    n = 0
    for d in dirs:
        for p in sorted((root / d).rglob("*.py")):
            if "__pycache__" in p.parts:
                continue
            n += 1
            findings += scan_source(p.read_text(encoding="utf-8", errors="replace"), str(p.relative_to(root)))
    return findings, n


# ---------------------------------------------------------------------------------------------------------------
# The scanner on planted sources
# ---------------------------------------------------------------------------------------------------------------
UNSAFE = {
    "torch-no-kw": ("import torch\nsd = torch.load('ckpt.pt')\n", "weights_only=True"),
    "torch-false": ("import torch\nsd = torch.load(p, map_location='cpu', weights_only=False)\n", "weights_only=True"),
    "torch-variable": ("import torch\nsd = torch.load(p, weights_only=flag)\n", "weights_only=True"),
    "torch-alias": ("import torch as th\nsd = th.load(p)\n", "weights_only=True"),
    "torch-from-import": ("from torch import load\nsd = load(p)\n", "weights_only=True"),
    "torch-in-function": ("def f(p):\n    import torch\n    return torch.load(p)\n", "weights_only=True"),
    "pickle-load": ("import pickle\nwith open(p, 'rb') as f:\n    d = pickle.load(f)\n", "pickle.load"),
    "pickle-loads": ("import pickle as pk\nd = pk.loads(b)\n", "pickle.loads"),
    "pickle-from-import": ("from pickle import loads\nd = loads(b)\n", "pickle.loads"),
    "pickle-unpickler": ("import pickle\nd = pickle.Unpickler(f).load()\n", "unrestricted pickle.Unpickler"),
    "unpickler-subclass-no-find-class": (
        "import pickle\nclass U(pickle.Unpickler):\n    def load(self):\n        return super().load()\n",
        "find_class",
    ),
    "pandas-read-pickle": ("import pandas as pd\ndf = pd.read_pickle(p)\n", "pandas.read_pickle"),
    "np-allow-pickle": ("import numpy as np\na = np.load(p, allow_pickle=True)\n", "allow_pickle"),
    "np-allow-pickle-var": ("from numpy import load\na = load(p, allow_pickle=ok)\n", "allow_pickle"),
    "yaml-load-bare": ("import yaml\nc = yaml.load(open(p))\n", "safe Loader"),
    "yaml-load-unsafe-loader": ("import yaml\nc = yaml.load(s, Loader=yaml.Loader)\n", "safe Loader"),
    "yaml-load-full-positional": ("import yaml\nc = yaml.load(s, yaml.FullLoader)\n", "safe Loader"),
    "yaml-unsafe-load": ("import yaml\nc = yaml.unsafe_load(s)\n", "constructs arbitrary objects"),
    "yaml-full-load": ("import yaml\nc = yaml.full_load(s)\n", "constructs arbitrary objects"),
    "syntax-error": ("def broken(:\n    pass\n", "does not parse"),
}

SAFE = {
    "torch-weights-only": "import torch\nsd = torch.load(p, map_location='cpu', weights_only=True)\n",
    "torch-save": "import torch\ntorch.save(sd, p)\n",
    "restricted-unpickler": (
        "import pickle\n"
        "class Restricted(pickle.Unpickler):\n"
        "    def find_class(self, module, name):\n"
        "        raise pickle.UnpicklingError(f'{module}.{name} not allowed')\n"
        "d = Restricted(f).load()\n"
    ),
    "np-default": "import numpy as np\na = np.load(p)\nb = np.load(p, allow_pickle=False, mmap_mode='r')\n",
    "yaml-safe": "import yaml\nc = yaml.safe_load(s)\nd = yaml.load(s, Loader=yaml.SafeLoader)\ne = yaml.load(s, yaml.CSafeLoader)\n",
    "comments-and-strings": "# torch.load(p) is banned\nmsg = 'never call pickle.loads(b) or yaml.load(s)'\n",
    "other-load-methods": "import json\nd = json.load(f)\nm = model.load(p)\nds = ray.data.read_parquet(p)\n",
}


@pytest.mark.parametrize("source, expected", list(UNSAFE.values()), ids=list(UNSAFE))
def test_scanner_flags_planted_unsafe_code(source, expected):
    findings = scan_source(source, "planted.py")
    assert len(findings) == 1 and expected in findings[0].rule, [str(f) for f in findings]


@pytest.mark.parametrize("source", list(SAFE.values()), ids=list(SAFE))
def test_scanner_accepts_safe_code(source):
    findings = scan_source(source, "planted.py")
    assert not findings, [str(f) for f in findings]


def test_scanner_reports_file_and_line(tmp_path):
    pkg = tmp_path / "macdiff_ray" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("import os\n\nimport torch\nx = torch.load('a.pt')\n")
    (pkg / "good.py").write_text("import torch\nx = torch.load('a.pt', weights_only=True)\n")
    findings, n = scan_tree(tmp_path, ("macdiff_ray", "experiments"))
    assert n == 2
    assert [str(f) for f in findings] == [
        "macdiff_ray/sub/bad.py:4: torch.load without weights_only=True: x = torch.load('a.pt')"
    ]


# ---------------------------------------------------------------------------------------------------------------
# The project itself
# ---------------------------------------------------------------------------------------------------------------
def test_project_sources_have_no_unsafe_deserialisation():
    findings, n = scan_tree(REPO)
    assert n > 0, f"no Python files found under {SCANNED_DIRS} in {REPO}"
    assert not findings, f"{len(findings)} unsafe deserialisation call(s) in {n} files:\n" + "\n".join(map(str, findings))
