#!/usr/bin/env python
"""Run the pipeline's stage commands without DVC, on a machine that has no DVC (a lent GPU box).

DVC decides what runs; this script only replays DVC's own expansion of `dvc.yaml` elsewhere:

  plan   (where DVC is installed) writes the stages of `dvc.yaml` as DVC expands them for the
         checkout's params.yaml (`foreach`/`matrix` included), in DVC's execution order, with
         their commands and outputs:
           python scripts/stage_plan.py plan --out plan.json
  run    (anywhere) runs the commands of the stages whose names match the given patterns, in plan
         order, from the repository root; a stage whose outputs all exist is skipped (so a run
         cut short goes on where it stopped); each stage's wall time is appended to --timings:
           python scripts/stage_plan.py run --plan plan.json 'train@*' 'predict*' --timings t.jsonl

Afterwards, back where DVC is, `dvc commit` records the outputs the run produced, and `dvc repro`
runs what is left (scoring, the report) and nothing that was already done.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_plan(repo_dir: Path) -> list[dict]:
    """Stages of the DVC pipeline in DVC's execution order: name, cmd, outs."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo_dir)) as repo:
        graph = repo.index.graph
        order = list(reversed(list(nx.topological_sort(graph))))   # DVC's graph points from a stage to its deps
        plan = []
        for stage in order:
            cmd = getattr(stage, "cmd", None)
            if not cmd:
                continue
            outs = [str(Path(o.fs_path).relative_to(repo.root_dir)) for o in stage.outs]
            plan.append({"name": stage.addressing, "cmd": cmd if isinstance(cmd, str) else " && ".join(cmd),
                         "outs": outs})
    return plan


def selected(plan: list[dict], patterns: list[str]) -> list[dict]:
    return [s for s in plan if any(fnmatch.fnmatchcase(s["name"], p) for p in patterns)]


def done(stage: dict, root: Path) -> bool:
    return bool(stage["outs"]) and all((root / o).exists() for o in stage["outs"])


def run(plan: list[dict], patterns: list[str], root: Path, timings: Path | None, dry: bool = False,
        force: bool = False) -> int:
    todo = selected(plan, patterns)
    if not todo:
        print(f"no stage matches {patterns}", file=sys.stderr)
        return 2
    for stage in todo:
        if not force and done(stage, root):
            print(f"[plan] skip {stage['name']} (outputs exist)", file=sys.stderr, flush=True)
            continue
        print(f"[plan] run {stage['name']}: {stage['cmd']}", file=sys.stderr, flush=True)
        if dry:
            continue
        t0 = time.time()
        rc = subprocess.call(stage["cmd"], shell=True, cwd=root, executable="/bin/bash")
        seconds = round(time.time() - t0, 2)
        if timings is not None:
            timings.parent.mkdir(parents=True, exist_ok=True)
            with timings.open("a") as fh:
                fh.write(json.dumps({"stage": stage["name"], "seconds": seconds, "rc": rc,
                                     "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "cmd": stage["cmd"]}) + "\n")
        print(f"[plan] {stage['name']}: exit {rc} in {seconds:.1f} s", file=sys.stderr, flush=True)
        if rc != 0:
            return rc
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="write the expanded pipeline (needs DVC)")
    p.add_argument("--repo", type=Path, default=REPO)
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="run matching stages of a plan")
    r.add_argument("--plan", type=Path, required=True)
    r.add_argument("patterns", nargs="+", help="stage name patterns (fnmatch), e.g. 'train@*'")
    r.add_argument("--root", type=Path, default=Path(os.getcwd()), help="repository root (default: cwd)")
    r.add_argument("--timings", type=Path, default=None, help="append one JSON line per stage run")
    r.add_argument("--dry", action="store_true", help="print what would run")
    r.add_argument("--force", action="store_true", help="run even when the outputs exist")
    a = ap.parse_args(argv)
    if a.cmd == "plan":
        plan = make_plan(a.repo)
        a.out.write_text(json.dumps(plan, indent=1) + "\n")
        print(f"{len(plan)} stages -> {a.out}", file=sys.stderr)
        return 0
    plan = json.loads(a.plan.read_text())
    return run(plan, a.patterns, a.root, a.timings, a.dry, a.force)


if __name__ == "__main__":
    sys.exit(main())
