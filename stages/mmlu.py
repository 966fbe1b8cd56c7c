"""MMLU stage: evaluate the base model (or base + a LoRA adapter) on the prepared MMLU sample.

Prompts are lm-evaluation-harness's default `mmlu` task (plain text, k shots from the subject's
dev split, first k in order). params.yaml `mmlu`:

  method         loglik (default): argmax log-likelihood of " A"/" B"/" C"/" D" (the harness's acc)
                 debiased: average per option content over the 4 cyclic permutations of the
                           options (cancels a fixed letter preference; Zheng et al., ICLR 2024)
                 pride: the paper's cheaper PriDe: estimate the letter prior from the 4
                        permutations of a fraction of the questions, debias the rest (1 pass each)
                 generate: greedy-generate a few tokens and parse the letter (unparsed = wrong)
  k_shot         few-shot examples per prompt (default 5)
  batch_size     sequences per forward pass (default 8)
  scoring        batched (default): all of a subject's questions sorted by length and scored in
                 batches of up to batch_size rows and batch_tokens tokens behind one shared
                 few-shot prefix cache; reference: the per-chunk path (batch_size questions per
                 call, the prefix cache copied per batch). Same predictions, log-probabilities
                 equal up to float reassociation (tests: within 1e-4 in fp32)
  batch_tokens   with scoring batched, the most tokens per forward pass, counted as rows x
                 (prefix + longest question); null (default): no limit beyond batch_size.
                 On a GPU e.g. batch_size 512, batch_tokens 262144
  also_debiased  with method loglik, also report the debiased accuracy from the same run
                 (4x the question tokens; default false)
  pride_fraction with method pride, the fraction of each subject's questions used to estimate
                 the letter prior (default 0.25)
  max_new_tokens tokens generated per question with method generate (default 8)

Writes per-question rows (JSONL: id, subject, answer, pred, correct, logprobs, ...) and metrics
(JSON: method, k_shot, accuracy, n, by_subject, pred/gold letter distributions, bias, seconds).
Exit status 2 with a message on bad input or configuration.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path

from sqltradeoff import mmlu
from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.io import write_json, write_jsonl
from sqltradeoff.params import load_params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmlu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="model name in outputs (base, run1, ...)")
    p.add_argument("--adapter", type=Path, help="PEFT adapter directory applied to the base model")
    p.add_argument("--adapter-scale", type=float, default=1.0, metavar="S",
                   help="multiply the adapter's LoRA update by S (W + S*dW; 0 = base, 1 = as trained; default 1)")
    p.add_argument("--out-rows", required=True, type=Path, help="per-question JSONL (data/mmlu/<name>.jsonl)")
    p.add_argument("--out-metrics", required=True, type=Path, help="metrics JSON (metrics/mmlu/<name>.json)")
    p.add_argument("--test", default=Path("data/prepared/mmlu_test.jsonl"), type=Path,
                   help="test questions (default: %(default)s)")
    p.add_argument("--dev", default=Path("data/prepared/mmlu_dev.jsonl"), type=Path,
                   help="dev examples for the few-shot prefix (default: %(default)s)")
    p.add_argument("--params", default=Path("params.yaml"), type=Path, help="parameters file (default: %(default)s)")
    p.add_argument("--limit", type=int, help="evaluate only the first N test questions (smoke runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@stage_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_params(args.params).config      # every value checked (sqltradeoff/config.py)
    from sqltradeoff.cpu import apply_cpu_threads
    apply_cpu_threads(config.cpu_threads)   # before torch loads (sqltradeoff/cpu.py)
    cfg = config.need("mmlu")
    method, k_shot, batch_size, scoring = cfg.method, cfg.k_shot, cfg.batch_size, cfg.scoring
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be a positive integer, got {args.limit}")
    if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {args.adapter}: not a PEFT adapter directory (no adapter_config.json)")

    test = mmlu.load_items(args.test)
    dev = mmlu.load_items(args.dev)
    if args.limit:
        test = test[:args.limit]
    if not test:
        raise UserError(f"{args.test}: no questions")
    mmlu.subject_prefixes(test, dev, k_shot)   # enough dev examples per subject, before the model loads

    from sqltradeoff.modeling import load_model

    model, tokenizer = load_model(config.need("model"), adapter=args.adapter, adapter_scale=args.adapter_scale)
    if cfg.cpu_linear == "onednn":             # fp32 CPU layers only (a GPU model is left as it is)
        from sqltradeoff.onednn import pack_linears
        pack_linears(model)                # after the merge: the weights are final (onednn.py)
    from sqltradeoff.attention import cpu_grouped_sdpa
    cpu_grouped_sdpa()                     # CPU: grouped K/V heads to torch's SDPA as they are (attention.py)
    scorer = generator = None
    if method == "generate":
        generator = mmlu.HFGenerator(model, tokenizer, max_new_tokens=cfg.max_new_tokens, batch_size=batch_size)
    elif scoring == "batched":
        scorer = mmlu.BatchedHFLetterScorer(model, tokenizer, batch_size=batch_size, batch_tokens=cfg.batch_tokens)
    else:
        scorer = mmlu.HFLetterScorer(model, tokenizer, batch_size=batch_size)
    rows, metrics = mmlu.evaluate(test, dev, method=method, k_shot=k_shot, scorer=scorer, generator=generator,
                                  batch_size=batch_size, also_debiased=cfg.also_debiased and method == "loglik",
                                  pride_fraction=cfg.pride_fraction,
                                  progress=not args.no_progress)
    metrics = {"name": args.name, "adapter": str(args.adapter) if args.adapter else None, **metrics}
    if scorer is not None:
        metrics["scoring"] = {"fast_rows": scorer.stats["fast_rows"], "general_rows": scorer.stats["general_rows"],
                              "path": scoring, "forwards": scorer.stats["forwards"]}
    write_jsonl(args.out_rows, rows)
    write_json(args.out_metrics, metrics)
    line = f"mmlu {args.name}: {method} {k_shot}-shot accuracy {metrics['accuracy']:.3f} (n={metrics['n']})"
    if "debiased" in metrics:
        line += f", debiased {metrics['debiased']['accuracy']:.3f}"
    if method == "generate":
        line += f", unparsed {metrics['unparsed']}"
    print(f"{line}; predicted letters {metrics['pred_distribution']} vs gold {metrics['gold_distribution']}; "
          f"{metrics['seconds']:.0f} s -> {args.out_metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
