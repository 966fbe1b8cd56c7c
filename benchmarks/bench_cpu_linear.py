"""CPU fp32 linear layers: torch's GEMM (`cpu_linear: aten`) vs oneDNN with packed weights
(`cpu_linear: onednn`, sqltradeoff/onednn.py), side by side in one process.

    .venv/bin/python benchmarks/bench_cpu_linear.py [--n 30] [--batch-size 8] [--backend prefix]
        [--out benchmarks/results/cpu_linear.json]

1. The study model's linear shapes (Qwen2.5-0.5B: 4864 x 896, 896 x 4864, the 151,936 x 896 LM head)
   at 8 rows (a decoding step of batch 8), 32 and 2,400 (prefill), alternating the two kernels.
2. The predict stage's generation of the first `--n` prompts of data/formatted/eval_zeroshot.jsonl
   with params.yaml's model, once per variant in one process (aten first, then the same model
   packed), checking that the texts are equal.
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


def _time(f, reps):
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def matmuls(reps: int = 5) -> list[dict]:
    import torch

    from sqltradeoff.onednn import _linear, _packed

    torch.manual_seed(0)
    rows = []
    for n, k in [(4864, 896), (896, 4864), (151936, 896)]:
        w = torch.randn(n, k) * 0.03
        pk = _packed(w)
        for m in (8, 32, 2400):
            x = torch.randn(m, k)
            r = max(1, reps if m < 100 else reps // 2)
            aten = onednn = 0.0
            for _ in range(2):                                   # alternate: noisy machines
                aten += _time(lambda: torch.nn.functional.linear(x, w), r)
                onednn += _time(lambda: _linear(x, pk, None), r)
            diff = (torch.nn.functional.linear(x, w) - _linear(x, pk, None)).abs().max().item()
            rows.append({"shape": f"{m}x{k} @ {k}x{n}", "aten_ms": round(aten / 2 * 1e3, 2),
                         "onednn_ms": round(onednn / 2 * 1e3, 2), "max_abs_diff": diff})
    return rows


def generation(n: int, batch_size: int, backend: str, params: str) -> dict:
    from sqltradeoff.cpu import apply_cpu_threads
    from sqltradeoff.params import load_params

    config = load_params(params).config
    apply_cpu_threads(config.cpu_threads)
    from sqltradeoff.generation import generate
    from sqltradeoff.io import read_jsonl
    from sqltradeoff.modeling import load_model
    from sqltradeoff.onednn import pack_linears

    model, tok = load_model(config.need("model"))
    prompts = [r["prompt"] for r in read_jsonl(REPO / "data/formatted/eval_zeroshot.jsonl")[:n]]
    out = {}
    for variant in ("aten", "onednn"):
        if variant == "onednn":
            pack_linears(model)
        t = time.perf_counter()
        texts, st = generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=128,
                             backend=backend, progress=False)
        out[variant] = {"seconds": round(time.perf_counter() - t, 1), "generated_tokens": st.generated_tokens,
                        "texts": texts}
    same = sum(a == b for a, b in zip(out["aten"]["texts"], out["onednn"]["texts"]))
    for v in out.values():
        del v["texts"]
    return {"prompts": len(prompts), "batch_size": batch_size, "backend": backend, "equal_outputs": same, **out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backend", default="prefix")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/cpu_linear.json"))
    a = ap.parse_args(argv)
    os.chdir(REPO)
    gen = generation(a.n, a.batch_size, a.backend, a.params)
    mm = matmuls()
    write_result(a.out, "benchmarks/bench_cpu_linear.py", argv, generation=gen, matmuls=mm)
    print("| shape | aten ms | onednn ms | max abs diff |\n| --- | ---: | ---: | ---: |")
    for r in mm:
        print(f"| {r['shape']} | {r['aten_ms']} | {r['onednn_ms']} | {r['max_abs_diff']:.1e} |")
    print(f"generation, {gen['prompts']} prompts, batch {gen['batch_size']}, {gen['backend']}: aten "
          f"{gen['aten']['seconds']} s, onednn {gen['onednn']['seconds']} s, {gen['equal_outputs']}/{gen['prompts']} equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
