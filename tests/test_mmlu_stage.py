"""stages/mmlu.py end to end on the tiny Llama, and its clear-error cases."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "mmlu.py"


def _load_stage():
    spec = importlib.util.spec_from_file_location("stage_mmlu", STAGE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


stage = _load_stage()


def _item(subject, split, i, answer="ABCD"):
    return {"id": f"{subject}-{split}-{i:04d}", "subject": subject, "question": f"{subject} question {i}?",
            "choices": [f"choice {i}{c}" for c in "wxyz"], "answer": answer[i % 4]}


def _write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path, tiny_model_cfg):
    subjects = ["philosophy", "high_school_computer_science"]
    _write_jsonl(tmp_path / "test.jsonl", [_item(s, "test", i) for s in subjects for i in range(3)])
    _write_jsonl(tmp_path / "dev.jsonl", [_item(s, "dev", i) for s in subjects for i in range(2)])
    _params(tmp_path, tiny_model_cfg, {"method": "loglik", "k_shot": 2, "batch_size": 4, "also_debiased": True})
    return tmp_path


def _params(d: Path, model_cfg, mmlu_cfg):
    (d / "params.yaml").write_text(yaml.safe_dump({"model": model_cfg, "mmlu": mmlu_cfg}), encoding="utf-8")


def _argv(d: Path, *extra):
    return ["--name", "base", "--test", str(d / "test.jsonl"), "--dev", str(d / "dev.jsonl"),
            "--params", str(d / "params.yaml"), "--out-rows", str(d / "out" / "rows.jsonl"),
            "--out-metrics", str(d / "out" / "metrics.json"), "--no-progress", *extra]


def test_stage_loglik_with_debiased_writes_rows_and_metrics(workdir, capsys):
    assert stage.main(_argv(workdir)) == 0
    rows = [json.loads(x) for x in (workdir / "out" / "rows.jsonl").read_text().splitlines()]
    metrics = json.loads((workdir / "out" / "metrics.json").read_text())
    assert len(rows) == 6 and {r["subject"] for r in rows} == {"philosophy", "high_school_computer_science"}
    for r in rows:
        assert set(r["logprobs"]) == set("ABCD") and r["pred"] in "ABCD" and r["correct"] == int(r["pred"] == r["answer"])
        assert r["debiased_correct"] == int(r["debiased_pred"] == r["answer"])
    assert metrics["method"] == "loglik" and metrics["k_shot"] == 2 and metrics["n"] == 6
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 6, abs=1e-4)
    assert sum(metrics["pred_distribution"].values()) == 6
    assert metrics["gold_distribution"] == {"A": 2, "B": 2, "C": 2, "D": 0}
    assert set(metrics["by_subject"]) == {"philosophy", "high_school_computer_science"}
    assert metrics["debiased"]["n"] == 6 and 0 <= metrics["bias"] <= 1 and metrics["seconds"] >= 0
    assert "accuracy" in capsys.readouterr().out


def test_stage_generate_method(workdir, tiny_model_cfg):
    _params(workdir, tiny_model_cfg, {"method": "generate", "k_shot": 1, "batch_size": 3, "max_new_tokens": 2})
    assert stage.main(_argv(workdir, "--limit", "3")) == 0
    metrics = json.loads((workdir / "out" / "metrics.json").read_text())
    rows = [json.loads(x) for x in (workdir / "out" / "rows.jsonl").read_text().splitlines()]
    assert metrics["method"] == "generate" and metrics["n"] == 3 and len(rows) == 3
    assert metrics["unparsed"] == sum(r["pred"] is None for r in rows)
    assert all("raw_output" in r for r in rows)


@pytest.mark.parametrize("mutate, message", [
    (lambda d, m: (d / "test.jsonl").write_text('{"id": "x"\n'), "test.jsonl:1: not valid JSON"),
    (lambda d, m: _write_jsonl(d / "test.jsonl", [{"id": "x", "subject": "philosophy", "question": "q"}]),
     "missing field"),
    (lambda d, m: _write_jsonl(d / "dev.jsonl", [_item("philosophy", "dev", 0)]),
     "subject `philosophy` has 1 dev example"),
    (lambda d, m: _params(d, m, {"method": "majority_vote", "k_shot": 0, "batch_size": 1}),
     "mmlu.method must be one of loglik, debiased, pride, generate"),
    (lambda d, m: _params(d, m, {"method": "loglik", "k_shot": -1, "batch_size": 1}), "mmlu.k_shot"),
    (lambda d, m: (d / "dev.jsonl").unlink(), "dev.jsonl: file not found"),
    (lambda d, m: _params(d, m, {"method": "pride", "k_shot": 0, "batch_size": 1, "pride_fraction": 0}),
     "mmlu.pride_fraction"),
    (lambda d, m: _params(d, m, {"method": "loglik", "k_shot": 0, "scoring": "fast"}),
     "mmlu.scoring must be one of batched, reference, got 'fast'"),
    (lambda d, m: _params(d, m, {"method": "loglik", "k_shot": 0, "batch_tokens": 0}),
     "mmlu.batch_tokens must be a positive integer or null"),
])
def test_stage_clear_errors(workdir, tiny_model_cfg, capsys, mutate, message):
    mutate(workdir, tiny_model_cfg)
    assert stage.main(_argv(workdir)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (workdir / "out").exists()


def test_stage_bad_adapter_dir(workdir, capsys):
    (workdir / "not_an_adapter").mkdir()
    assert stage.main(_argv(workdir, "--adapter", str(workdir / "not_an_adapter"))) == 2
    assert "not a PEFT adapter directory" in capsys.readouterr().err


def test_stage_cli_subprocess_help_and_run(workdir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", DEEPEVAL_TELEMETRY_OPT_OUT="YES", DVC_NO_ANALYTICS="1")
    help_ = subprocess.run([sys.executable, str(STAGE), "--help"], capture_output=True, text=True, env=env)
    assert help_.returncode == 0 and "debiased" in help_.stdout and "--adapter" in help_.stdout
    run = subprocess.run([sys.executable, str(STAGE), *_argv(workdir, "--limit", "2")], capture_output=True,
                         text=True, env=env, cwd=workdir)
    assert run.returncode == 0, run.stderr
    assert json.loads((workdir / "out" / "metrics.json").read_text())["n"] == 2


def test_stage_batched_and_reference_scoring_write_the_same_rows(workdir, tiny_model_cfg):
    """Same row format and predictions; log-probabilities equal up to float reassociation."""
    outs = {}
    for scoring in ("reference", "batched"):
        _params(workdir, tiny_model_cfg, {"method": "loglik", "k_shot": 2, "batch_size": 4, "also_debiased": True,
                                          "scoring": scoring, "batch_tokens": 100000})
        assert stage.main(_argv(workdir)) == 0
        rows = [json.loads(x) for x in (workdir / "out" / "rows.jsonl").read_text().splitlines()]
        metrics = json.loads((workdir / "out" / "metrics.json").read_text())
        assert metrics["scoring"]["path"] == scoring
        outs[scoring] = rows
    ref, new = outs["reference"], outs["batched"]
    assert [list(r) for r in ref] == [list(r) for r in new]          # same keys, same order
    for a, b in zip(ref, new):
        assert {k: a[k] for k in ("id", "pred", "correct", "debiased_pred", "debiased_correct")} == \
            {k: b[k] for k in ("id", "pred", "correct", "debiased_pred", "debiased_correct")}
        assert max(abs(a[key][L] - b[key][L]) for key in ("logprobs", "content_logprobs") for L in "ABCD") < 1e-4
