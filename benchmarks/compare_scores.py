"""Compare two scored prediction files of the same questions: how many raw outputs are equal, EX of
each, the discordant questions, the exact McNemar test and the paired bootstrap interval.

For checking that a faster path (another predict backend, batch size or training recipe) gives the
same answer within noise, e.g. the GPU leases' bf16 runs (BENCHMARKS.md, fourth lease):

  python benchmarks/compare_scores.py --name reference@64 --pred A.jsonl --scores A_scores.jsonl \
      --name static@64 --pred B.jsonl --scores B_scores.jsonl [--out result.json]

`--pred` files are the predict stage's rows (`raw_output`), `--scores` the score stage's rows
(`exec_match`) of the same predictions (`stages/score_sql.py PRED --out-rows SCORES`).

`--mmlu`: the two files are the MMLU stage's rows (`stages/mmlu.py --out-rows`: `pred`, `correct`,
`debiased_pred`, `debiased_correct`), given as `--scores` (no `--pred`); one line for the loglik
accuracy and one for the debiased accuracy, with the same test and interval:

  python benchmarks/compare_scores.py --mmlu --name A --scores A_mmlu.jsonl --name B --scores B_mmlu.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqltradeoff.io import read_jsonl  # noqa: E402
from sqltradeoff.stats import mcnemar_exact, pair_by_id, paired_difference_ci  # noqa: E402


def _paired(name_a: str, ok_a: dict, out_a: dict, name_b: str, ok_b: dict, out_b: dict, seed: int):
    ids, a, b = pair_by_id(ok_a, ok_b, name_a, name_b)
    test = mcnemar_exact(a, b)
    ci = paired_difference_ci(a, b, seed=seed)
    return ids, sum(1 for i in ids if out_a.get(i) == out_b.get(i)), (sum(a), sum(b)), test, ci


def compare(name_a: str, pred_a, scores_a, name_b: str, pred_b, scores_b, *, seed: int = 0) -> dict:
    raw_a = {r["id"]: r.get("raw_output") for r in read_jsonl(pred_a)}
    raw_b = {r["id"]: r.get("raw_output") for r in read_jsonl(pred_b)}
    ex_a = {r["id"]: bool(r["exec_match"]) for r in read_jsonl(scores_a)}
    ex_b = {r["id"]: bool(r["exec_match"]) for r in read_jsonl(scores_b)}
    ids, equal, (ka, kb), test, ci = _paired(name_a, ex_a, raw_a, name_b, ex_b, raw_b, seed)
    return {
        "a": name_a, "b": name_b, "n": len(ids),
        "raw_output_equal": equal,
        "ex_correct": {name_a: ka, name_b: kb},
        "only_a_correct": test.b, "only_b_correct": test.c, "mcnemar_p": round(test.pvalue, 4),
        "ex_difference_pp": round(100 * ci.estimate, 2),
        "ex_difference_ci_pp": [round(100 * ci.low, 2), round(100 * ci.high, 2)],
    }


def compare_mmlu(name_a: str, rows_a, name_b: str, rows_b, *, seed: int = 0) -> list[dict]:
    """Two MMLU row files of the same questions: loglik and debiased accuracy, each paired."""
    ra = {r["id"]: r for r in read_jsonl(rows_a)}
    rb = {r["id"]: r for r in read_jsonl(rows_b)}
    out = []
    for metric, pred in (("correct", "pred"), ("debiased_correct", "debiased_pred")):
        if not all(metric in r for r in (*ra.values(), *rb.values())):
            continue            # rows without a debiased score (scoring: generate)
        ids, equal, (ka, kb), test, ci = _paired(
            name_a, {i: bool(r[metric]) for i, r in ra.items()}, {i: r.get(pred) for i, r in ra.items()},
            name_b, {i: bool(r[metric]) for i, r in rb.items()}, {i: r.get(pred) for i, r in rb.items()}, seed)
        out.append({
            "a": name_a, "b": name_b, "metric": "mmlu" if metric == "correct" else "mmlu_debiased", "n": len(ids),
            "pred_equal": equal, "correct": {name_a: ka, name_b: kb},
            "only_a_correct": test.b, "only_b_correct": test.c, "mcnemar_p": round(test.pvalue, 4),
            "difference_pp": round(100 * ci.estimate, 2),
            "difference_ci_pp": [round(100 * ci.low, 2), round(100 * ci.high, 2)],
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", action="append", required=True, help="a label (twice: first, second)")
    ap.add_argument("--pred", action="append", default=[], help="predictions JSONL (twice; not with --mmlu)")
    ap.add_argument("--scores", action="append", required=True, help="score rows JSONL (twice)")
    ap.add_argument("--mmlu", action="store_true", help="the --scores files are MMLU rows (stages/mmlu.py)")
    ap.add_argument("--out", help="append the result as one JSON line here (one per metric with --mmlu)")
    a = ap.parse_args(argv)
    if a.mmlu:
        if not (len(a.name) == len(a.scores) == 2) or a.pred:
            ap.error("with --mmlu give --name and --scores twice each, and no --pred")
        results = compare_mmlu(a.name[0], a.scores[0], a.name[1], a.scores[1])
    else:
        if not (len(a.name) == len(a.pred) == len(a.scores) == 2):
            ap.error("give --name, --pred and --scores twice each")
        results = [compare(a.name[0], a.pred[0], a.scores[0], a.name[1], a.pred[1], a.scores[1])]
    for res in results:
        line = json.dumps(res)
        print(line)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
