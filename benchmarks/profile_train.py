#!/usr/bin/env python
"""Where a training step's time goes: host time per phase, then a torch.profiler window.

Runs `training.train` (what `stages/train.py` runs) on a params file, for example one that
`bench_throughput.py run` wrote for a train variant (`<work>/<arch>/params_train_<variant>.yaml`,
its model a random-weight copy of the architecture), and measures over the steps after a warm-up
(the compile, the first CUDA-graph recordings):

* host wall time per phase, from the trainer's callbacks, with no synchronisation added:
  `forward_backward` (step begin to the optimizer: forward, loss, backward, gradient clipping),
  `optimizer` (the optimizer's step), `between_steps` (scheduler, zero_grad, logging, the next batch);
* then, over `--profile-steps` more steps, torch.profiler's totals: the GPU's kernel time per step
  against the wall time per step (how idle the card is), and the host operations that cost the most.

    python3 benchmarks/profile_train.py --params /tmp/benchwork/qwen2.5-0.5b/params_train_regional_graphs.yaml \\
        --data /tmp/data/formatted/train.jsonl --steps 160 --warmup 100 --profile-steps 20 --out /tmp/out/profile.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.record import card  # noqa: E402

PHASES = ("forward_backward", "optimizer", "between_steps")


def phase_callback(warmup: int, timed: int, profile_steps: int):
    """A TrainerCallback timing the phases of steps warmup+1 .. warmup+timed, then profiling the next
    `profile_steps` steps (torch.profiler, CPU and CUDA activities)."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Phases(TrainerCallback):
        def __init__(self):
            self.times = {p: [] for p in PHASES}
            self.marks = {}
            self.prof, self.prof_wall, self.prof_done = None, None, False

        def _mark(self, name):
            self.marks[name] = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            step = state.global_step      # steps completed before this one
            if warmup < step <= warmup + timed and "end" in self.marks:
                self.times["between_steps"].append(time.perf_counter() - self.marks["end"])
            if step == warmup + timed and profile_steps:
                sync()
                self.prof = torch.profiler.profile(activities=activities)
                self.prof.__enter__()
                self.prof_wall = time.perf_counter()
            self._mark("begin")

        def on_pre_optimizer_step(self, args, state, control, **kw):
            self._mark("pre_opt")

        def on_optimizer_step(self, args, state, control, **kw):
            self._mark("opt")

        def on_step_end(self, args, state, control, **kw):
            step = state.global_step      # this step's number (1-based)
            if warmup < step <= warmup + timed:
                self.times["forward_backward"].append(self.marks["pre_opt"] - self.marks["begin"])
                self.times["optimizer"].append(self.marks["opt"] - self.marks["pre_opt"])
            self._mark("end")
            if self.prof is not None and step == warmup + timed + profile_steps:
                sync()
                self.prof_wall = time.perf_counter() - self.prof_wall
                self.prof.__exit__(None, None, None)
                self.prof_done = True

    return Phases()


def summary(cb, profile_steps: int, top: int) -> dict:
    out = {"host_seconds_per_step": {p: round(statistics.median(v), 5) for p, v in cb.times.items() if v},
           "timed_steps": len(cb.times["optimizer"])}
    if cb.prof_done:
        events = cb.prof.key_averages()
        device_us = sum(e.self_device_time_total for e in events)
        out["profile"] = {
            "steps": profile_steps,
            "wall_s_per_step": round(cb.prof_wall / profile_steps, 5),
            "gpu_kernel_s_per_step": round(device_us / 1e6 / profile_steps, 5),
            "gpu_busy_fraction": round(device_us / 1e6 / cb.prof_wall, 3),
            "top_host_ops": [{"name": e.key, "calls_per_step": round(e.count / profile_steps, 1),
                              "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1e3 / profile_steps, 3)}
                             for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]],
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True)
    ap.add_argument("--run", default="run1")
    ap.add_argument("--data", required=True, help="formatted train.jsonl")
    ap.add_argument("--steps", type=int, default=160, help="optimizer steps in all")
    ap.add_argument("--warmup", type=int, default=100, help="steps before anything is timed")
    ap.add_argument("--profile-steps", type=int, default=20, help="steps under torch.profiler after the timed ones")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.steps <= a.warmup + a.profile_steps:
        raise SystemExit("--steps must exceed --warmup + --profile-steps")

    from sqltradeoff.params import load_params
    from sqltradeoff.training import pin_single_gpu, train

    config = load_params(a.params).config
    cfg = {**config.run(a.run).as_dict(), "max_steps": a.steps, "save_steps": 10 * a.steps}
    pin_single_gpu()
    cb = phase_callback(a.warmup, a.steps - a.warmup - a.profile_steps, a.profile_steps)
    with tempfile.TemporaryDirectory() as work:
        info = train(cfg, config.need("model"), a.data, Path(work) / "model", Path(work) / "metrics",
                     callbacks=[cb], live=False)
    shown = ("torch_compile", "pad_to_multiple_of", "padding_free", "attention", "use_liger_kernel",
             "gradient_checkpointing", "batch_size")
    result = {"params": a.params, "run_config": {k: cfg[k] for k in shown},
              "steps": info["steps"], "tokens_per_s": info["tokens_per_s"], **summary(cb, a.profile_steps, a.top),
              "card": card(), "command": " ".join(["python3", "benchmarks/profile_train.py", *(argv or sys.argv[1:])])}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "profile"}, indent=1))
    for op in result.get("profile", {}).get("top_host_ops", [])[:12]:
        print(f"{op['self_cpu_ms_per_step']:9.3f} ms/step {op['calls_per_step']:8.1f} calls  {op['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
