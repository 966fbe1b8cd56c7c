"""`ExecutionAccuracy` (the deepeval metric) against hostile SQL: it scores in a killable,
memory-capped worker (`isolation.run_isolated`), so every `measure` ends within its limit plus
the stated slack, and the database is never changed.

The queries run on a temporary COPY of concert_singer whose sha256 must be unchanged afterwards
(and no file may appear beside it). Bounds: LIMIT (per query) + HARD_KILL_SLACK_S + MARGIN,
where MARGIN covers a worker fork and a loaded 2-core machine (as in tests/test_hostile_sql.py).
The basic metric tests (evaluate() on the real databases, db_id checks) are in test_execution.py.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from shared_paths import CONCERT_SINGER_DB, guarded_db_copy, needs
from sqltradeoff import deepeval_metric, sqlexec

pytestmark = needs(CONCERT_SINGER_DB)

LIMIT = 1.0
MARGIN = 1.0
SLACK = sqlexec.HARD_KILL_SLACK_S
BOUND = LIMIT + SLACK + MARGIN
GOLD = "SELECT count(*) FROM singer"
# One SQLite step that the progress handler cannot interrupt (see test_hostile_sql.py).
PRINTF_1E9 = "SELECT printf('%.*c', 1e9, 'x')"
LIKE_WITHIN_LIMITS = "SELECT printf('%.*c', 999000, 'a') LIKE '%' || printf('%.*c', 990, 'a') || 'b'"


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory):
    yield from guarded_db_copy(tmp_path_factory, "metric_db")


def _case(pred: str, gold: str = GOLD, question: str = "q"):
    from deepeval.test_case import LLMTestCase
    return LLMTestCase(input=question, actual_output=pred, expected_output=gold,
                       metadata={"db_id": "concert_singer"})


def _timed(metric, case, how: str = "measure") -> float:
    t0 = time.monotonic()
    if how == "measure":
        metric.measure(case)
    else:
        asyncio.run(metric.a_measure(case))
    return time.monotonic() - t0


@pytest.mark.parametrize("sql,how", [(PRINTF_1E9, "measure"), (PRINTF_1E9, "a_measure"),
                                     (LIKE_WITHIN_LIMITS, "measure")])
def test_a_step_the_progress_handler_cannot_stop_is_killed(db_dir, sql, how):
    """A short limit (0.2 s): the LIKE step alone takes about 2 s on a fast core, so the kill
    stops it on any machine."""
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    limit = 0.2
    m = ExecutionAccuracy(db_dir, timeout=limit)
    elapsed = _timed(m, _case(sql), how)
    assert m.score == 0.0 and not m.is_successful() and m.error is None
    assert m.kind == "timeout" and m.reason == f"timeout: exceeded {limit:g} s (worker killed)"
    assert limit + SLACK <= elapsed < limit + SLACK + MARGIN, elapsed


def test_a_killed_gold_query_is_a_gold_error(db_dir):
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    m = ExecutionAccuracy(db_dir, timeout=LIMIT)
    elapsed = _timed(m, _case(GOLD, gold=PRINTF_1E9))
    assert m.score == 0.0 and m.kind == "gold_error"
    assert m.reason == f"gold query error: timeout: exceeded {LIMIT:g} s (worker killed)"
    assert elapsed < BOUND, elapsed


def test_the_sql_extraction_runs_under_the_limit_too(db_dir, monkeypatch):
    """Extraction of model text runs in the worker as well: a slow extractor (the fork inherits the
    patched module) is killed with its case at 3 x LIMIT + slack."""
    from sqltradeoff.deepeval_metric import ExecutionAccuracy

    def slow_extract(text):
        time.sleep(60)
        return text

    monkeypatch.setattr(deepeval_metric, "extract_sql", slow_extract)
    m = ExecutionAccuracy(db_dir, timeout=LIMIT)
    elapsed = _timed(m, _case(GOLD))
    assert m.score == 0.0 and m.kind == "timeout" and m.predicted_sql is None
    assert m.reason == f"timeout: item exceeded {3 * LIMIT:g} s (worker killed)"
    assert 3 * LIMIT + SLACK <= elapsed < 3 * LIMIT + SLACK + MARGIN, elapsed


def test_long_model_text_is_refused_quickly(db_dir):
    """180 kB of `select a ` (once two minutes of extraction) is extracted in well under a second
    and refused by the SQL size bound."""
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    m = ExecutionAccuracy(db_dir, timeout=LIMIT)
    elapsed = _timed(m, _case("select a " * 20_000))
    assert m.score == 0.0 and m.kind == "other_error", m.reason
    assert "longer than" in m.reason
    assert elapsed < LIMIT + SLACK, elapsed


def test_memory_is_capped(db_dir):
    """1 MB blobs (under SQLite's length limit) x 100k rows: the worker's cap stops it, not the clock."""
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
           "SELECT zeroblob(999000) FROM c")
    m = ExecutionAccuracy(db_dir, timeout=30, memory_mb=256)
    elapsed = _timed(m, _case(sql))
    assert m.score == 0.0 and m.reason == "prediction error: other_error: out of memory", m.reason
    assert elapsed < 15, elapsed
    assert m.measure(_case(GOLD)) == 1.0 and m.reason == "match"     # a fresh worker goes on


def test_isolation_is_on_by_default_and_can_be_turned_off(db_dir, monkeypatch):
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    calls = []
    real = deepeval_metric.run_isolated

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(deepeval_metric, "run_isolated", spy)
    cases = [_case("```sql\nSELECT count(*) FROM singer;\n```"), _case("SELECT 2"),
             _case("SELECT nope FROM singer"), _case("SELECT count(*) FROM singer", gold="SELEC 1")]
    seen = {}
    for isolate in (True, False):
        m = ExecutionAccuracy(db_dir, timeout=LIMIT, isolate=isolate, memory_mb=300)
        seen[isolate] = [(m.measure(c), m.reason, m.kind, m.predicted_sql) for c in cases]
    assert calls == [{"timeout_s": LIMIT, "memory_mb": 300}] * len(cases)    # only isolate=True
    assert seen[True] == seen[False]
    assert [s[0] for s in seen[True]] == [1.0, 0.0, 0.0, 0.0]
    assert seen[True][0][3] == GOLD
    assert seen[True][1][1] == "result differs: different values"
    assert seen[True][2][1].startswith("prediction error: unknown_column")
    assert seen[True][3][1].startswith("gold query error: syntax_error")


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "big"])
def test_memory_mb_must_be_a_positive_whole_number(db_dir, bad):
    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    with pytest.raises(ValueError, match="memory_mb must be"):
        ExecutionAccuracy(db_dir, memory_mb=bad)


def test_deepeval_copies_keep_the_isolation_settings(db_dir):
    from deepeval.metrics.utils import copy_metrics

    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    (copy,) = copy_metrics([ExecutionAccuracy(db_dir, timeout=2, isolate=False, memory_mb=300)])
    assert (copy.isolate, copy.memory_mb, copy.timeout) == (False, 300, 2.0)


def test_evaluate_offline_with_a_hostile_case(db_dir, tmp_path, monkeypatch):
    from deepeval import evaluate
    from deepeval.evaluate.configs import DisplayConfig

    from sqltradeoff.deepeval_metric import ExecutionAccuracy
    monkeypatch.setenv("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    monkeypatch.chdir(tmp_path)          # deepeval writes ./.deepeval
    cases = [_case(GOLD), _case(PRINTF_1E9, question="hostile")]
    t0 = time.monotonic()
    result = evaluate(cases, [ExecutionAccuracy(db_dir, timeout=LIMIT)],
                      display_config=DisplayConfig(print_results=False, show_indicator=False))
    elapsed = time.monotonic() - t0
    by_input = {r.input: r.metrics_data[0] for r in result.test_results}
    assert (by_input["q"].score, by_input["q"].success, by_input["q"].reason) == (1.0, True, "match")
    hostile = by_input["hostile"]
    assert (hostile.score, hostile.success) == (0.0, False)
    assert hostile.reason == f"timeout: exceeded {LIMIT:g} s (worker killed)"
    assert elapsed < BOUND + 5, elapsed          # + deepeval's own bookkeeping
