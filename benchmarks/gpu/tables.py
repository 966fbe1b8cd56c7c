"""The markdown tables of a `bench_gpu.py run` (tables.md and the end of its output)."""
from __future__ import annotations

from .common import VARLEN, fmt_time, md_table


def render_report(r) -> str:
    env = r.get("env", {})
    parts = [f"Card: {env.get('gpu')} ({env.get('nvidia_smi', '')}); torch {env.get('torch')} CUDA {env.get('cuda')}, "
             f"transformers {env.get('transformers')}, peft {env.get('peft')}, trl {env.get('trl')}, "
             f"bitsandbytes {env.get('bitsandbytes')}; {env.get('date_utc')}."]
    pk = r.get("peak")
    if pk:
        parts.append(f"Measured ceilings: bf16 matmul 8192^3 {pk['bf16_matmul_8192x8192x8192_tflops']} TFLOP/s "
                     f"(2048x4096x14336: {pk['bf16_matmul_2048x4096x14336_tflops']}), device copy "
                     f"{pk['copy_tb_s']} TB/s.")
    if "padding_free_check" in r:
        c = r["padding_free_check"]
        parts.append("Padding-free check, packed vs separate logits (relative error; bf16 + NF4): "
                     + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()))
    tr = r.get("train")
    if tr:
        ep = r.get("train_epoch", {})
        ref = tr.get("ref", {})
        rows = []
        for name, x in tr.items():
            if "error" in x:
                rows.append([name, x["desc"], "FAILED: " + x["error"][:80]] + [""] * 10)
                continue
            vs = (f"{x['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref.get("tokens_per_s") else "")
            rows.append([name, f"{x['micro_batch']}x{x['grad_accum']}", "yes" if x["padding_free"] else "no",
                         "varlen FA" if x.get("attention") == VARLEN else "SDPA",
                         "fp32" if x.get("fp32_upcast", True) else "bf16",
                         "on" if x["grad_ckpt"] else "off", f"{x['tokens_per_s']:,.0f}", vs,
                         f"{x['seconds_per_step']:.3f} ({x.get('median_seconds_per_step', 0):.3f})",
                         f"{fmt_time(x['epoch_s'])} ({fmt_time(x['epoch_all_7000_s'])})",
                         f"{x['peak_alloc_gib']:.1f}/{x['peak_reserved_gib']:.1f} ; "
                         f"{x['worst_peak_alloc_gib']:.1f}/{x['worst_peak_reserved_gib']:.1f}",
                         f"{x['mfu']:.1%} ({x['mfu_6N_convention']:.1%})", f"{x['padding_fraction']:.0%}"])
        parts.append(f"Training (QLoRA r=8 q/k/v/o, NF4 + bf16 compute, paged_adamw_8bit; one epoch = "
                     f"the {ep.get('examples_full')} of 7,000 examples within max_length {ep.get('max_length')}, "
                     f"{ep.get('tokens_full'):,} tokens (all 7,000: {ep.get('tokens_all_7000'):,} tokens, longest "
                     f"{ep.get('longest')}); peak memory: timed random batches ; the epoch's longest batch):\n\n"
                     + md_table(
                         ["variant", "micro-batch x accum", "padding-free", "attention", "norms/emb/head", "grad ckpt",
                          "tokens/s", "vs ref",
                          "s / optimizer step (median)", "1 epoch (all 7,000)", "peak GiB alloc/res ; worst batch", "MFU (6N conv.)",
                          "padding"], rows))
    g = r.get("generate")
    if g:
        rows = []
        for k, x in g.items():
            if isinstance(x, dict) and "seconds" in x:
                rows.append([k, x["questions"], f"{x['seconds']:.1f}", f"{x['seconds_per_question']:.3f}",
                             f"{x['tokens_per_s']:,.0f}", fmt_time(x["projected_dev_s"]),
                             f"{x['peak_alloc_gib']:.2f}"])
        parts.append(f"Generation (greedy, {g['max_new_tokens']} new tokens, EOS disabled; timed on a random "
                     f"subset of dev prompts, projected linearly to {g['dev_questions']}):\n\n" + md_table(
                         ["batch", "questions timed", "s", "s / question", "new tokens/s", "projected 1,034",
                          "peak GiB"], rows))
    m = r.get("mmlu")
    if m and "reuse" in m:
        parts.append(md_table(["MMLU 5-shot loglik", "questions", "s"],
                              [["prefix KV reused", m["questions"], f"{m['reuse']['seconds']:.1f}"],
                               ["recomputed", m["questions"], f"{m['recompute']['seconds']:.1f}"]])
                     + f"\n\nreuse vs recompute: {m['agreement']}/{m['questions']} same predictions, "
                       f"max |log-prob difference| {m['max_abs_logprob_diff']:.3g}")
    return "\n\n".join(parts) + "\n"
