"""GPU benchmark of the reference configuration: Mistral-7B-Instruct-v0.2, 4-bit QLoRA, Spider, MMLU.

Times the project's own CUDA code paths (sqltradeoff.modeling / training / generation / mmlu) on
a Mistral-7B-Instruct-v0.2-shaped model with RANDOM weights (hidden 4096, 32 layers, 32 heads,
8 KV heads, MLP 14336, vocabulary 32000, rope theta 1e6, no sliding window; cost does not depend
on the weight values) and the real Mistral tokenizer, on our real formatted Spider/MMLU prompts.
Prints one markdown table per measurement (and writes them, results.json and a log to --out).

Two subcommands:

  prepare   (on a CPU machine, once) builds the benchmark inputs under benchmarks/out/gpu/:
            mistral-tokenizer/ (the Mistral 7B v0.x SentencePiece model, converted to a fast
            tokenizer with the v0.2 chat template) and bench_data.json.gz (all 7,000 Spider train
            prompt/completion pairs, the dev prompts zero-/few-shot, the 150 MMLU questions and
            their 5-shot dev examples, made by the library's download, prepare and format
            functions as the pipeline makes them, plus their token lengths). Needs `sentencepiece` and `protobuf` for the one-off tokenizer
            conversion and the SentencePiece file, which the `mistral-common` wheel ships as
            mistral_common/data/tokenizer.model.v1:

              pip download --no-deps mistral-common==1.13.1 -d /tmp/mc
              unzip -o /tmp/mc/mistral_common-*.whl 'mistral_common/data/tokenizer.model.v1' -d /tmp/mc
              python benchmarks/bench_gpu.py prepare --spm /tmp/mc/mistral_common/data/tokenizer.model.v1

  run       (on the GPU machine) builds the random-weight model once (saved under --model-dir,
            /dev/shm by default), loads it through `modeling.load_model` (4-bit NF4), and runs the
            phases: peak (bf16 matmul peak, copy bandwidth), train (reference recipe vs tuned
            settings through `training.train`), generate (batched vs one at a time through
            `generation`), mmlu (few-shot prefix KV cache reused vs recomputed through `mmlu`).

              python benchmarks/bench_gpu.py run --out $OUT

FLOP accounting (model FLOPs, recomputation by gradient checkpointing not counted):
  N_mm = parameters that take part in matrix products = all parameters minus the input embedding
       = 7,110,660,096 for Mistral-7B (lm_head included).
  LoRA training, frozen base: forward 2*N_mm per token, backward 2*N_mm per token (input
  gradients only: the frozen weights get no weight gradient), so 4*N_mm per token, plus the
  LoRA adapters 6*N_lora per token and causal attention 6*L*d*s^2 per sequence of length s
  (forward QK^T and PV: 2*L*d*s^2 with the causal half, backward twice that).
  The usual "6*N*tokens" rule counts weight gradients the frozen base does not compute; it
  would report 1.5x the MFU given here.

The phases live in benchmarks/gpu/ (common, prepare, train, infer, tables, run, multi_gpu); this
file is the command line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.gpu.common import DEFAULT_PREP  # noqa: E402  (also sets the offline environment)


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_gpu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="build the tokenizer and prompt data (CPU machine)")
    pp.add_argument("--spm", help="Mistral 7B v0.x SentencePiece model (mistral_common/data/tokenizer.model.v1)")
    pp.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                    help="Spider/MMLU mirror (default: %(default)s)")
    pp.add_argument("--out", default=str(DEFAULT_PREP), help="output folder (default: %(default)s)")
    pr = sub.add_parser("run", help="run the benchmark (GPU machine)")
    pr.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out/run"), help="results folder")
    pr.add_argument("--prep", default=str(DEFAULT_PREP), help="folder written by `prepare`")
    pr.add_argument("--model-dir", default="/dev/shm/mistral7b-random", help="where the random model is saved")
    pr.add_argument("--work", default="/tmp/bench_gpu", help="scratch folder (adapters, training data)")
    pr.add_argument("--phases", default="peak,train,generate,generate_bf16,mmlu")
    pr.add_argument("--variants", default="", help="training variants (comma list; default all)")
    pr.add_argument("--quick", action="store_true", help="fewer timed steps (smoke test)")
    pr.add_argument("--tiny", action="store_true", help="a 2-layer Mistral instead of 7B (checks the script; runs on CPU)")
    pr.add_argument("--in-process", action="store_true",
                    help="run all training variants in this process (default: one process each)")
    pr.add_argument("--variant-timeout", type=int, default=240, help="seconds per training-variant process")
    pr.add_argument("--skip-check", action="store_true", help=argparse.SUPPRESS)
    pr.add_argument("--peak-tflops", type=float, default=798.0, help="bf16 peak if the peak phase is skipped")
    pr.add_argument("--train-pool", type=int, default=256, help="training examples sampled for the timing runs")
    pr.add_argument("--max-length", type=int, default=None,
                    help="train.max_length for the runs (default: params.yaml's; 2304 keeps every Spider "
                         "train example with the Mistral tokenizer)")
    pr.add_argument("--max-new-tokens", type=int, default=64)
    pr.add_argument("--gen-subset", type=int, default=64, help="dev prompts timed batched (random subset)")
    pr.add_argument("--gen-single", type=int, default=4, help="dev prompts timed one at a time")
    pr.add_argument("--gen-batch-sizes", default="1,8,32,64", help="batch sizes, 4-bit model + LoRA adapter")
    pr.add_argument("--gen-batch-sizes-bf16", default="1,64",
                    help="batch sizes, bf16 model with the adapter merged (phase generate_bf16)")
    pr.add_argument("--mmlu-batch-size", type=int, default=8)
    pm = sub.add_parser("multi-gpu", help="the train stage on 1 GPU and, data parallel, on all GPUs (GPU machine)")
    pm.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out/multi_gpu"))
    pm.add_argument("--prep", default=str(DEFAULT_PREP))
    pm.add_argument("--model-dir", default="/dev/shm/mistral7b-random")
    pm.add_argument("--work", default="/tmp/bench_gpu")
    pm.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    pm.add_argument("--recipes", default="ref,tuned", help="ref (params.yaml), tuned (TUNED_TRAIN), comma list")
    pm.add_argument("--variant-timeout", type=int, default=300)
    sub.add_parser("stage-train", help="stages/train.py, with --no-live if dvclive is missing "
                                       "(for `accelerate launch` on the GPU machine); arguments pass through")
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["stage-train"]:
        from benchmarks.gpu.multi_gpu import cmd_stage_train

        return cmd_stage_train(raw[1:])
    a = p.parse_args(argv)
    if a.cmd == "multi-gpu":
        from benchmarks.gpu.multi_gpu import cmd_multi_gpu

        return cmd_multi_gpu(a)
    if a.cmd == "prepare":
        from benchmarks.gpu.prepare import cmd_prepare

        cmd_prepare(a)
    else:
        from benchmarks.gpu.run import cmd_run

        cmd_run(a)


if __name__ == "__main__":
    main()
