"""CPU attention with grouped key/value heads: transformers' `sdpa` as it is (the heads copied by
`repeat_kv` whenever there is a padding mask) vs `attention.cpu_grouped_sdpa` (the grouped heads
handed to torch's SDPA, `enable_gqa=True`), side by side in one process.

    .venv/bin/python benchmarks/bench_cpu_attention.py [--n 16] [--batch-size 8] [--backend prefix]
        [--out benchmarks/results/cpu_attention.json]

1. transformers' `sdpa_attention_forward` on the study model's attention shape (Qwen2.5-0.5B: 14
   query heads on 2 key/value heads of 64), 8 rows over 490 cached positions with a padding mask:
   one decoding step (1 query position) and a prefill chunk (40), the two paths alternated.
2. The predict stage's generation of the first `--n` prompts of data/formatted/eval_zeroshot.jsonl
   with params.yaml's model (linear layers as `predict.cpu_linear` says, as the stage does), in the
   order repeat, grouped, grouped, repeat; the texts of all four runs must be equal.
Writes one JSON object with the processor, the command and both parts; prints markdown rows.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import write_result  # noqa: E402


def _ms(f, reps: int = 20) -> float:
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1e3


def kernels(rows: int = 8, cached: int = 490) -> list[dict]:
    import types

    import torch
    from transformers.integrations import sdpa_attention

    from sqltradeoff.attention import cpu_grouped_sdpa

    torch.manual_seed(0)
    heads, kv_heads, dim = 14, 2, 64
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    out = []
    for q_len in (1, 40):
        q = torch.randn(rows, heads, q_len, dim)
        k, v = torch.randn(rows, kv_heads, cached, dim), torch.randn(rows, kv_heads, cached, dim)
        mask = torch.ones(rows, 1, q_len, cached, dtype=torch.bool).tril(cached - q_len)
        mask[: rows // 2, :, :, :60] = False                      # left padding of half the rows

        def run():
            return sdpa_attention.sdpa_attention_forward(module, q, k, v, mask, scaling=dim ** -0.5)[0]

        times = {"repeat": 0.0, "grouped": 0.0}
        results = {}
        for _ in range(2):                                   # alternate: noisy machines
            times["repeat"] += _ms(run)
            results["repeat"] = run()
            undo = cpu_grouped_sdpa()
            times["grouped"] += _ms(run)
            results["grouped"] = run()
            undo()
        out.append({"shape": f"{rows} rows x {q_len} query positions over {cached} cached, {heads}/{kv_heads} heads",
                    "repeat_ms": round(times["repeat"] / 2, 3), "grouped_ms": round(times["grouped"] / 2, 3),
                    "max_abs_diff": float((results["repeat"] - results["grouped"]).abs().max())})
    return out


def generation(n: int, batch_size: int, backend: str, params: str) -> dict:
    from sqltradeoff.cpu import apply_cpu_threads
    from sqltradeoff.params import load_params

    config = load_params(params).config
    apply_cpu_threads(config.cpu_threads)
    from sqltradeoff.attention import cpu_grouped_sdpa
    from sqltradeoff.generation import generate
    from sqltradeoff.io import read_jsonl
    from sqltradeoff.modeling import load_model

    model, tok = load_model(config.need("model"))
    if config.need("predict").cpu_linear == "onednn":
        from sqltradeoff.onednn import pack_linears
        pack_linears(model)
    prompts = [r["prompt"] for r in read_jsonl(REPO / "data/formatted/eval_zeroshot.jsonl")[:n]]
    runs = []
    for variant in ("repeat", "grouped", "grouped", "repeat"):
        undo = cpu_grouped_sdpa() if variant == "grouped" else (lambda: None)
        t = time.perf_counter()
        texts, st = generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=128, backend=backend,
                             progress=False)
        runs.append({"variant": variant, "seconds": round(time.perf_counter() - t, 1),
                     "generated_tokens": st.generated_tokens, "texts": texts})
        undo()
        print(f"{variant}: {runs[-1]['seconds']} s", file=sys.stderr, flush=True)
    equal = all(r["texts"] == runs[0]["texts"] for r in runs)
    for r in runs:
        del r["texts"]
    return {"prompts": len(prompts), "batch_size": batch_size, "backend": backend,
            "cpu_linear": config.need("predict").cpu_linear, "all_outputs_equal": equal, "runs": runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backend", default="prefix")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/cpu_attention.json"))
    a = ap.parse_args(argv)
    os.chdir(REPO)
    kern = kernels()
    gen = generation(a.n, a.batch_size, a.backend, a.params)
    write_result(a.out, "benchmarks/bench_cpu_attention.py", argv, kernels=kern, generation=gen)
    print("| attention (transformers' sdpa_attention_forward) | repeat_kv ms | grouped ms | max abs diff |")
    print("| --- | ---: | ---: | ---: |")
    for r in kern:
        print(f"| {r['shape']} | {r['repeat_ms']} | {r['grouped_ms']} | {r['max_abs_diff']:.1e} |")
    secs = {v: [r["seconds"] for r in gen["runs"] if r["variant"] == v] for v in ("repeat", "grouped")}
    print(f"generation, {gen['prompts']} prompts, batch {gen['batch_size']}, {gen['backend']}, {gen['cpu_linear']}: "
          f"repeat {secs['repeat']} s, grouped {secs['grouped']} s, all outputs equal: {gen['all_outputs_equal']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
