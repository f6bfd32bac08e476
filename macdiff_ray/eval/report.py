"""Gather run directories' ``results.json`` into markdown tables shaped like the paper's Tables 1-4.

- Table 1 (linear evaluation) and Table 2 (fine-tuning): rows = method, columns = ``dataset benchmark``.
- Table 3 (transfer, linear probe): rows = method, columns = ``source -> target``.
- Table 4 (semi-supervised fine-tuning): rows = method, columns = ``benchmark p%``.
Every cell is ``top-1 last / top-1 best`` in percent (``± std`` over seeds when present); a final table lists every
run with all four figures. Last = final epoch; best = maximum over epochs on the test split (best-on-test).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

LEGEND = ("Cells: top-1 accuracy (%), **last epoch / best epoch**. *Last* is the final epoch; *best* is the "
          "maximum over evaluated epochs on the test split (best-on-test model selection, as the released code "
          "reports). kNN has no epochs (last = best). ± is the sample std over seeds.")


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """``results.json`` files: each path may be a results file, a run dir, or a folder of run dirs (one level;
    a multi-seed run's aggregate hides its ``seed_*`` sub-runs)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif (p / "results.json").is_file():
            out.append(p / "results.json")
        elif p.is_dir():
            out.extend(sorted(c / "results.json" for c in p.iterdir() if (c / "results.json").is_file()))
        else:
            raise FileNotFoundError(f"report: no results.json at {p}")
    if not out:
        raise FileNotFoundError(f"report: no results.json under {list(paths)}")
    return out


def load_runs(paths: Iterable[str | Path]) -> list[dict]:
    runs = []
    for f in find_results(paths):
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
        missing = [k for k in ("top1_last", "top1_best", "top5_last", "top5_best") if k not in r]
        if missing:
            raise ValueError(f"{f}: results.json lacks {missing}; not an evaluation run")
        r["_path"] = str(f)
        runs.append(r)
    return runs


def _pct(r: dict, key: str) -> str:
    v = r[key]
    sd = r.get(f"{key}_std")
    return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None and r.get("num_seeds", 1) > 1 else "")


def cell(r: dict) -> str:
    return f"{_pct(r, 'top1_last')} / {_pct(r, 'top1_best')}"


def _kind(r: dict) -> str:
    proto = r.get("protocol", "linear")
    src = r.get("source") or {}
    pre = (src.get("pretrain_data") or {}).get("dataset")
    if proto == "finetune" and (r.get("data") or {}).get("labeled_fraction") is not None:
        return "semi"
    if proto in ("linear", "knn") and pre and pre != r["data"]["dataset"]:
        return "transfer"
    return proto


def _column(r: dict, kind: str) -> str:
    d = r["data"]
    if kind == "transfer":
        return f"{r['source']['pretrain_data']['dataset']} → {d['dataset']} {d['benchmark']}"
    if kind == "semi":
        return f"{d['benchmark']} {100 * d['labeled_fraction']:g}%"
    return f"{d['dataset']} {d['benchmark']}"


def _table(title: str, runs: list[dict], kind: str) -> Optional[str]:
    if not runs:
        return None
    cols: list[str] = []
    rows: dict[str, dict[str, str]] = {}
    for r in runs:
        c = _column(r, kind)
        if c not in cols:
            cols.append(c)
        rows.setdefault(r.get("label") or "?", {})[c] = cell(r)
    lines = [f"### {title}", "", "| Method | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(c, "–") for c in cols) + " |")
    return "\n".join(lines)


def build_report(runs: list[dict]) -> str:
    """Markdown with Tables 1-4 (those that have runs), the kNN table and the all-runs table."""
    groups: dict[str, list[dict]] = {"linear": [], "finetune": [], "transfer": [], "semi": [], "knn": []}
    for r in runs:
        groups.setdefault(_kind(r), []).append(r)
    parts = ["## Evaluation results", "", LEGEND]
    for title, kind in (("Table 1. Linear evaluation", "linear"), ("Table 2. Fine-tuning", "finetune"),
                        ("Table 3. Transfer (linear probe on the target)", "transfer"),
                        ("Table 4. Semi-supervised fine-tuning", "semi"), ("kNN probe (proxy)", "knn")):
        t = _table(title, groups.get(kind, []), kind)
        if t:
            parts += ["", t]
    parts += ["", "### All runs", "",
              "| Method | protocol | data | top-1 last | top-1 best (epoch) | top-5 last | top-5 best (epoch) | run |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        d = r["data"]
        frac = d.get("labeled_fraction")
        parts.append(
            f"| {r.get('label', '?')} | {r.get('protocol', '?')} | {d['dataset']} {d['benchmark']}"
            f"{f' ({100 * frac:g}% labels)' if frac else ''} | {_pct(r, 'top1_last')} | {_pct(r, 'top1_best')}"
            f"{' (' + str(r['best_epoch_top1']) + ')' if 'best_epoch_top1' in r else ''} | {_pct(r, 'top5_last')} | "
            f"{_pct(r, 'top5_best')}{' (' + str(r['best_epoch_top5']) + ')' if 'best_epoch_top5' in r else ''} | "
            f"`{Path(r['_path']).parent.name}` |")
    return "\n".join(parts) + "\n"
