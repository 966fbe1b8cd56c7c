"""Format stage: prompts rendered with the model's chat template (params.yaml `prompt`, `model`).

Reads --prepared (spider_train.jsonl, spider_dev.jsonl, manifest.json) and the SQLite files in
--db-dir; writes to --out:
  train.jsonl          {id, db_id, messages, prompt, completion}: the instruction prompt
                       (schema per prompt.schema: create_table | none) and the gold SQL as the
                       assistant turn; prompt + completion is exactly the rendered conversation
  eval_zeroshot.jsonl  {id, db_id, question, gold_sql, hardness, prompt}: the same prompt
  eval_fewshot.jsonl   the few-shot baseline: prompt.few_shot fixed examples drawn (seed of the
                       prepared manifest) from the training sample, each from a different
                       database, then the target schema and question
  manifest.json        prompt settings, the few-shot ids, token-length statistics
                       (min/mean/p50/p95/max of prompt and completion tokens) and the number of
                       training examples longer than train.max_length

The tokenizer comes from model.path (hub id, local directory or .gguf). Exit status 2 on bad
input or configuration. The logic is `sqltradeoff.formatting.format_all`; this script reads the
parameters, loads the tokenizer and prints a summary.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path

from sqltradeoff.errors import stage_main
from sqltradeoff.formatting import format_all
from sqltradeoff.params import load_params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="format.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", required=True, type=Path, help="prepared data folder (data/prepared)")
    p.add_argument("--db-dir", required=True, type=Path, help="Spider databases (data/raw/spider/database)")
    p.add_argument("--out", required=True, type=Path, help="output folder (data/formatted)")
    p.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: %(default)s)")
    return p


@stage_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_params(args.params).config      # every value checked, before loading a tokenizer
    prompt_cfg = config.need("prompt")
    max_length = (config.train or {}).get("max_length")
    from sqltradeoff.modeling import load_tokenizer

    tokenizer = load_tokenizer(config.need("model"))
    m = format_all(args.prepared, args.db_dir, args.out, prompt_cfg, tokenizer, max_length)
    t = m["tokens"]
    print(f"formatted {m['counts']} -> {args.out}; train tokens p50/p95/max "
          f"{t['train_total'].get('p50')}/{t['train_total'].get('p95')}/{t['train_total'].get('max')}, "
          f"{m['train_over_max_length']} over max_length {max_length}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
