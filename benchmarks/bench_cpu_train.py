"""CPU fp32 LoRA training step: torch's path as TRL runs it on a CPU vs the compact LM head vs the
compact LM head + oneDNN base layers (`train.cpu_linear: onednn`), side by side in one process.

    .venv/bin/python benchmarks/bench_cpu_train.py [--steps 2] [--rounds 2] [--run run1]
        [--data data/formatted/train.jsonl] [--out benchmarks/results/cpu_train.json]

Each variant trains `--steps` optimizer steps of the study's run (params.yaml's model and `train`
updated with `runs.<run>`: the same examples in the same order) through `sqltradeoff.training.train`,
the train stage's own function; the variants alternate over `--rounds` rounds (A B C, then C B A, ...:
the machine's speed drifts). Per variant: the seconds of every optimizer step (the first step of a
process includes one-off work: it is reported, not averaged), the final loss, and the largest
difference of its adapter from the reference variant's. Writes one JSON object with the processor
and the command; prints a markdown table.

Variants:
  reference  cpu_linear aten,   LM head over every position (TRL on a CPU)
  compact    cpu_linear aten,   LM head over the labelled positions only (training.compact_lm_head)
  onednn     cpu_linear onednn, compact LM head (the default of params.yaml)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import write_result  # noqa: E402

VARIANTS = {"reference": ("aten", False), "compact": ("aten", True), "onednn": ("onednn", True)}


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.seconds = None, []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(round(time.perf_counter() - self.begin, 2))

    return StepTimer()


def run_variant(name: str, run_cfg, model_cfg, data: Path, steps: int, work: Path) -> dict:
    from safetensors.torch import load_file

    from sqltradeoff.training import train

    cpu_linear, compact = VARIANTS[name]
    cfg = {**run_cfg.as_dict(), "max_steps": steps, "save_steps": 10 ** 6, "cpu_linear": cpu_linear}
    out = work / f"{name}-{time.time_ns()}"
    timer = _step_timer()
    t = time.perf_counter()
    info = train(cfg, model_cfg, data, out, out / "metrics", callbacks=[timer], live=False,
                 cpu_compact_lm_head=compact)
    return {"variant": name, "cpu_linear": cpu_linear, "compact_lm_head": compact,
            "step_seconds": timer.seconds, "stage_seconds": round(time.perf_counter() - t, 1),
            "final_loss": info["final_loss"], "tokens_seen": info["tokens_seen"],
            "adapter": load_file(out / "adapter" / "adapter_model.safetensors")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--run", default="run1")
    ap.add_argument("--variants", default="reference,compact,onednn")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--data", default=str(REPO / "data/formatted/train.jsonl"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/cpu_train.json"))
    a = ap.parse_args(argv)
    os.chdir(REPO)
    from sqltradeoff.cpu import apply_cpu_threads
    from sqltradeoff.params import load_params

    config = load_params(a.params).config
    apply_cpu_threads(config.cpu_threads)
    names = [v for v in a.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}: choose from {sorted(VARIANTS)}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_cpu_train") as tmp:
        for r in range(a.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                runs.append({"round": r, **run_variant(name, config.run(a.run), config.need("model"), Path(a.data),
                                                        a.steps, Path(tmp))})
                print(f"round {r} {name}: steps {runs[-1]['step_seconds']} s, loss {runs[-1]['final_loss']}",
                      file=sys.stderr, flush=True)
    ref = next(x["adapter"] for x in runs if x["variant"] == names[0])
    summary = []
    for name in names:
        mine = [x for x in runs if x["variant"] == name]
        later = [s for x in mine for s in x["step_seconds"][1:]]        # steps after each process's first
        diff = max(float((x["adapter"][k] - ref[k]).abs().max()) for x in mine for k in ref)
        summary.append({"variant": name, "cpu_linear": mine[0]["cpu_linear"], "compact_lm_head": mine[0]["compact_lm_head"],
                        "median_step_s": round(statistics.median(later or [s for x in mine for s in x["step_seconds"]]), 2),
                        "all_step_s": [x["step_seconds"] for x in mine],
                        "final_loss": [x["final_loss"] for x in mine],
                        "max_abs_adapter_diff_vs_" + names[0]: diff})
    for x in runs:
        del x["adapter"]
    write_result(a.out, "benchmarks/bench_cpu_train.py", argv, run=a.run, steps_per_variant_and_round=a.steps,
                 rounds=a.rounds, examples_per_step=config.run(a.run).batch_size * config.run(a.run).grad_accum,
                 summary=summary, runs=runs)
    print(f"| variant | cpu_linear | LM head | median s/step | steps (s) | max abs adapter diff vs {names[0]} |")
    print("| --- | --- | --- | ---: | --- | ---: |")
    for s in summary:
        print(f"| {s['variant']} | {s['cpu_linear']} | {'labelled positions' if s['compact_lm_head'] else 'every position'} "
              f"| {s['median_step_s']} | {s['all_step_s']} | {s['max_abs_adapter_diff_vs_' + names[0]]:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
