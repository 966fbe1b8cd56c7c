"""benchmarks/compare_scores.py: agreement, EX counts and the paired test of two scored files."""
import json

import pytest

from benchmarks.compare_scores import compare, main
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
