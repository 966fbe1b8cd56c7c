"""Training's tokenisation of Spider train: one tokenizer call per text (before) vs batched calls
(`modeling.token_ids`, what `training.tokenize_examples` does now), interleaved in one process.

    .venv/bin/python benchmarks/bench_tokenize.py [--data data/formatted/train.jsonl] [--repeat 3]

The tokenizer is the one params.yaml's model gives (the GGUF's converted copy by default). Every
repeat checks that both ways give the same ids. Prints a markdown row per variant (median and min
seconds over the repeats) with the processor.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import card  # noqa: E402
from sqltradeoff.io import read_jsonl  # noqa: E402
from sqltradeoff.modeling import load_tokenizer, token_ids  # noqa: E402
from sqltradeoff.params import load_params  # noqa: E402


def one_call_per_text(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/formatted/train.jsonl")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    tok = load_tokenizer(load_params(a.params).config.need("model"))
    rows = read_jsonl(a.data)
    texts = [r["prompt"] + r["completion"] for r in rows] + [r["prompt"] for r in rows]
    times: dict[str, list[float]] = {"one call per text": [], "batched (token_ids)": []}
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        ref = one_call_per_text(tok, texts)
        times["one call per text"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = token_ids(tok, texts)
        times["batched (token_ids)"].append(time.perf_counter() - t0)
        if out != ref:
            raise SystemExit("batched ids differ from one call per text")
    print(f"{len(rows)} examples, {len(texts)} texts, {card()}, ids equal in every repeat")
    print("| variant | median s | min s |\n|---|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
