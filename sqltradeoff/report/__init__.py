"""The report stage: summary.json (DVC metrics), report.md and plots.

Everything is recomputed from the per-question files (data/scores, data/mmlu), so every number
comes with its uncertainty: bootstrap intervals over questions for accuracies, paired bootstrap
intervals and exact McNemar tests for the difference between a run and the base model on the
same questions. Conclusions are phrased from those numbers only.

MMLU: every model must have been scored with the same method and shot count (else `UserError`);
that method (`mmlu.method`, lm-evaluation-harness `loglik` by default) gives the primary numbers
and the forgetting comparison. Where the rows also carry `debiased_pred`/`debiased_correct`
(`mmlu.also_debiased`), MMLU is analysed a second time under the debiased method (summary
`mmlu_debiased`, runs' `mmlu_debiased_*`), and the report shows each model's predicted answer
letters against the gold ones and the bias figure under both methods.

All inputs are read and checked before anything is written: a missing or malformed input
raises `UserError` (naming the file and the stage that produces it) and leaves the previous
outputs untouched.

The package, along its seams: `inputs` (reading and checking the files, settings from
`config.ReportConfig`), `analysis` (CIs, paired comparisons, McNemar, minimum detectable
differences via `sqltradeoff.stats`), `summary` (summary.json), `markdown` (report.md), `plots`
(figures and their data); the adapter-scale frontier is `sqltradeoff.frontier`. `run_report`
below runs them in that order; the names here are the package's interface.
"""
from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text, write_json
from .analysis import analyse_mmlu, analyse_spider, compare
from .inputs import (ALPHA, CHANCE, DEBIASED, ERROR_ORDER, HARDNESS_ORDER, MMLU_BASE, REFERENCE, SPIDER_BASES,
                     Inputs, Paths, Settings, error_kind, load_inputs, read_train_loss, runs_from_params,
                     settings_from_params)
from .markdown import MDE_NOTE, conclusions, render_markdown
from .plots import plot_data, render_plots
from .summary import build_summary

# Also importable from here, as from the single module this package was: the helpers
# sqltradeoff.frontier shares (it imports them from the submodules) and tests use (_diff_sentence).
from .analysis import _ci, _r  # noqa: F401
from .inputs import _check_debiased_fields, _read_rows, _require  # noqa: F401
from .markdown import _ci_pct, _diff_sentence, _mde_cell, _p, _pct, _pp, _run_desc, _table  # noqa: F401
from .plots import _save  # noqa: F401
from .summary import _cmp_flat  # noqa: F401

__all__ = ["ALPHA", "CHANCE", "DEBIASED", "ERROR_ORDER", "HARDNESS_ORDER", "MDE_NOTE", "MMLU_BASE", "REFERENCE",
           "SPIDER_BASES", "Inputs", "Paths", "Settings", "analyse_mmlu", "analyse_spider", "build_summary",
           "compare", "conclusions", "error_kind", "load_inputs", "plot_data", "read_train_loss", "render_markdown",
           "render_plots", "run_report", "runs_from_params", "settings_from_params"]


def run_report(params: dict, out_dir: Path, paths: Paths = Paths()) -> dict:
    """Compute everything, then write summary.json, report.md, plots/*.png and plots/*.json."""
    from ..frontier import analyse
    inp = load_inputs(params, paths)
    sp = analyse_spider(inp)
    mm = analyse_mmlu(inp)
    fr = analyse(inp, sp, mm)
    summary = build_summary(inp, sp, mm, fr)
    md = render_markdown(inp, sp, mm, fr)
    pdata = plot_data(inp, sp, mm, fr)
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    render_plots(inp, sp, mm, plots, fr)
    for name, rows in pdata.items():
        write_json(plots / f"{name}.json", rows)
    atomic_write_text(out_dir / "report.md", md)
    write_json(out_dir / "summary.json", summary)
    return {"summary": summary, "warnings": inp.warnings, "markdown": md}
