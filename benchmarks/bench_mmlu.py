"""Benchmark the MMLU evaluation on a real model: loglik vs debiased, prefix KV reuse vs recomputation.

Default: Qwen2.5-Coder-0.5B-Instruct (GGUF, converted once into .cache/models), 5-shot, the
pipeline's sample (50 test questions per subject of the three project subjects, seed 42, drawn
exactly as stage `prepare` does; or the data/prepared files with --prepared).

    .venv/bin/python benchmarks/bench_mmlu.py                     # full run (several minutes on 2 cores)
    .venv/bin/python benchmarks/bench_mmlu.py --per-subject 4 --recompute 4   # smoke run

Prints a Markdown table (and writes it with --out). Use --threads 1 on a shared machine: with
other jobs on the 2 cores, 2 torch threads ran a forward pass 5-10x slower than 1 thread.

Measured 2026-11-22 (2 shared cores, heavily loaded: timings are noisy, accuracies are exact):
`.venv/bin/python benchmarks/bench_mmlu.py --recompute 12 --threads 1`

| method | accuracy | by subject (cs / macro / philosophy) | predicted A/B/C/D | gold A/B/C/D | bias | seconds |
| --- | --- | --- | --- | --- | --- | --- |
| loglik | 0.313 | 0.40 / 0.24 / 0.30 | 28/22/98/2 | 25/37/43/45 | 0.367 | 286 |
| debiased | 0.400 | 0.46 / 0.40 / 0.34 | 34/37/41/38 | 25/37/43/45 | 0.060 | 488 |

All 150 questions took the single-forward path. Prefix KV reused vs recomputed on 12 questions
(4 per subject): 19.5 s vs 42.3 s (2.2x; the gain grows with questions per subject), max abs
log-prob difference 4.2e-06, identical predictions. Few-shot prefixes: 752 / 292 / 254 tokens.
Compare: lm-evaluation-harness on all 801 questions of the three subjects gave 31.1% 5-shot.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["high_school_computer_science", "philosophy", "high_school_macroeconomics"]


def load_questions(args):
    from sqltradeoff import data, mmlu
    from sqltradeoff.sampling import sample_per_group

    if args.prepared:
        test = mmlu.load_items(REPO / "data/prepared/mmlu_test.jsonl")
        dev = mmlu.load_items(REPO / "data/prepared/mmlu_dev.jsonl")
        return test, dev, "data/prepared"
    root = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA", REPO.parent / "shared" / "data")) / "mmlu" / "data"
    test_all, dev = [], []
    for s in SUBJECTS:
        test_all += data.read_mmlu_csv(root / "test" / f"{s}_test.csv", s, "test")
        dev += data.read_mmlu_csv(root / "dev" / f"{s}_dev.csv", s, "dev")
    groups = sample_per_group(test_all, "subject", args.per_subject, args.seed, "mmlu")
    test = [r for s in sorted(groups) for r in groups[s]]
    return test, dev, f"{root} ({args.per_subject}/subject, seed {args.seed})"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", default=os.path.expanduser(os.environ.get("SQLTRADEOFF_GGUF_DIR", "~/.cache/offline-models"))
                   + "/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    p.add_argument("--cache-dir", default=str(REPO / ".cache" / "models"), help="GGUF conversion cache")
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--per-subject", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--prepared", action="store_true", help="use data/prepared/mmlu_{test,dev}.jsonl")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--recompute", type=int, default=24,
                   help="questions for the prefix reused vs recomputed timing (0: skip)")
    p.add_argument("--generate", type=int, default=0, help="also run method generate on this many questions")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    return p.parse_args(argv)


def prefix_reuse(model, tok, test, dev, args):
    """The same questions, spread over the subjects, scored with and without the prefix cache:
    (questions, seconds reused, seconds recomputed, max abs log-prob difference, same predictions)."""
    from sqltradeoff import mmlu
    from sqltradeoff.answers import LETTERS

    per = max(1, args.recompute // len(SUBJECTS))
    subset = [it for s in dict.fromkeys(q["subject"] for q in test) for it in [q for q in test if q["subject"] == s][:per]]
    out = {}
    for reuse_prefix in (True, False):
        scorer = mmlu.HFLetterScorer(model, tok, batch_size=args.batch_size, reuse_prefix=reuse_prefix)
        rows, m = mmlu.evaluate(subset, dev, method="loglik", k_shot=args.k_shot, scorer=scorer,
                                batch_size=args.batch_size, progress=False)
        out[reuse_prefix] = (rows, m["seconds"])
    diff = max(abs(a["logprobs"][L] - b["logprobs"][L]) for a, b in zip(out[True][0], out[False][0]) for L in LETTERS)
    same_pred = all(a["pred"] == b["pred"] for a, b in zip(out[True][0], out[False][0]))
    return len(subset), out[True][1], out[False][1], diff, same_pred


def render_report(args, argv, tok, test, dev, source, load_s, results, gen, reuse) -> str:
    import torch

    from sqltradeoff import mmlu
    from sqltradeoff.answers import LETTERS

    prefix_tokens = {s: len(tok(mmlu.fewshot_prefix(s, mmlu.group_dev(dev)[s], args.k_shot),
                                add_special_tokens=False)["input_ids"]) for s in dict.fromkeys(q["subject"] for q in test)}
    lines = [f"## MMLU benchmark: {Path(args.gguf).name}, {args.k_shot}-shot, {len(test)} questions", "",
             f"Command: `.venv/bin/python benchmarks/bench_mmlu.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"Machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
             f"fp32 CPU; model load {load_s:.0f} s. Data: {source}.",
             f"Few-shot prefix tokens per subject: {prefix_tokens}.", "",
             "| method | accuracy | by subject | predicted A/B/C/D | gold A/B/C/D | bias | seconds | q/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows_ = [(k, v[0]) for k, v in results.items()] + ([("generate", gen)] if gen else [])
    for name, m in rows_:
        subj = ", ".join(f"{s.replace('high_school_', 'hs_')} {v['accuracy']:.2f}" for s, v in m["by_subject"].items())
        pd = "/".join(str(m["pred_distribution"][L]) for L in LETTERS)
        gd = "/".join(str(m["gold_distribution"][L]) for L in LETTERS)
        extra = f" (unparsed {m['unparsed']})" if name == "generate" else ""
        lines.append(f"| {name}{extra} | {m['accuracy']:.3f} | {subj} | {pd} | {gd} | {m['bias']:.3f} | "
                     f"{m['seconds']:.0f} | {m['n'] / max(m['seconds'], 1e-9):.2f} |")
    if "debiased" in results:
        lines.append("")
        lines.append(f"Letter prior estimated from the permutations (PriDe): {results['debiased'][0]['letter_prior']}.")
    st = results["loglik"][1]
    lines.append(f"Scoring rows: {st.get('fast_rows', 0)} single-forward (all four letters one token), "
                 f"{st.get('general_rows', 0)} general.")
    if reuse:
        n, t_reuse, t_full, diff, same = reuse
        lines += ["", "| prefix KV cache | questions | seconds | speed-up | max abs logprob diff | same predictions |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| reused | {n} | {t_reuse:.1f} | {t_full / max(t_reuse, 1e-9):.1f}x | {diff:.2e} | {same} |",
                  f"| recomputed | {n} | {t_full:.1f} | 1.0x | | |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch

    from sqltradeoff import mmlu
    from sqltradeoff.modeling import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    test, dev, source = load_questions(args)
    t = time.perf_counter()
    model, tok = load_model({"path": args.gguf, "revision": "main", "load_in_4bit": False,
                             "cache_dir": args.cache_dir})
    load_s = time.perf_counter() - t
    print(f"model loaded in {load_s:.1f} s; {len(test)} questions from {source}", flush=True)

    results = {}
    for method in ("loglik", "debiased"):
        scorer = mmlu.HFLetterScorer(model, tok, batch_size=args.batch_size)
        _, m = mmlu.evaluate(test, dev, method=method, k_shot=args.k_shot, scorer=scorer, batch_size=args.batch_size)
        results[method] = (m, dict(scorer.stats))
        print(method, m["accuracy"], m["pred_distribution"], f"{m['seconds']} s", flush=True)

    gen = None
    if args.generate:
        generator = mmlu.HFGenerator(model, tok, max_new_tokens=8, batch_size=args.batch_size)
        _, gen = mmlu.evaluate(test[:args.generate], dev, method="generate", k_shot=args.k_shot, generator=generator,
                               batch_size=args.batch_size)
        print("generate", gen["accuracy"], gen["unparsed"], f"{gen['seconds']} s", flush=True)

    reuse = None
    if args.recompute:
        reuse = prefix_reuse(model, tok, test, dev, args)
        print("reuse", reuse, flush=True)

    report = render_report(args, argv, tok, test, dev, source, load_s, results, gen, reuse)
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    return 0

if __name__ == "__main__":
    sys.exit(main())
