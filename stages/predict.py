#!/usr/bin/env python
"""Stage predict: greedy SQL predictions for rendered prompts, one model load for all jobs.

Each --job IN OUT reads IN (JSONL: id, db_id, question, gold_sql, hardness, prompt; the prompt
already rendered with the chat template) and writes OUT (JSONL: id, db_id, question, gold_sql,
pred_sql, raw_output, hardness), in IN's order. pred_sql is extracted from the raw output with
sqltradeoff.extract.extract_sql. Generation settings: predict.batch_size, predict.max_new_tokens,
predict.backend (reference | prefix | static | graphs | continuous; see sqltradeoff/generation.py),
predict.cuda_graphs and predict.compile_level (the continuous backend), predict.use_liger_kernel
(CUDA: liger-kernel's fused layers).
Generation statistics (wall time, tokens/s) go to stderr as one JSON line per job, and with
--stats-dir DIR also to DIR/<OUT name>.json (e.g. metrics/predict/run1.json).

Example:
  python stages/predict.py --adapter models/run1/adapter \\
      --job data/formatted/eval_zeroshot.jsonl data/predictions/run1.jsonl
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
from pathlib import Path

from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.io import read_jsonl, write_json, write_jsonl
from sqltradeoff.params import load_params

REQUIRED = ("id", "db_id", "question", "gold_sql", "hardness", "prompt")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", nargs=2, action="append", metavar=("IN", "OUT"), required=True,
                    help="input prompts JSONL and output predictions JSONL (repeatable)")
    ap.add_argument("--adapter", default=None, help="PEFT adapter directory (models/RUN/adapter); default: base model")
    ap.add_argument("--adapter-scale", type=float, default=1.0, metavar="S",
                    help="multiply the adapter's LoRA update by S (W + S*dW; 0 = base, 1 = as trained; default 1)")
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    ap.add_argument("--stats-dir", default=None,
                    help="also write each job's generation statistics to DIR/<OUT name>.json")
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts of each job (smoke tests)")
    return ap.parse_args(argv)


def stats_path(stats_dir: str | Path, out: str | Path) -> Path:
    return Path(stats_dir) / (Path(out).stem + ".json")


@stage_main
def main(argv=None):
    args = parse_args(argv)
    config = load_params(args.params).config      # every value checked (sqltradeoff/config.py)
    from sqltradeoff.cpu import apply_cpu_threads
    apply_cpu_threads(config.cpu_threads)   # before torch loads (sqltradeoff/cpu.py)
    pred_cfg = config.need("predict")
    batch_size, max_new_tokens, backend = pred_cfg.batch_size, pred_cfg.max_new_tokens, pred_cfg.backend
    model_cfg = config.need("model")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be positive")

    # Read and check every input before the (slow) model load.
    jobs = []
    outs = set()
    for src, dst in args.job:
        if Path(src).resolve() == Path(dst).resolve():
            raise UserError(f"--job {src} {dst}: the output would overwrite the input")
        if Path(dst).resolve() in outs:
            raise UserError(f"--job: output {dst} given twice")
        outs.add(Path(dst).resolve())
        rows = read_jsonl(src, required=REQUIRED)
        if not rows:
            raise UserError(f"{src}: no prompts")
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"{src}: duplicate id {dup!r}")
        bad = next((r["id"] for r in rows if not isinstance(r["prompt"], str) or not r["prompt"]), None)
        if bad is not None:
            raise UserError(f"{src}: row {bad!r} has an empty or non-string prompt")
        jobs.append((src, dst, rows[: args.limit] if args.limit else rows))

    from sqltradeoff.extract import extract_sql
    from sqltradeoff.generation import check_backend, generate
    from sqltradeoff.modeling import load_model

    check_backend(backend)                 # before the (slow) model load
    if pred_cfg.use_liger_kernel:
        import torch
        from sqltradeoff.modeling import require_liger
        require_liger("predict.use_liger_kernel", torch.cuda.is_available())

    model, tokenizer = load_model(model_cfg, adapter=args.adapter, adapter_scale=args.adapter_scale)
    if pred_cfg.cpu_linear == "onednn":             # fp32 CPU layers only (a GPU model is left as it is)
        from sqltradeoff.onednn import pack_linears
        pack_linears(model)                # after the merge: the weights are final (onednn.py)
    if pred_cfg.use_liger_kernel:
        from sqltradeoff.generation import apply_liger_kernels
        apply_liger_kernels(model)
    from sqltradeoff.attention import cpu_grouped_sdpa
    cpu_grouped_sdpa()                     # CPU: grouped K/V heads to torch's SDPA as they are (attention.py)
    for src, dst, rows in jobs:
        outputs, stats = generate(model, tokenizer, [r["prompt"] for r in rows], batch_size=batch_size,
                                  max_new_tokens=max_new_tokens, desc=Path(dst).stem, backend=backend,
                                  cuda_graphs=None if pred_cfg.cuda_graphs == "auto" else pred_cfg.cuda_graphs,
                                  compile_level=pred_cfg.compile_level)
        preds = [{"id": r["id"], "db_id": r["db_id"], "question": r["question"], "gold_sql": r["gold_sql"],
                  "pred_sql": extract_sql(raw), "raw_output": raw, "hardness": r["hardness"]}
                 for r, raw in zip(rows, outputs)]
        write_jsonl(dst, preds)
        info = {"input": str(src), "output": str(dst), "adapter": args.adapter, **stats.as_dict()}
        if args.stats_dir:
            write_json(stats_path(args.stats_dir, dst), info)
        print(json.dumps(info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
