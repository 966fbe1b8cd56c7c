"""attention.cpu_grouped_sdpa: grouped key/value heads handed to torch's SDPA on the CPU, mask or not."""
from __future__ import annotations

import pytest
import torch

from sqltradeoff import mmlu
from sqltradeoff.attention import cpu_grouped_sdpa
from sqltradeoff.generation import generate
from sqltradeoff.modeling import load_model


def _prompts(tok):
    qs = ["How many singers do we have?", "List the names of the stadiums ordered by capacity.",
          "What is the average age of singers from France?", "Which concert had the most singers?",
          "Show the name and country of every singer older than 40."]
    schema = "CREATE TABLE singer (id int, name text, country text, age int)\n"
    return [tok.apply_chat_template([{"role": "user", "content": schema + q}], tokenize=False,
                                    add_generation_prompt=True) for q in qs]


def _count_repeats(monkeypatch):
    from transformers.integrations import sdpa_attention

    calls = {"n": 0}
    original = sdpa_attention.repeat_kv

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counting)
    return calls


def _same_outputs_without_copies(model_cfg, new_tokens, monkeypatch):
    model, tok = load_model(model_cfg)
    assert model.config.num_key_value_heads < model.config.num_attention_heads      # a GQA model
    calls = _count_repeats(monkeypatch)
    prompts = _prompts(tok)
    for backend in ("reference", "prefix"):
        calls["n"] = 0
        ref, _ = generate(model, tok, prompts, batch_size=2, max_new_tokens=new_tokens, progress=False, backend=backend)
        copies = calls["n"]
        undo = cpu_grouped_sdpa()
        try:
            calls["n"] = 0
            out, _ = generate(model, tok, prompts, batch_size=2, max_new_tokens=new_tokens, progress=False,
                              backend=backend)
            assert calls["n"] == 0                 # no key/value head copied
        finally:
            undo()
        assert copies > 0 and out == ref, backend   # padded batches copied the heads before; same text
    return model, tok


def test_grouped_heads_give_the_same_generation_without_copying_them(tiny_model_cfg, monkeypatch):
    _same_outputs_without_copies(tiny_model_cfg, 10, monkeypatch)


def test_undo_restores_transformers_function_and_a_second_install_is_a_no_op():
    from transformers.integrations import sdpa_attention

    original = sdpa_attention.use_gqa_in_sdpa
    undo = cpu_grouped_sdpa()
    patched = sdpa_attention.use_gqa_in_sdpa
    assert patched is not original
    key = torch.zeros(1, 2, 3, 8)
    assert patched(torch.ones(1, 1, 1, 3, dtype=torch.bool), key, key) is True        # CPU, with a mask
    assert original(torch.ones(1, 1, 1, 3, dtype=torch.bool), key, key) is False
    cpu_grouped_sdpa()()                                      # already in place: nothing to undo
    assert sdpa_attention.use_gqa_in_sdpa is patched
    undo()
    assert sdpa_attention.use_gqa_in_sdpa is original


@pytest.mark.slow
def test_smollm2_generates_the_same_text_and_mmlu_log_probs_with_grouped_heads(smollm2_cfg, monkeypatch):
    model, tok = _same_outputs_without_copies(smollm2_cfg, 16, monkeypatch)
    prefix = "The following are multiple choice questions (with answers) about philosophy.\n\n"
    suffixes = [f"Question {i}: which is {'right' if i % 2 else 'the better answer'}?\nA. one\nB. two\nC. three\n"
                f"D. four\nAnswer:" for i in range(3)]
    ref = mmlu.BatchedHFLetterScorer(model, tok, batch_size=2).score(prefix, suffixes, mmlu.CONTINUATIONS)
    undo = cpu_grouped_sdpa()
    try:
        got = mmlu.BatchedHFLetterScorer(model, tok, batch_size=2).score(prefix, suffixes, mmlu.CONTINUATIONS)
    finally:
        undo()
    assert torch.allclose(torch.tensor(got), torch.tensor(ref), atol=1e-5)
