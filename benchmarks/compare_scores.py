"""Compare two scored prediction files of the same questions: how many raw outputs are equal, EX of
each, the discordant questions, the exact McNemar test and the paired bootstrap interval.

For checking that a faster path (another predict backend, batch size or training recipe) gives the
same answer within noise, e.g. the GPU leases' bf16 runs (BENCHMARKS.md, fourth lease):

  python benchmarks/compare_scores.py --name reference@64 --pred A.jsonl --scores A_scores.jsonl \
      --name static@64 --pred B.jsonl --scores B_scores.jsonl [--out result.json]

`--pred` files are the predict stage's rows (`raw_output`), `--scores` the score stage's rows
(`exec_match`) of the same predictions (`stages/score_sql.py PRED --out-rows SCORES`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqltradeoff.io import read_jsonl  # noqa: E402
from sqltradeoff.stats import mcnemar_exact, pair_by_id, paired_difference_ci  # noqa: E402


def compare(name_a: str, pred_a, scores_a, name_b: str, pred_b, scores_b, *, seed: int = 0) -> dict:
    raw_a = {r["id"]: r.get("raw_output") for r in read_jsonl(pred_a)}
    raw_b = {r["id"]: r.get("raw_output") for r in read_jsonl(pred_b)}
    ex_a = {r["id"]: bool(r["exec_match"]) for r in read_jsonl(scores_a)}
    ex_b = {r["id"]: bool(r["exec_match"]) for r in read_jsonl(scores_b)}
    ids, a, b = pair_by_id(ex_a, ex_b, name_a, name_b)
    test = mcnemar_exact(a, b)
    ci = paired_difference_ci(a, b, seed=seed)
    return {
        "a": name_a, "b": name_b, "n": len(ids),
        "raw_output_equal": sum(1 for i in ids if raw_a.get(i) == raw_b.get(i)),
        "ex_correct": {name_a: sum(a), name_b: sum(b)},
        "only_a_correct": test.b, "only_b_correct": test.c, "mcnemar_p": round(test.pvalue, 4),
        "ex_difference_pp": round(100 * ci.estimate, 2),
        "ex_difference_ci_pp": [round(100 * ci.low, 2), round(100 * ci.high, 2)],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", action="append", required=True, help="a label (twice: first, second)")
    ap.add_argument("--pred", action="append", required=True, help="predictions JSONL (twice)")
    ap.add_argument("--scores", action="append", required=True, help="score rows JSONL (twice)")
    ap.add_argument("--out", help="append the result as one JSON line here")
    a = ap.parse_args(argv)
    if not (len(a.name) == len(a.pred) == len(a.scores) == 2):
        ap.error("give --name, --pred and --scores twice each")
    res = compare(a.name[0], a.pred[0], a.scores[0], a.name[1], a.pred[1], a.scores[1])
    line = json.dumps(res)
    print(line)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
