"""The inference phases: generation (batched vs one at a time, through `generation.generate`) and
MMLU (few-shot prefix KV cache reused vs recomputed, through `mmlu`), on the 4-bit model with the
LoRA adapter and, for generate_bf16, the bf16 model with the adapter merged."""
from __future__ import annotations

import random
import time
from pathlib import Path

from .common import MMLU_K_SHOT, fmt_time, load_train_params, save_results


def adapter_for_inference(a, results, model_cfg, log):
    """The LoRA adapter the predict/MMLU stages would load: the one trained above, or (generate-only
    runs) a fresh adapter of params.yaml's shape saved once (same shapes, so the same cost)."""
    adapter = results.get("train_adapter_dir")
    if adapter and (Path(adapter) / "adapter_config.json").is_file():
        return adapter
    from peft import LoraConfig, get_peft_model

    from sqltradeoff.modeling import load_model

    dest = Path(a.work) / "fresh_adapter"
    if not (dest / "adapter_config.json").is_file():
        t = load_train_params()
        model, _ = load_model(model_cfg, for_training=True)
        peft_model = get_peft_model(model, LoraConfig(r=t["lora_r"], lora_alpha=t["lora_alpha"],
                                                      target_modules=t["target_modules"], task_type="CAUSAL_LM"))
        peft_model.save_pretrained(dest)
        del model, peft_model
        log(f"model: no trained adapter in this run; saved a fresh LoRA adapter to {dest}")
    return str(dest)


def _guarded(what: str, key: str, fn, log, results):
    """Run one measurement; a failure is logged and recorded under `key`, and the run goes on."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        import traceback
        log(f"{what} FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        results[key] = f"{type(exc).__name__}: {str(exc)[:300]}"


def phase_infer(a, bench, model_cfg, P, log, results, phases):
    import gc

    import torch

    from sqltradeoff import modeling

    adapter = adapter_for_inference(a, results, model_cfg, log)
    gc.collect()
    torch.cuda.empty_cache()
    setups = [("nf4+LoRA", model_cfg, a.gen_batch_sizes)]
    if "generate_bf16" in phases:
        # the project's unquantised path: bf16 weights with the adapter merged (load_model merges it)
        setups.append(("bf16 merged", dict(model_cfg, load_in_4bit=False), a.gen_batch_sizes_bf16))
    for label, cfg, sizes in setups:
        t0 = time.time()
        model, tok = modeling.load_model(cfg, adapter=adapter)
        results.setdefault("model_load_infer_s", {})[label] = round(time.time() - t0, 1)
        log(f"model: inference load ({label}) {results['model_load_infer_s'][label]} s, "
            f"{torch.cuda.memory_allocated() / 2**30:.2f} GiB")
        try:
            if "generate" in phases:
                _guarded(f"generate ({label})", f"generate_error {label}",
                         lambda: phase_generate(a, bench, model, tok, log, results, label, sizes), log, results)
                save_results(a, results)
            if "mmlu" in phases and label == "nf4+LoRA":
                _guarded("mmlu", "mmlu_error", lambda: phase_mmlu(a, bench, model, tok, log, results), log, results)
        finally:
            del model
            gc.collect()
            torch.cuda.empty_cache()


def phase_generate(a, bench, model, tok, log, results, label, sizes):
    """Greedy generation timed at each batch size, EOS disabled (`min_new_tokens`): every output is
    exactly max_new_tokens long, whatever the random weights would emit."""
    import torch

    from sqltradeoff import generation

    n_dev = bench["dev_total_in_release"]
    rng = random.Random(1)
    prompts = [d["prompt"] for d in rng.sample(bench["dev"], min(a.gen_subset, len(bench["dev"])))]
    res = results.setdefault("generate", {"max_new_tokens": a.max_new_tokens, "subset": len(prompts),
                                          "dev_questions": n_dev})
    generation.generate(model, tok, prompts[:2], batch_size=2, max_new_tokens=8, min_new_tokens=8,
                        progress=False)  # warm-up
    for bs in [int(x) for x in sizes.split(",")]:
        sub = prompts if bs > 1 else prompts[:a.gen_single]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        outs, st = generation.generate(model, tok, sub, batch_size=bs, max_new_tokens=a.max_new_tokens,
                                       min_new_tokens=a.max_new_tokens, progress=False)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        per_q = dt / len(sub)
        res[f"{label} bs{bs}"] = {"questions": len(sub), "seconds": dt, "seconds_per_question": per_q,
                                  "prompt_tokens": st.prompt_tokens, "full_length_outputs": st.hit_max_new_tokens,
                                  "tokens_per_s": len(sub) * a.max_new_tokens / dt, "projected_dev_s": per_q * n_dev,
                                  "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30}
        log(f"generate {label} bs{bs}: {len(sub)} questions ({st.prompt_tokens} prompt tokens) in {dt:.1f} s "
            f"({per_q:.3f} s/question, {res[f'{label} bs{bs}']['tokens_per_s']:.0f} new tok/s, "
            f"{st.hit_max_new_tokens}/{len(sub)} full length) -> {n_dev} dev questions ~ {fmt_time(per_q * n_dev)}")


def phase_mmlu(a, bench, model, tok, log, results):
    import torch

    from sqltradeoff import mmlu
    from sqltradeoff.answers import LETTERS

    test, dev = bench["mmlu_test"], bench["mmlu_dev"]
    res = results.setdefault("mmlu", {"questions": len(test), "k_shot": MMLU_K_SHOT})
    preds = {}
    for reuse in (True, False, True):
        scorer = mmlu.HFLetterScorer(model, tok, batch_size=a.mmlu_batch_size, reuse_prefix=reuse)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        rows, metrics = mmlu.evaluate(test, dev, method="loglik", k_shot=MMLU_K_SHOT, scorer=scorer,
                                      batch_size=a.mmlu_batch_size, progress=False)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        key = "reuse" if reuse else "recompute"
        res[key] = {"seconds": dt, "stats": dict(scorer.stats)}
        preds[key] = rows
        log(f"mmlu {key}: {len(test)} questions in {dt:.1f} s; {dict(scorer.stats)}")
    a_rows, b_rows = preds["reuse"], preds["recompute"]
    agree = sum(x["pred"] == y["pred"] for x, y in zip(a_rows, b_rows))
    maxdiff = max(abs(x["logprobs"][L] - y["logprobs"][L]) for x, y in zip(a_rows, b_rows) for L in LETTERS)
    res["agreement"] = agree
    res["max_abs_logprob_diff"] = maxdiff
    log(f"mmlu: reuse vs recompute predictions agree {agree}/{len(test)}, max |logprob diff| {maxdiff:.3g}")
