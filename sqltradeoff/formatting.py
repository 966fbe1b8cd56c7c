"""Stage format's logic: prompts rendered with the model's chat template.

`format_all(prepared, db_dir, out, prompt_cfg, tokenizer, max_length)` reads the prepared
samples and the SQLite files in `db_dir` and writes train.jsonl, eval_zeroshot.jsonl,
eval_fewshot.jsonl and manifest.json (prompt settings, few-shot ids, `length_stats` of the token
counts, examples over `max_length`) to `out`, atomically (contents: `stages/format.py --help`
and docs/design.md, "Data contracts").
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import prompts
from .io import atomic_dir, portable_path, read_json, read_jsonl, write_json, write_jsonl
from .modeling import token_ids
from .sampling import pick_few_shot


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"n": 0}
    a = np.asarray(lengths)
    return {"n": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1),
            "p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1), "max": int(a.max())}


def token_lengths(tokenizer, texts: list[str], batch: int = 512) -> list[int]:
    """Token count of each text (no special tokens added), tokenized in batches."""
    return [len(ids) for ids in token_ids(tokenizer, texts, batch)]


def train_rows(train: list[dict], db_dir: Path, pcfg: prompts.PromptConfig, tokenizer) -> list[dict]:
    """{id, db_id, messages, prompt, completion} of each training example (gold SQL as the answer)."""
    from tqdm import tqdm

    rows = []
    for r in tqdm(train, desc="format train", unit="ex", file=sys.stderr, mininterval=2):
        user = prompts.user_text(r["question"], prompts.schema_for(db_dir, r["db_id"], pcfg))
        prompt, completion = prompts.render(tokenizer, user, r["query"])
        rows.append({"id": r["id"], "db_id": r["db_id"], "messages": prompts.messages(user, r["query"]),
                     "prompt": prompt, "completion": completion})
    return rows


def eval_rows(dev: list[dict], db_dir: Path, pcfg: prompts.PromptConfig, tokenizer,
              shots: list[dict]) -> tuple[list[dict], list[dict]]:
    """(zero-shot rows, few-shot rows) of the evaluation questions: the same fields, other prompts."""
    from tqdm import tqdm

    zero, few = [], []
    for r in tqdm(dev, desc="format eval", unit="ex", file=sys.stderr, mininterval=2):
        schema = prompts.schema_for(db_dir, r["db_id"], pcfg)
        base = {"id": r["id"], "db_id": r["db_id"], "question": r["question"], "gold_sql": r["query"],
                "hardness": r["hardness"]}
        zp, _ = prompts.render(tokenizer, prompts.user_text(r["question"], schema))
        fp, _ = prompts.render(tokenizer, prompts.user_text(r["question"], schema, shots))
        zero.append({**base, "prompt": zp})
        few.append({**base, "prompt": fp})
    return zero, few


def format_all(prepared: Path, db_dir: Path, out: Path, prompt_cfg, tokenizer,
               max_length: int | None = None) -> dict:
    """Write the formatted files and manifest.json to `out` (see the module docstring); returns
    the manifest. `prompt_cfg`: a `PromptConfig` or a mapping (checked here)."""
    pcfg = prompts.prompt_config(prompt_cfg)   # a PromptConfig (a mapping is checked here)
    pman = read_json(prepared / "manifest.json")
    seed = pman.get("seed") if isinstance(pman, dict) else None
    train = read_jsonl(prepared / "spider_train.jsonl", ("id", "db_id", "question", "query"))
    dev = read_jsonl(prepared / "spider_dev.jsonl", ("id", "db_id", "question", "query", "hardness"))
    shots = pick_few_shot(train, pcfg.few_shot, seed)
    train_out = train_rows(train, db_dir, pcfg, tokenizer)
    zero, few = eval_rows(dev, db_dir, pcfg, tokenizer, shots)
    lens = lambda texts: token_lengths(tokenizer, texts)  # noqa: E731
    t_len = lens([r["prompt"] + r["completion"] for r in train_out])
    manifest = {
        "prompt": pcfg.as_dict(),
        "tokenizer": portable_path(getattr(tokenizer, "name_or_path", None)),
        "seed": seed,
        "few_shot_ids": [s["id"] for s in shots],
        "few_shot_db_ids": [s["db_id"] for s in shots],
        "counts": {"train": len(train_out), "eval_zeroshot": len(zero), "eval_fewshot": len(few)},
        "tokens": {
            "train_prompt": length_stats(lens([r["prompt"] for r in train_out])),
            "train_completion": length_stats(lens([r["completion"] for r in train_out])),
            "train_total": length_stats(t_len),
            "eval_zeroshot_prompt": length_stats(lens([r["prompt"] for r in zero])),
            "eval_fewshot_prompt": length_stats(lens([r["prompt"] for r in few])),
        },
        "max_length": max_length,
        "train_over_max_length": sum(n > max_length for n in t_len) if max_length else None,
    }
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", train_out)
        write_jsonl(tmp / "eval_zeroshot.jsonl", zero)
        write_jsonl(tmp / "eval_fewshot.jsonl", few)
        write_json(tmp / "manifest.json", manifest)
    return manifest
