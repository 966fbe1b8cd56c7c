"""Throughput of the execution-accuracy scorer (pairs/s) on Spider dev, gold vs gold.

Every dev question whose database exists (972 of 1,034 here; wta_1 is missing) is scored with
its gold query as the prediction, so every pair executes two queries and compares the
results. Each configuration runs `--repeats` times from cold (connections closed, a fresh
process pool), and the median and best are reported.

    .venv/bin/python benchmarks/bench_scorer.py [--workers 1 2] [--repeats 5] [--scale 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqltradeoff import sqlexec  # noqa: E402
from sqltradeoff.execution import db_path_for, score_pairs  # noqa: E402


def main(argv=None) -> int:
    default_spider = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA") or REPO.parent / "shared" / "data") / "spider"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spider-dir", type=Path, default=default_spider,
                    help="Spider release directory with dev.json and database/ (default: %(default)s)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", type=int, default=1,
                    help="score the dev pairs this many times in one call (amortises pool start-up)")
    args = ap.parse_args(argv)

    dev_path, db_dir = args.spider_dir / "dev.json", args.spider_dir / "database"
    if not dev_path.is_file():
        print(f"error: {dev_path} not found (pass --spider-dir)", file=sys.stderr)
        return 2
    dev = json.loads(dev_path.read_text())
    pairs = [{"db_id": e["db_id"], "gold_sql": e["query"], "pred_sql": e["query"]}
             for e in dev if db_path_for(db_dir, e["db_id"]).is_file()]
    n_dev = len(pairs)
    pairs = pairs * args.scale

    results = []
    for workers in args.workers:
        rates, correct = [], None
        for _ in range(args.repeats):
            sqlexec.close_all()
            t0 = time.perf_counter()
            outs = score_pairs(pairs, db_dir, workers=workers)
            dt = time.perf_counter() - t0
            rates.append(len(pairs) / dt)
            correct = sum(o.match for o in outs)
        results.append((workers, statistics.median(rates), max(rates), correct))

    cmd = "python " + " ".join([str(Path(sys.argv[0]).as_posix())] + (argv if argv is not None else sys.argv[1:]))
    print(f"Scorer throughput, Spider dev gold vs gold ({n_dev} pairs of {len(dev)}, x{args.scale}), "
          f"{args.repeats} cold runs each; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlexec.sqlite3.sqlite_version}")
    print()
    print(f"| workers | median pairs/s | best pairs/s | median s / {len(pairs)} pairs | matches |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for workers, med, best, correct in results:
        print(f"| {workers} | {med:,.0f} | {best:,.0f} | {len(pairs) / med:.3f} | {correct}/{len(pairs)} |")
    print()
    print(f"command: `{cmd}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
