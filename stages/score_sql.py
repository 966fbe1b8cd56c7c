"""Score SQL predictions by execution on the Spider databases (execution accuracy).

Input: a predictions JSONL with at least `id`, `db_id`, `gold_sql`, `pred_sql` per line
(optional `hardness`, `question`). Each prediction is executed read-only with a time limit and
compared with the gold query by the rules of Spider's official test-suite evaluator
(see sqltradeoff/execution.py). Writes one row per prediction and a metrics JSON.

Example:
  python stages/score_sql.py data/predictions/run1.jsonl --db-dir data/raw/spider/database \\
      --out-rows data/scores/run1.jsonl --out-metrics metrics/spider/run1.json
Self-check (gold against itself must give 100%):
  python stages/score_sql.py data/predictions/run1.jsonl --gold-vs-gold --out-metrics /tmp/gold.json
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import math
import os
from pathlib import Path

from sqltradeoff import sqlexec
from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.execution import (check_db_id, db_path_for, exact_match, missing_databases,
                                   score_pairs, summarize)
from sqltradeoff.io import check_writable, dumps_json, dumps_jsonl, iter_jsonl, write_texts
from sqltradeoff.sqlexec import DEFAULT_MAX_ROWS, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

REQUIRED = ("id", "db_id", "gold_sql", "pred_sql")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + ".",
        epilog="Rows: {id, exec_match 0|1, error null|'<kind>: <reason>', exact_match 0|1, hardness}. "
               "Metrics: {execution_accuracy, exact_match, n, n_correct, by_hardness, by_error}.",
    )
    ap.add_argument("predictions", help="predictions JSONL (fields id, db_id, gold_sql, pred_sql; "
                                        "optional hardness, question)")
    ap.add_argument("--db-dir", default="data/raw/spider/database",
                    help="directory with <db_id>/<db_id>.sqlite (default: %(default)s)")
    ap.add_argument("--out-rows", help="write per-prediction scores here (JSONL)")
    ap.add_argument("--out-metrics", help="write the metrics here (JSON)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                    help="seconds allowed per query: SQLite's progress handler stops it, and a "
                         f"query still running {sqlexec.HARD_KILL_SLACK_S:g} s later is killed "
                         "with its worker process (default: %(default)s)")
    ap.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                    help="most rows fetched per query (default: %(default)s)")
    ap.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                    help="memory (MiB) a worker process may use beyond its size at start "
                         "(default: %(default)s)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes (default: %(default)s)")
    ap.add_argument("--gold-vs-gold", action="store_true",
                    help="score each gold query against itself (self-check: must be 100%%); "
                         "pred_sql is then not required")
    ap.add_argument("--keep-distinct", action="store_true",
                    help="do not strip DISTINCT (the official evaluator strips it by default)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse option values that would switch a limit off or cannot work, before any work."""
    try:
        sqlexec.check_timeout(args.timeout, "--timeout")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.max_rows < 1:
        raise UserError(f"--max-rows must be at least 1, got {args.max_rows}")
    if args.memory_mb < 64:
        raise UserError(f"--memory-mb must be at least 64, got {args.memory_mb}")
    if args.out_rows and args.out_metrics and \
            os.path.abspath(args.out_rows) == os.path.abspath(args.out_metrics):
        raise UserError(f"--out-rows and --out-metrics are the same file: {args.out_rows}")
    if args.out_rows:
        check_writable(args.out_rows, "--out-rows")
    if args.out_metrics:
        check_writable(args.out_metrics, "--out-metrics")


def _check_text(value, where: str, key: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{where}: `{key}` is not valid Unicode text "
                            f"(a lone surrogate such as \\ud800)") from None


def _check_record(obj: dict, where: str) -> None:
    ident = obj["id"]
    if isinstance(ident, bool) or not isinstance(ident, (str, int, float)) or \
            (isinstance(ident, float) and not math.isfinite(ident)):
        raise UserError(f"{where}: `id` must be a string or a number, got {ident!r}"[:300])
    for key in ("id", "db_id", "gold_sql", "pred_sql", "hardness"):
        _check_text(obj.get(key), where, key)
    for key in ("db_id", "gold_sql"):
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise UserError(f"{where} (id {ident!r}): `{key}` must be a non-empty string, "
                            f"got {obj[key]!r}"[:300])
    try:
        check_db_id(obj["db_id"])
    except ValueError as exc:
        raise UserError(f"{where} (id {ident!r}): {exc}") from None


def load_predictions(path: Path, gold_vs_gold: bool) -> list[dict]:
    required = [k for k in REQUIRED if not (gold_vs_gold and k == "pred_sql")]
    rows, seen = [], {}
    for lineno, obj in enumerate(iter_jsonl(path, required, allow_nan=False), 1):
        _check_record(obj, f"{path}: record {lineno}")
        pred = obj["gold_sql"] if gold_vs_gold else obj["pred_sql"]
        if pred is not None and not isinstance(pred, str):
            raise UserError(f"{path}: record {lineno} (id {obj['id']!r}): `pred_sql` must be a "
                            f"string or null, got {type(pred).__name__}")
        key = str(obj["id"])
        if key in seen:
            raise UserError(f"{path}: id {obj['id']!r} appears twice (records {seen[key]} and {lineno})")
        seen[key] = lineno
        hardness = obj.get("hardness")
        rows.append({"id": obj["id"], "db_id": obj["db_id"], "gold_sql": obj["gold_sql"],
                     "pred_sql": pred or "", "hardness": hardness if isinstance(hardness, str) else None})
    if not rows:
        raise UserError(f"{path}: no predictions in the file")
    return rows


def check_databases(pairs: list[dict], db_dir: Path, preds_path: Path) -> None:
    """Every database named must exist and be undamaged (a damaged one would score every
    question on it 0 as `gold_error`: that is a setup fault, so it stops the stage)."""
    if not db_dir.is_dir():
        raise UserError(f"--db-dir {db_dir}: directory not found (run the download_spider stage, "
                        f"or pass the Spider database directory)")
    missing = missing_databases((p["db_id"] for p in pairs), db_dir)
    if missing:
        count = sum(1 for p in pairs if p["db_id"] in set(missing))
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"{preds_path}: {count} prediction(s) name database(s) not found in --db-dir "
                        f"{db_dir}: {shown} (expected {db_dir}/<db_id>/<db_id>.sqlite)")
    for db_id in sorted({p["db_id"] for p in pairs}):
        path = db_path_for(db_dir, db_id)
        try:
            sqlexec.check_database(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"database {db_id} ({path}) is unusable: {exc}; download it again "
                            f"(the download_spider stage)") from None


@stage_main
def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    preds_path = Path(args.predictions)
    db_dir = Path(args.db_dir)
    pairs = load_predictions(preds_path, args.gold_vs_gold)
    check_databases(pairs, db_dir, preds_path)
    try:
        outcomes = score_pairs(pairs, db_dir, workers=args.workers, timeout_s=args.timeout,
                               max_rows=args.max_rows, keep_distinct=args.keep_distinct,
                               progress=not args.no_progress, memory_mb=args.memory_mb)
    except OSError as exc:
        raise UserError(f"could not run the worker processes: {exc}") from None
    rows = [{"id": p["id"], "exec_match": int(o.match), "error": o.error,
             "exact_match": int(exact_match(p["gold_sql"], p["pred_sql"])), "hardness": p["hardness"]}
            for p, o in zip(pairs, outcomes)]
    metrics = summarize(rows)
    gold_errors = metrics["by_error"].get("gold_error", 0)
    if gold_errors:
        print(f"warning: {gold_errors} gold quer{'y' if gold_errors == 1 else 'ies'} failed to run "
              f"(scored 0, error 'gold_error: ...')", file=sys.stderr)
    outputs = []
    if args.out_rows:
        outputs.append((args.out_rows, dumps_jsonl(rows, allow_nan=False)))
    if args.out_metrics:
        outputs.append((args.out_metrics, dumps_json(metrics, allow_nan=False)))
    try:
        write_texts(outputs)
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or 'the outputs'}: {exc.strerror or exc}") from None
    label = "gold vs gold" if args.gold_vs_gold else preds_path.name
    print(f"{label}: execution accuracy {metrics['execution_accuracy']:.4f} "
          f"({metrics['n_correct']}/{metrics['n']}), exact match {metrics['exact_match']:.4f}")
    for level, m in metrics["by_hardness"].items():
        print(f"  {level:<7} n={m['n']:<4} EX={m['execution_accuracy']:.4f}")
    print("  errors: " + ", ".join(f"{k}={v}" for k, v in metrics["by_error"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
