"""generation.py and stages/predict.py: batched greedy generation, stopping, predict CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sqltradeoff.generation import generate
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


def test_stops_at_end_of_turn(tiny):
    model, tok = tiny
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = [render(tok, q) for q in QUESTIONS[:3]]

    def favour_eot_after_two(module, args, output):       # end of turn is the argmax from the 3rd new token on
        if favour_eot_after_two.calls >= 2:                # (call 0: prefill -> 1st token, call 1 -> 2nd token)
            output = output.clone()
            output[:, -1, eot] = 1e4
        favour_eot_after_two.calls += 1
        return output

    favour_eot_after_two.calls = 0
    handle = model.lm_head.register_forward_hook(favour_eot_after_two)
    try:
        outs, stats = generate(model, tok, prompts, batch_size=3, max_new_tokens=10, progress=False)
    finally:
        handle.remove()
    # 2 normal tokens, then end of turn: 3 generated tokens each, none hits the cap
    assert stats.hit_max_new_tokens == 0
    assert stats.generated_tokens == 3 * 3
    assert all("<|im_end|>" not in o for o in outs)


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


# ------------------------------------------------------------------ predict CLI

def _write_project(tmp_path: Path, model_cfg: dict, rows: list[dict]) -> Path:
    params = {"model": {k: v for k, v in model_cfg.items() if not k.startswith("_")},
              "predict": {"batch_size": 2, "max_new_tokens": 6}}
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
