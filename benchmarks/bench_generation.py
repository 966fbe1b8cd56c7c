#!/usr/bin/env python
"""Benchmark: greedy generation throughput batched vs one at a time, and one LoRA training step.

Prompts: the first N Spider dev questions with their database schema (CREATE TABLE), rendered
with the model's chat template exactly as the format stage does (sqltradeoff.prompts), or the
`prompt` field of a JSONL file (--prompts, e.g. data/formatted/eval_zeroshot.jsonl).
Generation: sqltradeoff.generation.generate with a fixed max_new_tokens, batch size B vs 1
(same prompts, same model load). Training: one optimizer step (grad_accum micro-batches of
batch 1 x max_length tokens, loss on the last 48 tokens) of LoRA on the same model, with the
params.yaml defaults (r=8, alpha=16, q/k/v/o), adamw_torch, fp32 on CPU.

Prints a markdown table (and writes it to --out if given).

  python benchmarks/bench_generation.py                       # Qwen2.5-Coder-0.5B GGUF, 16 prompts
  python benchmarks/bench_generation.py --prompts data/formatted/eval_zeroshot.jsonl --n 16
"""
from __future__ import annotations

import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    env = os.environ.get("SQLTRADEOFF_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def build_prompts(tok, args) -> list[str]:
    if args.prompts:
        from sqltradeoff.io import read_jsonl
        return [r["prompt"] for r in read_jsonl(args.prompts, required=("prompt",))][: args.n]
    from sqltradeoff.prompts import render, user_text
    from sqltradeoff.schema import db_path, schema_text

    spider = shared_data() / "spider"
    dev = json.loads((spider / "dev.json").read_text())
    prompts = []
    for ex in dev:
        path = db_path(spider / "database", ex["db_id"])
        if not path.is_file():
            continue
        prompts.append(render(tok, user_text(ex["question"], schema_text(path)))[0])
        if len(prompts) == args.n:
            break
    return prompts


def bench_generation(model, tok, prompts, batch_size, max_new_tokens, backend="reference"):
    from sqltradeoff.generation import generate

    rows = {}
    outs = {}
    for bs in (batch_size, 1):
        c0 = time.process_time()
        out, st = generate(model, tok, prompts, batch_size=bs, max_new_tokens=max_new_tokens, desc=f"batch {bs}",
                           backend=backend)
        st.cpu_s = time.process_time() - c0       # CPU seconds: comparable when the machine is shared
        outs[bs] = out
        rows[bs] = st
    same = sum(a == b for a, b in zip(outs[batch_size], outs[1]))
    return rows, same


def bench_train_step(model_cfg, tok, prompts, max_length, grad_accum, lora_r, lora_alpha):
    import torch
    from peft import LoraConfig, get_peft_model

    from sqltradeoff.modeling import load_model

    model, tok = load_model(model_cfg, for_training=True)
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.05,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    ids = []
    for p in prompts:                          # real prompt text, concatenated up to max_length tokens
        ids += tok(p, add_special_tokens=False)["input_ids"]
        if len(ids) >= max_length:
            break
    ids = torch.tensor([(ids * (max_length // max(len(ids), 1) + 1))[:max_length]])
    labels = ids.clone()
    labels[:, :-48] = -100
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def step():
        t0, c0 = time.time(), time.process_time()
        for _ in range(grad_accum):
            loss = model(input_ids=ids, labels=labels).loss / grad_accum
            loss.backward()
        opt.step()
        opt.zero_grad()
        return time.time() - t0, time.process_time() - c0

    warm, _ = step()
    measured, cpu = step()
    return {"warmup_step_s": warm, "step_s": measured, "step_cpu_s": cpu, "micro_batches": grad_accum,
            "tokens_per_s": grad_accum * max_length / measured,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / ".cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
                    help="model.path: GGUF file, HF directory or hub id")
    ap.add_argument("--cache-dir", default=str(REPO / ".cache/models"), help="GGUF conversion cache")
    ap.add_argument("--prompts", default=None, help="JSONL with a `prompt` field (default: Spider dev + schema)")
    ap.add_argument("--n", type=int, default=16, help="number of prompts (default 16)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=512, help="training sequence length (default 512)")
    ap.add_argument("--grad-accum", type=int, default=4, help="micro-batches per optimizer step (default 4)")
    ap.add_argument("--backend", default="reference", choices=("reference", "prefix", "continuous"),
                    help="generation backend (benchmarks/throughput/predict.py compares them side by side)")
    ap.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)

    import torch

    from sqltradeoff.modeling import load_model

    model_cfg = {"path": args.model, "revision": "main", "load_in_4bit": False, "cache_dir": args.cache_dir}
    t0 = time.time()
    model, tok = load_model(model_cfg)
    load_s = time.time() - t0
    prompts = build_prompts(tok, args)
    prompt_lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    gen, same = bench_generation(model, tok, prompts, args.batch_size, args.max_new_tokens, args.backend)
    del model
    train = None
    if not args.no_train:
        train = bench_train_step(model_cfg, tok, prompts, args.max_length, args.grad_accum, 8, 16)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    lines = [
        f"Model `{Path(args.model).name}`, fp32 on {'CUDA' if torch.cuda.is_available() else 'CPU'} "
        f"({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.machine()}); model load {load_s:.1f} s.",
        f"{len(prompts)} prompts, {min(prompt_lens)}-{max(prompt_lens)} tokens (mean "
        f"{sum(prompt_lens) / len(prompt_lens):.0f}); greedy, max_new_tokens={args.max_new_tokens}, "
        f"backend {args.backend}; "
        f"outputs identical batched vs single: {same}/{len(prompts)}.",
        "",
        "| setting | wall s | CPU s | generated tokens | tokens/s (wall) | s per prompt |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for bs, st in gen.items():
        lines.append(f"| batch {bs} | {st.wall_time_s:.1f} | {st.cpu_s:.1f} | {st.generated_tokens} | "
                     f"{st.tokens_per_s:.1f} | "
                     f"{st.wall_time_s / st.prompts:.2f} |")
    b, s = gen[args.batch_size], gen[1]
    lines.append(f"\nBatching speed-up: {s.wall_time_s / b.wall_time_s:.2f}x wall time, "
                 f"{s.cpu_s / b.cpu_s:.2f}x CPU time. Load average at the end: "
                 f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (the cores are shared).")
    if train:
        lines += ["", "| LoRA training step | value |", "| --- | ---: |",
                  f"| micro-batches x tokens | {train['micro_batches']} x {args.max_length} |",
                  f"| optimizer step, wall s | {train['step_s']:.1f} (first, warm-up: {train['warmup_step_s']:.1f}) |",
                  f"| optimizer step, CPU s | {train['step_cpu_s']:.1f} |",
                  f"| training tokens/s | {train['tokens_per_s']:.1f} |",
                  f"| trainable parameters | {train['trainable_params']:,} |"]
    lines.append(f"\nPeak RSS {peak_gb:.1f} GiB. Command: `python benchmarks/bench_generation.py "
                 f"{' '.join(argv if argv is not None else sys.argv[1:])}`")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
