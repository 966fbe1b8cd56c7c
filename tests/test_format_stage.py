"""The format stage (prompt/completion files, manifest) and the data stage CLIs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sqltradeoff.errors import UserError
from sqltradeoff.io import read_json, read_jsonl, write_json, write_jsonl
from shared_paths import DB_DIR, GGUF_DIR, needs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
sys.path.insert(0, str(REPO / "tests"))
need_mirror = needs(DB_DIR)


def run_stage(*args, cwd=REPO):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("stage, words", [
    ("download.py", ["mirror", "hub", "MANIFEST.sha256", "archive"]),
    ("prepare.py", ["spider_dev_n", "mmlu_per_subject", "seed"]),
    ("format.py", ["eval_fewshot.jsonl", "prompt.schema", "max_length"]),
])
def test_help(stage, words):
    proc = run_stage(REPO / "stages" / stage, "--help")
    assert proc.returncode == 0, proc.stderr
    for w in words:
        assert w in proc.stdout


def _params(tmp_path, **changes):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        sec, key = dotted.split("__")
        params[sec][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("args, changes, msg", [
    (["download.py", "spider", "--out", "{tmp}/o"], {"data__mirror_dir": "{tmp}/nowhere"}, "set data.mirror_dir"),
    (["download.py", "mmlu", "--out", "{tmp}/o"], {"data__source": "ftp"}, "data.source must be"),
    (["prepare.py", "--spider", "{tmp}/none", "--mmlu", "{tmp}/none", "--out", "{tmp}/o"], {}, "train.jsonl: file not found"),
    (["format.py", "--prepared", "{tmp}", "--db-dir", "{tmp}", "--out", "{tmp}/o"], {"prompt__schema": "ddl"},
     "prompt.schema must be one of"),
])
def test_errors_exit_2_cleanly(tmp_path, args, changes, msg):
    changes = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in changes.items()}
    params = _params(tmp_path, **changes)
    args = [a.format(tmp=tmp_path) for a in args]
    proc = run_stage(REPO / "stages" / args[0], *args[1:], "--params", params)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and msg in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def _prepared(tmp_path) -> Path:
    prep = tmp_path / "prepared"
    dbs = ["concert_singer", "pets_1", "car_1", "flight_2", "dog_kennels"]
    train = [{"id": f"train-{i:05d}", "db_id": dbs[i % 5], "question": f"Question {i}?",
              "query": f"SELECT {i}"} for i in range(20)]
    dev = [{"id": f"dev-{i:04d}", "db_id": dbs[i % 2], "question": f"Dev {i}?", "query": f"SELECT {i} + 1",
            "hardness": "easy"} for i in range(4)]
    write_jsonl(prep / "spider_train.jsonl", train)
    write_jsonl(prep / "spider_dev.jsonl", dev)
    write_json(prep / "manifest.json", {"seed": 42})
    return prep


@need_mirror
def test_format_all_contract(tmp_path):
    from sqltradeoff.formatting import format_all
    from test_prompts import MISTRAL_V02_TEMPLATE, word_tokenizer

    tok = word_tokenizer(MISTRAL_V02_TEMPLATE)
    prep = _prepared(tmp_path)
    out = tmp_path / "formatted"
    m = format_all(prep, DB_DIR, out, {"schema": "create_table", "sample_rows": 0, "few_shot": 3}, tok, 120)
    train = read_jsonl(out / "train.jsonl")
    assert len(train) == 20 and set(train[0]) == {"id", "db_id", "messages", "prompt", "completion"}
    for r in train:
        full = tok.apply_chat_template(r["messages"], tokenize=False)
        assert r["prompt"] + r["completion"] == full
        assert r["prompt"].startswith("<s>[INST] ") and r["prompt"].endswith(" [/INST]")
        assert r["completion"] == r["messages"][1]["content"] + "</s>"
    zero = read_jsonl(out / "eval_zeroshot.jsonl")
    few = read_jsonl(out / "eval_fewshot.jsonl")
    assert set(zero[0]) == {"id", "db_id", "question", "gold_sql", "hardness", "prompt"}
    assert zero[1]["gold_sql"] == "SELECT 1 + 1" and zero[1]["db_id"] == "pets_1"
    assert "CREATE TABLE" in zero[0]["prompt"] and "Examples:" not in zero[0]["prompt"]
    assert len(m["few_shot_ids"]) == 3 and len(set(m["few_shot_db_ids"])) == 3
    by_id = {r["id"]: r for r in read_jsonl(prep / "spider_train.jsonl")}
    for sid in m["few_shot_ids"]:
        assert f"Question: {by_id[sid]['question']}\nSQL: {by_id[sid]['query']}" in few[0]["prompt"]
    # token statistics: word-level tokenizer -> whitespace-separated words
    lengths = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in train]
    st = m["tokens"]["train_prompt"]
    assert (st["n"], st["min"], st["max"]) == (20, min(lengths), max(lengths))
    totals = [len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in train]
    assert m["train_over_max_length"] == sum(t > 120 for t in totals)
    assert read_json(out / "manifest.json")["prompt"]["schema"] == "create_table"
    # schema-less prompts
    m2 = format_all(prep, DB_DIR, tmp_path / "f2", {"schema": "none", "few_shot": 0}, tok, 120)
    z2 = read_jsonl(tmp_path / "f2" / "eval_zeroshot.jsonl")
    assert "CREATE TABLE" not in z2[0]["prompt"] and m2["few_shot_ids"] == []
    assert m2["tokens"]["train_prompt"]["max"] < st["min"]


@need_mirror
def test_format_missing_database_writes_nothing(tmp_path):
    from sqltradeoff.formatting import format_all
    from test_prompts import MISTRAL_V02_TEMPLATE, word_tokenizer

    prep = _prepared(tmp_path)
    rows = read_jsonl(prep / "spider_dev.jsonl")
    rows[-1]["db_id"] = "wta_1"
    write_jsonl(prep / "spider_dev.jsonl", rows)
    with pytest.raises(UserError, match=r"wta_1\.sqlite: database not found"):
        format_all(prep, DB_DIR, tmp_path / "out", {}, word_tokenizer(MISTRAL_V02_TEMPLATE), 100)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@need_mirror
def test_format_cli_with_real_gguf_tokenizer(tmp_path):
    smol = GGUF_DIR / "smollm2-135m-instruct-q4_1.gguf"
    if not smol.is_file():
        pytest.skip(f"{smol} not found")
    prep = _prepared(tmp_path)
    params = _params(tmp_path, model__path=str(smol), model__cache_dir=str(tmp_path / "models"))
    proc = run_stage(REPO / "stages" / "format.py", "--prepared", prep, "--db-dir", DB_DIR,
                     "--out", tmp_path / "out", "--params", params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert train[0]["completion"] == "SELECT 0<|im_end|>\n"
    assert read_json(tmp_path / "out" / "manifest.json")["tokens"]["train_completion"]["n"] == 20
