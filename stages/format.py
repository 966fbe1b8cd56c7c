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
input or configuration.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path

import numpy as np

from sqltradeoff import prompts
from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.io import atomic_dir, read_json, read_jsonl, write_json, write_jsonl
from sqltradeoff.params import load_params
from sqltradeoff.sampling import pick_few_shot


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="format.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", required=True, type=Path, help="prepared data folder (data/prepared)")
    p.add_argument("--db-dir", required=True, type=Path, help="Spider databases (data/raw/spider/database)")
    p.add_argument("--out", required=True, type=Path, help="output folder (data/formatted)")
    p.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: %(default)s)")
    return p


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"n": 0}
    a = np.asarray(lengths)
    return {"n": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1),
            "p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1), "max": int(a.max())}


def format_all(prepared: Path, db_dir: Path, out: Path, prompt_cfg: dict, tokenizer,
               max_length: int | None = None) -> dict:
    from tqdm import tqdm

    pcfg = prompts.prompt_config(prompt_cfg)   # a PromptConfig (a mapping is checked here)
    pman = read_json(prepared / "manifest.json")
    seed = pman.get("seed") if isinstance(pman, dict) else None
    train = read_jsonl(prepared / "spider_train.jsonl", ("id", "db_id", "question", "query"))
    dev = read_jsonl(prepared / "spider_dev.jsonl", ("id", "db_id", "question", "query", "hardness"))
    shots = pick_few_shot(train, pcfg.few_shot, seed)

    def tok_lens(texts: list[str], batch: int = 512) -> list[int]:
        out: list[int] = []
        for i in range(0, len(texts), batch):
            out += [len(ids) for ids in tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"]]
        return out

    train_rows = []
    for r in tqdm(train, desc="format train", unit="ex", file=sys.stderr, mininterval=2):
        user = prompts.user_text(r["question"], prompts.schema_for(db_dir, r["db_id"], pcfg))
        prompt, completion = prompts.render(tokenizer, user, r["query"])
        train_rows.append({"id": r["id"], "db_id": r["db_id"], "messages": prompts.messages(user, r["query"]),
                           "prompt": prompt, "completion": completion})
    zero, few = [], []
    for r in tqdm(dev, desc="format eval", unit="ex", file=sys.stderr, mininterval=2):
        schema = prompts.schema_for(db_dir, r["db_id"], pcfg)
        base = {"id": r["id"], "db_id": r["db_id"], "question": r["question"], "gold_sql": r["query"],
                "hardness": r["hardness"]}
        zp, _ = prompts.render(tokenizer, prompts.user_text(r["question"], schema))
        fp, _ = prompts.render(tokenizer, prompts.user_text(r["question"], schema, shots))
        zero.append({**base, "prompt": zp})
        few.append({**base, "prompt": fp})
    p_len = tok_lens([r["prompt"] for r in train_rows])
    c_len = tok_lens([r["completion"] for r in train_rows])
    t_len = tok_lens([r["prompt"] + r["completion"] for r in train_rows])
    z_len = tok_lens([r["prompt"] for r in zero])
    f_len = tok_lens([r["prompt"] for r in few])
    over = sum(n > max_length for n in t_len) if max_length else None
    manifest = {
        "prompt": pcfg.as_dict(),
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "seed": seed,
        "few_shot_ids": [s["id"] for s in shots],
        "few_shot_db_ids": [s["db_id"] for s in shots],
        "counts": {"train": len(train_rows), "eval_zeroshot": len(zero), "eval_fewshot": len(few)},
        "tokens": {
            "train_prompt": length_stats(p_len), "train_completion": length_stats(c_len),
            "train_total": length_stats(t_len),
            "eval_zeroshot_prompt": length_stats(z_len), "eval_fewshot_prompt": length_stats(f_len),
        },
        "max_length": max_length,
        "train_over_max_length": over,
    }
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", train_rows)
        write_jsonl(tmp / "eval_zeroshot.jsonl", zero)
        write_jsonl(tmp / "eval_fewshot.jsonl", few)
        write_json(tmp / "manifest.json", manifest)
    return manifest


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
