"""The training phase: each variant (ordinary `train` params) through `training.train`, given a
model loaded just before it (so the load is outside the variant's timings and memory peak) and no
per-step logger; optionally one fresh Python process per variant."""
from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import BENCH_GPU, MISTRAL_7B_V02, TINY, VARLEN, fmt_time, load_train_params, lora_params, \
    save_results, train_flops

# train params of each variant beyond micro-batch/accumulation/checkpointing
PF = {"padding_free": True}                                  # TRL padding-free batches
FA = {"padding_free": True, "attention": VARLEN}             # + PyTorch varlen FlashAttention
FA_BF16 = {"padding_free": True, "attention": VARLEN, "fp32_upcast": False}   # + no fp32 up-cast
TRAIN_VARIANTS = [
    # name, train params (batching), train params (throughput settings), timed optimizer steps, description
    ("ref", {"batch_size": 1, "grad_accum": 4, "gradient_checkpointing": False}, {}, 10,
     "reference recipe: micro-batch 1 x accumulation 4, padded batches, SDPA, no checkpointing (params.yaml)"),
    ("ref_gc", {"batch_size": 1, "grad_accum": 4, "gradient_checkpointing": True}, {}, 10,
     "reference recipe with gradient checkpointing (TRL's SFTConfig default)"),
    ("pf4", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": False}, PF, 10,
     "padding-free micro-batch 4 x accumulation 1 (the same 4 examples per optimizer step), SDPA"),
    ("pf4_gc", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True}, PF, 10,
     "pf4 + gradient checkpointing"),
    ("pf4_gc_fa", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True}, FA, 10,
     "pf4_gc with varlen FlashAttention per packed sequence instead of SDPA + block-diagonal mask"),
    ("pf4_gc_fa_bf16", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True}, FA_BF16, 10,
     "pf4_gc_fa without peft's fp32 up-cast of embeddings/norms/lm_head (bf16 residual stream)"),
    ("pf4_fa_bf16", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": False}, FA_BF16, 10,
     "pf4_gc_fa_bf16 without gradient checkpointing"),
    ("pf16_gc", {"batch_size": 16, "grad_accum": 1, "gradient_checkpointing": True}, PF, 4,
     "padding-free micro-batch 16 x 1 + checkpointing, SDPA (16 examples per step: a different recipe)"),
    ("pf8_gc_fa_bf16", {"batch_size": 8, "grad_accum": 1, "gradient_checkpointing": True}, FA_BF16, 6,
     "pf4_gc_fa_bf16 with micro-batch 8 (8 examples per step: a different recipe)"),
    ("pf16_gc_fa_bf16", {"batch_size": 16, "grad_accum": 1, "gradient_checkpointing": True}, FA_BF16, 4,
     "pf4_gc_fa_bf16 with micro-batch 16 (16 examples per step: a different recipe)"),
]
WARM_STEPS = 2


def make_step_timer(torch):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time between consecutive optimizer-step ends (data loading, logging included) and the
        real (non-padding) tokens and sequence lengths the model saw in between."""

        def __init__(self):
            self.ends, self.tokens, self.padded, self.seqs = [], [], [], []
            self._tok = self._pad = 0
            self._seqs = []
            self.model = None
            self.handle = None

        def _hook(self, module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            am, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
            if ids is None:
                return
            self._pad += ids.numel()
            if am is not None and am.dim() == 2:
                lens = am.sum(dim=1).tolist()
            elif pos is not None:
                p = pos[0]
                starts = (p == 0).nonzero().flatten().tolist() + [p.numel()]
                lens = [b - a for a, b in zip(starts[:-1], starts[1:])]
            else:
                lens = [ids.shape[1]] * ids.shape[0]
            self._tok += int(sum(lens))
            self._seqs += [int(x) for x in lens]

        def on_train_begin(self, args, state, control, model=None, **kw):
            self.model = model
            self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.tokens.append(0), self.padded.append(0), self.seqs.append([])

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.tokens.append(self._tok), self.padded.append(self._pad), self.seqs.append(self._seqs)
            self._tok = self._pad = 0
            self._seqs = []

        def on_train_end(self, args, state, control, **kw):
            if self.handle is not None:
                self.handle.remove()

    return StepTimer()


def check_padding_free(model, log, results, have_varlen):
    """Packed (padding-free) forward == separate forwards: SDPA with position_ids (block-diagonal
    mask) and the varlen FlashAttention path with cu_seq_lens; and what ignoring boundaries gives."""
    import torch

    from sqltradeoff.attention import set_attention

    dev = next(model.parameters()).device
    lens = (37, 61, 20)
    ids = [torch.randint(3, 32000, (n,), generator=torch.Generator().manual_seed(n)) for n in lens]
    pos = torch.cat([torch.arange(len(x)) for x in ids])[None].to(dev)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    flat = torch.cat(ids)[None].to(dev)
    res = {}
    with torch.inference_mode():
        # use_cache=False as in training (TRL sets it): transformers derives the block-diagonal mask from
        # position_ids only when there is no attention mask and no KV cache
        set_attention(model, "sdpa")
        ref = torch.cat([model(input_ids=x[None].to(dev), use_cache=False).logits[0].float() for x in ids])
        rel = lambda out: float((out - ref).norm() / ref.norm())  # noqa: E731
        res["sdpa_packed"] = rel(model(input_ids=flat, position_ids=pos, use_cache=False).logits[0].float())
        res["boundaries_ignored"] = rel(model(input_ids=flat, use_cache=False).logits[0].float())
        if have_varlen:
            set_attention(model, VARLEN)
            try:
                res["varlen_packed"] = rel(model(input_ids=flat, position_ids=pos, use_cache=False,
                                                 cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lens),
                                                 max_length_k=max(lens)).logits[0].float())
            except Exception as exc:  # noqa: BLE001
                res["varlen_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            set_attention(model, "sdpa")
    results["padding_free_check"] = res
    log("check: packed vs separate logits, relative error:", json.dumps(res))


class TrainSetup:
    """The training pool, the epoch's sizes and the base `train` params of every variant."""

    def __init__(self, a, bench, log, results):
        base_cfg = load_train_params()
        a.max_length = a.max_length or int(base_cfg["max_length"])
        base_cfg.update({"save_steps": 10 ** 6, "save_total_limit": 1, "warmup_ratio": 0.0,
                         "max_length": a.max_length})
        self.base_cfg = base_cfg
        self.n_lora = lora_params(TINY if a.tiny else MISTRAL_7B_V02, base_cfg["lora_r"], base_cfg["target_modules"])
        self.bench = bench
        self.lengths = lengths = bench["train_lengths"]
        kept = [i for i, n in enumerate(lengths) if n <= a.max_length]
        pool_idx = random.Random(0).sample(kept, min(len(kept), a.train_pool))
        self.work = Path(a.work) / "train"
        self.work.mkdir(parents=True, exist_ok=True)
        self.pool_path = self.work / "train_pool.jsonl"
        self.pool_path.write_text("".join(json.dumps(bench["train"][i]) + "\n" for i in pool_idx))
        self.longest = sorted(kept, key=lambda i: -lengths[i])
        # 7,000 in the release; here two training databases are missing: scale to the release's count
        scale = bench["train_total_in_release"] / len(lengths)
        self.epoch_tokens_full = sum(lengths[i] for i in kept) * scale
        self.all_tokens_full = sum(lengths) * scale
        results["train_epoch"] = {
            "max_length": a.max_length, "examples_here": len(lengths), "examples_kept": len(kept),
            "examples_full": round(len(kept) * scale), "tokens_full": round(self.epoch_tokens_full),
            "tokens_all_7000": round(self.all_tokens_full), "longest": max(lengths),
            "pool_mean_len": sum(lengths[i] for i in pool_idx) / len(pool_idx),
            "epoch_mean_len": sum(lengths[i] for i in kept) / len(kept),
            "dropped_here": len(lengths) - len(kept)}
        log("train: epoch", json.dumps(results["train_epoch"]))

    def worst_path(self, ex_per_step: int) -> Path:
        """One optimizer step's examples: the longest of the epoch (the worst case for memory)."""
        path = self.work / f"worst_{ex_per_step}.jsonl"
        path.write_text("".join(json.dumps(self.bench["train"][i]) + "\n" for i in self.longest[:ex_per_step]))
        return path


def _free(torch):
    import gc

    gc.collect()
    torch.cuda.empty_cache()


def run_variant(a, s: TrainSetup, name, cfg, data_path, timer, model_cfg, log, results):
    """One `training.train` of a freshly loaded 4-bit model; (info, error, (peak alloc, peak reserved))."""
    import torch

    from sqltradeoff import modeling, training
    from sqltradeoff.attention import varlen_available

    _free(torch)
    t0 = time.time()
    model, tok = modeling.load_model(model_cfg, for_training=True)   # fresh model, outside the peak
    load_s = time.time() - t0
    if "model_load_4bit_s" not in results:
        results["model_load_4bit_s"] = round(load_s, 1)
        results["model_weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        log(f"model: 4-bit load through modeling.load_model {load_s:.1f} s; "
            f"allocated {results['model_weights_gib']} GiB")
        if not a.skip_check:
            check_padding_free(model, log, results, varlen_available()[0])
    _free(torch)
    torch.cuda.reset_peak_memory_stats()
    err = info = None
    try:    # the project's training path; the variant's settings are ordinary train params
        info = training.train(cfg, model_cfg, data_path, s.work / name, s.work / name / "metrics",
                              callbacks=[timer], model=model, tokenizer=tok, live=False)
    except Exception as exc:  # keep going: report the failure in the table
        import traceback
        err = f"{type(exc).__name__}: {str(exc)[:300]}"
        log(f"train[{name}] FAILED: {err}\n{traceback.format_exc()}")
    peak = (torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30)
    del model, tok
    timer.model = None
    _free(torch)
    return info, err, peak


def variant_row(s: TrainSetup, desc, cfg, timer, info, peaks, worst, peak_tflops, P) -> dict:
    """The table row of a variant from its step timings, memory peaks and training info."""
    (peak_alloc, peak_res), (w_alloc, w_res, werr, leak) = peaks, worst
    ex_per_step = cfg["batch_size"] * cfg["grad_accum"]
    ends, skip = timer.ends, WARM_STEPS + 1
    dts = [ends[i] - ends[i - 1] for i in range(skip, len(ends))]
    toks, pads = timer.tokens[skip:], timer.padded[skip:]
    seqs = [x for ss in timer.seqs[skip:] for x in ss]
    t = sum(dts)
    tok_s = sum(toks) / t
    flops = train_flops(P, s.n_lora, seqs)
    return {
        "desc": desc, "micro_batch": cfg["batch_size"], "grad_accum": cfg["grad_accum"],
        "padding_free": cfg.get("padding_free", False), "grad_ckpt": cfg["gradient_checkpointing"],
        "attention": cfg.get("attention", "sdpa"), "fp32_upcast": cfg.get("fp32_upcast", True),
        "timed_steps": len(dts), "seconds_per_step": t / len(dts),
        "median_seconds_per_step": statistics.median(dts),
        "step_s_all": [round(x, 4) for x in dts], "tokens_timed": sum(toks),
        "tokens_per_s": tok_s, "examples_per_s": len(seqs) / t,
        "padding_fraction": 1 - sum(toks) / sum(pads), "mean_seq_len": sum(seqs) / len(seqs),
        "peak_alloc_gib": peak_alloc, "peak_reserved_gib": peak_res,
        "worst_peak_alloc_gib": w_alloc, "worst_peak_reserved_gib": w_res,
        "worst_tokens": sum(s.lengths[i] for i in s.longest[:ex_per_step]), "worst_error": werr,
        "allocated_before_worst_gib": leak,
        "tflops": flops / t / 1e12, "mfu": flops / t / 1e12 / peak_tflops,
        "mfu_6N_convention": 6 * P["total"] * sum(toks) / t / 1e12 / peak_tflops,
        "epoch_s": s.epoch_tokens_full / tok_s, "epoch_all_7000_s": s.all_tokens_full / tok_s,
        "examples_per_step": ex_per_step,
        "final_loss": info.get("final_loss"), "steps": info.get("steps"),
        "train_info_tokens_per_s": info.get("tokens_per_s"),
    }


def phase_train(a, bench, model_cfg, P, peak_tflops, log, results, variants):
    import torch

    s = TrainSetup(a, bench, log, results)
    out_rows = results.setdefault("train", {})
    try:
        for name, tover, sover, steps, desc in variants:
            if a.quick:
                steps = max(2, steps // 3)
            cfg = dict(s.base_cfg, **tover, **sover, max_steps=WARM_STEPS + steps)
            log(f"train[{name}]: {desc}; {WARM_STEPS} warm-up + {steps} timed optimizer steps")
            timer = make_step_timer(torch)
            info, err, peaks = run_variant(a, s, name, cfg, s.pool_path, timer, model_cfg, log, results)
            if err is not None:
                out_rows[name] = {"desc": desc, "error": err}
                save_results(a, results)
                continue
            worst_path = s.worst_path(cfg["batch_size"] * cfg["grad_accum"])
            leak = torch.cuda.memory_allocated() / 2**30
            _, werr, (w_alloc, w_res) = run_variant(a, s, name + "_worst", dict(cfg, max_steps=1), worst_path,
                                                    make_step_timer(torch), model_cfg, log, results)
            row = out_rows[name] = variant_row(s, desc, cfg, timer, info, peaks, (w_alloc, w_res, werr, leak),
                                               peak_tflops, P)
            log(f"train[{name}]: {row['tokens_per_s']:,.0f} tok/s, {row['seconds_per_step']:.3f} s/step, "
                f"peak {peaks[0]:.2f}/{peaks[1]:.2f} GiB (worst batch of {row['worst_tokens']} tokens: "
                f"{w_alloc:.2f}/{w_res:.2f}), MFU {row['mfu']:.1%}, epoch {fmt_time(row['epoch_s'])}, "
                f"loss {row['final_loss']}")
            save_results(a, results)
    finally:
        last = [v[0] for v in variants if "error" not in out_rows.get(v[0], {"error": 1})]
        if last and (s.work / last[-1] / "adapter" / "adapter_config.json").is_file():
            results["train_adapter_dir"] = str(s.work / last[-1] / "adapter")
        _free(torch)


def _variant_command(a, name, sub_out, model_dir, peak, first: bool) -> list[str]:
    cmd = [sys.executable, str(BENCH_GPU), "run", "--phases", "train", "--variants", name,
           "--out", str(sub_out), "--prep", a.prep, "--model-dir", str(model_dir), "--work", a.work,
           "--peak-tflops", str(peak), "--train-pool", str(a.train_pool)]
    cmd += ["--quick"] if a.quick else []
    cmd += ["--tiny"] if a.tiny else []
    cmd += ["--max-length", str(a.max_length)] if a.max_length else []
    cmd += [] if first else ["--skip-check"]
    return cmd


def train_in_subprocesses(a, model_dir, peak, log, results, variants):
    """One fresh Python process per training variant: no memory or state carried from one variant to
    the next (one process running them all leaked about 0.4 GiB of CUDA memory per training run)."""
    for i, v in enumerate(variants):
        name = v[0]
        sub_out = Path(a.work) / "variants" / name
        shutil.rmtree(sub_out, ignore_errors=True)
        cmd = _variant_command(a, name, sub_out, model_dir, peak, first=i == 0)
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, timeout=a.variant_timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            rc, out = "timeout", (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        (Path(a.out) / f"variant_{name}.log").write_text(out)
        try:
            sub = json.loads((sub_out / "results.json").read_text())
        except (OSError, ValueError):
            sub = {}
        row = sub.get("train", {}).get(name)
        if row is None:
            tail = "\n".join(out.strip().splitlines()[-5:])
            row = {"desc": v[4], "error": f"subprocess rc={rc}: {tail[-300:]}"}
        results.setdefault("train", {})[name] = row
        for key in ("train_epoch", "padding_free_check", "model_load_4bit_s", "model_weights_gib"):
            if key in sub and key not in results:
                results[key] = sub[key]
        if sub.get("train_adapter_dir"):
            results["train_adapter_dir"] = sub["train_adapter_dir"]
        log(f"train[{name}] (own process, {time.time() - t0:.0f} s): "
            + (f"{row['tokens_per_s']:,.0f} tok/s, peak {row['peak_alloc_gib']:.2f} GiB, worst "
               f"{row['worst_peak_alloc_gib']:.2f} GiB" if "error" not in row else row["error"]))
        save_results(a, results)
