"""Report plots: the PNG figures under plots/ and the data behind them (plots/*.json for
`dvc plots show/diff`). The tradeoff figure, a curve per run over its adapter scales, is drawn by
`sqltradeoff.frontier.render_tradeoff`; the others here. matplotlib is imported only when drawing
(Agg backend); figures are written atomically (`io.atomic_write_bytes`).
"""
from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes
from .analysis import _r
from .inputs import CHANCE, REFERENCE, Inputs
from .markdown import run_label


def _save(fig, path: Path) -> None:
    buf = BytesIO()
    fig.savefig(buf, dpi=130, bbox_inches="tight", format="png")
    atomic_write_bytes(path, buf.getvalue())


def plot_data(inp: Inputs, sp: dict, mm: dict, fr: dict | None = None) -> dict[str, list[dict]]:
    from .. import frontier
    trade = frontier.plot_rows(fr if fr is not None else frontier.analyse(inp, sp, mm), mm)
    hard = [{"model": name, "hardness": h, "label": f"{h} / {name}", "ex_pct": _r(100 * c["ex"]),
             "ci_low_pct": _r(100 * c["ci_low"]), "ci_high_pct": _r(100 * c["ci_high"]), "n": c["n"]}
            for h in sp["levels"] for name, m in sp["models"].items()
            for c in [m["by_hardness"].get(h)] if c is not None]
    subj = []
    for sub in [*mm["subjects"], "overall"]:
        for name, m in mm["models"].items():
            c = m if sub == "overall" else m["by_subject"].get(sub)
            if c is not None:
                subj.append({"model": name, "subject": sub, "label": f"{sub} / {name}",
                             "accuracy_pct": _r(100 * c["accuracy"]), "n": c["n"]})
    steps = sorted({s for t in inp.train.values() for s in t["steps"]})
    loss = []
    for st in steps:
        row: dict[str, Any] = {"step": st}
        for run in inp.runs:   # every run a column (null where not logged) so a fixed `y` list always resolves
            d = dict(zip(inp.train[run]["steps"], inp.train[run]["loss"])) if run in inp.train else {}
            row[run] = _r(d.get(st))
        loss.append(row)
    return {"tradeoff": trade, "ex_by_hardness": hard, "mmlu_by_subject": subj, "train_loss": loss}


def _grouped_bars(ax, colors, series: list[tuple[str, list[tuple[float, float, float] | None]]]) -> None:
    """One bar group per x position, one bar per series, in %, with CI error bars and value labels.

    `series`: (label, cells) with one cell per group: (value, ci_low, ci_high) as fractions, or None.
    """
    width = 0.8 / len(series)
    for j, (label, cells) in enumerate(series):
        xs_, hs, lo, hi = [], [], [], []
        for i, cell in enumerate(cells):
            if cell is None:
                continue
            value, low, high = cell
            xs_.append(i + (j - (len(series) - 1) / 2) * width)
            hs.append(100 * value)
            lo.append(100 * (value - low))
            hi.append(100 * (high - value))
        bars = ax.bar(xs_, hs, width * 0.95, yerr=[lo, hi], capsize=3, label=label,
                      color=colors[j % len(colors)], error_kw={"lw": 1, "ecolor": "0.25"})
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2, color="0.2")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finish(plt, fig, path: Path) -> Path:
    _save(fig, path)
    plt.close(fig)
    return path


def plot_ex_by_hardness(sp: dict, cl: str, colors: list, path: Path) -> Path:
    """plots/ex_by_hardness.png: EX per hardness level, a bar per model with its bootstrap CI."""
    plt = _pyplot()
    models = list(sp["models"])
    levels = sp["levels"]
    fig, ax = plt.subplots(figsize=(max(7.5, 1.9 * len(levels) + 0.6 * len(models)), 5))
    _grouped_bars(ax, colors, [
        (name, [(c["ex"], c["ci_low"], c["ci_high"]) if (c := sp["models"][name]["by_hardness"].get(h)) else None
                for h in levels])
        for name in models])
    counts = {h: sp["models"][REFERENCE]["by_hardness"].get(h, {}).get("n", 0) for h in levels}
    ax.set_xticks(range(len(levels)), [f"{h}\n(n={counts[h]})" for h in levels])
    ax.set_ylabel("Execution accuracy (%)")
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"Spider execution accuracy by hardness ({cl} bootstrap CIs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncol=min(4, len(models)))
    return _finish(plt, fig, path)


def plot_mmlu_by_subject(mm: dict, cl: str, colors: list, path: Path) -> Path:
    """plots/mmlu_by_subject.png: MMLU accuracy per subject and overall, a bar per model, chance as a line."""
    plt = _pyplot()
    mmodels = list(mm["models"])
    subs = [*mm["subjects"], "overall"]
    fig, ax = plt.subplots(figsize=(max(7.5, 2.2 * len(subs)), 5))
    series = []
    for name in mmodels:
        m = mm["models"][name]
        cells = [m if sub == "overall" else m["by_subject"].get(sub) for sub in subs]
        series.append((name, [(c["accuracy"], c["ci_low"], c["ci_high"]) if c else None for c in cells]))
    _grouped_bars(ax, colors, series)
    ax.axhline(100 * CHANCE, color="crimson", ls="--", lw=1.2, label="chance (25%)")
    ax.set_xticks(range(len(subs)), [s.replace("_", " ").replace("high school ", "HS ") for s in subs])
    ax.set_ylabel("MMLU accuracy (%)")
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"MMLU accuracy by subject ({mm['method']}, {mm['k_shot']}-shot; {cl} bootstrap CIs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncol=min(4, len(mmodels) + 1))
    return _finish(plt, fig, path)


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` values (the first ones over what there is so far)."""
    import numpy as np
    c = np.cumsum(np.asarray(values, dtype=float))
    c[window:] = c[window:] - c[:-window]
    return (c / np.minimum(np.arange(1, len(c) + 1), window)).tolist()


def plot_train_loss(inp: Inputs, colors: list, path: Path) -> Path:
    """plots/train_loss.png: the DVCLive training loss of each run, per step (faint) and as a trailing
    mean over about 2% of the steps when there are many (a note where no run has a log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    window = max([1] + [len(t["steps"]) // 50 for t in inp.train.values()])   # one window for all runs
    if inp.train:
        for run, t in inp.train.items():
            col = colors[list(inp.runs).index(run) % len(colors)]
            label = f"{run} ({run_label(inp.runs[run])})"
            if window > 1:
                ax.plot(t["steps"], t["loss"], color=col, lw=0.5, alpha=0.18)
                ax.plot(t["steps"], _smooth(t["loss"], window), color=col, lw=1.8, label=label)
            else:
                ax.plot(t["steps"], t["loss"], marker="o" if len(t["steps"]) < 40 else None, ms=3, label=label,
                        color=col)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss" + (f" (lines: mean of the last {window} steps)" if window > 1 else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no training loss logs found\n(metrics/train/<run>/plots/metrics/**/loss.tsv)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    missing = [r for r in inp.runs if r not in inp.train]
    ax.set_title("Training loss per run" + (f" (no log: {', '.join(missing)})" if missing else ""))
    return _finish(plt, fig, path)


def render_plots(inp: Inputs, sp: dict, mm: dict, out: Path, fr: dict | None = None) -> list[Path]:
    """Every PNG under `out` (plots/): tradeoff (sqltradeoff.frontier), ex_by_hardness,
    mmlu_by_subject, train_loss; returns their paths in that order."""
    from .. import frontier

    cl = inp.settings.cl
    colors = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    fr = fr if fr is not None else frontier.analyse(inp, sp, mm)
    return [frontier.render_tradeoff(inp, fr, mm, sp["models"][REFERENCE]["n"], out),
            plot_ex_by_hardness(sp, cl, colors, out / "ex_by_hardness.png"),
            plot_mmlu_by_subject(mm, cl, colors, out / "mmlu_by_subject.png"),
            plot_train_loss(inp, colors, out / "train_loss.png")]
