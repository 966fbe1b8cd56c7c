#!/usr/bin/env python3
"""A learning-forgetting frontier in one command: a queued DVC experiment sweep over one parameter.

    python scripts/sweep.py runs.run1.learning_rate 1e-5 5e-5 1e-4 2e-4
    python scripts/sweep.py runs.run1.lora_r 4 8 16 --run run1 --jobs 1

For each value it queues `dvc exp run --queue -S PARAM=VALUE`, runs the queue (`dvc queue start`),
waits for it, then reads every experiment of the sweep from `dvc exp show` and writes
`sweep/frontier.csv` and `sweep/frontier.png`: one point per value, x = change in MMLU accuracy
vs the base model, y = gain in Spider execution accuracy vs the base model, with the paired
bootstrap intervals of the report stage as error bars. With params.yaml `adapter_scales`, each
value also has its adapter-scale points (rows with `scale` < 1; a dotted curve from the origin). `--collect-only` skips running and only
collects the experiments already there (e.g. after `dvc queue start` by hand).
"""
from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = "metrics/summary.json"


def dvc(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(["dvc", *args], cwd=ROOT, text=True,
                          capture_output=capture)
    if proc.returncode != 0:
        sys.exit(f"error: dvc {' '.join(args)} failed:\n{proc.stderr if capture else ''}")
    return proc.stdout if capture else ""


def queue_and_run(param: str, values: list[str], jobs: int) -> None:
    for value in values:
        dvc("exp", "run", "--queue", "-S", f"{param}={value}", capture=False)
    dvc("queue", "start", "-j", str(jobs), capture=False)
    while True:
        status = dvc("queue", "status")
        active = [l for l in status.splitlines() if any(w in l for w in ("Queued", "Running"))]
        if not active:
            break
        print(f"[sweep] {len(active)} experiment(s) queued or running ...", flush=True)
        time.sleep(30)
    failed = [l for l in dvc("queue", "status").splitlines() if "Failed" in l]
    if failed:
        print("[sweep] failed experiments (see `dvc queue logs NAME`):\n" + "\n".join(failed), file=sys.stderr)


KEYS = {"mmlu_change_pp": "mmlu_change_pp", "ex_gain_pp": "ex_gain_pp",
        "mmlu_ci_low_pp": "mmlu_change_ci_low_pp", "mmlu_ci_high_pp": "mmlu_change_ci_high_pp",
        "ex_ci_low_pp": "ex_gain_ci_low_pp", "ex_ci_high_pp": "ex_gain_ci_high_pp"}


def collect(param: str, run: str, values: list[str]) -> list[dict]:
    """One row per (experiment value, adapter scale): scale 1 is the run itself (`runs.<run>.*` of
    the summary), the others its adapter-scale points (`runs.<run>.scales.<s>.*`, params.yaml
    `adapter_scales`). The newest experiment of each value wins (dvc exp show lists newest first)."""
    table = list(csv.DictReader(io.StringIO(dvc("exp", "show", "--csv", "--no-pager"))))
    header = set(table[0]) if table else set()

    def col(key: str) -> str:
        # `dvc exp show` names a metric column `file:key`, or just `key` when that is unambiguous.
        full = f"{SUMMARY}:runs.{run}.{key}"
        return full if full in header else f"runs.{run}.{key}"
    tail = ".ex_gain_pp"
    tags = sorted({c.split(f"runs.{run}.scales.", 1)[1][:-len(tail)] for c in header
                   if f"runs.{run}.scales." in c and c.endswith(tail)}, key=float)
    wanted = {float(v) for v in values} if values else None
    points, seen = [], set()
    for row in table:
        if row.get("typ") == "baseline" or not row.get(param):
            continue
        try:
            value = float(row[param])
        except ValueError:
            continue
        if (wanted is not None and value not in wanted) or value in seen:
            continue
        exp = row.get("Experiment") or row.get("rev")
        found = []
        for scale, prefix in [(float(t), f"scales.{t}.") for t in tags] + [(1.0, "")]:
            try:
                point = {"experiment": exp, param: value,
                         **{k: float(row[col(prefix + src)]) for k, src in KEYS.items()}, "scale": scale}
            except (KeyError, ValueError):
                continue  # an experiment without a report (failed or still running), or without this scale
            found.append(point)
        if any(p["scale"] == 1.0 for p in found):
            seen.add(value)
            points += found
    return sorted(points, key=lambda p: (p[param], p["scale"]))


def plot(points: list[dict], param: str, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    runs = [p for p in points if p["scale"] == 1.0]
    for p in runs:      # each value's adapter-scale curve, from the base model (origin) to the run
        curve = [q for q in points if q[param] == p[param]]
        if len(curve) > 1:
            ax.plot([0.0] + [q["mmlu_change_pp"] for q in curve], [0.0] + [q["ex_gain_pp"] for q in curve],
                    ".:", color="tab:gray", lw=0.9, ms=5)
            for q in curve[:-1]:
                ax.annotate(f"{q['scale']:g}", (q["mmlu_change_pp"], q["ex_gain_pp"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color="tab:gray")
    xs = [p["mmlu_change_pp"] for p in runs]
    ys = [p["ex_gain_pp"] for p in runs]
    xerr = [[p["mmlu_change_pp"] - p["mmlu_ci_low_pp"] for p in runs],
            [p["mmlu_ci_high_pp"] - p["mmlu_change_pp"] for p in runs]]
    yerr = [[p["ex_gain_pp"] - p["ex_ci_low_pp"] for p in runs],
            [p["ex_ci_high_pp"] - p["ex_gain_pp"] for p in runs]]
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o-", capsize=3, color="tab:blue", alpha=0.9)
    for p in runs:
        ax.annotate(f"{p[param]:g}", (p["mmlu_change_pp"], p["ex_gain_pp"]),
                    textcoords="offset points", xytext=(6, 6))
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("Change in MMLU accuracy vs base (pp)")
    ax.set_ylabel("Gain in Spider execution accuracy vs base (pp)")
    ax.set_title(f"Learning vs forgetting over {param}\n(95% paired bootstrap intervals"
                 + ("; dotted: adapter-scale points" if len(points) > len(runs) else "") + ")")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("param", help="a params.yaml key, e.g. runs.run1.learning_rate")
    ap.add_argument("values", nargs="*", help="values to try")
    ap.add_argument("--run", help="the run whose gain/change is plotted (default: from PARAM, else run1)")
    ap.add_argument("--jobs", type=int, default=1, help="experiments run at once (default 1)")
    ap.add_argument("--collect-only", action="store_true", help="do not queue; collect existing experiments")
    ap.add_argument("--out-dir", default="sweep", help="where frontier.csv/png go (default: sweep)")
    args = ap.parse_args(argv)
    run = args.run or (args.param.split(".")[1] if args.param.startswith("runs.") else "run1")
    if not args.collect_only:
        if not args.values:
            ap.error("give the values to try (or --collect-only)")
        queue_and_run(args.param, args.values, args.jobs)
    points = collect(args.param, run, args.values)
    if not points:
        print("error: no finished experiment of this sweep has a report (see `dvc exp show`)", file=sys.stderr)
        return 2
    out = ROOT / args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    with (out / "frontier.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(points[0]))
        w.writeheader()
        w.writerows(points)
    plot(points, args.param, out / "frontier.png")
    for p in points:
        print(f"{args.param}={p[args.param]:g}" + ("" if p["scale"] == 1.0 else f" scale {p['scale']:g}")
              + f": EX {p['ex_gain_pp']:+.1f} pp "
              f"[{p['ex_ci_low_pp']:+.1f}, {p['ex_ci_high_pp']:+.1f}], MMLU {p['mmlu_change_pp']:+.1f} pp "
              f"[{p['mmlu_ci_low_pp']:+.1f}, {p['mmlu_ci_high_pp']:+.1f}]  ({p['experiment']})")
    print(f"wrote {out / 'frontier.csv'} and {out / 'frontier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
