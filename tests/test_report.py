"""The report stage on a hand-made workspace with known numbers."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqltradeoff import stats  # noqa: E402
from sqltradeoff.errors import UserError  # noqa: E402
from sqltradeoff.params import load_params  # noqa: E402
from sqltradeoff.report import Paths, run_report  # noqa: E402

N = 100
HARD = ["easy"] * 25 + ["medium"] * 35 + ["hard"] * 20 + ["extra"] * 20
FAIL_KINDS = ["wrong_result", "syntax_error", "unknown_column", "empty_result", "timeout"]
SUBJECTS = ["high_school_computer_science", "philosophy", "high_school_macroeconomics"]

# Spider: which question indices each model gets right.
CORRECT = {
    "base_zeroshot": set(range(0, 21)),        # 21%
    "base_fewshot": set(range(0, 30)),         # 30%
    "run1": set(range(1, 23)),                 # 22%: gains 21, 22; loses 0 -> b=1, c=2
    "run2": set(range(0, 40)),                 # 40%: gains 19, loses 0
}
# MMLU: number right per subject (50 questions each).
MMLU_RIGHT = {"base": [20, 15, 10], "run1": [19, 14, 9], "run2": [20, 15, 10]}
# The same questions under the debiased method (`mmlu.also_debiased`): number right per subject;
# a wrong debiased answer is the letter after the gold one (A->B, B->C, C->D, D->A).
MMLU_DEBIASED_RIGHT = {"base": [40, 30, 20], "run1": [30, 20, 10], "run2": [40, 30, 20]}
NEXT = {"A": "B", "B": "C", "C": "D", "D": "A"}


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# Adapter-scale points (`adapter_scales: [0.5]`): run1@0.5 gains question 21 only (+1 pp, b=0, c=1);
# run2@0.5 gains 21..29 (+9 pp, c=9). MMLU: run1@0.5 loses one philosophy question; run2@0.5 = base.
SCALED_CORRECT = {"run1@0.5": set(range(0, 22)), "run2@0.5": set(range(0, 30))}
SCALED_MMLU_RIGHT = {"run1@0.5": [20, 14, 10], "run2@0.5": [20, 15, 10]}
SCALED_DEBIASED_RIGHT = {"run1@0.5": [35, 25, 15], "run2@0.5": [40, 30, 20]}


def _write_spider(root: Path, name: str, right: set) -> None:
    scores, preds = [], []
    for i in range(N):
        qid = f"dev-{i:04d}"
        ok = i in right
        kind = FAIL_KINDS[i % len(FAIL_KINDS)]
        scores.append({"id": qid, "exec_match": int(ok), "error": None if ok else f"{kind}: reason {i}",
                       "exact_match": int(ok and i % 2 == 0), "hardness": HARD[i]})
        preds.append({"id": qid, "db_id": f"db_{i % 7}", "question": f"How many rows in table {i}?",
                      "gold_sql": f"SELECT count(*) FROM t{i}", "pred_sql": "" if i == 99 else f"SELECT * FROM t{i}",
                      "raw_output": f"Here you go: SELECT * FROM t{i}", "hardness": HARD[i]})
    _jsonl(root / "data/scores" / f"{name}.jsonl", scores)
    _jsonl(root / "data/predictions" / f"{name}.jsonl", preds)
    k = len(right)
    meta = {"execution_accuracy": k / N, "exact_match": 0, "n": N, "n_correct": k}
    (root / "metrics/spider").mkdir(parents=True, exist_ok=True)
    (root / "metrics/spider" / f"{name}.json").write_text(json.dumps(meta))


def _write_mmlu(root: Path, name: str, rights: list[int], debiased_rights: list[int] | None) -> None:
    rows = []
    for s, sub in enumerate(SUBJECTS):
        for j in range(50):
            ans = "ABCD"[j % 4]
            ok = j < rights[s]
            pred = ans if ok else ("A" if ans != "A" else "B")
            row = {"id": f"{sub}-test-{j:04d}", "subject": sub, "answer": ans, "pred": pred,
                   "correct": int(ok), "logprobs": {x: -1.0 for x in "ABCD"}}
            if debiased_rights is not None:
                dok = j < debiased_rights[s]
                row.update({"content_logprobs": {x: -1.0 for x in "ABCD"},
                            "debiased_pred": ans if dok else NEXT[ans], "debiased_correct": int(dok)})
            rows.append(row)
    _jsonl(root / "data/mmlu" / f"{name}.jsonl", rows)
    acc = sum(r["correct"] for r in rows) / len(rows)
    meta = {"method": "loglik", "k_shot": 5, "accuracy": round(acc, 4), "n": len(rows)}
    if debiased_rights is not None:
        k = sum(r["debiased_correct"] for r in rows)
        meta["debiased"] = {"accuracy": round(k / len(rows), 4), "n": len(rows), "n_correct": k}
    (root / "metrics/mmlu").mkdir(parents=True, exist_ok=True)
    (root / "metrics/mmlu" / f"{name}.json").write_text(json.dumps(meta))


def build_workspace(root: Path, train_runs=("run1",), debiased=("base", "run1", "run2"), scales=()) -> None:
    params = {"runs": {"run1": {"learning_rate": 2e-4}, "run2": {"learning_rate": 5e-5}},
              "mmlu": {"method": "loglik", "k_shot": 5},
              "report": {"bootstrap_samples": 2000, "confidence": 0.95, "seed": 7, "examples_per_error": 2}}
    if scales:
        params["adapter_scales"] = list(scales)
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    for name, right in CORRECT.items():
        _write_spider(root, name, right)
    for name, rights in MMLU_RIGHT.items():
        _write_mmlu(root, name, rights, MMLU_DEBIASED_RIGHT[name] if name in debiased else None)
    for scale in scales:
        for run in ("run1", "run2"):
            name = f"{run}@{scale}"
            _write_spider(root, name, SCALED_CORRECT[name])
            _write_mmlu(root, name, SCALED_MMLU_RIGHT[name],
                        SCALED_DEBIASED_RIGHT[name] if run in debiased else None)
    for run in train_runs:
        d = root / "metrics/train" / run
        (d / "plots/metrics/train").mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps({"train": {"loss": 0.5}, "step": 30}))
        lines = ["step\tloss"] + [f"{s}\t{2.0 * math.exp(-s / 10) + 0.3:.4f}" for s in range(1, 31)]
        (d / "plots/metrics/train/loss.tsv").write_text("\n".join(lines) + "\n")
        (d / "plots/metrics/train/learning_rate.tsv").write_text("step\tlearning_rate\n1\t0.0002\n")


def paths(root: Path) -> Paths:
    return Paths(root / "data/scores", root / "data/predictions", root / "data/mmlu", root / "metrics/mmlu",
                 root / "metrics/spider", root / "metrics/train")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    build_workspace(root)
    out = root / "metrics"
    result = run_report(load_params(root / "params.yaml"), out, paths(root))
    return root, out, result


def test_summary_numbers(built):
    root, out, _ = built
    s = json.loads((out / "summary.json").read_text())
    base = s["spider"]["base_zeroshot"]
    assert base["ex"] == 0.21 and base["n"] == 100 and base["n_correct"] == 21
    assert base["exact_match"] == 0.11  # correct and even index: 0, 2, ..., 20
    ci = stats.accuracy_ci([int(i in CORRECT["base_zeroshot"]) for i in range(N)],
                           n_resamples=2000, seed=7, confidence=0.95)
    assert base["ex_ci_low"] == round(ci.low, 6) and base["ex_ci_high"] == round(ci.high, 6)
    assert base["ex_ci_low"] < 0.21 < base["ex_ci_high"]
    assert s["spider"]["run1"]["ex"] == 0.22
    assert s["spider"]["base_zeroshot"]["by_hardness"]["easy"] == {"ex": 21 / 25, "n": 25}
    assert s["spider"]["base_zeroshot"]["by_hardness"]["extra"] == {"ex": 0.0, "n": 20}

    r1 = s["runs"]["run1"]
    assert r1["ex_gain_pp"] == 1.0
    assert r1["ex_gain_rel_pct"] == pytest.approx(100 / 21, abs=1e-6)
    assert (r1["ex_fixed"], r1["ex_broken"]) == (2, 1)
    assert r1["ex_mcnemar_p"] == 1.0            # binomtest(1, 3): every outcome at least as extreme
    assert r1["ex_significant"] is False
    assert r1["ex_gain_ci_low_pp"] < 0 < r1["ex_gain_ci_high_pp"]
    # MMLU: base 45/150, run1 42/150 -> -2 pp, -6.67 % relative; 3 lost, 0 gained -> p = 0.25
    assert s["mmlu"]["base"]["accuracy"] == 0.3 and s["mmlu"]["run1"]["accuracy"] == 0.28
    assert r1["mmlu_change_pp"] == -2.0
    assert r1["mmlu_change_rel_pct"] == pytest.approx(-100 * 3 / 45, abs=1e-6)
    assert r1["mmlu_mcnemar_p"] == 0.25
    assert r1["mmlu_by_subject"]["philosophy"]["change_pp"] == -2.0
    assert s["mmlu"]["method"] == "loglik" and s["mmlu"]["k_shot"] == 5
    assert s["mmlu"]["base"]["by_subject"]["philosophy"]["accuracy"] == 0.3
    assert s["mmlu"]["base"]["top_pred_letter"] == "A"

    r2 = s["runs"]["run2"]
    assert r2["ex_gain_pp"] == 19.0 and (r2["ex_fixed"], r2["ex_broken"]) == (19, 0)
    assert r2["ex_mcnemar_p"] == pytest.approx(2 * 0.5 ** 19, rel=1e-9)
    assert r2["ex_significant"] is True
    assert r2["ex_gain_ci_low_pp"] > 0
    assert r2["mmlu_change_pp"] == 0.0 and r2["mmlu_mcnemar_p"] == 1.0
    assert r2["mmlu_change_ci_low_pp"] == 0.0 == r2["mmlu_change_ci_high_pp"]   # identical outcomes
    assert s["fewshot_vs_zeroshot"]["ex_gain_pp"] == 9.0
    assert r1["train_last_step"] == 30 and "train_final_loss" not in r2


def test_report_text_states_uncertainty(built):
    _, out, result = built
    md = (out / "report.md").read_text()
    run1 = next(line for line in md.splitlines() if line.startswith("- **run1**"))
    run2 = next(line for line in md.splitlines() if line.startswith("- **run2**"))
    ex1, mmlu1 = run1.split("MMLU (loglik, 5-shot)")
    assert "+1.0 pp" in ex1 and "not significant at 5%" in ex1 and "p = 1.000" in ex1
    assert "-2.0 pp" in mmlu1 and "not significant at 5%" in mmlu1
    ex2 = run2.split("MMLU")[0]
    assert "+19.0 pp" in ex2 and "significant at 5%" in ex2 and "not significant" not in ex2
    assert "| base_zeroshot | 21.0% |" in md and "| run1 | 22.0% |" in md
    # 45/150 = 30%: its CI [~23, ~37] includes 25%, so it is not distinguishable from chance
    assert "is consistent with chance (25%)" in md.split("MMLU of **base**")[1].splitlines()[0]
    # the letter bias is reported with numbers
    assert "answers A for" in md
    # hardness and error tables, failing examples per kind with gold and prediction
    assert "easy (n=25)" in md and "extra (n=20)" in md
    assert "syntax_error" in md and "empty_result" in md
    assert "### run1" in md and "SELECT count(*) FROM t" in md
    # run2 has no training log: graceful, with a warning
    assert any("run2" in w and "training" in w for w in result["warnings"])


def test_plots_are_valid_images_and_data(built):
    from PIL import Image

    _, out, _ = built
    for name in ("tradeoff", "ex_by_hardness", "mmlu_by_subject", "train_loss"):
        png = out / "plots" / f"{name}.png"
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300
    trade = json.loads((out / "plots/tradeoff.json").read_text())
    # no scale points: each run's curve is the origin (base, scale 0) and the run (scale 1)
    assert [(t["run"], t["scale"]) for t in trade] == [("run1", 0.0), ("run1", 1.0), ("run2", 0.0), ("run2", 1.0)]
    assert trade[0]["ex_gain_pp"] == 0.0 == trade[0]["mmlu_change_pp"] and trade[0]["model"] == "base_zeroshot"
    assert trade[1]["ex_gain_pp"] == 1.0 and trade[1]["mmlu_change_pp"] == -2.0 and trade[1]["model"] == "run1"
    hard = json.loads((out / "plots/ex_by_hardness.json").read_text())
    assert {"model": "base_zeroshot", "hardness": "easy"}.items() <= hard[0].items()
    assert len(hard) == 4 * 4
    loss = json.loads((out / "plots/train_loss.json").read_text())
    assert len(loss) == 30 and loss[0] == {"step": 1, "run1": 2.1097, "run2": None}


def test_missing_run_names_file_and_stage_and_keeps_outputs(tmp_path):
    build_workspace(tmp_path)
    out = tmp_path / "metrics"
    run_report(load_params(tmp_path / "params.yaml"), out, paths(tmp_path))
    before = (out / "summary.json").read_bytes()
    (tmp_path / "data/scores/run2.jsonl").unlink()
    proc = subprocess.run([sys.executable, str(REPO / "stages/report.py"), "--out-dir", "metrics"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "data/scores/run2.jsonl" in proc.stderr and "score@run2" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "summary.json").read_bytes() == before


def test_settings_come_from_the_typed_config(tmp_path):
    from sqltradeoff.report import Settings, settings_from_params
    build_workspace(tmp_path)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["report"] = {"ci_method": "BCa", "seed": "11", "power": 0.9}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    params = load_params(tmp_path / "params.yaml")
    # defaults filled in by config.ReportConfig, the method lower-cased, "11" read as the integer it spells
    assert settings_from_params(params) == Settings(bootstrap_samples=10000, confidence=0.95, seed=11,
                                                    examples_per_error=2, ci_method="bca", power=0.9)
    del p["report"]
    with pytest.raises(UserError, match=r"section `report` is missing"):
        settings_from_params(p)
    p["report"] = {"power": 1.5}
    with pytest.raises(UserError, match=r"report\.power must be a finite number > 0 and < 1, got 1\.5"):
        settings_from_params(p)


def test_mismatched_question_ids_are_named(tmp_path):
    build_workspace(tmp_path)
    for kind in ("scores", "predictions"):
        p = tmp_path / "data" / kind / "run1.jsonl"
        p.write_text(p.read_text().replace('"dev-0099"', '"dev-0100"'))
    with pytest.raises(UserError, match=r"dev-0099.*dev-0100|dev-0100.*dev-0099"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    assert not (tmp_path / "metrics/summary.json").exists()


def test_bad_score_value_is_a_user_error(tmp_path):
    build_workspace(tmp_path)
    p = tmp_path / "data/scores/run1.jsonl"
    p.write_text(p.read_text().replace('"exec_match": 1', '"exec_match": 2', 1))
    with pytest.raises(UserError, match=r"run1\.jsonl.*exec_match.*0 or 1"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))


def test_below_chance_mmlu_is_flagged(tmp_path):
    build_workspace(tmp_path)
    p = tmp_path / "data/mmlu/run1.jsonl"
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    for r in rows:      # the reference study's 0%: nothing parsed
        r["correct"], r["pred"] = 0, None
    _jsonl(p, rows)
    m = tmp_path / "metrics/mmlu/run1.json"
    m.write_text(json.dumps({"method": "loglik", "k_shot": 5, "accuracy": 0.0, "n": 150}))
    res = run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    s = res["summary"]
    assert s["mmlu"]["run1"]["accuracy"] == 0.0 and s["mmlu"]["run1"]["ci_high"] < 0.25
    assert s["runs"]["run1"]["mmlu_change_pp"] == -30.0 and s["runs"]["run1"]["mmlu_significant"] is True
    line = next(x for x in res["markdown"].splitlines() if x.startswith("- MMLU of **run1**"))
    assert "below chance" in line and "answer extraction" in line


def test_help():
    proc = subprocess.run([sys.executable, str(REPO / "stages/report.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--out-dir" in proc.stdout and "summary.json" in proc.stdout


# --------------------------------------------------------------------------------------------
# MMLU under both methods (rows with `debiased_pred` / `debiased_correct`) and answer-letter bias

def test_mmlu_both_methods_summary(built):
    _, out, _ = built
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["mmlu_comparison_method"] == "loglik"
    # loglik, hand-counted from the fixture: wrong answers are A (B where gold is A)
    base = s["mmlu"]["base"]
    assert base["pred_distribution"] == {"A": 90, "B": 39, "C": 11, "D": 10}
    assert base["gold_distribution"] == {"A": 39, "B": 39, "C": 36, "D": 36}
    assert base["bias"] == 0.34                          # |90 - 39| / 150
    assert base["chance"] == "consistent with chance" and base["n_correct"] == 45
    # debiased: 40 + 30 + 20 right; a wrong answer is the letter after the gold one
    d = s["mmlu_debiased"]
    assert d["method"] == "debiased" and d["k_shot"] == 5
    db = d["base"]
    assert db["accuracy"] == 0.6 and db["n_correct"] == 90 and db["n"] == 150
    assert db["pred_distribution"] == {"A": 37, "B": 39, "C": 38, "D": 36}
    assert db["bias"] == round(2 / 150, 6)
    assert db["by_subject"]["high_school_computer_science"]["accuracy"] == 0.8
    assert db["by_subject"]["philosophy"]["accuracy"] == 0.6
    ci = stats.accuracy_ci([1] * 90 + [0] * 60, n_resamples=2000, seed=7, confidence=0.95)
    assert (db["ci_low"], db["ci_high"]) == (round(ci.low, 6), round(ci.high, 6))
    assert db["chance"] == "above chance"
    assert d["run1"]["accuracy"] == 0.4 and d["run2"]["accuracy"] == 0.6
    r1 = s["runs"]["run1"]
    assert r1["mmlu_debiased_change_pp"] == -20.0
    assert r1["mmlu_debiased_change_rel_pct"] == pytest.approx(-100 / 3, abs=1e-6)
    assert (r1["mmlu_debiased_fixed"], r1["mmlu_debiased_broken"]) == (0, 30)
    assert r1["mmlu_debiased_mcnemar_p"] == pytest.approx(2 * 0.5 ** 30, rel=1e-9)
    assert r1["mmlu_debiased_significant"] is True
    assert r1["mmlu_debiased_change_ci_high_pp"] < 0
    assert r1["mmlu_debiased_by_subject"]["philosophy"]["change_pp"] == -20.0
    # the primary (forgetting) numbers stay loglik's
    assert r1["mmlu_change_pp"] == -2.0 and r1["mmlu_mcnemar_p"] == 0.25
    r2 = s["runs"]["run2"]
    assert r2["mmlu_debiased_change_pp"] == 0.0 and r2["mmlu_debiased_mcnemar_p"] == 1.0
    trade = json.loads((out / "plots/tradeoff.json").read_text())
    assert trade[1]["mmlu_change_pp"] == -2.0 and trade[1]["mmlu_debiased_change_pp"] == -20.0
    assert trade[1]["mmlu_method"] == "loglik" and trade[1]["scale"] == 1.0


def test_report_text_names_both_methods_and_bias(built):
    _, out, result = built
    md = (out / "report.md").read_text()
    run1 = next(line for line in md.splitlines() if line.startswith("- **run1**"))
    loglik, debiased = run1.split("MMLU (loglik, 5-shot)")[1].split("MMLU (debiased, 5-shot)")
    assert "-2.0 pp" in loglik and "p = 0.250" in loglik and "not significant" in loglik
    assert "-20.0 pp" in debiased and "significant at 5%" in debiased and "not significant" not in debiased
    assert "paired 95% CI -2" in debiased        # the paired CI is stated
    assert "Forgetting is measured with `loglik` for every model" in md
    section = md.split("## MMLU answer-letter bias")[1].split("\n## ")[0]
    assert "| base | loglik | 30.0% [23.3, 37.3] | 90 | 39 | 11 | 10 | 0 | A 60.0% | 0.340 |" in section
    assert "| base | debiased | 60.0% [52.0, 68.0] | 37 | 39 | 38 | 36 | 0 | B 26.0% | 0.013 |" in section
    assert "| gold answers |  |  | 39 | 39 | 36 | 36 |" in section
    reading = next(line for line in section.splitlines() if line.startswith("- **base**"))
    assert "answers A to 60.0% of questions" in reading and "within the CI of chance" in reading
    assert "under the debiased method accuracy is 60.0% [52.0, 68.0] (above chance)" in reading
    assert "### MMLU under the debiased method" in md
    assert not any("stale" in w for w in result["warnings"])


def test_rows_without_debiased_fields_work_as_before(tmp_path, built):
    _, out_both, _ = built
    build_workspace(tmp_path, debiased=())
    res = run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    s, both = res["summary"], json.loads((out_both / "summary.json").read_text())
    assert "mmlu_debiased" not in s
    assert not any("debiased" in k for r in s["runs"].values() for k in r)
    assert s["mmlu"] == both["mmlu"]                  # the primary numbers do not depend on the extra fields
    for run in ("run1", "run2"):
        assert {k: v for k, v in s["runs"][run].items()} == \
               {k: v for k, v in both["runs"][run].items() if "debiased" not in k}
    md = res["markdown"]
    assert "MMLU (debiased" not in md and "### MMLU under the debiased method" not in md
    assert "## MMLU answer-letter bias" in md and "no debiased outcomes" in md
    trade = json.loads((tmp_path / "metrics/plots/tradeoff.json").read_text())
    assert "mmlu_debiased_change_pp" not in trade[0]


def test_run_without_debiased_fields_is_warned_and_kept_primary(tmp_path):
    build_workspace(tmp_path, debiased=("base", "run1"))
    res = run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    s = res["summary"]
    assert "run2" not in s["mmlu_debiased"] and "run1" in s["mmlu_debiased"]
    assert "mmlu_debiased_change_pp" not in s["runs"]["run2"] and s["runs"]["run2"]["mmlu_change_pp"] == 0.0
    assert any("run2" in w and "mmlu@run2" in w and "debiased" in w for w in res["warnings"])


def test_partial_or_inconsistent_debiased_rows_are_user_errors(tmp_path):
    build_workspace(tmp_path)
    p = tmp_path / "data/mmlu/run1.jsonl"
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    broken = [dict(r) for r in rows]
    del broken[5]["debiased_correct"]
    _jsonl(p, broken)
    with pytest.raises(UserError, match=r"run1\.jsonl.*debiased_correct.*mmlu@run1"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    broken = [dict(r) for r in rows]
    broken[0]["debiased_correct"] = 1 - broken[0]["debiased_correct"]
    _jsonl(p, broken)
    with pytest.raises(UserError, match=r"run1\.jsonl:1.*disagrees"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    assert not (tmp_path / "metrics/summary.json").exists()


def test_models_scored_with_different_methods_are_refused(tmp_path):
    build_workspace(tmp_path)
    m = tmp_path / "metrics/mmlu/run2.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "method": "pride"}))
    with pytest.raises(UserError, match=r"different methods.*run2: pride.*mmlu@run2"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))


def test_stale_debiased_metrics_are_warned(tmp_path):
    build_workspace(tmp_path)
    m = tmp_path / "metrics/mmlu/run1.json"
    meta = json.loads(m.read_text())
    meta["debiased"]["n_correct"] = 61
    m.write_text(json.dumps(meta))
    res = run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    assert any("metrics/mmlu/run1.json (`debiased` part)" in w and "stale" in w for w in res["warnings"])
    assert res["summary"]["mmlu_debiased"]["run1"]["n_correct"] == 60      # the rows win


def test_primary_method_debiased_and_params_mismatch(tmp_path):
    build_workspace(tmp_path, debiased=())
    for m in (tmp_path / "metrics/mmlu").glob("*.json"):
        m.write_text(json.dumps({**json.loads(m.read_text()), "method": "debiased"}))
    res = run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    s = res["summary"]
    assert s["mmlu"]["method"] == "debiased" and "mmlu_debiased" not in s
    assert s["settings"]["mmlu_comparison_method"] == "debiased"
    assert "MMLU (debiased, 5-shot)" in res["markdown"] and "no debiased outcomes" not in res["markdown"]
    # params.yaml says loglik: the files are stale relative to it, and the report says so
    assert any("mmlu.method is 'loglik'" in w and "'debiased'" in w for w in res["warnings"])


def test_difference_sentence_counts_questions_in_words():
    from sqltradeoff.report import _diff_sentence

    c = {"new": 0.32, "base": 0.313, "change_pp": 0.7, "change_rel_pct": 2.1, "ci_low_pp": 0.0, "ci_high_pp": 2.0,
         "fixed": 1, "broken": 0, "n": 150, "significant": False, "mcnemar_p": 1.0}
    text = _diff_sentence("MMLU", c, "95%", "base")
    assert "1 question gained, 0 lost of 150" in text and "not significant" in text
    assert "2 questions gained" in _diff_sentence("MMLU", {**c, "fixed": 2}, "95%", "base")


# --------------------------------------------------------------------------------------------
# minimum detectable differences and adapter-scale points

def test_comparisons_state_the_minimum_detectable_difference(built):
    _, out, result = built
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["power"] == 0.8 and s["settings"]["adapter_scales"] == []
    r1, r2 = s["runs"]["run1"], s["runs"]["run2"]
    # run2 on Spider: 19 gained, 0 lost of 100 -> the MDE at psi = 0.19
    want = stats.mcnemar_mde(0, 19, 100, confidence=0.95, power=0.8)
    assert r2["ex_mde_pp"] == round(100 * want.mde, 6) and r2["ex_mde_one_way"] is False
    assert 12.0 < r2["ex_mde_pp"] < 13.0
    # run1: only 3 of 100 changed: the least detectable at all (all changes one way), P(Bin(100, d) >= 6) = 0.8
    assert r1["ex_mde_one_way"] is True and r1["ex_mde_pp"] == pytest.approx(7.7911, abs=1e-3)
    assert r1["mmlu_mde_pp"] == round(100 * stats.mcnemar_mde(3, 0, 150).mde, 6)
    assert r1["mmlu_debiased_mde_pp"] == round(100 * stats.mcnemar_mde(30, 0, 150).mde, 6)
    md = (out / "report.md").read_text()
    run1 = next(line for line in md.splitlines() if line.startswith("- **run1**"))
    ex1 = run1.split("MMLU (loglik, 5-shot)")[0]
    assert "not significant at 5%" in ex1 and "nothing smaller than ±7.8 pp with 80% power" in ex1
    run2 = next(line for line in md.splitlines() if line.startswith("- **run2**"))
    assert f"detects a difference of ±{r2['ex_mde_pp']:.1f} pp or more with 80% power" in run2
    assert "| run2 | 40.0% |" in md and f"| ±{r2['ex_mde_pp']:.1f} pp |" in md


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws_scaled")
    build_workspace(root, scales=(0.5,))
    out = root / "metrics"
    result = run_report(load_params(root / "params.yaml"), out, paths(root))
    return root, out, result


def test_scale_points_in_summary(scaled):
    _, out, _ = scaled
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["adapter_scales"] == [0.5]
    p1 = s["runs"]["run1"]["scales"]["0.5"]
    assert p1["scale"] == 0.5 and p1["ex"] == 0.22 and p1["n"] == 100
    assert (p1["ex_gain_pp"], p1["ex_fixed"], p1["ex_broken"], p1["ex_mcnemar_p"]) == (1.0, 1, 0, 1.0)
    ci = stats.accuracy_ci([int(i in SCALED_CORRECT["run1@0.5"]) for i in range(N)], n_resamples=2000, seed=7)
    assert (p1["ex_ci_low"], p1["ex_ci_high"]) == (round(ci.low, 6), round(ci.high, 6))
    # MMLU: 44/150 vs 45/150, one question lost
    assert p1["mmlu_accuracy"] == round(44 / 150, 6) and p1["mmlu_change_pp"] == round(-100 / 150, 6)
    assert (p1["mmlu_fixed"], p1["mmlu_broken"], p1["mmlu_mcnemar_p"]) == (0, 1, 1.0)
    # debiased: 75/150 vs 90/150, 15 lost -> p = 2 / 2^15
    assert p1["mmlu_debiased_change_pp"] == -10.0 and p1["mmlu_debiased_broken"] == 15
    assert p1["mmlu_debiased_mcnemar_p"] == pytest.approx(2 * 0.5 ** 15, rel=1e-9)
    assert p1["mmlu_debiased_mde_pp"] == round(100 * stats.mcnemar_mde(15, 0, 150).mde, 6)
    p2 = s["runs"]["run2"]["scales"]["0.5"]
    assert p2["ex_gain_pp"] == 9.0 and p2["ex_mcnemar_p"] == pytest.approx(2 * 0.5 ** 9, rel=1e-9)
    assert p2["ex_significant"] is True and p2["ex_gain_ci_low_pp"] > 0
    assert p2["mmlu_change_pp"] == 0.0 and p2["mmlu_change_ci_low_pp"] == 0.0 == p2["mmlu_change_ci_high_pp"]
    # the scale-1 numbers stay where they were; the base and run models are not duplicated
    assert s["runs"]["run2"]["ex_gain_pp"] == 19.0 and set(s["spider"]) == {"base_zeroshot", "base_fewshot",
                                                                              "run1", "run2"}
    assert "run1@0.5" not in s["mmlu"]


def test_scale_points_in_report_and_plot_data(scaled):
    from PIL import Image

    _, out, _ = scaled
    md = (out / "report.md").read_text()
    section = md.split("## Learning-forgetting frontier (adapter scale)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run |")]
    assert [r.split(" | ")[0:2] for r in rows] == [["| base", "0"], ["| run1", "0.5"], ["| run1", "1"],
                                                   ["| run2", "0.5"], ["| run2", "1"]]
    assert rows[3].startswith("| run2 | 0.5 | 30.0% [") and "+9.0 pp [" in rows[3] and "| 0.004 |" in rows[3]
    assert "-10.0 pp [" in rows[1]                 # run1@0.5 debiased
    trade = json.loads((out / "plots/tradeoff.json").read_text())
    curve = [t for t in trade if t["run"] == "run2"]
    assert [t["scale"] for t in curve] == [0.0, 0.5, 1.0]
    assert [t["ex_gain_pp"] for t in curve] == [0.0, 9.0, 19.0]
    assert [t["model"] for t in curve] == ["base_zeroshot", "run2@0.5", "run2"]
    assert curve[1]["ex_ci_low_pp"] > 0 and curve[1]["ex_mcnemar_p"] == pytest.approx(2 * 0.5 ** 9)
    assert [t["mmlu_debiased_change_pp"] for t in trade if t["run"] == "run1"] == [0.0, -10.0, -20.0]
    with Image.open(out / "plots/tradeoff.png") as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_missing_scale_point_names_its_stage(tmp_path):
    build_workspace(tmp_path, scales=(0.5,))
    (tmp_path / "data/scores/run2@0.5.jsonl").unlink()
    with pytest.raises(UserError, match=r"run2@0\.5\.jsonl.*score_scaled@run2-0\.5"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    build_workspace(tmp_path, scales=(0.5,))
    (tmp_path / "metrics/mmlu/run1@0.5.json").unlink()
    with pytest.raises(UserError, match=r"mmlu_scaled@run1-0\.5"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))
    assert not (tmp_path / "metrics/summary.json").exists()


def test_scale_point_scored_with_another_mmlu_method_is_refused(tmp_path):
    build_workspace(tmp_path, scales=(0.5,))
    m = tmp_path / "metrics/mmlu/run1@0.5.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "k_shot": 0}))
    with pytest.raises(UserError, match=r"run1@0\.5\.json.*0-shot.*mmlu_scaled@run1-0\.5"):
        run_report(load_params(tmp_path / "params.yaml"), tmp_path / "metrics", paths(tmp_path))


@pytest.mark.parametrize("scales", [[1.0], [0.0], [0.5, 0.5], ["0.5"], 0.5, [True]])
def test_bad_adapter_scales_are_user_errors(tmp_path, scales):
    build_workspace(tmp_path)
    params = load_params(tmp_path / "params.yaml")
    params["adapter_scales"] = scales
    with pytest.raises(UserError, match="adapter_scales"):
        run_report(params, tmp_path / "metrics", paths(tmp_path))
