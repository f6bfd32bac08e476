"""The paper's Tables 1-10 on one prepared dataset: what each needs, run resumably, printed beside the paper's values.

:func:`run_table` (``experiments/paper.py --table N``) runs what table N needs and writes ``OUTPUT/table_N.md`` and
``OUTPUT/table_N.json``. Everything it runs is an ordinary run directory of the project's own commands, so tables
share them and a second call (or another table) reuses what is done:

* pretraining variants under ``OUTPUT/pretrain/<variant>``: ``macdiff`` (the size preset's defaults) and the
  baselines (``mamp``, ``mae``, ``ddim``, ``mdm``, ``mdm_orig``: method presets), masking strategies
  (``mask_<strategy>``), ratios (``ratio_<r>``, loss over all tokens as ``configs/sweeps/mask_ratio.yaml``),
  schedules (``tau_<t>``, ``linear``) and decoder depths (``depth_<d>``), each with the same wall-clock budget
  (``budget_minutes``) and epoch cap; in this process (:func:`macdiff_ray.train.local.run_pretrain_local`) or, with
  ``ray_train``, on Ray Train;
* linear probes (per-joint head), fine-tunes (recipe ``auto``), semi-supervised fine-tunes with and without
  diffusion augmentation: the learning study's rows (:mod:`macdiff_ray.eval.study`), under ``OUTPUT/rows/``;
* decoder fine-tuning (``OUTPUT/decoder_finetune``), reconstruction and generation (``OUTPUT/generate/<row>``).

Our column names the data, preset, frame count and budget; the paper's columns are its published values
(:mod:`macdiff_ray.paper.published`, NTU / PKU). Reconstruction gaps are the paper's 10 / 20 / 40 of 120 frames
scaled to our frame count (the same share of the sequence); "1 body part" is the mean over the five parts. Table 3
needs a target dataset (``target_data``, ``target_benchmark``); without one the probe runs on the source data and
the column says so.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from macdiff_ray.config import absolute_paths, to_dict
from macdiff_ray.paper import published as P
from macdiff_ray.paper.runs import TABLES, PaperConfig, PaperRun, smoke_overrides, variant_overrides  # noqa: F401
from macdiff_ray.train.logging import join, write_json, write_text

# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------
def _pct(res: Optional[dict]) -> str:
    if res is None:
        return "—"
    v, sd = res.get("top1_last"), res.get("top1_last_std")
    if v is None:
        return "—"
    return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None and res.get("num_seeds", 1) > 1 else "")


def _paper(v: Any) -> str:
    return "—" if v is None else str(v)


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _accuracy_table(run: PaperRun, title: str, paper_cols: tuple, rows: list[tuple[str, Any, Callable[[], dict]]],
                    ours: str) -> tuple[str, list[dict]]:
    out_rows, records = [], []
    for label, paper_vals, measure in rows:
        res = measure()
        pv = paper_vals if isinstance(paper_vals, tuple) else (paper_vals,)
        out_rows.append([label] + [_paper(v) for v in pv] + [_pct(res)])
        records.append({"row": label, "paper": list(pv), "ours_top1_last": res.get("top1_last"),
                        "ours_top1_last_std": res.get("top1_last_std"), "ours_top1_best": res.get("top1_best")})
    header = ["method"] + [f"paper: {c}" for c in paper_cols] + [f"ours: {ours}"]
    return f"{title}\n\n" + _md(header, out_rows), records


def run_table(cfg: PaperConfig) -> dict:
    """Run (or resume) what table ``cfg.table`` needs; writes and returns ``OUTPUT/table_N.json``."""
    cfg = absolute_paths(cfg, "data_dir", "output", "target_data")
    t0 = time.perf_counter()
    run = PaperRun(cfg)
    ours = (f"{run.info['dataset']} {cfg.benchmark}, {cfg.preset}, {run.num_frames} frames, "
            f"{cfg.budget_minutes:g} min pretraining each" + (" (SMOKE TEST: numbers mean nothing)"
                                                               if cfg.smoke_test else ""))
    note = "Ours: last epoch, top-1 %, mean ± std over seeds where there are several."
    n = cfg.table
    if n == 1:
        md, rec = _accuracy_table(run, "Table 1: linear evaluation (per-joint linear probe)", P.T1_COLUMNS, [
            ("SkeletonMAE-style (mae)", P.T1["SkeletonMAE"], lambda: run.probe("mae")),
            ("MAMP (mamp)", P.T1["MAMP"], lambda: run.probe("mamp")),
            ("MacDiff", P.T1["MacDiff"], lambda: run.probe("macdiff"))], ours)
    elif n == 2:
        md, rec = _accuracy_table(run, "Table 2: supervised fine-tuning", P.T2_COLUMNS, [
            ("SkeletonMAE-style (mae)", P.T2["SkeletonMAE"], lambda: run.finetune("mae")),
            ("MAMP (mamp)", P.T2["MAMP"], lambda: run.finetune("mamp")),
            ("MacDiff", P.T2["MacDiff"], lambda: run.finetune("macdiff"))], ours)
    elif n == 3:
        target = (cfg.target_data, cfg.target_benchmark) if cfg.target_data else None
        where = (f"{cfg.benchmark} -> {cfg.target_benchmark}" if target else
                 f"{cfg.benchmark} -> {cfg.benchmark} (NO TARGET GIVEN: no transfer, the source data)")
        md, rec = _accuracy_table(run, f"Table 3: transfer, linear evaluation on the target ({where})", P.T3_COLUMNS, [
            ("SkeletonMAE-style (mae)", P.T3["SkeletonMAE"], lambda: run.probe("mae", data=target)),
            ("MAMP (mamp)", P.T3["MAMP"], lambda: run.probe("mamp", data=target)),
            ("MacDiff", P.T3["MacDiff"], lambda: run.probe("macdiff", data=target))], ours)
    elif n == 4:
        lam = {0.01: 2.0, 0.02: 0.5, 0.10: 0.25}  # paper Table 4 caption
        rows, rec = [], []
        for label, key, variant, aug in (("SkeletonMAE-style (mae)", "SkeletonMAE", "mae", False),
                                          ("MAMP (mamp)", "MAMP", "mamp", False),
                                          ("MacDiff w/o aug", "MacDiff w/o aug", "macdiff", False),
                                          ("MacDiff", "MacDiff", "macdiff", True)):
            ours_v = [run.finetune(variant, f, t_start=500 if aug else 0, ratio=lam[f] if aug else 0.0)
                      for f in P.T4_FRACTIONS]
            rows.append([label] + [_paper(v) for v in P.T4[key]] + [_pct(r) for r in ours_v])
            rec.append({"row": label, "paper": list(P.T4[key]), "ours_top1_last": [r.get("top1_last") for r in ours_v]})
        header = (["method"] + [f"paper: {c}" for c in P.T4_COLUMNS] +
                  [f"ours: {100 * f:g}%" for f in P.T4_FRACTIONS])
        md = (f"Table 4: semi-supervised fine-tuning (t_s 500, lambda 2.0 / 0.5 / 0.25); ours: {ours}\n\n"
              + _md(header, rows))
    elif n == 5:
        md, rec = _table5(run, ours)
    elif n == 6:
        md, rec = _table6(run, ours)
    elif n == 7:
        rows = [(s.replace("_", "-"), P.T7_STRATEGIES[s], lambda s=s: run.probe(f"mask_{s}"))
                for s in P.T7_STRATEGIES]
        md1, rec1 = _accuracy_table(run, "Table 7 (left): masking strategy, ratio 0.9, linear evaluation",
                                    ("NTU60 xsub",), rows, ours)
        rows = [(f"{100 * r:g}%", v, lambda r=r: run.probe(f"ratio_{r:g}")) for r, v in P.T7_RATIOS.items()]
        md2, rec2 = _accuracy_table(run, "Table 7 (right): masking ratio, random masking, diffusion loss over all "
                                    "tokens (defined at ratio 0), linear evaluation", ("NTU60 xsub",), rows, ours)
        md, rec = md1 + "\n\n" + md2, rec1 + rec2
    elif n == 8:
        rows = [(("linear" if t == "linear" else f"tau = {t:g}" + {1.0: " (inverse)", -1.0: " (cosine)"}.get(t, "")),
                 v, lambda t=t: run.probe("linear" if t == "linear" else f"tau_{t:g}")) for t, v in P.T8.items()]
        md, rec = _accuracy_table(run, "Table 8: noise schedule, linear evaluation", ("NTU60 xsub",), rows, ours)
    elif n == 9:
        rows = [(f"t_s = {t}", v, lambda t=t: run.finetune("macdiff", 0.01, t_start=t, ratio=2.0 if t else 0.0))
                for t, v in P.T9_TSTART.items()]
        md1, rec1 = _accuracy_table(run, "Table 9 (left): starting timestep t_s, 1% labels, lambda 2.0",
                                    ("semi 1%",), rows, ours)
        rows = [(f"lambda = {lam:g}", v, lambda lam=lam: run.finetune("macdiff", 0.01, t_start=500, ratio=lam))
                for lam, (v, _) in P.T9_LAMBDA.items()]
        md2, rec2 = _accuracy_table(run, "Table 9 (middle): augment-to-real ratio lambda, 1% labels, t_s 500",
                                    ("semi 1%",), rows, ours)
        rows = [(f"lambda = {lam:g}", v, lambda lam=lam: run.finetune("macdiff", 0.10, t_start=500, ratio=lam))
                for lam, (_, v) in P.T9_LAMBDA.items() if v is not None]
        md3, rec3 = _accuracy_table(run, "Table 9 (right): lambda, 10% labels, t_s 500", ("semi 10%",), rows, ours)
        md, rec = "\n\n".join((md1, md2, md3)), rec1 + rec2 + rec3
    else:
        rows = [(f"depth {d}" + (" (our preset's)" if d == run.dec_depth else ""), v,
                 lambda d=d: run.probe(f"depth_{d}")) for d, v in P.T10.items()]
        md, rec = _accuracy_table(run, "Table 10: decoder depth, linear evaluation", ("NTU60 xsub",), rows, ours)
    text = f"{md}\n" if n in (5, 6) else f"{md}\n\n{note}\n"  # 5, 6: millimetres and generation metrics
    write_text(join(cfg.output, f"table_{n}.md"), text)
    result = {"table": n, "config": to_dict(cfg), "ours": ours, "num_frames": run.num_frames, "rows": rec,
              "markdown": text, "wall_time_s": time.perf_counter() - t0}
    write_json(join(cfg.output, f"table_{n}.json"), result)
    return result


def _mm(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.1f}"


def _table5(run: PaperRun, ours: str) -> tuple[str, list[dict]]:
    """Reconstruction: SkeletonMAE-style, DDIM, MacDiff without and with the fine-tuned decoder, linear interp."""
    specs = [("SkeletonMAE-style (mae)", "SkeletonMAE", lambda: run.pretrain("mae")[0], "mae"),
             ("DDIM (ddim)", "DDIM", lambda: run.pretrain("ddim")[0], "ddim"),
             ("MacDiff, pretrained decoder (visible condition + guidance)", None, lambda: run.pretrain("macdiff")[0],
              "macdiff"),
             ("MacDiff, fine-tuned decoder (paper's protocol)", "MacDiff", run.decoder_finetuned, "macdiff_ft")]
    rows, rec, last = [], [], None
    for label, key, ckpt, name in specs:
        res = run.reconstruct(name, ckpt())
        last = res
        frames = [r for r in res["rows"] if r["name"].startswith("frames-")]
        parts = [r for r in res["rows"] if r["name"].startswith("part-")]
        vals = [r["macdiff_mm"] for r in frames] + [sum(r["macdiff_mm"] for r in parts) / len(parts)]
        nat = [r.get("macdiff_native_mm") for r in frames] + [
            sum(r["macdiff_native_mm"] for r in parts) / len(parts) if parts[0].get("macdiff_native_mm") else None]
        paper = P.T5.get(key, (None,) * 4) if key else (None,) * 4
        rows.append([label] + [_paper(v) for v in paper] + [_mm(v) for v in vals] + [_mm(v) for v in nat])
        rec.append({"row": label, "paper": list(paper), "ours_mm": vals, "ours_native_mm": nat,
                    "protocol": res["protocol"]["label"]})
    frames = [r for r in last["rows"] if r["name"].startswith("frames-")]
    li = [r["linear_interp_mm"] for r in frames]
    li_n = [r.get("linear_interp_native_mm") for r in frames]
    rows.append(["linear interpolation (no model)"] + ["—"] * 4 + [_mm(v) for v in li] + ["—"] + [_mm(v) for v in li_n]
                + ["—"])
    parts = [r for r in last["rows"] if r["name"].startswith("part-")]
    mp = [r["mean_pose_mm"] for r in frames] + [sum(r["mean_pose_mm"] for r in parts) / len(parts)]
    rows.append(["training mean pose (no model)"] + ["—"] * 4 + [_mm(v) for v in mp] + ["—"] * 4)
    rec.append({"row": "linear interpolation (no model)", "ours_mm": li, "ours_native_mm": li_n})
    rec.append({"row": "training mean pose (no model)", "ours_mm": mp})
    gaps = [r["name"][len("frames-"):] for r in frames]
    native = [_mm(r.get("native_frames_occluded")) for r in frames]
    header = (["method"] + [f"paper: {c}" for c in P.T5_COLUMNS] +
              [f"ours: {g} of {run.num_frames} frames" for g in gaps] + ["ours: 1 body part (mean of 5)"] +
              [f"ours, native frames: {g} of {run.num_frames} (~{nf} native)" for g, nf in zip(gaps, native)] +
              ["ours, native frames: 1 body part"])
    title = (f"Table 5: motion reconstruction, MPJPE (paper: as printed, NTU60 xsub; ours: mm over the occluded "
             f"joints). Ours: {ours}")
    return f"{title}\n\n" + _md(header, rows), rec


def _table6(run: PaperRun, ours: str) -> tuple[str, list[dict]]:
    """Generation: real-vs-real, MDM-orig, MDM, DDIM, MacDiff, + fine-tune; features of a fine-tuned classifier."""
    specs = [("MDM-orig (mdm_orig)", "MDM-orig", lambda: run.pretrain("mdm_orig")[0], "mdm_orig", "x0"),
             ("MDM (mdm)", "MDM", lambda: run.pretrain("mdm")[0], "mdm", "x0"),
             ("DDIM (ddim)", "DDIM", lambda: run.pretrain("ddim")[0], "ddim", "eps"),
             ("MacDiff", "MacDiff", lambda: run.pretrain("macdiff")[0], "macdiff", "eps"),
             ("+ fine-tune", "+ fine-tune", run.decoder_finetuned, "macdiff_ft", "eps")]
    rows, rec = [], []

    def cells(m: dict) -> list[str]:
        return [f"{m['fid']:.3f}", f"{m['kid_mean']:.4f}", f"{m['diversity_fake']:.3f}", f"{m['precision']:.3f}",
                f"{m['recall']:.3f}"]

    real = None
    for label, key, ckpt, name, pred in specs:
        res = run.sample(name, ckpt())
        m = res["rows"][0]["metrics"]  # generated vs all real
        real = res["rows"][2]["metrics"]  # real half A vs real half B (the same in every run)
        rows.append([label, pred] + [_paper(v) for v in P.T6[key]] + cells(m))
        rec.append({"row": label, "paper": list(P.T6[key]), "ours": {k: m[k] for k in
                                                                      ("fid", "kid_mean", "diversity_fake",
                                                                       "precision", "recall")}})
    rows.insert(0, ["Real data (half A vs half B)", "-"] + [_paper(v) for v in P.T6["Real data"]] + cells(real))
    rec.insert(0, {"row": "Real data (half A vs half B)", "paper": list(P.T6["Real data"]), "ours": real})
    header = (["method", "prediction"] + [f"paper: {c}" for c in P.T6_COLUMNS] + [f"ours: {c}" for c in P.T6_COLUMNS])
    title = (f"Table 6: unconditional generation (features of a fine-tuned MacDiff classifier on the same data). "
             f"Ours: {ours}")
    return f"{title}\n\n" + _md(header, rows), rec


def run_all(cfg: PaperConfig, tables: tuple[int, ...] = TABLES) -> list[dict]:
    """Every table in ``tables`` into the same OUTPUT (they share runs)."""
    from macdiff_ray.config import replace

    return [run_table(replace(cfg, table=n)) for n in tables]


__all__ = ["PaperConfig", "PaperRun", "TABLES", "run_table", "run_all", "smoke_overrides", "variant_overrides"]
