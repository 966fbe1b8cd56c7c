"""The learning-forgetting frontier: each run's adapter at scales between 0 and 1 (report stage).

A scale point `<run>@<s>` is the run's adapter with its LoRA update multiplied by s (weights
W + s·ΔW; `modeling.load_model(adapter_scale=s)`), evaluated by the stages `predict_scaled`,
`score_scaled` and `mmlu_scaled` of dvc.yaml for every s in params.yaml `adapter_scales`.
Scale 0 is the base model, scale 1 the run itself, so each run gives a curve from the origin
(no gain, no forgetting) to its own point. Every point is compared with the base model on the
same questions, as the runs are (paired CI, exact McNemar, minimum detectable difference).

Files of a point: data/scores/<run>@<s>.jsonl, data/mmlu/<run>@<s>.jsonl and
metrics/mmlu/<run>@<s>.json, where <s> is written as DVC writes `${item.scale}` (Python's
`str(float)`: 0.25, 0.5, 0.75).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import read_json
from .report.analysis import _ci, _r, compare
from .report.inputs import DEBIASED, MMLU_BASE, REFERENCE, Inputs, Paths, _check_debiased_fields, _read_rows, _require
from .report.markdown import MDE_NOTE, _ci_pct, _mde_cell, _p, _pct, _pp, _run_desc, _table, run_label
from .report.summary import _cmp_flat

PARAM = "adapter_scales"


def scale_tag(scale: float) -> str:
    """The scale as it appears in file and stage names (DVC interpolates `${item.scale}` with str())."""
    return str(float(scale))


def point_name(run: str, scale: float) -> str:
    return f"{run}@{scale_tag(scale)}"


def scales_from_params(params: dict) -> list[float]:
    """params.yaml `adapter_scales`: numbers strictly between 0 and 1, no repeats; sorted."""
    raw = params.get(PARAM, [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UserError(f"params: `{PARAM}` must be a list of numbers between 0 and 1, got {raw!r}")
    out: list[float] = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
            raise UserError(f"params: `{PARAM}` entries must be numbers strictly between 0 and 1 "
                            f"(0 is the base model, 1 the run itself), got {v!r}")
        if float(v) in out:
            raise UserError(f"params: `{PARAM}` lists {v!r} twice")
        out.append(float(v))
    return sorted(out)


@dataclass
class Scaled:
    """The per-question rows of every scale point, keyed by point name (`run1@0.5`)."""
    scales: list[float]
    points: dict[str, tuple[str, float]] = field(default_factory=dict)     # name -> (run, scale)
    scores: dict[str, dict[str, dict]] = field(default_factory=dict)
    mmlu: dict[str, dict[str, dict]] = field(default_factory=dict)
    mmlu_meta: dict[str, dict] = field(default_factory=dict)


def load_scaled(params: dict, runs: dict[str, dict], paths: Paths) -> Scaled:
    scales = scales_from_params(params)
    bad = [r for r in runs if "@" in r]
    if bad:
        raise UserError(f"params: run name(s) {', '.join(bad)} contain `@`, which names adapter-scale points")
    sc = Scaled(scales)
    for run in runs:
        for s in scales:
            name = point_name(run, s)
            sc.points[name] = (run, s)
            sc.scores[name] = _read_rows(_require(paths.scores / f"{name}.jsonl", "scores", name),
                                         ("id", "exec_match", "error", "exact_match"), ("exec_match", "exact_match"))
            rpath = _require(paths.mmlu_rows / f"{name}.jsonl", "mmlu", name)
            sc.mmlu[name] = _read_rows(rpath, ("id", "subject", "answer", "pred", "correct"), ("correct",))
            _check_debiased_fields(sc.mmlu[name], rpath, name)
            meta = read_json(_require(paths.mmlu_metrics / f"{name}.json", "mmlu", name))
            if not isinstance(meta, dict):
                raise UserError(f"{paths.mmlu_metrics / (name + '.json')}: expected a JSON object")
            sc.mmlu_meta[name] = meta
    return sc


# --------------------------------------------------------------------------------------------
# analysis

def _mmlu_point(inp: Inputs, rows: dict[str, dict], name: str, key: str) -> dict:
    s = inp.settings
    ci = _ci([r[key] for r in rows.values()], s)
    base = {i: r[key] for i, r in inp.mmlu[MMLU_BASE].items()}
    c = compare(base, {i: r[key] for i, r in rows.items()}, f"data/mmlu/{MMLU_BASE}.jsonl",
                f"data/mmlu/{name}.jsonl", s)
    return {"accuracy": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": len(rows), "compare": c}


def _scaled_point(inp: Inputs, mm: dict, name: str, run: str, scale: float) -> dict:
    s, sc = inp.settings, inp.scaled
    meta = sc.mmlu_meta[name]
    if (meta.get("method", "unknown"), meta.get("k_shot")) != (mm["method"], mm["k_shot"]):
        raise UserError(f"metrics/mmlu/{name}.json: scored with {meta.get('method')}/{meta.get('k_shot')}-shot but "
                        f"the base model with {mm['method']}/{mm['k_shot']}-shot; rerun "
                        f"`dvc repro mmlu_scaled@{run}-{scale_tag(scale)}`")
    rows = sc.scores[name]
    ci = _ci([r["exec_match"] for r in rows.values()], s)
    ref = {i: r["exec_match"] for i, r in inp.scores[REFERENCE].items()}
    e = compare(ref, {i: r["exec_match"] for i, r in rows.items()}, f"data/scores/{REFERENCE}.jsonl",
                f"data/scores/{name}.jsonl", s)
    point = {"scale": scale, "name": name,
             "spider": {"ex": ci.estimate, "ex_ci_low": ci.low, "ex_ci_high": ci.high, "n": len(rows),
                        "exact_match": sum(r["exact_match"] for r in rows.values()) / len(rows)},
             "ex_compare": e, "mmlu": _mmlu_point(inp, sc.mmlu[name], name, "correct"), "debiased": None}
    if mm["debiased"] is not None:
        if all("debiased_correct" in r for r in sc.mmlu[name].values()):
            point["debiased"] = _mmlu_point(inp, sc.mmlu[name], name, "debiased_correct")
        else:
            inp.warnings.append(f"data/mmlu/{name}.jsonl has no debiased outcomes: {name} is compared under "
                                f"{mm['method']} only")
    return point


def _end_point(sp: dict, mm: dict, model: str, mmlu_model: str, scale: float) -> dict:
    """Scale 0 (the base models) or 1 (the run) from the report's own analysis."""
    m, q = sp["models"][model], mm["models"][mmlu_model]
    point = {"scale": scale, "name": model,
             "spider": {k: m[k] for k in ("ex", "ex_ci_low", "ex_ci_high", "n", "exact_match")},
             "ex_compare": sp["compare"].get(model),
             "mmlu": {**{k: q[k] for k in ("accuracy", "ci_low", "ci_high", "n")},
                      "compare": mm["compare"].get(mmlu_model)},
             "debiased": None}
    deb = mm["debiased"]
    if deb is not None and mmlu_model in deb["models"]:
        d = deb["models"][mmlu_model]
        point["debiased"] = {**{k: d[k] for k in ("accuracy", "ci_low", "ci_high", "n")},
                             "compare": deb["compare"].get(mmlu_model)}
    return point


def analyse(inp: Inputs, sp: dict, mm: dict) -> dict:
    """{"scales": [...], "curves": {run: [points from scale 0 (base) to 1 (the run)]}}."""
    scales = inp.scaled.scales if inp.scaled is not None else []
    curves = {}
    for run in inp.runs:
        pts = [_end_point(sp, mm, REFERENCE, MMLU_BASE, 0.0)]
        pts += [_scaled_point(inp, mm, point_name(run, s), run, s) for s in scales]
        pts.append(_end_point(sp, mm, run, run, 1.0))
        curves[run] = pts
    return {"scales": scales, "curves": curves}


# --------------------------------------------------------------------------------------------
# summary.json, report.md, plot data

def summary_points(fr: dict, run: str) -> dict:
    """summary.json `runs.<run>.scales`: {"0.5": {...}} for the scale points strictly between 0 and 1."""
    out = {}
    for p in fr["curves"][run][1:-1]:
        sp, q, d = p["spider"], p["mmlu"], p["debiased"]
        flat: dict[str, Any] = {"scale": p["scale"], "ex": _r(sp["ex"]), "ex_ci_low": _r(sp["ex_ci_low"]),
                                "ex_ci_high": _r(sp["ex_ci_high"]), "exact_match": _r(sp["exact_match"]),
                                "n": sp["n"], **_cmp_flat("ex", p["ex_compare"]),
                                "mmlu_accuracy": _r(q["accuracy"]), "mmlu_ci_low": _r(q["ci_low"]),
                                "mmlu_ci_high": _r(q["ci_high"]), "mmlu_n": q["n"], **_cmp_flat("mmlu", q["compare"])}
        if d is not None:
            flat.update({"mmlu_debiased_accuracy": _r(d["accuracy"]), "mmlu_debiased_ci_low": _r(d["ci_low"]),
                         "mmlu_debiased_ci_high": _r(d["ci_high"]), **_cmp_flat("mmlu_debiased", d["compare"])})
        out[scale_tag(p["scale"])] = flat
    return out


def _mde(c: dict | None) -> str:
    return "" if c is None else _mde_cell(c)


def _change(c: dict | None) -> str:
    if c is None:
        return "reference"
    return f"{_pp(c['change_pp'])} [{c['ci_low_pp']:+.1f}, {c['ci_high_pp']:+.1f}]"


def markdown(inp: Inputs, fr: dict, mm: dict) -> list[str]:
    cl = inp.settings.cl
    pw = f"{100 * inp.settings.power:g}%"
    deb = mm["debiased"] is not None
    scales = ", ".join(f"{s:g}" for s in fr["scales"]) or "none"
    L = ["## Learning-forgetting frontier (adapter scale)", "",
         f"Each run's adapter with its LoRA update multiplied by a scale s (weights W + s·ΔW, no retraining; "
         f"peft `rescale_adapter_scale`, WiSE-FT interpolation): s = 0 is the base model, s = 1 the run. "
         f"Scales evaluated between them (params.yaml `{PARAM}`): {scales}. Changes are against the base model "
         f"on the same questions (paired {cl} CI and exact McNemar p); detectable: with {pw} power at the "
         f"{100 * (1 - inp.settings.confidence):g}% level.",
         ""]
    header = ["run", "scale", f"Spider EX [{cl} CI]", "EX vs base zero-shot (pp)", "McNemar p", "detectable",
              f"MMLU {mm['method']} [{cl} CI]", "MMLU vs base (pp)", "McNemar p", "detectable"]
    if deb:
        header += [f"MMLU {DEBIASED} vs base (pp)", "McNemar p"]
    rows = []
    for i, (run, pts) in enumerate(fr["curves"].items()):
        for p in pts if i == 0 else pts[1:]:
            e, q, d = p["ex_compare"], p["mmlu"]["compare"], (p["debiased"] or {}).get("compare")
            label = "base" if p["scale"] == 0 else run
            row = [label, f"{p['scale']:g}",
                   f"{_pct(p['spider']['ex'])} {_ci_pct(p['spider']['ex_ci_low'], p['spider']['ex_ci_high'])}",
                   _change(e), "" if e is None else _p(e["mcnemar_p"]), _mde(e),
                   f"{_pct(p['mmlu']['accuracy'])} {_ci_pct(p['mmlu']['ci_low'], p['mmlu']['ci_high'])}",
                   _change(q), "" if q is None else _p(q["mcnemar_p"]), _mde(q)]
            if deb:
                row += ["reference" if p["scale"] == 0 else ("—" if d is None else _change(d)),
                        "" if d is None else _p(d["mcnemar_p"])]
            rows.append(row)
    L += _table(header, rows)
    L += ["Runs: " + "; ".join(f"{run} ({_run_desc(ov)})" for run, ov in inp.runs.items()) + ". " + MDE_NOTE, ""]
    return L


def plot_rows(fr: dict, mm: dict) -> list[dict]:
    """metrics/plots/tradeoff.json: one row per (run, scale), scale 0 (base, the origin) to 1 (the run)."""
    rows = []
    for run, pts in fr["curves"].items():
        for p in pts:
            e, q = p["ex_compare"], p["mmlu"]["compare"]
            row = {"run": run, "scale": p["scale"], "model": p["name"], **_xy(q, "mmlu_change_pp", "mmlu"),
                   **_xy(e, "ex_gain_pp", "ex"), "mmlu_method": mm["method"]}
            if p["debiased"] is not None:
                row.update(_xy(p["debiased"]["compare"], "mmlu_debiased_change_pp", "mmlu_debiased"))
            rows.append(row)
    return rows


def _xy(c: dict | None, key: str, prefix: str) -> dict:
    if c is None:        # the base model against itself: the origin, no interval
        return {key: 0.0, f"{prefix}_ci_low_pp": 0.0, f"{prefix}_ci_high_pp": 0.0, f"{prefix}_mcnemar_p": 1.0,
                f"{prefix}_mde_pp": None}
    return {key: _r(c["change_pp"]), f"{prefix}_ci_low_pp": _r(c["ci_low_pp"]),
            f"{prefix}_ci_high_pp": _r(c["ci_high_pp"]), f"{prefix}_mcnemar_p": c["mcnemar_p"],
            f"{prefix}_mde_pp": _r(c["mde_pp"])}


def _draw_curves(ax, inp: Inputs, rows: list[dict], colors: list, key: str, ci: str) -> list[float]:
    """One panel: a curve per run from the origin through its scale points, paired CIs as error bars
    (thin at the scale points, thick at the run). Returns the x extents drawn."""
    xs = [0.0]
    for i, run in enumerate(inp.runs):
        col = colors[i % len(colors)]
        pts = [r for r in rows if r["run"] == run]
        ax.plot([r[key] for r in pts], [r["ex_gain_pp"] for r in pts], "-", color=col, lw=1.6, zorder=2,
                label=f"{run} ({run_label(inp.runs[run])})")
        for r in pts[1:]:
            big = r["scale"] == 1.0
            x, y = r[key], r["ex_gain_pp"]
            ax.errorbar([x], [y], xerr=[[x - r[f"{ci}_ci_low_pp"]], [r[f"{ci}_ci_high_pp"] - x]],
                        yerr=[[y - r["ex_ci_low_pp"]], [r["ex_ci_high_pp"] - y]], fmt="o", ms=8 if big else 4,
                        capsize=3 if big else 0, lw=1.1 if big else 0.5, color=col, alpha=1.0 if big else 0.6, zorder=3)
            if big:
                ax.annotate(run, (x, y), textcoords="offset points", xytext=(6, 5), color=col, fontsize=10,
                            weight="bold")
            xs += [r[f"{ci}_ci_low_pp"], r[f"{ci}_ci_high_pp"]]
    ax.plot([0], [0], "s", color="0.2", ms=7, zorder=4)
    ax.annotate("base (s = 0)", (0, 0), textcoords="offset points", xytext=(-6, -13), ha="right", fontsize=8,
                color="0.2")
    ax.axhline(0, color="0.3", lw=1)
    ax.axvline(0, color="0.3", lw=1)
    ax.text(0.98, 0.98, "learns SQL,\nkeeps MMLU", transform=ax.transAxes, ha="right", va="top", color="0.5",
            fontsize=8)
    ax.text(0.02, 0.98, "learns SQL,\nforgets MMLU", transform=ax.transAxes, ha="left", va="top", color="0.5",
            fontsize=8)
    ax.grid(alpha=0.3)
    return xs


def render_tradeoff(inp: Inputs, fr: dict, mm: dict, n_spider: int, out: Path) -> Path:
    """metrics/plots/tradeoff.png: a curve per run from the base model (origin, scale 0) through its
    scale points to the run (scale 1, large marker), paired CIs as error bars; MMLU under the
    report's method on the left and, when every point carries it, under the debiased method on the
    right (same Spider axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report.plots import _save

    rows = plot_rows(fr, mm)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [("mmlu_change_pp", "mmlu", mm["method"])]
    if rows and all("mmlu_debiased_change_pp" in r for r in rows):
        panels.append(("mmlu_debiased_change_pp", "mmlu_debiased", DEBIASED))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 0.6, 6.4), sharey=True, squeeze=False)
    xs = []
    for ax, (key, ci, method) in zip(axes[0], panels):
        xs += _draw_curves(ax, inp, rows, colors, key, ci)
        ax.set_xlabel(f"Change in MMLU accuracy vs base (pp), {method}, {mm['k_shot']}-shot")
    ys = [0.0] + [r["ex_ci_low_pp"] for r in rows] + [r["ex_ci_high_pp"] for r in rows]
    xm = max(1.0, *map(abs, xs)) * 1.12
    span = max(1.0, max(ys) - min(ys))
    for ax in axes[0]:
        ax.set_xlim(-xm, xm)
        ax.set_ylim(min(ys) - 0.08 * span, max(ys) + 0.12 * span)
    axes[0][0].set_ylabel("Gain in Spider execution accuracy vs base zero-shot (pp)")
    scales = ", ".join(f"{s:g}" for s in fr["scales"])
    fig.suptitle("Learning vs forgetting: each run's adapter scaled from 0 (base) to 1"
                 + (f" (points at {scales})" if scales else "")
                 + f"\nbars: paired bootstrap {inp.settings.cl} CIs; n = {n_spider} Spider, "
                   f"{mm['models'][MMLU_BASE]['n']} MMLU questions", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8.5, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / 3), 1, 1))
    path = out / "tradeoff.png"
    _save(fig, path)
    plt.close(fig)
    return path
