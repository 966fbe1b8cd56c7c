"""`bench_gpu.py prepare` (CPU machine, once): the Mistral tokenizer and the benchmark's prompt data.

The data go through the library exactly as the pipeline makes them: `data.spider_from_mirror` /
`data.mmlu_from_mirror` (stage download), `preparing.prepare` (stage prepare, with every Spider
train and dev question instead of params.yaml's samples) and `formatting.format_all` (stage
format, with the Mistral tokenizer), in a temporary folder; bench_data.json.gz keeps what the
GPU phases read.
"""
from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

from .common import MISTRAL_CHAT_TEMPLATE, MMLU_K_SHOT, REPO


def build_tokenizer(spm: Path, dest: Path):
    """Convert the Mistral SentencePiece model to a fast tokenizer directory with the chat template."""
    from transformers import AutoTokenizer

    from sqltradeoff.io import sha256_file

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm, Path(tmp) / "tokenizer.model")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "add_bos_token": True, "add_eos_token": False, "legacy": False}))
        tok = AutoTokenizer.from_pretrained(tmp)
    if len(tok) != 32000:
        raise SystemExit(f"{spm}: {len(tok)} tokens, expected the 32,000 of Mistral 7B v0.x (tokenizer.model.v1)")
    tok.chat_template = MISTRAL_CHAT_TEMPLATE
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dest)
    (dest / "tokenizer.model").unlink(missing_ok=True)   # the fast tokenizer.json is all that is needed
    sha = sha256_file(spm)
    (dest / "SOURCE.json").write_text(json.dumps({"spm": str(spm), "sha256": sha}, indent=2))
    return AutoTokenizer.from_pretrained(dest)


def load_tokenizer(spm: str | None, tok_dir: Path):
    if spm:
        return build_tokenizer(Path(spm), tok_dir)
    from transformers import AutoTokenizer

    if not (tok_dir / "tokenizer.json").is_file():
        raise SystemExit(f"no tokenizer in {tok_dir}: pass --spm PATH/tokenizer.model.v1 (see --help)")
    return AutoTokenizer.from_pretrained(tok_dir)


def run_pipeline(mirror: Path, work: Path, config, tok) -> dict:
    """Stages download, prepare and format through the library into `work`; their manifests."""
    from sqltradeoff import data
    from sqltradeoff.config import as_mapping
    from sqltradeoff.formatting import format_all
    from sqltradeoff.preparing import prepare

    raw_spider = data.spider_from_mirror(mirror, work / "raw" / "spider")
    data.mmlu_from_mirror(mirror, as_mapping(config.data.mmlu if config.data else None), work / "raw" / "mmlu")
    sample = {**config.need("sample").written, "spider_dev_n": "all", "spider_train_n": "all"}
    prepared = prepare(work / "raw" / "spider", work / "raw" / "mmlu", work / "prepared", sample,
                       k_shot=MMLU_K_SHOT)
    formatted = format_all(work / "prepared", work / "raw" / "spider" / "database", work / "formatted",
                           config.need("prompt"), tok, int(config.need("train")["max_length"]))
    return {"raw_spider": raw_spider, "prepared": prepared, "formatted": formatted}


def bench_data(work: Path, manifests: dict, tok, max_length: int) -> dict:
    """What the GPU phases read, from the pipeline's files in `work`."""
    from sqltradeoff.io import read_jsonl
    from sqltradeoff.training import tokenize_examples

    fmt = work / "formatted"
    train = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(fmt / "train.jsonl")]
    dev = [{"id": r["id"], "prompt": r["prompt"]} for r in read_jsonl(fmt / "eval_zeroshot.jsonl")]
    dev_few = [{"id": r["id"], "prompt": r["prompt"]} for r in read_jsonl(fmt / "eval_fewshot.jsonl")]
    _, tstats = tokenize_examples(train, tok, max_length)
    lengths = [len(x["input_ids"]) for x in tokenize_examples(train, tok, 10 ** 9)[0]]
    counts = manifests["raw_spider"]["counts"]
    tokens = manifests["formatted"]["tokens"]     # formatting.length_stats of each kind of text
    return {
        "train": train, "train_tokenize_stats": tstats, "train_lengths": lengths,
        "max_length_params": max_length,
        "train_total_in_release": counts["train"]["source"], "dev_total_in_release": counts["dev"]["source"],
        "dev": dev, "dev_fewshot": dev_few,
        "mmlu_test": read_jsonl(work / "prepared" / "mmlu_test.jsonl"),
        "mmlu_dev": read_jsonl(work / "prepared" / "mmlu_dev.jsonl"),
        "lengths": {"train_prompt": tokens["train_prompt"], "train_completion": tokens["train_completion"],
                    "train_total": tokens["train_total"], "dev_prompt": tokens["eval_zeroshot_prompt"],
                    "dev_fewshot_prompt": tokens["eval_fewshot_prompt"]},
    }


def cmd_prepare(a):
    from sqltradeoff.params import load_params

    out = Path(a.out)
    tok_dir = out / "mistral-tokenizer"
    tok = load_tokenizer(a.spm, tok_dir)
    config = load_params(REPO / "params.yaml").config
    max_length = int(config.need("train")["max_length"])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".pipeline-") as tmp:
        manifests = run_pipeline(Path(a.data), Path(tmp), config, tok)
        bench = bench_data(Path(tmp), manifests, tok, max_length)
    c = manifests["raw_spider"]["counts"]
    missing = sorted(manifests["raw_spider"]["excluded"]["missing_database"]["train"])
    print(f"train: {c['train']['source']} pairs, {c['train']['kept']} with a database here (missing: {missing})")
    print(f"dev: {c['dev']['source']} questions, {c['dev']['kept']} with a database here")
    bench["source"] = {"data": str(a.data), "params_prompt": config.need("prompt").as_dict(),
                       "seed": config.need("sample").seed, "tokenizer": str(tok_dir)}
    with gzip.open(out / "bench_data.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(bench, fh)
    print(json.dumps({"lengths": bench["lengths"], "train_tokenize_stats": bench["train_tokenize_stats"]}, indent=1))
    print(f"wrote {out / 'bench_data.json.gz'} ({(out / 'bench_data.json.gz').stat().st_size / 1e6:.1f} MB) "
          f"and {tok_dir}")
