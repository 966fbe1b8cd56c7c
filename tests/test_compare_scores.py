"""benchmarks/compare_scores.py: agreement, EX counts and the paired test of two scored files."""
import json

import pytest

from benchmarks.compare_scores import compare, compare_mmlu, main
from sqltradeoff.errors import UserError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _files(tmp_path, name, raws, matches):
    pred = _write(tmp_path / f"{name}_pred.jsonl",
                  [{"id": f"q{i}", "raw_output": r} for i, r in enumerate(raws)])
    scores = _write(tmp_path / f"{name}_scores.jsonl",
                    [{"id": f"q{i}", "exec_match": m} for i, m in enumerate(matches)])
    return pred, scores


def test_counts_agreement_discordance_and_mcnemar(tmp_path):
    pa, sa = _files(tmp_path, "a", ["x", "y", "z", "w", "v"], [1, 1, 0, 0, 1])
    pb, sb = _files(tmp_path, "b", ["x", "Y", "z", "W", "v"], [1, 0, 1, 1, 1])
    res = compare("A", pa, sa, "B", pb, sb)
    assert res["n"] == 5 and res["raw_output_equal"] == 3
    assert res["ex_correct"] == {"A": 3, "B": 4}
    assert (res["only_a_correct"], res["only_b_correct"]) == (1, 2)
    assert res["mcnemar_p"] == pytest.approx(1.0)          # 1 vs 2 discordant: binomial p = 1
    assert res["ex_difference_pp"] == pytest.approx(20.0)
    low, high = res["ex_difference_ci_pp"]
    assert low <= 20.0 <= high


def test_identical_outcomes_give_a_zero_interval(tmp_path):
    pa, sa = _files(tmp_path, "a", ["x", "y"], [1, 0])
    res = compare("A", pa, sa, "A2", pa, sa)
    assert res["raw_output_equal"] == 2 and res["mcnemar_p"] == 1.0
    assert res["ex_difference_ci_pp"] == [0.0, 0.0]


def test_files_of_different_questions_are_a_user_error(tmp_path):
    pa, sa = _files(tmp_path, "a", ["x", "y"], [1, 0])
    pb = _write(tmp_path / "b_pred.jsonl", [{"id": "other", "raw_output": "x"}])
    sb = _write(tmp_path / "b_scores.jsonl", [{"id": "other", "exec_match": 1}])
    with pytest.raises(UserError, match="other"):
        compare("A", pa, sa, "B", pb, sb)


def test_cli_appends_one_json_line(tmp_path, capsys):
    pa, sa = _files(tmp_path, "a", ["x"], [1])
    out = tmp_path / "cmp.jsonl"
    for _ in range(2):
        assert main(["--name", "A", "--pred", str(pa), "--scores", str(sa),
                     "--name", "B", "--pred", str(pa), "--scores", str(sa), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["ex_correct"] == {"A": 1, "B": 1}


def _mmlu_rows(tmp_path, name, preds, debiased, answers="ABCDA"):
    return _write(tmp_path / f"{name}_mmlu.jsonl", [
        {"id": f"s-{i}", "answer": ans, "pred": p, "correct": int(p == ans), "debiased_pred": d,
         "debiased_correct": int(d == ans)} for i, (p, d, ans) in enumerate(zip(preds, debiased, answers))])


def test_mmlu_rows_give_a_paired_line_for_loglik_and_one_for_debiased(tmp_path, capsys):
    a = _mmlu_rows(tmp_path, "a", "ABCDB", "ABCDA")     # loglik 4 of 5, debiased 5 of 5
    b = _mmlu_rows(tmp_path, "b", "ABCCA", "CBCDA")     # loglik 4 of 5 (another miss), debiased 4 of 5
    loglik, debiased = compare_mmlu("A", a, "B", b)
    assert (loglik["metric"], debiased["metric"]) == ("mmlu", "mmlu_debiased")
    assert loglik["correct"] == {"A": 4, "B": 4} and loglik["pred_equal"] == 3
    assert (loglik["only_a_correct"], loglik["only_b_correct"]) == (1, 1) and loglik["difference_pp"] == 0.0
    assert debiased["correct"] == {"A": 5, "B": 4} and debiased["pred_equal"] == 4
    assert debiased["difference_pp"] == pytest.approx(-20.0)
    out = tmp_path / "cmp.jsonl"
    assert main(["--mmlu", "--name", "A", "--scores", str(a), "--name", "B", "--scores", str(b),
                 "--out", str(out)]) == 0
    assert [json.loads(x)["metric"] for x in out.read_text().splitlines()] == ["mmlu", "mmlu_debiased"]
    with pytest.raises(SystemExit):     # --pred belongs to the SQL comparison
        main(["--mmlu", "--name", "A", "--pred", str(a), "--scores", str(a), "--name", "B", "--scores", str(b)])
