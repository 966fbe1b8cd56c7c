#!/usr/bin/env python
"""Stage train: fine-tune one LoRA adapter (QLoRA on a CUDA GPU with model.load_in_4bit).

Reads the training configuration `train` updated with `runs.<RUN>` and the model section of
params.yaml. Writes the adapter to OUT/adapter (with training_info.json), checkpoints to
OUT/checkpoints (for resuming an interrupted run with the same configuration), and DVCLive
metrics/plots to metrics/train/RUN/ (metrics.json: final loss, steps, examples used/dropped,
wall time, tokens/s).

Ctrl-C (SIGINT) or SIGTERM stops training within seconds, keeping the complete checkpoints:
the stage prints one line and exits 130 (SIGINT) or 143 (SIGTERM); the same command resumes.
CPU threads: `cpu_threads` in params.yaml, overridden by SQLTRADEOFF_CPU_THREADS (sqltradeoff/cpu.py).
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import signal

from sqltradeoff.errors import stage_main
from sqltradeoff.params import load_params


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run name: a key of `runs` in params.yaml (e.g. run1)")
    ap.add_argument("--data", required=True, help="prompt/completion JSONL (data/formatted/train.jsonl)")
    ap.add_argument("--out", required=True, help="output directory (models/RUN): adapter/ and checkpoints/")
    ap.add_argument("--metrics-dir", default=None, help="DVCLive directory (default: metrics/train/RUN)")
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    ap.add_argument("--no-live", action="store_true",
                    help="no per-step DVCLive logging (metrics.json is still written); for a machine without "
                         "dvclive, e.g. `benchmarks/bench_gpu.py stage-train`")
    return ap.parse_args(argv)


@stage_main
def main(argv=None):
    args = parse_args(argv)
    config = load_params(args.params).config      # every value checked (sqltradeoff/config.py)
    cfg = config.run(args.run)                    # `train` updated with `runs.<run>`: a TrainConfig
    model_cfg = config.need("model")
    metrics_dir = args.metrics_dir or f"metrics/train/{args.run}"

    from sqltradeoff.cpu import apply_cpu_threads
    from sqltradeoff.interrupt import TrainingInterrupted
    from sqltradeoff.training import pin_single_gpu, train

    apply_cpu_threads(config.cpu_threads)
    pin_single_gpu()     # one process, one GPU (several: accelerate launch, docs/multi-gpu.md)
    try:
        info = train(cfg, model_cfg, args.data, args.out, metrics_dir, live=False if args.no_live else None)
    except TrainingInterrupted as exc:
        kept = f"resume from {exc.checkpoint} with the same command" if exc.checkpoint else "no checkpoint yet"
        print(f"interrupted by {signal.Signals(exc.signum).name} after step {exc.step}: {kept}", file=sys.stderr)
        return exc.exit_status
    print(json.dumps({k: info[k] for k in ("steps", "final_loss", "examples_used", "examples_dropped_too_long",
                                           "wall_time_s", "tokens_per_s", "resumed_from")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
