"""Predict-stage throughput: the generation backends side by side on the same prompts, one process.

`bench_predict(model, tokenizer, prompts, batch_size=..., max_new_tokens=...)` runs
`sqltradeoff.generation.generate` once per backend (the reference first) and returns one row per
backend: stage "predict", variant "before" (reference) or "after", backend, seconds,
tokens_per_s (generated tokens / s), prompt and prefill token counts, and how many outputs equal
the reference's text. `warmup=True` first runs each backend on a few prompts (CUDA kernels,
graphs), outside the timing.

CLI (CPU smoke or GPU run; prints the rows as a markdown table and, with --out, writes them as JSON):

  python -m benchmarks.throughput.predict --model .cache/offline-models/smollm2-135m-instruct-q4_1.gguf --n 16
  python -m benchmarks.throughput.predict --model DIR --random-weights --backends reference prefix continuous
  python -m benchmarks.throughput.predict --count-only --n 1034      # prefill tokens only, no model load

Prompts: the `prompt` field of data/formatted/eval_zeroshot.jsonl when it exists (or --prompts
FILE), else the Spider dev questions of the shared mirror with their schema, rendered by the
project's prompt code (sqltradeoff.prompts). --pick first: the first N in dev order (consecutive
questions share a database, as in a full-dev prediction, about 51 questions per database);
--pick spread: N drawn at random (seed 0), as in the default study's 100-question sample.
`--random-weights` builds the model of DIR's config.json with random weights (throughput does not
depend on the weights; bf16 on CUDA, fp32 on CPU); DIR must also hold the tokenizer.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.record import card  # noqa: E402  (re-exported)


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_predict(model, tokenizer, prompts, *, batch_size: int, max_new_tokens: int,
                  backends=("reference", "prefix"), model_name: str | None = None, warmup: bool = False,
                  progress: bool = True) -> list[dict]:
    """One row per backend (see the module docstring); the reference runs first whatever the order."""
    from sqltradeoff.generation import check_backend, generate

    backends = list(dict.fromkeys(check_backend(b) for b in backends))
    if "reference" in backends:
        backends = ["reference"] + [b for b in backends if b != "reference"]
    rows, reference = [], None
    for backend in backends:
        if warmup:
            generate(model, tokenizer, prompts[:batch_size], batch_size=batch_size,
                     max_new_tokens=min(4, max_new_tokens), progress=False, backend=backend)
        _sync()
        t0, c0 = time.perf_counter(), time.process_time()
        outs, st = generate(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                            desc=backend, progress=progress, backend=backend)
        _sync()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        if backend == "reference":
            reference = outs
        equal = None if reference is None else sum(a == b for a, b in zip(outs, reference))
        rows.append({
            "stage": "predict", "variant": "before" if backend == "reference" else "after", "backend": backend,
            "model": model_name, "prompts": len(prompts), "batch_size": batch_size,
            "max_new_tokens": max_new_tokens, "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu_seconds, 3),    # this process's CPU time: comparable on shared cores
            "tokens_per_s": round(st.generated_tokens / seconds, 2) if seconds > 0 else None,
            "generated_tokens": st.generated_tokens, "prompt_tokens": st.prompt_tokens,
            "prefill_tokens_computed": st.prefill_tokens_computed, "prefix_tokens_reused": st.prefix_tokens_reused,
            "prefix_groups": st.prefix_groups, "hit_max_new_tokens": st.hit_max_new_tokens,
            "outputs_equal_reference": None if equal is None else equal == len(prompts),
            "outputs_equal_count": equal, "card": card(), "dtype": str(next(model.parameters()).dtype),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return rows


def shared_data() -> Path:
    env = os.environ.get("SQLTRADEOFF_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_prompts(tokenizer, n: int, pick: str = "first", prompts_file: str | None = None) -> list[str]:
    """N real predict-stage prompts (see the module docstring)."""
    path = Path(prompts_file) if prompts_file else REPO / "data" / "formatted" / "eval_zeroshot.jsonl"
    if prompts_file or path.is_file():
        from sqltradeoff.io import read_jsonl
        rows = [r["prompt"] for r in read_jsonl(path, required=("prompt",))]
    else:
        from sqltradeoff.prompts import render, user_text
        from sqltradeoff.schema import db_path, schema_text

        spider = shared_data() / "spider"
        dev = [ex for ex in json.loads((spider / "dev.json").read_text())
               if db_path(spider / "database", ex["db_id"]).is_file()]
        if pick == "spread":
            dev = random.Random(0).sample(dev, min(n, len(dev)))
        rows = [render(tokenizer, user_text(ex["question"], schema_text(db_path(spider / "database", ex["db_id"]))))[0]
                for ex in dev[:n]]
        return rows
    if pick == "spread":
        rows = random.Random(0).sample(rows, min(n, len(rows)))
    return rows[:n]


def load_random_model(model_dir: str):
    """The architecture of `model_dir`'s config.json with random weights, and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sqltradeoff.modeling import device_settings, load_tokenizer

    settings = device_settings(False)
    cfg = AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=settings.dtype).to(settings.device).eval()
    tok = load_tokenizer({"path": model_dir})
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def prefill_counts(tokenizer, prompts) -> dict:
    """Prompt tokens and the prefill tokens the prefix backend computes (tokenizer only, no model)."""
    from sqltradeoff.generation import prefix_groups

    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    groups = prefix_groups(enc)
    reused = sum(p * len(m) for p, m in groups)
    total = sum(len(e) for e in enc)
    computed = total - reused + sum(p for p, _ in groups)
    return {"prompts": len(enc), "prefix_groups": sum(p > 0 for p, _ in groups), "prompt_tokens": total,
            "prefill_tokens_computed": computed, "prefix_tokens_reused": reused,
            "computed_fraction": round(computed / total, 4)}


def markdown(rows: list[dict]) -> str:
    lines = ["| backend | variant | seconds | CPU s | generated tok/s | prefill tokens computed / prompt tokens "
             "| outputs = reference |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        pre = "?" if r["prefill_tokens_computed"] is None else f"{r['prefill_tokens_computed']:,}"
        lines.append(f"| {r['backend']} | {r['variant']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{pre} / {r['prompt_tokens']:,} | {r['outputs_equal_count']}/{r['prompts']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", "--model-gguf", dest="model",
                    default=str(REPO / ".cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
                    help="model.path: a .gguf file, a Hugging Face directory or a hub id")
    ap.add_argument("--random-weights", action="store_true", help="random weights of --model's config (a directory)")
    ap.add_argument("--cache-dir", default=str(REPO / ".cache/models"), help="GGUF conversion cache")
    ap.add_argument("--prompts", default=None, help="JSONL with a `prompt` field")
    ap.add_argument("--pick", choices=("first", "spread"), default="first")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--backends", nargs="+", default=["reference", "prefix"])
    ap.add_argument("--warmup", action="store_true", help="run each backend on a few prompts first")
    ap.add_argument("--count-only", action="store_true",
                    help="only count prompt and prefix-backend prefill tokens (loads the tokenizer, not the model)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from sqltradeoff.errors import UserError
    from sqltradeoff.generation import check_backend
    from sqltradeoff.modeling import load_model, load_tokenizer

    try:
        if args.count_only:
            tok = load_tokenizer({"path": args.model, "revision": "main", "cache_dir": args.cache_dir})
            print(json.dumps(prefill_counts(tok, load_prompts(tok, args.n, args.pick, args.prompts))))
            return 0
        for b in args.backends:
            check_backend(b)
        if args.random_weights:
            model, tok = load_random_model(args.model)
        else:
            model, tok = load_model({"path": args.model, "revision": "main", "load_in_4bit": False,
                                     "cache_dir": args.cache_dir})
        prompts = load_prompts(tok, args.n, args.pick, args.prompts)
        rows = bench_predict(model, tok, prompts, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                             backends=args.backends, model_name=Path(args.model).name, warmup=args.warmup)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.throughput.predict " + " ".join(argv if argv is not None else sys.argv[1:])
    for r in rows:
        r["command"] = command
    print(markdown(rows))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
