"""Throughput of the execution-accuracy scorer (pairs/s) on Spider dev, gold vs gold.

Every dev question whose database exists (972 of 1,034 here; wta_1 is missing) is scored with
its gold query as the prediction, so every pair executes two queries and compares the
results. Each configuration runs `--repeats` times from cold (connections closed, fresh
worker processes), and the median and best are reported.

`--impl new old` runs this checkout's scorer (killable, memory-capped worker processes) and
the scorer of git revision `--old-rev` side by side in one run, interleaved repeat by repeat
so that both see the same machine load. The old code is taken with `git show REV:path` into a
temporary package (`--old-rev ef67b8a`: the last revision before the hard time limit, whose
1-worker mode ran in the calling process).

    .venv/bin/python benchmarks/bench_scorer.py [--workers 1 2] [--repeats 5] [--scale 1]
    .venv/bin/python benchmarks/bench_scorer.py --impl new old --workers 1 --repeats 7
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqltradeoff import execution, sqlexec  # noqa: E402
from sqltradeoff.execution import db_path_for  # noqa: E402

OLD_REV = "ef67b8a"


def load_old(rev: str, tmp: Path):
    """(execution, sqlexec) modules of git revision `rev`, imported as package `_scorer_<rev>`."""
    name = f"_scorer_{rev.replace('~', '_').replace('^', '_')}"
    pkg = tmp / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for mod in ("sqlexec", "execution"):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:sqltradeoff/{mod}.py"],
                             capture_output=True, text=True, check=True).stdout
        (pkg / f"{mod}.py").write_text(src)
    sys.path.insert(0, str(tmp))
    return importlib.import_module(f"{name}.execution"), importlib.import_module(f"{name}.sqlexec")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    default_spider = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA") or REPO.parent / "shared" / "data") / "spider"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spider-dir", type=Path, default=default_spider,
                    help="Spider release directory with dev.json and database/ (default: %(default)s)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", type=int, default=1,
                    help="score the dev pairs this many times in one call (amortises pool start-up)")
    ap.add_argument("--impl", nargs="+", choices=["new", "old"], default=["new"],
                    help="implementations to run: this checkout (new) and/or --old-rev (old)")
    ap.add_argument("--old-rev", default=OLD_REV, help="git revision of the old scorer (default: %(default)s)")
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

    tmp = tempfile.TemporaryDirectory()
    impls = {"new": (execution, sqlexec)}
    if "old" in args.impl:
        impls["old"] = load_old(args.old_rev, Path(tmp.name))
    rates = {(i, w): [] for i in args.impl for w in args.workers}
    correct = {}
    for workers in args.workers:
        for _ in range(args.repeats):
            for impl in args.impl:            # interleaved: both see the same load
                ex_mod, sql_mod = impls[impl]
                sql_mod.close_all()
                t0 = time.perf_counter()
                outs = ex_mod.score_pairs(pairs, db_dir, workers=workers)
                dt = time.perf_counter() - t0
                rates[impl, workers].append(len(pairs) / dt)
                correct[impl, workers] = sum(o.match for o in outs)

    cmd = "python " + " ".join([str(Path(sys.argv[0]).as_posix())] + (argv if argv is not None else sys.argv[1:]))
    print(f"Scorer throughput, Spider dev gold vs gold ({n_dev} pairs of {len(dev)}, x{args.scale}), "
          f"{args.repeats} cold runs each; {cpu_model()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlexec.sqlite3.sqlite_version}")
    print()
    print(f"| impl | workers | median pairs/s | best pairs/s | median s / {len(pairs)} pairs | matches |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for workers in args.workers:
        for impl in args.impl:
            r = rates[impl, workers]
            med = statistics.median(r)
            label = "new" if impl == "new" else f"old ({args.old_rev})"
            print(f"| {label} | {workers} | {med:,.0f} | {max(r):,.0f} | {len(pairs) / med:.3f} | "
                  f"{correct[impl, workers]}/{len(pairs)} |")
    if "old" in args.impl and "new" in args.impl:
        print()
        for workers in args.workers:
            new_m, old_m = (statistics.median(rates[i, workers]) for i in ("new", "old"))
            print(f"workers={workers}: new/old median throughput {new_m / old_m:.3f} "
                  f"({(1 - new_m / old_m) * 100:+.1f}% cost)")
    print()
    print(f"command: `{cmd}`")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
