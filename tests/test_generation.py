"""generation.py and stages/predict.py: batched greedy generation, stopping, predict CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sqltradeoff.errors import UserError
from sqltradeoff.generation import check_backend, common_prefix_len, generate, prefix_groups
from sqltradeoff.modeling import load_model, stop_token_ids

REPO = Path(__file__).resolve().parents[1]

QUESTIONS = [
    "How many singers do we have?",
    "What are the names of the stadiums, ordered by capacity, and which country is each in?",
    "Count",
    "List the name, country and age of every singer older than 20 ordered by age descending please.",
    "Which concert?",
    "What is the average age of singers from France?",
]


def render(tok, question: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)


def reference_generate(model, tok, prompt: str, max_new_tokens: int) -> str:
    """One prompt, no padding, plain greedy decoding step by step (independent of generate())."""
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    stops = set(stop_token_ids(tok, model))
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            if nxt in stops:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tok.decode(out, skip_special_tokens=True)


@pytest.fixture(scope="module")
def tiny(tiny_model_cfg):
    return load_model(tiny_model_cfg)


def test_batched_equals_one_by_one_and_keeps_input_order(tiny):
    model, tok = tiny
    prompts = [render(tok, q) for q in QUESTIONS]
    batched, stats = generate(model, tok, prompts, batch_size=4, max_new_tokens=12, progress=False)
    single, _ = generate(model, tok, prompts, batch_size=1, max_new_tokens=12, progress=False)
    assert batched == single
    # and equal to an unpadded step-by-step greedy decode of each prompt (so order is the input order)
    assert batched == [reference_generate(model, tok, p, 12) for p in prompts]
    assert stats.prompts == 6 and stats.batches == 2
    assert 0 < stats.generated_tokens <= 6 * 12
    assert stats.tokens_per_s > 0


def generate_favouring(model, tok, token: int, prompts, **kwargs):
    """`generate` with `token` made the argmax from the 3rd new token on (call 0 of the LM head: the
    prefill -> 1st token, call 1 -> 2nd token)."""
    calls = [0]

    def favour(module, args, output):
        if calls[0] >= 2:
            output = output.clone()
            output[:, -1, token] = 1e4
        calls[0] += 1
        return output

    handle = model.lm_head.register_forward_hook(favour)
    try:
        return generate(model, tok, prompts, progress=False, **kwargs)
    finally:
        handle.remove()


def test_stops_at_end_of_turn(tiny):
    model, tok = tiny
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = [render(tok, q) for q in QUESTIONS[:3]]
    outs, stats = generate_favouring(model, tok, eot, prompts, batch_size=3, max_new_tokens=10)
    # 2 normal tokens, then end of turn: 3 generated tokens each, none hits the cap
    assert stats.hit_max_new_tokens == 0
    assert stats.generated_tokens == 3 * 3
    assert all("<|im_end|>" not in o for o in outs)
    # min_new_tokens (the GPU benchmark's fixed-length timing): the stop tokens are masked until then
    _, fixed = generate_favouring(model, tok, eot, prompts, batch_size=3, max_new_tokens=10, min_new_tokens=10)
    assert fixed.hit_max_new_tokens == 3 and fixed.generated_tokens == 3 * 10


def test_merged_adapter_gives_same_predictions_as_unmerged(tiny_model_cfg, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base, tok = load_model(tiny_model_cfg, for_training=True)
    torch.manual_seed(3)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged, tok = load_model(tiny_model_cfg, adapter=tmp_path / "adapter")
    assert not isinstance(merged, PeftModel)      # merged for inference
    plain, _ = load_model(tiny_model_cfg)
    unmerged = PeftModel.from_pretrained(plain, str(tmp_path / "adapter")).eval()
    prompts = [render(tok, q) for q in QUESTIONS[:4]]
    a, _ = generate(merged, tok, prompts, batch_size=4, max_new_tokens=8, progress=False)
    b, _ = generate(unmerged, tok, prompts, batch_size=4, max_new_tokens=8, progress=False)
    assert a == b
    # the graphs backend drives peft's wrapper too (QLoRA predicts with the adapter unmerged)
    c, _ = generate(unmerged, tok, prompts, batch_size=3, max_new_tokens=8, progress=False, backend="graphs")
    assert c == a and unmerged.config._attn_implementation == "sdpa"


# ------------------------------------------------------------------ backends: prefix reuse, continuous batching

SCHEMAS = {
    "concert_singer": "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n"
                      "CREATE TABLE concert (concert_id INTEGER, stadium_id INTEGER, year TEXT);",
    "stadium": "CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER);",
}


def schema_prompts(tok) -> tuple[list[str], list[str]]:
    """Prompts as the format stage writes them (instruction, schema, question), databases interleaved
    (so grouping must reorder), suffixes of different lengths (padding between prefix and suffix),
    and one prompt that shares nothing beyond the chat template."""
    from sqltradeoff.prompts import user_text

    dbs = ["concert_singer", "stadium"] * 3
    prompts = [render(tok, user_text(q, SCHEMAS[db])) for q, db in zip(QUESTIONS, dbs)]
    return prompts + [render(tok, "SELECT 1")], dbs + ["none"]


def _token_lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_prefix_groups_follow_the_shared_schema():
    common = list(range(100, 110))                       # chat template + instruction: shared by all
    a = [common + list(range(200, 240)) + [7, k] for k in range(5)]      # database A: 5 questions
    b = [common + list(range(300, 330)) + [8, k, k] for k in range(3)]   # database B: 3 questions
    lone = [common + [999]]                                              # shares only the template
    encoded = [b[0], a[0], lone[0], a[1], b[1], a[2], a[3], b[2], a[4]]
    groups = prefix_groups(encoded)
    by_members = {tuple(m): p for p, m in groups}
    assert by_members[(1, 3, 5, 6, 8)] == 51              # database A: common + schema + the shared 7
    assert by_members[(0, 4, 7)] == 41
    assert sorted(i for _, m in groups for i in m) == list(range(9))
    # the lone prompt is better off alone than pulling a database group down to the template (10 tokens)
    assert by_members[(2,)] == 0
    # every member keeps at least one token to run
    assert prefix_groups([[1, 2, 3], [1, 2, 3]]) == [(2, [0, 1])]
    assert prefix_groups([]) == []


def test_common_prefix_len_is_what_every_prompt_starts_with():
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 9], [1, 2, 3]]) == 2
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2          # a token is left to run
    assert common_prefix_len([[5, 1], [6, 1]]) == 0
    assert common_prefix_len([[1, 2, 3]]) == 0 == common_prefix_len([])


def test_prefix_backend_shares_the_few_shot_examples_across_databases(tiny):
    """Few-shot prompts: the same examples before every database's schema. They are computed once
    (the common prefix), each schema on top of them; the text equals the reference's."""
    from sqltradeoff.prompts import user_text

    model, tok = tiny
    shots = "Examples:\nQuestion: how many heads?\nSQL: SELECT count(*) FROM head\n\n"
    dbs = ["concert_singer", "stadium", "concert_singer", "stadium", "concert_singer"]
    prompts = [render(tok, shots + user_text(q, SCHEMAS[db])) for q, db in zip(QUESTIONS, dbs)]
    ref, _ = generate(model, tok, prompts, batch_size=2, max_new_tokens=10, progress=False)
    out, stats = generate(model, tok, prompts, batch_size=2, max_new_tokens=10, progress=False, backend="prefix")
    assert out == ref
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    common = common_prefix_len(enc)
    assert common >= len(tok(shots, add_special_tokens=False)["input_ids"]) - 2     # the examples, at least
    groups = prefix_groups(enc)
    assert stats.prefill_tokens_computed == (common + sum(p - common for p, _ in groups if p > common)
                                             + sum(len(e) - max(p, common) for p, m in groups for e in
                                                   (enc[i] for i in m)))


def _backend_equals_reference(model, tok, backend, batch_size, max_new_tokens, n_prompts=None):
    prompts = schema_prompts(tok)[0][:n_prompts]
    ref, ref_stats = generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              progress=False)
    out, stats = generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          progress=False, backend=backend)
    assert out == ref
    assert stats.generated_tokens == ref_stats.generated_tokens and stats.backend == backend
    assert ref_stats.prefill_tokens_computed == ref_stats.prompt_tokens and ref_stats.prefix_tokens_reused == 0
    return prompts, ref, stats


@pytest.mark.parametrize("batch_size", [2, 4])
def test_prefix_backend_equals_reference_and_counts_prefill(tiny, batch_size):
    model, tok = tiny
    prompts, ref, stats = _backend_equals_reference(model, tok, "prefix", batch_size=batch_size, max_new_tokens=12)
    assert ref == [reference_generate(model, tok, p, 12) for p in prompts]     # unpadded, uncached
    # batches mix databases (and the prompt without a shared prefix): ceil(7 / batch) batches, where one
    # group at a time would take 2 + 2 + 1 (batch 2) or 1 + 1 + 1 (batch 4)
    assert stats.batches == -(-len(prompts) // batch_size)
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    groups = prefix_groups(enc)
    assert stats.prefix_groups == 2 == sum(p > 0 for p, _ in groups)
    for p, members in groups:                          # the prefix of each database: its whole schema
        if p:
            assert {prompts[i].split("Question:")[0] for i in members} == {prompts[members[0]].split("Question:")[0]}
            assert p == min(_token_lcp(enc[members[0]], enc[i]) for i in members[1:])
    # every row reuses its group's prefix, or the prefix all prompts share (the chat template and the
    # instruction) when that is longer: the lone prompt too
    common = common_prefix_len(enc)
    assert 0 < common < min(p for p, _ in groups if p)
    reused = sum(max(p, common) * len(m) for p, m in groups)
    assert stats.prefix_tokens_reused == reused > 0
    assert stats.prefill_tokens_computed == (stats.prompt_tokens - reused + common
                                             + sum(p - common for p, _ in groups if p > common))
    assert stats.prefill_tokens_computed < stats.prompt_tokens / 2


@pytest.mark.parametrize("batch_size", [3, 7, 16])
def test_static_backend_equals_reference(tiny, batch_size):
    """One static cache size for all batches; the last batch filled with copies (outputs dropped)."""
    model, tok = tiny
    prompts, ref, stats = _backend_equals_reference(model, tok, "static", batch_size=batch_size, max_new_tokens=12)
    assert ref == [reference_generate(model, tok, p, 12) for p in prompts]
    assert stats.batches == -(-len(prompts) // batch_size) and stats.prefill_tokens_computed == stats.prompt_tokens


@pytest.mark.parametrize("batch_size", [3, 7, 16])
def test_graphs_backend_equals_reference(tiny, batch_size):
    """The hand-driven decoding loop over a static cache (CUDA graph on CUDA, the same loop here):
    the reference's text, the last batch filled with copies whose outputs are dropped."""
    model, tok = tiny
    attn = model.config._attn_implementation
    prompts, ref, stats = _backend_equals_reference(model, tok, "graphs", batch_size=batch_size, max_new_tokens=12)
    assert ref == [reference_generate(model, tok, p, 12) for p in prompts]
    assert stats.batches == -(-len(prompts) // batch_size) and stats.prefill_tokens_computed == stats.prompt_tokens
    assert model.config._attn_implementation == attn            # grouped decoding attention switched back


def test_graphs_backend_with_no_prompts_or_one_new_token(tiny):
    model, tok = tiny
    assert generate(model, tok, [], progress=False, backend="graphs")[0] == []
    prompts = [render(tok, q) for q in QUESTIONS[:3]]
    assert (generate(model, tok, prompts, batch_size=2, max_new_tokens=1, progress=False, backend="graphs")[0]
            == generate(model, tok, prompts, batch_size=2, max_new_tokens=1, progress=False)[0])


def test_graphs_backend_needs_sdpa_attention(tiny_model_cfg):
    model, tok = load_model(tiny_model_cfg)
    model.set_attn_implementation("eager")
    with pytest.raises(UserError, match="predict.backend graphs needs the model's sdpa attention"):
        generate(model, tok, [render(tok, QUESTIONS[0])], max_new_tokens=4, progress=False, backend="graphs")


def test_predict_use_liger_kernel_is_refused_without_cuda(tiny):
    """The stage's check (before the model load) and `apply_liger_kernels` itself, on a CPU model."""
    from sqltradeoff.generation import apply_liger_kernels
    from sqltradeoff.modeling import require_liger

    with pytest.raises(UserError, match="params: predict.use_liger_kernel is true, but liger-kernel runs only on a CUDA GPU"):
        require_liger("predict.use_liger_kernel", cuda=False)
    with pytest.raises(UserError, match="predict.use_liger_kernel is true, but liger-kernel runs only on a CUDA GPU"):
        apply_liger_kernels(tiny[0])


def test_graphs_backend_stops_like_generate_and_honours_min_new_tokens(tiny):
    """Rows that stop early get pads (outputs cut at the stop token); `min_new_tokens` masks the stop
    tokens until then, as generate's MinNewTokensLengthLogitsProcessor does."""
    model, tok = tiny
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = [render(tok, q) for q in QUESTIONS]

    for min_new in (None, 6):
        (ref, ref_stats), (out, stats) = [
            generate_favouring(model, tok, eot, prompts[:1], batch_size=1, max_new_tokens=10, backend=backend,
                               min_new_tokens=min_new) for backend in ("reference", "graphs")]
        assert out == ref and stats.generated_tokens == ref_stats.generated_tokens
        assert stats.generated_tokens == (3 if min_new is None else 7)      # the stop token counted
    # more rows: each stops at its own token, the batch runs on until all stopped
    texts, st = generate(model, tok, prompts, batch_size=4, max_new_tokens=12, progress=False, backend="graphs")
    ref, ref_st = generate(model, tok, prompts, batch_size=4, max_new_tokens=12, progress=False)
    assert texts == ref and st.hit_max_new_tokens == ref_st.hit_max_new_tokens


def test_grouped_decode_attention_equals_repeated_heads():
    """A one-token query over grouped key/value heads with a padding mask: the same output as
    transformers' sdpa (which copies the heads), and a prefill query goes to sdpa itself."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from sqltradeoff.attention import grouped_decode_attention

    class Module(torch.nn.Module):
        num_key_value_groups = 7
        is_causal = True

    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 14, 1, 64, generator=g)
    k, v = torch.randn(3, 2, 40, 64, generator=g), torch.randn(3, 2, 40, 64, generator=g)
    mask = torch.rand(3, 1, 1, 40, generator=g) > 0.3
    mask[:, :, :, -1] = True
    got, _ = grouped_decode_attention(Module(), q, k, v, mask, scaling=0.125)
    want, _ = sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.125)
    assert got.shape == want.shape == (3, 1, 14, 64)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)        # float reassociation only
    q2 = torch.randn(3, 14, 5, 64, generator=g)
    mask2 = torch.ones(3, 1, 5, 40, dtype=torch.bool)
    assert torch.equal(grouped_decode_attention(Module(), q2, k, v, mask2)[0],
                       sdpa_attention_forward(Module(), q2, k, v, mask2)[0])


def test_static_backend_compiles_the_decoding_step_with_one_cache_size(tiny, monkeypatch):
    """Every `generate` call gets the static cache of one size (longest prompt + max_new_tokens) and
    the same number of rows; the CUDA-graph compile config only on CUDA (elsewhere it cannot apply)."""
    model, tok = tiny
    seen = []
    real = model.generate

    def spy(*a, **k):
        cfg = k["generation_config"]
        seen.append((k["input_ids"].shape[0], cfg.cache_implementation, cfg.max_cache_len, cfg.compile_config))
        return real(*a, **k)

    monkeypatch.setattr(model, "generate", spy)
    prompts = schema_prompts(tok)[0]
    generate(model, tok, prompts, batch_size=3, max_new_tokens=5, progress=False, backend="static")
    longest = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert seen == [(3, "static", longest + 5, None)] * 3
    seen.clear()
    from sqltradeoff import generation

    class FakeCuda:                                 # the settings a CUDA model gets (nothing runs on CUDA)
        type = "cuda"
    captured = []
    monkeypatch.setattr(model, "generate", lambda **k: captured.append(k["generation_config"].compile_config)
                        or k["input_ids"][:, :0].new_zeros((k["input_ids"].shape[0], k["input_ids"].shape[1] + 1)))
    real_padded = generation._padded_batch
    monkeypatch.setattr(generation, "_padded_batch", lambda prefixes, rows, pad, device: real_padded(prefixes, rows, pad, "cpu"))
    monkeypatch.setattr(model, "parameters", lambda: iter([type("P", (), {"device": FakeCuda()})()]))
    generation._run_static(model, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], 4,
                           generation.greedy_generation_config(tok, model, 5),
                           generation._Collector(tok, model, len(prompts), generation.GenerationStats(), "t", False),
                           tok.pad_token_id or 0)
    assert [(c.mode, c.dynamic, c.fullgraph) for c in captured] == [("reduce-overhead", False, False)] * 2


def test_continuous_backend_equals_reference(tiny):
    model, tok = tiny
    attn = model.config._attn_implementation
    _, _, stats = _backend_equals_reference(model, tok, "continuous", batch_size=3, max_new_tokens=10)
    assert model.config._attn_implementation == attn            # paged attention switched back
    assert stats.prefill_tokens_computed is None or stats.prefill_tokens_computed <= stats.prompt_tokens


def test_continuous_backend_runs_outside_inference_mode(tiny, monkeypatch):
    """Continuous batching updates its static tensors in place from its own thread; tensors made in
    inference mode refuse that (the H200 failure): `generate_batch` must be called under no_grad only."""
    import torch

    model, tok = tiny
    seen = []
    real = model.generate_batch

    def spy(*a, **k):
        seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return real(*a, **k)

    monkeypatch.setattr(model, "generate_batch", spy)
    prompts = ["Question: how many singers?", "Question: list stadiums"]
    texts, stats = generate(model, tok, prompts, batch_size=2, max_new_tokens=4, progress=False, backend="continuous")
    assert seen == [(False, False)] and len(texts) == 2 and stats.backend == "continuous"


def test_unknown_or_unavailable_backend_is_a_user_error(monkeypatch):
    with pytest.raises(UserError, match="predict.backend must be one of reference, prefix, static, graphs, continuous"):
        check_backend("fast")
    from transformers import GenerationMixin
    owner = next(c for c in GenerationMixin.__mro__ if "generate_batch" in vars(c))
    monkeypatch.delattr(owner, "generate_batch")
    with pytest.raises(UserError, match="continuous batching"):
        check_backend("continuous")
    assert check_backend("prefix") == "prefix"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["prefix", "static", "graphs", "continuous"])
def test_real_model_backend_equals_reference(smollm2_cfg, backend):
    model, tok = load_model(smollm2_cfg)
    # continuous batching is slow on CPU (paged attention in plain PyTorch): fewer prompts there
    n, new = (4, 8) if backend == "continuous" else (None, 8)
    _, ref, stats = _backend_equals_reference(model, tok, backend, batch_size=2, max_new_tokens=new, n_prompts=n)
    assert all(o.strip() for o in ref)


# ------------------------------------------------------------------ predict CLI

def _write_project(tmp_path: Path, model_cfg: dict, rows: list[dict], **predict) -> Path:
    params = {"model": {k: v for k, v in model_cfg.items() if not k.startswith("_")},
              "predict": {"batch_size": 2, "max_new_tokens": 6, **predict}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with (tmp_path / "eval.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return tmp_path


def _eval_rows(tok, n=5):
    return [{"id": f"dev-{i:04d}", "db_id": "concert_singer", "question": q, "gold_sql": "SELECT 1",
             "hardness": "easy", "prompt": render(tok, q)} for i, q in enumerate(QUESTIONS[:n])]


def _run_predict(cwd: Path, *args: str):
    return subprocess.run([sys.executable, str(REPO / "stages" / "predict.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_predict_cli_end_to_end(tiny, tiny_model_cfg, tmp_path):
    model, tok = tiny
    rows = _eval_rows(tok)
    proj = _write_project(tmp_path, tiny_model_cfg, rows)
    res = _run_predict(proj, "--job", "eval.jsonl", "out/a.jsonl", "--job", "eval.jsonl", "out/b.jsonl",
                       "--stats-dir", "stats")
    assert res.returncode == 0, res.stderr
    from sqltradeoff.extract import extract_sql
    expected = generate(model, tok, [r["prompt"] for r in rows], batch_size=1, max_new_tokens=6, progress=False)[0]
    for name in ("a", "b"):
        preds = [json.loads(line) for line in (proj / "out" / f"{name}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == [r["id"] for r in rows]
        assert set(preds[0]) == {"id", "db_id", "question", "gold_sql", "pred_sql", "raw_output", "hardness"}
        assert [p["raw_output"] for p in preds] == expected
        assert [p["pred_sql"] for p in preds] == [extract_sql(e) for e in expected]
        stats = json.loads((proj / "stats" / f"{name}.json").read_text())
        assert stats["prompts"] == 5 and stats["tokens_per_s"] > 0
    assert res.stderr.count('"tokens_per_s"') == 2
    assert sorted(p.name for p in (proj / "out").iterdir()) == ["a.jsonl", "b.jsonl"]   # nothing else


def test_predict_cli_bad_input_exits_2_and_writes_nothing(tiny, tiny_model_cfg, tmp_path):
    _, tok = tiny
    rows = _eval_rows(tok, 2)
    del rows[1]["prompt"]
    proj = _write_project(tmp_path, tiny_model_cfg, rows)
    res = _run_predict(proj, "--job", "eval.jsonl", "out.jsonl")
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "eval.jsonl:2" in res.stderr and "prompt" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (proj / "out.jsonl").exists()


def test_predict_cli_prefix_backend_writes_the_reference_predictions(tiny, tiny_model_cfg, tmp_path):
    model, tok = tiny
    prompts, dbs = schema_prompts(tok)
    rows = [{"id": f"dev-{i}", "db_id": db, "question": "q", "gold_sql": "SELECT 1", "hardness": "easy",
             "prompt": p} for i, (p, db) in enumerate(zip(prompts, dbs))]
    proj = _write_project(tmp_path, tiny_model_cfg, rows, backend="prefix")
    res = _run_predict(proj, "--job", "eval.jsonl", "out.jsonl", "--stats-dir", "stats")
    assert res.returncode == 0, res.stderr
    expected = generate(model, tok, prompts, batch_size=2, max_new_tokens=6, progress=False)[0]
    assert [json.loads(x)["raw_output"] for x in (proj / "out.jsonl").read_text().splitlines()] == expected
    stats = json.loads((proj / "stats" / "out.json").read_text())
    assert stats["backend"] == "prefix" and stats["prefill_tokens_computed"] < stats["prompt_tokens"]


def test_predict_cli_bad_backend_exits_2_before_loading(tiny, tiny_model_cfg, tmp_path):
    _, tok = tiny
    cfg = dict(tiny_model_cfg, path=str(tmp_path / "no-such-model"))     # loading it would fail differently
    proj = _write_project(tmp_path, cfg, _eval_rows(tok, 1), backend="turbo")
    res = _run_predict(proj, "--job", "eval.jsonl", "out.jsonl")
    assert res.returncode == 2 and "predict.backend" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_predict_cli_missing_adapter_exits_2(tiny, tiny_model_cfg, tmp_path):
    _, tok = tiny
    proj = _write_project(tmp_path, tiny_model_cfg, _eval_rows(tok, 1))
    res = _run_predict(proj, "--adapter", "models/run9/adapter", "--job", "eval.jsonl", "out.jsonl")
    assert res.returncode == 2 and "adapter" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_real_model_batched_equals_one_by_one(smollm2_cfg):
    model, tok = load_model(smollm2_cfg)
    schema = "CREATE TABLE singer (singer_id INTEGER, name TEXT, country TEXT, age INTEGER);"
    # two prompts of different lengths: the shorter one is left-padded in the batch
    prompts = [render(tok, f"{schema}\nWrite a SQLite query. {q}") for q in QUESTIONS[:2]]
    batched, _ = generate(model, tok, prompts, batch_size=2, max_new_tokens=10, progress=False)
    single, _ = generate(model, tok, prompts, batch_size=1, max_new_tokens=10, progress=False)
    assert batched == single
    assert all(o.strip() for o in batched)
