#!/usr/bin/env python
"""Report stage: summary metrics with confidence intervals, report.md and plots.

Reads the per-question Spider scores (data/scores/<model>.jsonl), the predictions beside them
(data/predictions/<model>.jsonl), the per-question MMLU rows and metrics (data/mmlu/<model>.jsonl,
metrics/mmlu/<model>.json), the DVCLive training logs (metrics/train/<run>/) and params.yaml
(`report`, `runs`, `adapter_scales`). Models: base_zeroshot, base_fewshot and one per run (Spider);
base and one per run (MMLU); and each run's adapter-scale points <run>@<s> for s in
`adapter_scales` (data/scores/<run>@<s>.jsonl, data/mmlu/<run>@<s>.jsonl, metrics/mmlu/<run>@<s>.json).

Writes, under --out-dir:
  summary.json         DVC metrics: EX / MMLU per model with CIs, per-run gains, McNemar p-values;
                       `mmlu` is the method the models were scored with (mmlu.method, used for the
                       run-vs-base forgetting comparison); `mmlu_debiased` and the runs'
                       mmlu_debiased_* the debiased method, when the rows carry it (mmlu.also_debiased);
                       every comparison's minimum detectable difference (*_mde_pp, report.power);
                       runs.<run>.scales.<s>: the adapter-scale points, each compared with the base
  report.md            tables, conclusions with their uncertainty, the frontier table (adapter scale),
                       MMLU answer-letter bias per model and method, failing examples
  plots/*.png          tradeoff (a curve per run through its scale points), ex_by_hardness,
                       mmlu_by_subject, train_loss
  plots/*.json         the same data for `dvc plots show/diff`
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import time
from pathlib import Path

from sqltradeoff.errors import stage_main
from sqltradeoff.params import DEFAULT_PARAMS, load_params
from sqltradeoff.report import Paths, run_report


def build_parser() -> argparse.ArgumentParser:
    d = Paths()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("metrics"),
                   help="where summary.json, report.md and plots/ go (default: metrics)")
    p.add_argument("--params", type=Path, default=Path(DEFAULT_PARAMS), help="parameters file (default: params.yaml)")
    p.add_argument("--scores", type=Path, default=d.scores, help=f"per-question Spider scores (default: {d.scores})")
    p.add_argument("--predictions", type=Path, default=d.predictions,
                   help=f"Spider predictions, for failing examples (default: {d.predictions})")
    p.add_argument("--mmlu-rows", type=Path, default=d.mmlu_rows, help=f"per-question MMLU rows (default: {d.mmlu_rows})")
    p.add_argument("--mmlu-metrics", type=Path, default=d.mmlu_metrics,
                   help=f"MMLU metrics (method, k-shot) (default: {d.mmlu_metrics})")
    p.add_argument("--spider-metrics", type=Path, default=d.spider_metrics,
                   help=f"Spider metrics, cross-checked if present (default: {d.spider_metrics})")
    p.add_argument("--train", type=Path, default=d.train,
                   help=f"DVCLive training logs, one directory per run (default: {d.train})")
    return p


@stage_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    params = load_params(args.params)
    paths = Paths(args.scores, args.predictions, args.mmlu_rows, args.mmlu_metrics, args.spider_metrics, args.train)
    result = run_report(params, args.out_dir, paths)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    runs = result["summary"]["runs"]
    for run, r in runs.items():
        print(f"{run}: EX {r['ex_gain_pp']:+.1f} pp [{r['ex_gain_ci_low_pp']:+.1f}, {r['ex_gain_ci_high_pp']:+.1f}] "
              f"p={r['ex_mcnemar_p']:.3g}; MMLU {r['mmlu_change_pp']:+.1f} pp "
              f"[{r['mmlu_change_ci_low_pp']:+.1f}, {r['mmlu_change_ci_high_pp']:+.1f}] p={r['mmlu_mcnemar_p']:.3g}"
              + (f"; MMLU debiased {r['mmlu_debiased_change_pp']:+.1f} pp [{r['mmlu_debiased_change_ci_low_pp']:+.1f}, "
                 f"{r['mmlu_debiased_change_ci_high_pp']:+.1f}] p={r['mmlu_debiased_mcnemar_p']:.3g}"
                 if "mmlu_debiased_change_pp" in r else ""))
        for tag, q in r.get("scales", {}).items():
            print(f"  {run}@{tag}: EX {q['ex_gain_pp']:+.1f} pp [{q['ex_gain_ci_low_pp']:+.1f}, "
                  f"{q['ex_gain_ci_high_pp']:+.1f}] p={q['ex_mcnemar_p']:.3g}; MMLU {q['mmlu_change_pp']:+.1f} pp "
                  f"[{q['mmlu_change_ci_low_pp']:+.1f}, {q['mmlu_change_ci_high_pp']:+.1f}] p={q['mmlu_mcnemar_p']:.3g}")
    print(f"wrote {args.out_dir / 'summary.json'}, {args.out_dir / 'report.md'} and {args.out_dir / 'plots'}/ "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
