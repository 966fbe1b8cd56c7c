"""Spider test-suite comparison rules, checked with real queries on the real Spider databases."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sqltradeoff import execution as ex
from sqltradeoff.execution import compare, exec_match, remove_distinct, result_eq, score_pairs
from shared_paths import CONCERT_SINGER_DB, DB_DIR, SPIDER, needs

REPO = Path(__file__).resolve().parents[1]

needs_data = needs(CONCERT_SINGER_DB)


def db(db_id: str) -> Path:
    return ex.db_path_for(DB_DIR, db_id)


def rows(db_id: str, sql: str) -> list[tuple]:
    from sqltradeoff.sqlexec import execute_sql
    res = execute_sql(db(db_id), sql)
    assert res.ok, res.describe()
    return res.rows


# ----------------------------------------------------------------------------- rules on real DBs

@needs_data
class TestRulesOnRealDatabases:
    def test_row_order_ignored_without_order_by_in_gold(self):
        gold = "SELECT name FROM singer WHERE age > 30"
        pred = "SELECT name FROM singer WHERE age > 30 ORDER BY name DESC"
        assert rows("concert_singer", gold) != rows("concert_singer", pred)    # really reordered
        assert exec_match(db("concert_singer"), gold, pred) == (True, None)

    def test_row_order_matters_when_gold_has_order_by(self):
        gold = "SELECT name FROM singer ORDER BY age"
        pred = "SELECT name FROM singer ORDER BY age DESC"
        ok, err = exec_match(db("concert_singer"), gold, pred)
        assert not ok and err.startswith("wrong_result")
        # same rows in the same order: a match, even if written differently
        assert exec_match(db("concert_singer"), gold, "SELECT name FROM singer ORDER BY age ASC")[0]

    def test_duplicates_count(self):
        # Pets has PetType cat, dog, dog; the prediction gives dog, cat, cat: same set, same size
        gold = "SELECT PetType FROM Pets"
        pred = "SELECT CASE WHEN PetType = 'dog' THEN 'cat' ELSE 'dog' END FROM Pets"
        g, p = rows("pets_1", gold), rows("pets_1", pred)
        assert set(g) == set(p) and len(g) == len(p) and sorted(g) != sorted(p)
        assert exec_match(db("pets_1"), gold, pred)[0] is False
        # fewer duplicates: a different result too
        ok, err = exec_match(db("concert_singer"), "SELECT country FROM singer",
                             "SELECT country FROM singer GROUP BY country")
        assert not ok and "rows (gold has 6)" in err

    def test_columns_may_be_permuted(self):
        assert exec_match(db("concert_singer"), "SELECT name, country, age FROM singer",
                          "SELECT age, name, country FROM singer") == (True, None)
        assert exec_match(db("car_1"),
                          "SELECT T1.Maker, T2.Model FROM car_makers AS T1 JOIN model_list AS T2 "
                          "ON T1.Id = T2.Maker",
                          "SELECT m.Model, c.Maker FROM model_list m JOIN car_makers c ON c.Id = m.Maker")[0]

    def test_permutation_must_keep_rows_together(self):
        # same columns, but values shuffled between rows: column multisets equal, rows differ
        gold = "SELECT Name, Age FROM singer"
        pred = ("SELECT a.Name, b.Age FROM (SELECT Name, row_number() OVER (ORDER BY Name) AS r FROM singer) a "
                "JOIN (SELECT Age, row_number() OVER (ORDER BY Age) AS r FROM singer) b ON a.r = b.r")
        assert sorted(x[1] for x in rows("concert_singer", gold)) == \
            sorted(x[1] for x in rows("concert_singer", pred))
        assert exec_match(db("concert_singer"), gold, pred)[0] is False

    def test_int_equals_float(self):
        assert rows("concert_singer", "SELECT count(*) * 1.0 FROM singer") == [(6.0,)]
        assert exec_match(db("concert_singer"), "SELECT count(*) FROM singer",
                          "SELECT count(*) * 1.0 FROM singer") == (True, None)
        assert exec_match(db("world_1"), "SELECT Population FROM city WHERE Name = 'Kabul'",
                          "SELECT CAST(Population AS REAL) FROM city WHERE Name = 'Kabul'")[0]

    def test_text_differs_from_number(self):
        ok, err = exec_match(db("concert_singer"), "SELECT count(*) FROM singer",
                             "SELECT CAST(count(*) AS TEXT) FROM singer")
        assert rows("concert_singer", "SELECT CAST(count(*) AS TEXT) FROM singer") == [("6",)]
        assert not ok and err.startswith("wrong_result")

    def test_distinct_is_stripped_from_both_queries(self):
        gold = "SELECT DISTINCT country FROM singer"
        pred = "SELECT country FROM singer"
        assert len(rows("concert_singer", gold)) == 3 and len(rows("concert_singer", pred)) == 6
        assert exec_match(db("concert_singer"), gold, pred) == (True, None)
        assert exec_match(db("concert_singer"), pred, gold) == (True, None)
        # the official option keep_distinct restores the difference
        assert exec_match(db("concert_singer"), gold, pred, keep_distinct=True)[0] is False

    def test_distinct_inside_count_is_stripped_too(self):
        # the official quirk: COUNT(DISTINCT x) becomes COUNT( x)
        assert exec_match(db("concert_singer"), "SELECT count(DISTINCT country) FROM singer",
                          "SELECT count(country) FROM singer")[0]
        assert not exec_match(db("concert_singer"), "SELECT count(DISTINCT country) FROM singer",
                              "SELECT count(country) FROM singer", keep_distinct=True)[0]

    def test_spaced_comparison_operators_are_joined(self):
        assert exec_match(db("concert_singer"), "SELECT name FROM singer WHERE age >= 40",
                          "SELECT name FROM singer WHERE age > = 40") == (True, None)

    @pytest.mark.parametrize("pred, kind", [
        ("SELECT nme FROM singer", "unknown_column"),
        ("SELECT name FROM singers", "unknown_table"),
        ("SELECT name FROM singer WHERE", "syntax_error"),
        ("SELECT name FROM singer JOIN singer_in_concert WHERE Singer_ID = 1", "other_error"),
        ("DELETE FROM singer", "forbidden"),
        ("", "syntax_error"),
        (None, "syntax_error"),
    ])
    def test_prediction_errors_score_zero(self, pred, kind):
        out = compare(db("concert_singer"), "SELECT name FROM singer", pred)
        assert out.match is False and out.kind == kind
        assert out.error.startswith(kind + ":")

    def test_empty_result(self):
        out = compare(db("concert_singer"), "SELECT name FROM singer", "SELECT name FROM singer WHERE age > 100")
        assert (out.match, out.kind) == (False, "empty_result")
        # both empty: equal
        assert exec_match(db("concert_singer"), "SELECT name FROM singer WHERE age > 100",
                          "SELECT name FROM singer WHERE age < 0") == (True, None)

    def test_a_comment_is_not_an_empty_result(self):
        out = compare(db("concert_singer"), "SELECT name FROM singer WHERE age > 100", "-- no query")
        assert (out.match, out.kind) == (False, "syntax_error")

    def test_too_many_rows_is_a_wrong_result(self):
        out = compare(db("world_1"), "SELECT Name FROM city WHERE ID < 10", "SELECT Name FROM city",
                      max_rows=100)
        assert (out.match, out.kind) == (False, "wrong_result") and "more than 100 rows" in out.reason

    def test_timeout_scores_zero_within_the_limit(self):
        t0 = time.monotonic()
        out = compare(db("world_1"), "SELECT count(*) FROM city",
                      "SELECT count(*) FROM city a, city b, city c, city d, city e, city f", timeout_s=1.0)
        assert (out.match, out.kind) == (False, "timeout")
        assert time.monotonic() - t0 < 2.0

    def test_gold_error_is_reported(self):
        out = compare(db("concert_singer"), "SELECT nothing FROM nowhere", "SELECT 1")
        assert (out.match, out.kind) == (False, "gold_error")


@needs_data
def test_gold_vs_gold_on_every_dev_question_with_a_database():
    dev = json.loads((SPIDER / "dev.json").read_text())
    assert len(dev) == 1034
    pairs = [{"db_id": e["db_id"], "gold_sql": e["query"], "pred_sql": e["query"]}
             for e in dev if db(e["db_id"]).is_file()]
    missing = ex.missing_databases([e["db_id"] for e in dev], DB_DIR)
    assert missing == ["wta_1"] and len(pairs) == 972
    outs = score_pairs(pairs, DB_DIR, workers=2)
    failed = [(p["gold_sql"], o.error) for p, o in zip(pairs, outs) if not o.match]
    assert not failed, failed[:5]


@needs_data
def test_parallel_scoring_keeps_input_order():
    dev = json.loads((SPIDER / "dev.json").read_text())
    sample = [e for e in dev if db(e["db_id"]).is_file()][:200]
    # a wrong prediction for every third pair: the outcome must land on the right pair
    pairs = [{"db_id": e["db_id"], "gold_sql": e["query"],
              "pred_sql": e["query"] if i % 3 else "SELECT 'no such answer'"}
             for i, e in enumerate(sample)]
    one = score_pairs(pairs, DB_DIR, workers=1, chunk_size=7)
    two = score_pairs(pairs, DB_DIR, workers=2, chunk_size=7)
    here = score_pairs(pairs, DB_DIR, isolate=False)       # in this process: same outcomes
    assert one == two == here
    assert [o.match for o in one] == [bool(i % 3) for i in range(len(pairs))]


# ----------------------------------------------------------------------------- pure functions

def test_result_eq_rules():
    assert result_eq([], [], False) and result_eq([], [], True)
    assert not result_eq([(1,)], [], False)
    assert result_eq([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], False)
    assert not result_eq([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True)
    assert result_eq([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True)         # column permutation
    assert not result_eq([(1, "a"), (2, "b")], [("a", 2), ("b", 1)], False)    # rows kept together
    assert result_eq([(1,), (1,), (2,)], [(1,), (2,), (1,)], False)
    assert not result_eq([(1,), (1,), (2,)], [(1,), (2,), (2,)], False)       # duplicates count
    assert result_eq([(1, 2.5)], [(1.0, 2.5)], False)                          # 1 == 1.0
    assert not result_eq([(1,)], [("1",)], False)                              # '1' != 1
    assert not result_eq([(1, 2)], [(1,)], False)                              # column count
    assert result_eq([(None, 1)], [(1, None)], False)
    # many interchangeable columns: decided quickly
    wide = [tuple([0] * 12)] * 50
    assert result_eq(wide, list(wide), False)
    assert result_eq([tuple(range(9))], [tuple(reversed(range(9)))], True)
    # a Latin square: every column has the same multiset of values (9! candidate orders)
    square = [tuple((r + c) % 9 for c in range(9)) for r in range(9)]
    reversed_cols = [tuple(reversed(r)) for r in square]
    t0 = time.monotonic()
    assert result_eq(square, reversed_cols, False)
    assert result_eq(square, list(reversed(reversed_cols)), False)
    assert result_eq(square, reversed_cols, True)
    assert not result_eq(square, list(reversed(reversed_cols)), True)
    assert not result_eq(square, [r[:8] + (r[0],) for r in square], False)
    assert time.monotonic() - t0 < 1.0


def test_result_eq_keeps_the_official_quick_rejection_quirk():
    # The official quick rejection sorts each row's values by str(v) + str(type(v)); 10 and 10.0
    # then sort differently against '10.5', and the official code rejects this pair although the
    # rows are equal under Python equality. We follow the official code.
    assert not result_eq([(10, "10.5")], [(10.0, "10.5")], False)
    assert result_eq([(10, "x")], [(10.0, "x")], False)


def test_remove_distinct():
    assert remove_distinct("SELECT DISTINCT name FROM t") == "SELECT  name FROM t"
    assert remove_distinct("select count(distinct name) from t") == "select count( name) from t"
    assert remove_distinct("SELECT distinct_name, 'distinct', \"DISTINCT\" FROM t") == \
        "SELECT distinct_name, 'distinct', \"DISTINCT\" FROM t"
    assert remove_distinct("SELECT 'it''s distinct' , DISTINCT(x)") == "SELECT 'it''s distinct' , (x)"


def _remove_distinct_reference(query: str) -> str:
    """The character-by-character implementation this project used before (kept as the oracle)."""
    import re
    word_char = re.compile(r"[\w$#]")
    out, i, n = [], 0, len(query)
    while i < n:
        ch = query[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if query[j] == ch:
                    if j + 1 < n and query[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            out.append(query[i:j + 1])
            i = j + 1
        elif ch == "[" and (i == 0 or not word_char.match(query[i - 1])):
            j = query.find("]", i + 1)
            j = n - 1 if j < 0 else j
            out.append(query[i:j + 1])
            i = j + 1
        elif query.startswith("--", i):
            j = query.find("\n", i)
            j = n if j < 0 else j
            out.append(query[i:j])
            i = j
        elif query.startswith("/*", i):
            j = query.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(query[i:j])
            i = j
        elif word_char.match(ch):
            j = i + 1
            while j < n and word_char.match(query[j]):
                j += 1
            if query[i:j].lower() != "distinct":
                out.append(query[i:j])
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def test_remove_distinct_equals_the_reference_on_random_text():
    import random
    rng = random.Random(14)
    pieces = ["distinct", "DISTINCT", "Distinct", " ", "'", '"', "`", "[", "]", "-", "--", "/*", "*/",
              "*", "/", "\n", "a", "_", "$", "#", "x1", "(", ")", "é", "ſ", "İ", "K", "distinctx", "''"]
    for _ in range(20_000):
        q = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert remove_distinct(q) == _remove_distinct_reference(q), repr(q)


@needs_data
def test_remove_distinct_equals_the_reference_on_spider_dev():
    dev = json.loads((SPIDER / "dev.json").read_text())
    assert all(remove_distinct(e["query"]) == _remove_distinct_reference(e["query"]) for e in dev)


def test_remove_distinct_is_linear_time():
    t0 = time.perf_counter()
    for text in (" " * 1_000_000, "+" * 1_000_000, "'" * 1_000_000, "/*" * 500_000, "distinct " * 100_000):
        remove_distinct(text)
    assert time.perf_counter() - t0 < 3.0     # the old loop: about 3.5 s per 1M characters each


def test_too_long_sql_is_refused_before_any_pass():
    from sqltradeoff import sqlexec
    huge = "SELECT 1" + " " * (sqlexec.MAX_SQL_CHARS + 1)
    out = compare("/nonexistent.sqlite", huge, "SELECT 1")
    assert out.kind == "gold_error" and "longer than" in out.reason
    res = sqlexec.execute_sql("/nonexistent.sqlite", huge)
    assert res.error == "other_error" and "longer than" in res.message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e308, -1, 0, "soon", True])
def test_execute_and_score_refuse_a_timeout_that_switches_the_limit_off(bad):
    from sqltradeoff import sqlexec
    with pytest.raises(ValueError, match="timeout"):
        sqlexec.execute_sql("/nonexistent.sqlite", "SELECT 1", timeout_s=bad)
    with pytest.raises(ValueError, match="timeout"):
        score_pairs([], "/nonexistent", timeout_s=bad)


@pytest.mark.parametrize("db_id", ["/etc/passwd", "..", "../x", "a/b", "a\\b", "", "x\x00y", 5])
def test_db_id_must_be_a_plain_name(db_id):
    with pytest.raises(ValueError, match="not a database name"):
        ex.db_path_for("/data", db_id)


def test_order_by_detection_is_a_substring_test_on_the_gold():
    # The official test is `'order by' in gold.lower()`: two spaces do not count.
    assert result_eq([(1,), (2,)], [(2,), (1,)], order_matters=False)
    assert "order by" not in "SELECT x FROM t ORDER  BY x".lower()


def test_exact_match():
    assert ex.exact_match("SELECT  count(*)\nFROM singer", "select count(*) from singer")
    assert not ex.exact_match("SELECT count(*) FROM singer", "SELECT count(*) FROM singer;")
    assert not ex.exact_match("SELECT count(*) FROM singer", None)


def test_summarize():
    rows_ = [
        {"exec_match": 1, "error": None, "exact_match": 1, "hardness": "easy"},
        {"exec_match": 0, "error": "syntax_error: near x", "exact_match": 0, "hardness": "easy"},
        {"exec_match": 0, "error": "timeout: exceeded 30 s", "exact_match": 0, "hardness": "extra"},
        {"exec_match": 1, "error": None, "exact_match": 0, "hardness": "medium"},
    ]
    m = ex.summarize(rows_)
    assert m["n"] == 4 and m["n_correct"] == 2 and m["execution_accuracy"] == 0.5
    assert m["exact_match"] == 0.25
    assert list(m["by_hardness"]) == ["easy", "medium", "extra"]
    assert m["by_hardness"]["easy"] == {"n": 2, "execution_accuracy": 0.5}
    assert m["by_error"] == {"match": 2, "syntax_error": 1, "timeout": 1}


# ----------------------------------------------------------------------------- deepeval

@needs_data
def test_deepeval_metric_through_evaluate(tmp_path, monkeypatch):
    from deepeval import evaluate
    from deepeval.evaluate.configs import DisplayConfig
    from deepeval.test_case import LLMTestCase

    from sqltradeoff.deepeval_metric import ExecutionAccuracy

    monkeypatch.chdir(tmp_path)          # deepeval writes ./.deepeval
    dev = json.loads((SPIDER / "dev.json").read_text())
    picks = [e for e in dev if e["db_id"] in ("concert_singer", "pets_1")][:3]
    cases = [
        LLMTestCase(input=picks[0]["question"], expected_output=picks[0]["query"],
                    actual_output=f"Here is the query:\n```sql\n{picks[0]['query']};\n```\nIt counts.",
                    additional_metadata={"db_id": picks[0]["db_id"]}),
        LLMTestCase(input=picks[1]["question"], expected_output=picks[1]["query"],
                    actual_output="SELECT 'wrong'", context=[f"db_id: {picks[1]['db_id']}"]),
        LLMTestCase(input=picks[2]["question"], expected_output=picks[2]["query"],
                    actual_output="SELECT name FROM nowhere", metadata={"db_id": picks[2]["db_id"]}),
        LLMTestCase(input="runaway", expected_output="SELECT count(*) FROM city",
                    actual_output="SELECT count(*) FROM city a, city b, city c, city d, city e, city f",
                    metadata={"db_id": "world_1"}),
    ]
    metric = ExecutionAccuracy(DB_DIR, timeout=0.5)
    assert metric.__name__ == "Execution Accuracy"
    result = evaluate(cases, [metric], display_config=DisplayConfig(print_results=False,
                                                                    show_indicator=False))
    by_input = {r.input: r for r in result.test_results}
    data = [by_input[c.input].metrics_data[0] for c in cases]
    assert [d.score for d in data] == [1.0, 0.0, 0.0, 0.0]
    assert [d.success for d in data] == [True, False, False, False]
    assert data[0].reason == "match"
    assert data[1].reason.startswith("result differs")
    assert data[2].reason.startswith("prediction error: unknown_table")
    assert data[3].reason == "timeout"


@needs_data
def test_deepeval_metric_direct_and_missing_database():
    import asyncio

    from deepeval.test_case import LLMTestCase

    from sqltradeoff.deepeval_metric import ExecutionAccuracy

    m = ExecutionAccuracy(DB_DIR)
    case = LLMTestCase(input="q", actual_output="SQL: SELECT count(*) FROM singer",
                       expected_output="SELECT count(*) FROM singer", context=["concert_singer"])
    assert m.measure(case) == 1.0 and m.is_successful() and m.predicted_sql == "SELECT count(*) FROM singer"
    assert asyncio.run(m.a_measure(case)) == 1.0
    with pytest.raises(ValueError, match="wta_1"):
        m.measure(LLMTestCase(input="q", actual_output="SELECT 1", expected_output="SELECT 1",
                              metadata={"db_id": "wta_1"}))
    assert m.is_successful() is False
    with pytest.raises(ValueError, match="names no database"):
        m.measure(LLMTestCase(input="q", actual_output="SELECT 1", expected_output="SELECT 1"))


@pytest.mark.parametrize("timeout", [float("nan"), -1, 0, float("inf"), "x"])
def test_deepeval_metric_refuses_a_timeout_that_switches_the_limit_off(timeout):
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    with pytest.raises(ValueError, match="timeout must be"):
        ExecutionAccuracy(DB_DIR, timeout=timeout)


@needs_data
@pytest.mark.parametrize("field", ["metadata", "context"])
def test_deepeval_metric_never_reads_outside_db_dir(tmp_path, field):
    """A db_id that is a path is refused, even when the file it names exists."""
    from deepeval.test_case import LLMTestCase

    from sqltradeoff.deepeval_metric import ExecutionAccuracy

    outside = str(DB_DIR / "concert_singer")          # .../concert_singer/concert_singer.sqlite exists
    m = ExecutionAccuracy(tmp_path)
    for db_id in (outside, "../" + str(DB_DIR.name) + "/concert_singer", "a/../concert_singer"):
        kw = {"metadata": {"db_id": db_id}} if field == "metadata" else {"context": [f"db_id: {db_id}"]}
        with pytest.raises(ValueError, match="not a database name"):
            m.measure(LLMTestCase(input="q", actual_output="SELECT count(*) FROM singer",
                                  expected_output="SELECT count(*) FROM singer", **kw))
        assert m.score == 0.0 and not m.is_successful()
