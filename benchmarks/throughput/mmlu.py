"""MMLU scoring throughput: the reference path ("before") and the batched path ("after") side by
side in one process, on the same questions, loglik + debiased in one run (4 cyclic orders each).

Library use (the coordinator's GPU runs; any causal LM and tokenizer, random weights allowed):

    from benchmarks.throughput.mmlu import bench_mmlu, load_mirror_questions
    test, dev = load_mirror_questions(subjects="all", k_shot=5)          # 43 subjects, 9,977 questions
    rows = bench_mmlu(model, tokenizer, test, dev, k_shot=5, variants=("before", "after"))

Each row: stage "mmlu", variant, seconds, questions, questions_per_s,
max_abs_logprob_diff_vs_reference (letter and debiased content log-probs; 0.0 for the reference,
None when it was not run), same_predictions (loglik and debiased predictions), plus batch
settings, accuracies and scorer counters. "before" is `HFLetterScorer` (today's stage path:
chunks of `reference_batch_size` questions, the prefix cache deep-copied per batch); "after" is
`BatchedHFLetterScorer` (defaults on CUDA: batch_size 512, batch_tokens 262144; on CPU 8 / none).

CLI (CPU smoke; a GGUF is converted once into --cache-dir):

    python -m benchmarks.throughput.mmlu --model-gguf .cache/offline-models/smollm2-135m-instruct-q4_1.gguf --n 20

GPU with a random-weight architecture (config + tokenizer files only, e.g. a converted GGUF
directory): `--hf-dir DIR --random-weights --subjects all --n 0` (n 0: every question).
`--out FILE` writes the rows as JSON (with model, card, date, command).

Measured 2026-12-02 on this project's CPU machine (2-core AMD EPYC, AVX2, shared with other jobs:
load average 5-9 during "before", about 1 at the end of "after", so the ratio is partly noise),
Qwen2.5-Coder-0.5B-Instruct GGUF (fp32), 30 questions of the three study subjects, 5-shot,
loglik + debiased, batch_size 8 in both (15 forward passes each):
`python -m benchmarks.throughput.mmlu --model-gguf .cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --n 30`
before 448.7 s, after 301.5 s; max |log-prob difference| 6.0e-06, same predictions
(benchmarks/results/mmlu_cpu_qwen05_n30.json). On a CPU at equal batch size the forward work is
the same (an interleaved SmolLM2 run at 1 thread: 11.4 / 9.3 s before vs 10.4 / 8.9 s after); the
batched path is made for GPUs (hundreds of rows per pass).
"""
from __future__ import annotations

import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # noqa: E401,E702

import argparse
import datetime
import json
import math
import os
import shlex
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from benchmarks.record import card  # noqa: E402
STUDY_SUBJECTS = ("high_school_computer_science", "philosophy", "high_school_macroeconomics")


def load_mirror_questions(subjects="study", k_shot: int = 5, n: int = 0, root: Path | None = None):
    """(test, dev) rows from the offline mirror's CSVs. subjects: "study" (the three), "all", or a
    list; with k_shot > 0 subjects without k_shot dev rows are left out. n > 0: the first
    ceil(n / subjects) questions of each subject, n in all."""
    from sqltradeoff import data

    root = root or Path(os.environ.get("SQLTRADEOFF_SHARED_DATA", REPO.parent / "shared" / "data")) / "mmlu" / "data"
    names = None if subjects == "all" else list(STUDY_SUBJECTS if subjects == "study" else subjects)
    if names is None:
        test, dev = data.mmlu_from_csv_root(root, None)
    else:
        test, dev = [], []
        for s in names:
            test += data.read_mmlu_csv(root / "test" / f"{s}_test.csv", s, "test")
            path = root / "dev" / f"{s}_dev.csv"
            dev += data.read_mmlu_csv(path, s, "dev") if path.is_file() else []
    n_dev = {}
    for r in dev:
        n_dev[r["subject"]] = n_dev.get(r["subject"], 0) + 1
    test = [r for r in test if n_dev.get(r["subject"], 0) >= k_shot]
    if n > 0:
        subs = list(dict.fromkeys(r["subject"] for r in test))
        per = math.ceil(n / len(subs))
        test = [r for s in subs for r in [t for t in test if t["subject"] == s][:per]][:n]
    return test, dev


def _sync(model) -> None:
    import torch

    if torch.cuda.is_available() and next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def _run(variant, model, tokenizer, test, dev, k_shot, batch_size, batch_tokens, reference_batch_size):
    from sqltradeoff import mmlu

    if variant == "before":
        scorer = mmlu.HFLetterScorer(model, tokenizer, batch_size=reference_batch_size)
        chunk = reference_batch_size
    elif variant == "after":
        scorer = mmlu.BatchedHFLetterScorer(model, tokenizer, batch_size=batch_size, batch_tokens=batch_tokens)
        chunk = batch_size
    else:
        raise ValueError(f"unknown variant {variant!r} (before | after)")
    _sync(model)
    t0 = time.perf_counter()
    rows, metrics = mmlu.evaluate(test, dev, method="loglik", k_shot=k_shot, scorer=scorer, batch_size=chunk,
                                  also_debiased=True, progress=False)
    _sync(model)
    return rows, metrics, scorer, time.perf_counter() - t0


def _compare(rows, ref_rows):
    from sqltradeoff.answers import LETTERS

    if ref_rows is None:
        return None, None
    diff, same = 0.0, True
    for a, b in zip(rows, ref_rows):
        same &= a["pred"] == b["pred"] and a["debiased_pred"] == b["debiased_pred"]
        diff = max(diff, *(abs(a[k][L] - b[k][L]) for k in ("logprobs", "content_logprobs") for L in LETTERS))
    return diff, bool(same)


def bench_mmlu(model, tokenizer, test_items, dev_items, *, k_shot: int = 5, variants=("before", "after"),
               batch_size: int | None = None, batch_tokens: int | None = None,
               reference_batch_size: int = 8) -> list[dict]:
    """Time the reference ("before") and batched ("after") MMLU scoring on the same questions."""
    import torch

    cuda = next(model.parameters()).is_cuda
    if batch_size is None:
        batch_size = 512 if cuda else 8
    if batch_tokens is None and cuda:
        batch_tokens = 262144
    model.eval()
    with torch.inference_mode():  # warm-up (CUDA context, kernels) outside the timed runs
        model(input_ids=torch.ones((2, 16), dtype=torch.long, device=next(model.parameters()).device))
    _sync(model)
    results, ref_rows = {}, None
    for variant in sorted(variants, key=lambda v: v != "before"):  # the reference first
        rows, metrics, scorer, seconds = _run(variant, model, tokenizer, test_items, dev_items, k_shot,
                                              batch_size, batch_tokens, reference_batch_size)
        if variant == "before":
            ref_rows = rows
        diff, same = (0.0, True) if variant == "before" else _compare(rows, ref_rows)
        results[variant] = {
            "stage": "mmlu", "variant": variant, "seconds": round(seconds, 3), "questions": len(test_items),
            "questions_per_s": round(len(test_items) / seconds, 2) if seconds > 0 else None,
            "max_abs_logprob_diff_vs_reference": diff, "same_predictions": same,
            "method": "loglik+debiased", "k_shot": k_shot, "subjects": len({it["subject"] for it in test_items}),
            "accuracy": metrics["accuracy"], "debiased_accuracy": metrics["debiased"]["accuracy"],
            "batch_size": reference_batch_size if variant == "before" else batch_size,
            "batch_tokens": None if variant == "before" else batch_tokens,
            "forwards": int(scorer.stats["forwards"]), "fast_rows": int(scorer.stats["fast_rows"]),
            "general_rows": int(scorer.stats["general_rows"]),
            "tokenize_seconds": round(scorer.stats.get("tokenize_s", 0.0), 3) if variant == "after" else None,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "device": "cuda" if cuda else "cpu", "torch_threads": torch.get_num_threads(),
        }
    return [results[v] for v in variants]


def _load(args):
    import torch

    if args.model_gguf:
        from sqltradeoff.modeling import load_model

        return load_model({"path": args.model_gguf, "revision": "main", "load_in_4bit": False,
                           "cache_dir": args.cache_dir})
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    tok = AutoTokenizer.from_pretrained(args.hf_dir)
    if args.random_weights:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.hf_dir), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=dtype)
    return model.to("cuda" if cuda else "cpu").eval(), tok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput.mmlu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-gguf", help="a .gguf model (converted once into --cache-dir)")
    src.add_argument("--hf-dir", help="a Hugging Face model directory (config + tokenizer [+ weights])")
    p.add_argument("--random-weights", action="store_true", help="with --hf-dir: random weights from its config")
    p.add_argument("--cache-dir", default=str(REPO / ".cache" / "models"), help="GGUF conversion cache")
    p.add_argument("--subjects", default="study", help="study (the three), all, or a comma-separated list")
    p.add_argument("--n", type=int, default=20, help="questions (0: every question of the subjects)")
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--variants", default="before,after")
    p.add_argument("--batch-size", type=int, help="batched path: rows per pass (default 512 CUDA, 8 CPU)")
    p.add_argument("--batch-tokens", type=int, help="batched path: token budget per pass (default 262144 CUDA)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--model-name", help="model label in the rows (default: the file or directory name)")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    subjects = args.subjects if args.subjects in ("study", "all") else args.subjects.split(",")
    test, dev = load_mirror_questions(subjects, k_shot=args.k_shot, n=args.n)
    model, tok = _load(args)
    rows = bench_mmlu(model, tok, test, dev, k_shot=args.k_shot, variants=tuple(args.variants.split(",")),
                      batch_size=args.batch_size, batch_tokens=args.batch_tokens)
    label = args.model_name or Path(args.model_gguf or args.hf_dir).name + (" (random weights)" if args.random_weights else "")
    extra = {"model": label, "card": card(), "date": datetime.date.today().isoformat(),
             "command": "python -m benchmarks.throughput.mmlu " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))}
    rows = [{**r, **extra} for r in rows]
    for r in rows:
        print(f"mmlu {r['variant']}: {r['questions']} questions ({r['subjects']} subjects, {r['k_shot']}-shot, "
              f"loglik+debiased) in {r['seconds']:.2f} s = {r['questions_per_s']} q/s; {r['forwards']} forwards; "
              f"max |dlogp| vs reference {r['max_abs_logprob_diff_vs_reference']}, "
              f"same predictions {r['same_predictions']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
