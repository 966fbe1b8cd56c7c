"""The four ways to get an MMLU answer, one function each, and `evaluate`, which runs one of them.

* `loglik` (the harness's `acc`): continuations " A" .. " D"; the prediction is the letter with the
  highest log-likelihood (a `LetterScorer`, see `scorers.py`). With `also_debiased`, every
  question is also scored under the 4 cyclic permutations and the debiased prediction reported
  beside it (permutation 0 is the original order, so one run gives both).
* `debiased` (permutation debiasing, Zheng et al., ICLR 2024, "Large Language Models Are Not
  Robust Multiple Choice Selectors"): each question is scored under the 4 cyclic permutations of
  its options; the (letter-normalized) log-probabilities are averaged per option *content*, so a
  fixed preference for a letter cancels; the prediction is the content with the highest average.
* `pride` (the same paper's cheaper PriDe): the letter prior is estimated from the 4 permutations
  of the first `pride_fraction` of each subject's questions (those are predicted as in
  `debiased`); every other question is scored once and predicted by argmax of its
  letter-normalized log-probability minus the log prior of the letter.
* `generate` (the reference study's way): greedy generation of a few tokens after the prompt
  (`HFGenerator`, through `generation.generate`), then a letter is parsed from the text
  (`task.parse_answer`); an unparsable output counts as wrong.

Each method function takes the test questions, their subjects' few-shot prefixes and a progress
bar, and returns (per-question rows, the method's metrics beyond `task.summarize`).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Protocol, Sequence

from ..answers import LETTERS
from ..errors import UserError
from .scorers import LetterScorer
from .task import CONTINUATIONS, METHODS, format_question, parse_answer, permute, subject_prefixes, summarize


# --------------------------------------------------------------------------------------------
# Generators (method generate)


class Generator(Protocol):
    def generate(self, prompts: Sequence[str]) -> list[str]: ...


class FunctionGenerator:
    def __init__(self, fn: Callable[[str], str]):
        self.fn = fn

    def generate(self, prompts):
        return [self.fn(p) for p in prompts]


def model_eos_ids(model) -> list[int]:
    """The EOS ids of the model's own generation config (where a plain `model.generate` stops)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


class HFGenerator:
    """Greedy generation through `generation.generate` (plain-text prompts, no special tokens
    added, left padding, `batch_size` prompts per batch), stopping at the model's own EOS."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 8, batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))

    def generate(self, prompts: Sequence[str]) -> list[str]:
        from .. import generation

        texts, _ = generation.generate(self.model, self.tokenizer, prompts, batch_size=self.batch_size,
                                       max_new_tokens=self.max_new_tokens, progress=False,
                                       stop_ids=model_eos_ids(self.model))
        return texts


# --------------------------------------------------------------------------------------------
# Debiasing arithmetic


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _argmax(xs: Sequence[float]) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def debias(perm_logprobs: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """From the letter log-probs under the 4 cyclic permutations (perm r shows original option
    (j + r) % 4 at letter j), return (mean normalized log-prob per original option content,
    the question's estimated letter prior, as mean normalized log-prob per letter)."""
    norm = [[x - _logsumexp(lp) for x in lp] for lp in perm_logprobs]
    n = len(norm)
    content = [sum(norm[r][(c - r) % 4] for r in range(n)) / n for c in range(4)]
    prior = [sum(norm[r][j] for r in range(n)) / n for j in range(4)]
    return content, prior


def letter_prior(results: dict[str, dict], ids: Sequence[str]) -> tuple[list[float], dict[str, float]]:
    """(log prior per letter, the prior rounded for the metrics) from the permuted questions `ids`."""
    priors = [results[i]["letter_prior"] for i in ids]
    mean_prior = [sum(p[j] for p in priors) / len(priors) for j in range(4)]
    z = _logsumexp(mean_prior)
    log_prior = [x - z for x in mean_prior]
    return log_prior, {L: round(math.exp(x), 4) for L, x in zip(LETTERS, log_prior)}


# --------------------------------------------------------------------------------------------
# Scoring questions (loglik, debiased, pride)


def _score_chunk(scorer: LetterScorer, prefix: str, chunk: Sequence[dict], permuted: set[str]) -> dict[str, dict]:
    """Letter log-probs of `chunk` in one scorer call; the questions in `permuted` also under the
    4 cyclic orders (with their content log-probs, letter prior and debiased prediction)."""
    suffixes, spans = [], []
    for it in chunk:
        n_shifts = 4 if it["id"] in permuted else 1
        spans.append((len(suffixes), n_shifts))
        for r in range(n_shifts):
            order = permute(it["choices"], r)
            suffixes.append(format_question(it["question"], [it["choices"][i] for i in order]))
    scores = scorer.score(prefix, suffixes, CONTINUATIONS)
    results = {}
    for it, (first, n_shifts) in zip(chunk, spans):
        per_perm = scores[first:first + n_shifts]
        raw = per_perm[0]
        res = {"logprobs": dict(zip(LETTERS, raw)), "pred": LETTERS[_argmax(raw)]}
        if n_shifts == 4:
            content, prior = debias(per_perm)
            res["content_logprobs"] = dict(zip(LETTERS, content))
            res["letter_prior"] = prior
            res["debiased_pred"] = LETTERS[_argmax(content)]
        results[it["id"]] = res
    return results


def score_questions(items: Sequence[dict], prefixes: dict[str, str], scorer: LetterScorer, batch_size: int,
                    permuted: set[str], bar) -> dict[str, dict]:
    """`_score_chunk` results for `items`, subject by subject: `batch_size` questions per scorer
    call, or a whole subject per call for a scorer that batches its rows itself (`whole_subject`)."""
    results: dict[str, dict] = {}
    for subject, prefix in prefixes.items():
        sub = [it for it in items if it["subject"] == subject]
        step = max(1, len(sub)) if getattr(scorer, "whole_subject", False) else batch_size
        for start in range(0, len(sub), step):
            chunk = sub[start:start + step]
            results.update(_score_chunk(scorer, prefix, chunk, permuted))
            bar.update(len(chunk))
    return results


def _row(it: dict, pred: str | None, logprobs, **extra) -> dict:
    return {"id": it["id"], "subject": it["subject"], "answer": it["answer"], "pred": pred,
            "correct": int(pred == it["answer"]), "logprobs": logprobs, **extra}


def loglik(test: Sequence[dict], prefixes: dict[str, str], scorer: LetterScorer, *, batch_size: int,
           also_debiased: bool, bar) -> tuple[list[dict], dict]:
    if not also_debiased:
        results = score_questions(test, prefixes, scorer, batch_size, set(), bar)
        return [_row(it, results[it["id"]]["pred"], results[it["id"]]["logprobs"]) for it in test], {}
    results = score_questions(test, prefixes, scorer, batch_size, {it["id"] for it in test}, bar)
    _, prior = letter_prior(results, [it["id"] for it in test])
    rows = []
    for it in test:
        res = results[it["id"]]
        rows.append(_row(it, res["pred"], res["logprobs"], content_logprobs=res["content_logprobs"],
                         debiased_pred=res["debiased_pred"],
                         debiased_correct=int(res["debiased_pred"] == it["answer"])))
    return rows, {"debiased": {**summarize(rows, "debiased_pred"), "letter_prior": prior},
                  "note": "loglik and debiased from one run (permutation 0 is the original order); "
                          "seconds cover both"}


def debiased(test: Sequence[dict], prefixes: dict[str, str], scorer: LetterScorer, *, batch_size: int,
             bar) -> tuple[list[dict], dict]:
    results = score_questions(test, prefixes, scorer, batch_size, {it["id"] for it in test}, bar)
    _, prior = letter_prior(results, [it["id"] for it in test])
    rows = [_row(it, results[it["id"]]["debiased_pred"], results[it["id"]]["logprobs"],
                 content_logprobs=results[it["id"]]["content_logprobs"]) for it in test]
    return rows, {"letter_prior": prior}


def calibration_ids(test: Sequence[dict], prefixes: dict[str, str], pride_fraction: float) -> set[str]:
    """PriDe's calibration questions: the first ceil(fraction x n) (at least one) of each subject."""
    permuted = set()
    for subject in prefixes:
        items = [it for it in test if it["subject"] == subject]
        permuted.update(it["id"] for it in items[:max(1, math.ceil(pride_fraction * len(items)))])
    return permuted


def pride(test: Sequence[dict], prefixes: dict[str, str], scorer: LetterScorer, *, batch_size: int,
          pride_fraction: float, bar) -> tuple[list[dict], dict]:
    if isinstance(pride_fraction, bool) or not isinstance(pride_fraction, (int, float)) \
            or not 0 < pride_fraction <= 1:
        raise UserError(f"mmlu.pride_fraction must be in (0, 1], got {pride_fraction!r}")
    permuted = calibration_ids(test, prefixes, pride_fraction)
    # the calibration questions (4 permutations) first, then the others (1 order)
    results = score_questions([it for it in test if it["id"] in permuted], prefixes, scorer, batch_size,
                              permuted, bar)
    results.update(score_questions([it for it in test if it["id"] not in permuted], prefixes, scorer,
                                   batch_size, permuted, bar))
    log_prior, prior = letter_prior(results, [it["id"] for it in test if it["id"] in permuted])
    rows = []
    for it in test:
        res = results[it["id"]]
        if it["id"] in permuted:
            pred, content = res["debiased_pred"], res["content_logprobs"]
        else:  # observed (letter-normalized) log-prob minus the estimated log prior of the letter
            raw = [res["logprobs"][L] for L in LETTERS]
            z = _logsumexp(raw)
            corrected = [x - z - lp for x, lp in zip(raw, log_prior)]
            pred, content = LETTERS[_argmax(corrected)], dict(zip(LETTERS, corrected))
        rows.append(_row(it, pred, res["logprobs"], content_logprobs=content, calibration=int(it["id"] in permuted)))
    return rows, {"letter_prior": prior, "pride_fraction": pride_fraction, "calibration_questions": len(permuted)}


# --------------------------------------------------------------------------------------------
# Generation


def generate(test: Sequence[dict], prefixes: dict[str, str], generator: Generator, *, batch_size: int,
             bar) -> tuple[list[dict], dict]:
    """`batch_size` prompts of one subject per generator call; the letter parsed from each text."""
    texts: dict[str, str] = {}
    for subject, prefix in prefixes.items():
        items = [it for it in test if it["subject"] == subject]
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            outs = generator.generate([prefix + format_question(it["question"], it["choices"]) for it in chunk])
            texts.update((it["id"], text) for it, text in zip(chunk, outs))
            bar.update(len(chunk))
    rows = [_row(it, parse_answer(texts[it["id"]], it["choices"]), None, raw_output=texts[it["id"]]) for it in test]
    return rows, {"unparsed": sum(1 for r in rows if r["pred"] is None)}


# --------------------------------------------------------------------------------------------
# Evaluation


def _check_request(test, method, k_shot, batch_size, scorer, generator) -> None:
    if method not in METHODS:
        raise UserError(f"mmlu.method: unknown method {method!r} (choose one of {', '.join(METHODS)})")
    if not isinstance(k_shot, int) or isinstance(k_shot, bool) or k_shot < 0:
        raise UserError(f"mmlu.k_shot must be a non-negative integer, got {k_shot!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UserError(f"mmlu.batch_size must be a positive integer, got {batch_size!r}")
    if not test:
        raise UserError("no MMLU test questions to evaluate")
    if method == "generate" and generator is None:
        raise ValueError("method generate needs a generator")
    if method != "generate" and scorer is None:
        raise ValueError(f"method {method} needs a scorer")


def evaluate(test: Sequence[dict], dev: Sequence[dict], *, method: str = "loglik", k_shot: int = 5,
             scorer: LetterScorer | None = None, generator: Generator | None = None, batch_size: int = 8,
             also_debiased: bool = False, pride_fraction: float = 0.25,
             progress: bool = True) -> tuple[list[dict], dict]:
    """Evaluate `test` questions with `method`; returns (per-question rows, metrics).

    Rows: id, subject, answer, pred, correct, logprobs, then the method's fields. Metrics: method,
    k_shot, `task.summarize` of the predictions, seconds, then the method's own metrics."""
    _check_request(test, method, k_shot, batch_size, scorer, generator)
    prefixes = subject_prefixes(test, dev, k_shot)   # errors before any model work

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=len(test), unit="q", desc=f"mmlu {method}", disable=not progress)
    try:
        if method == "generate":
            rows, extra = generate(test, prefixes, generator, batch_size=batch_size, bar=bar)
        elif method == "pride":
            rows, extra = pride(test, prefixes, scorer, batch_size=batch_size, pride_fraction=pride_fraction, bar=bar)
        elif method == "debiased":
            rows, extra = debiased(test, prefixes, scorer, batch_size=batch_size, bar=bar)
        else:
            rows, extra = loglik(test, prefixes, scorer, batch_size=batch_size, also_debiased=also_debiased, bar=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return rows, {"method": method, "k_shot": k_shot, **summarize(rows, "pred"), "seconds": round(seconds, 2),
                  **extra}
