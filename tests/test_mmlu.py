"""MMLU evaluation: harness prompt format, letter scoring (fast path vs naive), debiasing, parsing."""
from __future__ import annotations

import math
import re

import pytest

from sqltradeoff import mmlu
from sqltradeoff.errors import UserError

# Two dev examples of MMLU philosophy (first rows of philosophy_dev.csv) and one test question.
DEV = [
    {"id": "philosophy-dev-0000", "subject": "philosophy", "question": "Psychological egoism is:",
     "choices": ["an ethical theory about how we ought to behave.",
                 "a generalization concerning the way people tend to behave.",
                 "a claim about human nature and the ways people are capable of behaving.",
                 "none of the above."], "answer": "C"},
    {"id": "philosophy-dev-0001", "subject": "philosophy",
     "question": "According to Moore’s “ideal utilitarianism,” the right action is the one that brings about "
                 "the greatest amount of:",
     "choices": ["pleasure.", "happiness.", "good.", "virtue."], "answer": "C"},
    {"id": "philosophy-dev-0002", "subject": "philosophy",
     "question": "According to d'Holbach, people always act according to _____.",
     "choices": ["free choices", "dictates of the soul", "necessary natural laws", "undetermined will"],
     "answer": "C"},
]
TEST_Q = {"id": "philosophy-test-0007", "subject": "philosophy",
          "question": "  The study of reality in the broadest sense is known as _____.\n",
          "choices": ["metaphysics", "epistemology", "quantum physics", "axiology "], "answer": "A"}

EXPECTED_K0 = (
    "The following are multiple choice questions (with answers) about philosophy.\n\n"
    "The study of reality in the broadest sense is known as _____.\n"
    "A. metaphysics\nB. epistemology\nC. quantum physics\nD. axiology \nAnswer:"
)
EXPECTED_K2 = (
    "The following are multiple choice questions (with answers) about philosophy.\n\n"
    "Psychological egoism is:\n"
    "A. an ethical theory about how we ought to behave.\n"
    "B. a generalization concerning the way people tend to behave.\n"
    "C. a claim about human nature and the ways people are capable of behaving.\n"
    "D. none of the above.\n"
    "Answer: C\n\n"
    "According to Moore’s “ideal utilitarianism,” the right action is the one that brings about the "
    "greatest amount of:\n"
    "A. pleasure.\nB. happiness.\nC. good.\nD. virtue.\n"
    "Answer: C\n\n"
    "The study of reality in the broadest sense is known as _____.\n"
    "A. metaphysics\nB. epistemology\nC. quantum physics\nD. axiology \nAnswer:"
)


# ------------------------------------------------------------------------------------------------
# Prompt format


def test_prompt_zero_shot_is_byte_exact():
    assert mmlu.render_prompt(TEST_Q, DEV, 0) == EXPECTED_K0


def test_prompt_two_shot_is_byte_exact_and_uses_first_dev_examples_in_order():
    assert mmlu.render_prompt(TEST_Q, DEV, 2) == EXPECTED_K2
    # Reordering the dev split changes the shots: the first k in file order are used.
    assert mmlu.render_prompt(TEST_Q, DEV[::-1], 2) != EXPECTED_K2


def test_description_replaces_underscores():
    assert mmlu.description("high_school_macroeconomics") == (
        "The following are multiple choice questions (with answers) about high school macroeconomics.\n\n")


def test_not_enough_dev_examples_for_k_shots():
    with pytest.raises(UserError, match=r"philosophy.*3 dev example.*k_shot=5"):
        mmlu.fewshot_prefix("philosophy", DEV, 5)


@pytest.mark.parametrize("bad, message", [
    ({"subject": "philosophy", "question": "q", "choices": ["a", "b", "c", "d"], "answer": "A"}, "missing field"),
    ({"id": "x", "subject": "philosophy", "question": "q", "choices": ["a", "b", "c"], "answer": "A"},
     "list of 4 strings"),
    ({"id": "x", "subject": "philosophy", "question": "q", "choices": ["a", "b", "c", 4], "answer": "A"},
     "list of 4 strings"),
    ({"id": "x", "subject": "philosophy", "question": "q", "choices": ["a", "b", "c", "d"], "answer": 2},
     "one of A, B, C, D"),
    ({"id": "x", "subject": "philo sophy", "question": "q", "choices": ["a", "b", "c", "d"], "answer": "A"},
     "subject"),
    ({"id": "x", "subject": "philosophy", "question": " ", "choices": ["a", "b", "c", "d"], "answer": "A"},
     "question"),
])
def test_validate_items_rejects_malformed_records(bad, message):
    with pytest.raises(UserError, match=message):
        mmlu.validate_items([DEV[0], bad], "test.jsonl")


def test_validate_items_rejects_duplicate_ids():
    with pytest.raises(UserError, match="duplicate id"):
        mmlu.validate_items([DEV[0], dict(DEV[0])], "test.jsonl")


def test_unknown_method_is_a_user_error():
    with pytest.raises(UserError, match="unknown method"):
        mmlu.evaluate([TEST_Q], DEV, method="vote", k_shot=0, scorer=mmlu.FunctionScorer(lambda c, cs: [0] * 4))


# ------------------------------------------------------------------------------------------------
# Controlled stub models


def _questions(n: int, subject: str = "philosophy") -> list[dict]:
    """n questions with distinct option texts; gold letters cycle A, B, C, D (balanced)."""
    return [{"id": f"{subject}-test-{i:04d}", "subject": subject, "question": f"Question number {i}?",
             "choices": [f"option {i}-{j}" for j in range(4)], "answer": "ABCD"[i % 4]} for i in range(n)]


def _parse_last_question(context: str) -> tuple[str, dict[str, str]]:
    block = context.rsplit("\n\n", 1)[-1]
    lines = block.split("\n")
    options = {m.group(1): m.group(2) for m in (re.match(r"([ABCD])\. (.*)$", ln) for ln in lines) if m}
    return lines[0], options


def _biased_stub(items: list[dict], letter_bias: float = 3.0, content_pref: float = 1.0, favourite: str = "A"):
    """log p(letter) = letter_bias if letter == favourite + content_pref if its option text is correct."""
    gold = {it["question"]: it["choices"]["ABCD".index(it["answer"])] for it in items}

    def fn(context, continuations):
        question, options = _parse_last_question(context)
        out = []
        for cont in continuations:
            letter = cont.strip()
            out.append(letter_bias * (letter == favourite) + content_pref * (options[letter] == gold[question]) - 5.0)
        return out
    return mmlu.FunctionScorer(fn)


def test_oracle_stub_scores_100_percent_and_rows_follow_the_contract():
    items = _questions(12)
    rows, metrics = mmlu.evaluate(items, DEV, method="loglik", k_shot=2,
                                  scorer=_biased_stub(items, letter_bias=0.0), progress=False)
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 12 and metrics["bias"] == 0.0
    assert metrics["pred_distribution"] == metrics["gold_distribution"] == {"A": 3, "B": 3, "C": 3, "D": 3}
    assert [r["id"] for r in rows] == [it["id"] for it in items]
    assert set(rows[0]) >= {"id", "subject", "answer", "pred", "correct", "logprobs"}
    assert set(rows[0]["logprobs"]) == set("ABCD")


def test_letter_bias_gives_chance_with_loglik_and_is_removed_by_debiasing():
    items = _questions(40) + _questions(20, subject="high_school_computer_science")
    dev = DEV + [dict(d, subject="high_school_computer_science", id=d["id"] + "-cs") for d in DEV]
    scorer = _biased_stub(items)
    _, loglik = mmlu.evaluate(items, dev, method="loglik", k_shot=1, scorer=scorer, progress=False)
    assert loglik["pred_distribution"]["A"] == 60             # always the favourite letter
    assert 0.15 <= loglik["accuracy"] <= 0.35                 # chance
    assert loglik["bias"] == pytest.approx(0.75)
    _, deb = mmlu.evaluate(items, dev, method="debiased", k_shot=1, scorer=scorer, progress=False)
    assert deb["accuracy"] >= 0.95
    assert deb["bias"] <= 0.05
    assert deb["letter_prior"]["A"] > 0.5                     # the estimated prior finds the bias
    assert set(deb["by_subject"]) == {"philosophy", "high_school_computer_science"}
    # PriDe: prior from the permutations of a quarter of the questions, the rest scored once
    calls = []
    counting = mmlu.FunctionScorer(lambda c, cs: calls.append(1) or scorer.fn(c, cs))
    rows, pride = mmlu.evaluate(items, dev, method="pride", k_shot=1, scorer=counting, pride_fraction=0.25,
                                progress=False)
    assert pride["calibration_questions"] == 10 + 5
    assert len(calls) == 15 * 4 + 45                          # 4 orders for calibration, 1 for the rest
    assert pride["accuracy"] >= 0.95 and pride["letter_prior"]["A"] > 0.5
    assert sum(r["calibration"] for r in rows) == 15
    # also_debiased: both in one run, loglik numbers unchanged
    rows, both = mmlu.evaluate(items, dev, method="loglik", k_shot=1, scorer=scorer, also_debiased=True,
                               progress=False)
    assert both["accuracy"] == loglik["accuracy"] and both["debiased"]["accuracy"] == deb["accuracy"]
    assert "debiased_pred" in rows[0] and "content_logprobs" in rows[0]


def test_debias_recovers_content_scores_under_an_additive_letter_prior():
    content = [0.3, -1.0, 2.0, 0.1]
    prior = [2.5, 0.0, -0.5, 1.0]
    perms = [[prior[j] + content[(j + r) % 4] for j in range(4)] for r in range(4)]
    got, est_prior = mmlu.debias(perms)
    # recovered up to a constant shift
    diffs = [g - c for g, c in zip(got, content)]
    assert max(diffs) - min(diffs) == pytest.approx(0.0, abs=1e-12)
    pdiffs = [g - p for g, p in zip(est_prior, prior)]
    assert max(pdiffs) - min(pdiffs) == pytest.approx(0.0, abs=1e-12)


def test_debiased_method_shows_each_question_in_four_cyclic_orders():
    seen = []

    def fn(context, continuations):
        seen.append(_parse_last_question(context)[1])
        return [0.0, -1.0, -2.0, -3.0]
    mmlu.evaluate(_questions(1), DEV, method="debiased", k_shot=0, scorer=mmlu.FunctionScorer(fn), progress=False)
    firsts = [opts["A"] for opts in seen]
    assert firsts == [f"option 0-{r}" for r in range(4)]
    assert all(sorted(o.values()) == [f"option 0-{j}" for j in range(4)] for o in seen)


# ------------------------------------------------------------------------------------------------
# Generate method and answer parsing


@pytest.mark.parametrize("text, expected", [
    (" B\n\nQuestion: what", "B"),
    ("B", "B"),
    (" (C) because", "C"),
    ("D) none of the above", "D"),
    ("Answer: C", "C"),
    ("The answer is (B).", "B"),
    ("I think the correct answer is D, since", "D"),
    ("**A**", "A"),
    ("A. metaphysics", "A"),
    ("Option C is right", "C"),
    ("metaphysics", "A"),                   # the text of exactly one option
    ("A good question. Hmm", None),         # the article "A" is not an answer
    ("I don't know", None),
    ("", None),
])
def test_parse_answer_on_realistic_outputs(text, expected):
    assert mmlu.parse_answer(text, TEST_Q["choices"]) == expected


def test_generate_method_counts_unparsed_as_wrong():
    items = _questions(8)
    answers = {it["question"]: it["answer"] for it in items}

    def fn(prompt):
        question, _ = _parse_last_question(prompt)
        i = int(question.split()[2].rstrip("?"))
        if i < 2:
            return " hmm, hard to say"               # unparsed
        return f" {answers[question]}\n\n" if i < 6 else " The answer is (A)"
    rows, metrics = mmlu.evaluate(items, DEV, method="generate", k_shot=2,
                                  generator=mmlu.FunctionGenerator(fn), progress=False)
    assert metrics["unparsed"] == 2
    # i = 2..5 right; i = 6 (gold C) and 7 (gold D) answered A: wrong
    assert metrics["n_correct"] == 4 and metrics["accuracy"] == 0.5
    assert rows[0]["pred"] is None and rows[0]["correct"] == 0 and rows[0]["raw_output"] == " hmm, hard to say"
    assert metrics["pred_distribution"] == {"A": 3, "B": 1, "C": 1, "D": 1}


# ------------------------------------------------------------------------------------------------
# Real forward passes on tiny random models


def _tiny_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval()


def _bpe_tokenizer(use_regex: bool = True):
    """Byte-level BPE trained on MMLU-formatted text, so " A" .. " D" are single tokens. With
    use_regex=False, merges may cross the "Answer:" / " A" boundary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    bpe.decoder = decoders.ByteLevel()
    corpus = [mmlu.format_shot(dict(d, answer=letter)) for d in DEV for letter in "ABCD"] * 5 + [" A B C D"] * 50
    if not use_regex:
        corpus += [f"x: {letter}" for letter in "ABCD"] * 100
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


@pytest.fixture(scope="module")
def conftest_llama(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def _check_against_naive(model, tok, items, k_shot=3, batch_size=3):
    prefix = mmlu.fewshot_prefix("philosophy", DEV, k_shot)
    suffixes = [mmlu.format_question(it["question"], it["choices"]) for it in items]
    fast = mmlu.HFLetterScorer(model, tok, batch_size=batch_size)
    got = fast.score(prefix, suffixes, mmlu.CONTINUATIONS)
    ref = [[mmlu.naive_loglikelihood(model, tok, prefix + s, c) for c in mmlu.CONTINUATIONS] for s in suffixes]
    worst = max(abs(a - b) for ra, rb in zip(got, ref) for a, b in zip(ra, rb))
    assert worst < 1e-4, worst
    assert all(math.isfinite(x) and x < 0 for r in got for x in r)
    return fast.stats


def test_fast_path_single_token_letters_matches_naive_full_sequence():
    tok = _bpe_tokenizer()
    assert all(len(tok(c, add_special_tokens=False)["input_ids"]) == 1 for c in mmlu.CONTINUATIONS)
    stats = _check_against_naive(_tiny_model(tok), tok, [TEST_Q] + _questions(6))
    assert stats["fast_rows"] == 7 and stats["general_rows"] == 0
    assert stats["prefix_forwards"] == 1 and stats["prefix_tokens_reused"] > 0


def test_general_path_multi_token_letters_matches_naive(conftest_llama):
    model, tok = conftest_llama
    ctx = mmlu.render_prompt(TEST_Q, DEV, 0)
    scorer = mmlu.HFLetterScorer(model, tok)
    assert any(len(scorer.encode_pair(ctx, c)[1]) > 1 for c in mmlu.CONTINUATIONS)  # precondition
    stats = _check_against_naive(model, tok, [TEST_Q] + _questions(4))
    assert stats["general_rows"] > 0 and stats["prefix_tokens_reused"] > 0


def test_boundary_merging_tokenizer_matches_naive():
    tok = _bpe_tokenizer(use_regex=False)
    ctx = mmlu.render_prompt(TEST_Q, DEV, 1)
    whole = tok(ctx + " A", add_special_tokens=False)["input_ids"]
    context = tok(ctx, add_special_tokens=False)["input_ids"]
    assert whole[:len(context)] != context      # precondition: "Answer:" + " A" tokenizes differently
    stats = _check_against_naive(_tiny_model(tok), tok, [TEST_Q] + _questions(3), k_shot=1)
    assert stats["boundary_rows"] > 0 and stats["general_rows"] > 0


def test_encode_pair_moves_trailing_space_to_the_continuation_like_the_harness():
    tok = _bpe_tokenizer()
    scorer = mmlu.HFLetterScorer(_tiny_model(tok), tok)
    assert scorer.encode_pair("Answer: ", "A") == scorer.encode_pair("Answer:", " A")
    ctx, cont = scorer.encode_pair("Answer:", " A")
    assert ctx == tok("Answer:", add_special_tokens=False)["input_ids"] and len(cont) == 1


def test_prefix_reuse_equals_recomputation_and_batch_size_does_not_matter(conftest_llama):
    model, tok = conftest_llama
    items = [TEST_Q] + _questions(5)
    prefix = mmlu.fewshot_prefix("philosophy", DEV, 3)
    suffixes = [mmlu.format_question(it["question"], it["choices"]) for it in items]
    reused = mmlu.HFLetterScorer(model, tok, batch_size=4).score(prefix, suffixes, mmlu.CONTINUATIONS)
    scratch = mmlu.HFLetterScorer(model, tok, batch_size=1, reuse_prefix=False).score(prefix, suffixes,
                                                                                        mmlu.CONTINUATIONS)
    assert max(abs(a - b) for ra, rb in zip(reused, scratch) for a, b in zip(ra, rb)) < 1e-4


def test_hf_generator_and_evaluate_on_tiny_model(conftest_llama):
    model, tok = conftest_llama
    tok.padding_side = "left"
    gen = mmlu.HFGenerator(model, tok, max_new_tokens=3, batch_size=2)
    rows, metrics = mmlu.evaluate(_questions(3), DEV, method="generate", k_shot=1, generator=gen, progress=False)
    assert metrics["n"] == 3 and all(isinstance(r["raw_output"], str) for r in rows)
    assert metrics["unparsed"] == sum(r["pred"] is None for r in rows)


def _model_generate_reference(model, tok, prompts, max_new_tokens):
    """What mmlu.HFGenerator did before it went through generation.generate: left-padded prompts
    in input order, a plain `model.generate` (stops at the model's own EOS), the whole tail decoded."""
    import torch

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(e) for e in enc)
    ids = torch.full((len(enc), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for b, e in enumerate(enc):
        ids[b, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[b, width - len(e):] = 1
    with torch.inference_mode():
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=pad_id)
    return [tok.decode(g[width:].tolist(), skip_special_tokens=True) for g in gen]


def test_hf_generator_equals_a_plain_model_generate(conftest_llama):
    """generation.generate with the model's own EOS as stop ids gives what model.generate gives
    (the tiny tokenizer has no pad token; some outputs stop early, some run to max_new_tokens)."""
    model, tok = conftest_llama
    prompts = [mmlu.render_prompt(it, DEV, k) for k in (0, 1, 2) for it in _questions(3)]
    for batch in (prompts[:4], prompts[4:8], prompts[8:]):
        got = mmlu.HFGenerator(model, tok, max_new_tokens=12, batch_size=len(batch)).generate(batch)
        assert got == _model_generate_reference(model, tok, batch, 12)
    assert mmlu.model_eos_ids(model) == [tok.eos_token_id]


@pytest.mark.slow
def test_real_tokenizer_takes_the_fast_path_and_matches_naive(smollm2_gguf, tmp_path):
    """SmolLM2-135M (GGUF): " A".." D" are single tokens after "Answer:", so one forward per
    question; the cached-prefix numbers equal a naive full forward on real MMLU dev questions."""
    from shared_paths import MMLU_DEV, require

    from sqltradeoff import data
    from sqltradeoff.modeling import load_model

    root = MMLU_DEV
    require(root / "philosophy_dev.csv")
    dev = data.read_mmlu_csv(root / "philosophy_dev.csv", "philosophy", "dev")
    model, tok = load_model({"path": str(smollm2_gguf), "revision": "main", "load_in_4bit": False,
                             "cache_dir": str(mmlu_cache_dir(tmp_path))})
    prefix = mmlu.fewshot_prefix("philosophy", dev, 2)
    items = dev[2:5]
    suffixes = [mmlu.format_question(it["question"], it["choices"]) for it in items]
    scorer = mmlu.HFLetterScorer(model, tok, batch_size=2)
    got = scorer.score(prefix, suffixes, mmlu.CONTINUATIONS)
    assert scorer.stats["fast_rows"] == 3 and scorer.stats["general_rows"] == 0
    ref = [[mmlu.naive_loglikelihood(model, tok, prefix + s, c) for c in mmlu.CONTINUATIONS] for s in suffixes[:2]]
    assert max(abs(a - b) for ra, rb in zip(got, ref) for a, b in zip(ra, rb)) < 1e-4


def mmlu_cache_dir(tmp_path):
    """The repo's GGUF conversion cache when it exists (fast reload), else a temporary one."""
    from pathlib import Path

    repo_cache = Path(__file__).resolve().parents[1] / ".cache" / "models"
    return repo_cache if repo_cache.is_dir() else tmp_path


# ------------------------------------------------------------------------------------------------
# Batched scoring (many questions per forward pass) equals the per-chunk reference path


def test_token_budget_batches_respect_rows_and_tokens():
    lengths = [50, 40, 40, 30, 10, 10, 10]          # sorted longest first
    assert mmlu.token_budget_batches(lengths, 100, 3, None) == [[0, 1, 2], [3, 4, 5], [6]]
    # budget 300: rows x (100 + the batch's longest tail) <= 300: 2 x 150, 2 x 140, 2 x 110, then 1
    batches = mmlu.token_budget_batches(lengths, 100, 10, 300)
    assert batches == [[0, 1], [2, 3], [4, 5], [6]]
    assert mmlu.token_budget_batches(lengths, 100, 10, 10) == [[i] for i in range(7)]  # always >= 1 row
    for b in batches:
        assert len(b) == 1 or len(b) * (100 + lengths[b[0]]) <= 300
    assert sum(len(b) for b in batches) == len(lengths)


def _compare_paths(model, tok, items, dev, k_shot, batch_size=3, batch_tokens=None):
    """evaluate() through the reference and the batched scorer (loglik + debiased in one run)."""
    ref_scorer = mmlu.HFLetterScorer(model, tok, batch_size=batch_size)
    new_scorer = mmlu.BatchedHFLetterScorer(model, tok, batch_size=batch_size, batch_tokens=batch_tokens)
    runs = [mmlu.evaluate(items, dev, method="loglik", k_shot=k_shot, scorer=s, batch_size=batch_size,
                          also_debiased=True, progress=False) for s in (ref_scorer, new_scorer)]
    (ref_rows, ref_m), (new_rows, new_m) = runs
    worst = 0.0
    for a, b in zip(ref_rows, new_rows):
        assert a["id"] == b["id"] and set(a) == set(b)
        assert a["pred"] == b["pred"] and a["debiased_pred"] == b["debiased_pred"]
        for key in ("logprobs", "content_logprobs"):
            worst = max(worst, max(abs(a[key][L] - b[key][L]) for L in "ABCD"))
    assert worst < 1e-4, worst
    assert ref_m["accuracy"] == new_m["accuracy"] and ref_m["debiased"]["accuracy"] == new_m["debiased"]["accuracy"]
    assert new_scorer.stats["prefix_forwards"] == len({it["subject"] for it in items})
    return ref_scorer, new_scorer


def test_batched_equals_reference_on_tiny_llama_general_path(conftest_llama):
    model, tok = conftest_llama   # multi-token letters: one row per continuation
    items = [TEST_Q] + _questions(7) + _questions(3, subject="high_school_computer_science")
    dev = DEV + [dict(d, subject="high_school_computer_science", id=d["id"] + "-cs") for d in DEV]
    ref, new = _compare_paths(model, tok, items, dev, k_shot=2, batch_size=64, batch_tokens=20000)
    assert new.stats["general_rows"] == ref.stats["general_rows"] > 0
    # the token budget, not batch_size (64 rows), splits the subjects into batches
    assert new.stats["forwards"] > math.ceil(new.stats["general_rows"] / 64) + 1


@pytest.mark.parametrize("use_regex", [True, False])
def test_batched_equals_reference_fast_and_boundary_paths(use_regex):
    tok = _bpe_tokenizer(use_regex=use_regex)
    ref, new = _compare_paths(_tiny_model(tok), tok, [TEST_Q] + _questions(9), DEV, k_shot=3, batch_size=4)
    for key in ("fast_rows", "general_rows", "boundary_rows"):
        assert new.stats[key] == ref.stats[key]
    assert (ref.stats["boundary_rows"] > 0) == (not use_regex)


def test_batched_scorer_rejects_a_bad_token_budget(conftest_llama):
    with pytest.raises(UserError, match="batch_tokens"):
        mmlu.BatchedHFLetterScorer(*conftest_llama, batch_tokens=0)


@pytest.mark.slow
def test_batched_equals_reference_on_smollm2(smollm2_cfg):
    """SmolLM2-135M (real weights, fp32): 4 real questions of two subjects, 2-shot, loglik + debiased."""
    from shared_paths import MMLU_DEV, require

    from sqltradeoff import data
    from sqltradeoff.modeling import load_model

    require(MMLU_DEV / "philosophy_dev.csv")
    test_dir = MMLU_DEV.parent / "test"
    items, dev = [], []
    for s in ("philosophy", "high_school_computer_science"):
        dev += data.read_mmlu_csv(MMLU_DEV / f"{s}_dev.csv", s, "dev")
        items += data.read_mmlu_csv(test_dir / f"{s}_test.csv", s, "test")[:2]
    model, tok = load_model(smollm2_cfg)
    ref, new = _compare_paths(model, tok, items, dev, k_shot=2, batch_size=8)
    assert new.stats["fast_rows"] == ref.stats["fast_rows"] == 4 * 4


def _full_rows(scorer, prefix, suffixes):
    rows, head = scorer._rows(prefix, suffixes, mmlu.CONTINUATIONS)
    return [(head + ids, targets) for ids, targets in rows]


@pytest.mark.parametrize("use_regex", [True, False])
def test_spliced_tokenization_gives_the_full_token_ids(use_regex, conftest_llama):
    """The batched scorer tokenizes the prefix once and each question after a short anchor; the
    token ids equal full-text tokenization (and the reference scorer's rows)."""
    for tok in (_bpe_tokenizer(use_regex=use_regex), conftest_llama[1]):
        items = [TEST_Q] + _questions(5)
        prefix = mmlu.fewshot_prefix("philosophy", DEV, 3)
        suffixes = [mmlu.format_question(it["question"], it["choices"]) for it in items]
        model = _tiny_model(tok)
        spliced = mmlu.BatchedHFLetterScorer(model, tok, splice_checks=1)
        full = mmlu.BatchedHFLetterScorer(model, tok, splice=False)
        got = _full_rows(spliced, prefix, suffixes)
        assert got == _full_rows(full, prefix, suffixes)
        assert got == mmlu.HFLetterScorer(model, tok)._rows(prefix, suffixes, mmlu.CONTINUATIONS)
        assert spliced.stats["unspliced_calls"] == spliced.stats["unspliced_joints"] == 0
        assert full.stats["unspliced_calls"] == 0
        assert spliced._rows(prefix, suffixes, mmlu.CONTINUATIONS)[1]          # a non-empty head was used


def test_spliced_tokenization_falls_back_when_the_check_fails(conftest_llama):
    model, tok = conftest_llama
    scorer = mmlu.BatchedHFLetterScorer(model, tok)
    scorer.encode_many = lambda texts, real=scorer.encode_many: [  # a tokenizer that is not local
        ids + [1] if not t.startswith("The following") else ids for t, ids in zip(texts, real(texts))]
    prefix = mmlu.fewshot_prefix("philosophy", DEV, 3)
    head, tails = scorer._encode_after(prefix, [prefix + "Question?"])
    assert head == [] and scorer.stats["unspliced_calls"] == 1


def test_throughput_benchmark_rows(conftest_llama):
    from benchmarks.throughput.mmlu import bench_mmlu

    model, tok = conftest_llama
    rows = bench_mmlu(model, tok, _questions(3), DEV, k_shot=1, variants=("before", "after"))
    assert [r["variant"] for r in rows] == ["before", "after"]
    for r in rows:
        assert r["stage"] == "mmlu" and r["questions"] == 3 and r["seconds"] > 0
        # seconds is rounded to the millisecond (a tiny model takes a few dozen): the rate lies between
        # the rates of the rounding interval's ends
        assert 3 / (r["seconds"] + 0.0005) - 0.01 <= r["questions_per_s"] <= 3 / (r["seconds"] - 0.0005) + 0.01
        assert r["same_predictions"] is True and r["max_abs_logprob_diff_vs_reference"] < 1e-4
    only_after = bench_mmlu(model, tok, _questions(2), DEV, k_shot=1, variants=("after",))
    assert only_after[0]["max_abs_logprob_diff_vs_reference"] is None and only_after[0]["same_predictions"] is None
