"""`ExecutionAccuracy`: Spider execution accuracy as a deterministic deepeval metric.

A test case is an `LLMTestCase` with
  input           = the question,
  actual_output   = the predicted SQL (raw model text is fine: the SQL is extracted first),
  expected_output = the gold SQL,
and the database named by `metadata={"db_id": ...}` (`additional_metadata=` is accepted by
`LLMTestCase` as the same field), or by a `context` entry `"db_id: <id>"` (or just `"<id>"`).

No LLM judge, API key or network is involved: the queries are executed on
`<db_dir>/<db_id>/<db_id>.sqlite` with the rules of `sqltradeoff.execution`, by default in a
killable, memory-capped worker process (`isolation.run_isolated`, as `execution.score_pairs`
does), so a prediction (or gold query) can neither hang the caller nor exhaust its memory.

    from deepeval import evaluate
    from deepeval.evaluate.configs import DisplayConfig
    evaluate([case], [ExecutionAccuracy("data/raw/spider/database")],
             display_config=DisplayConfig(print_results=False))
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from deepeval.metrics import BaseMetric
from deepeval.test_case import LLMTestCase

from .execution import GOLD_ERROR, GOLD_TAG, Outcome, check_db_id, compare, db_path_for
from .extract import extract_sql
from .isolation import run_isolated
from .sqlexec import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, TIMEOUT, check_timeout

_CONTEXT_DB = re.compile(r"^\s*db(?:_id)?\s*[:=]\s*(\S+)\s*$", re.IGNORECASE)


# One case: (db_path, gold, raw output, extract, timeout_s, keep_distinct).
_Case = tuple[str, str, str, bool, float, bool]


def _score_case(case: _Case) -> tuple[str, Outcome]:
    """`(predicted SQL, outcome)`; in a worker of `run_isolated`, or in this process."""
    db_path, gold, raw, extract, timeout_s, keep_distinct = case
    pred = extract_sql(raw) if extract else raw
    return pred, compare(db_path, gold, pred, timeout_s=timeout_s, keep_distinct=keep_distinct)


def _case_failed(case: _Case, kind: str, tag: int, message: str) -> tuple[None, Outcome]:
    """A case whose worker was killed (`timeout`) or died (`other_error`): the SQL is unknown."""
    if tag == GOLD_TAG:
        return None, Outcome(False, GOLD_ERROR, f"{kind}: {message}")
    return None, Outcome(False, kind, message)


class ExecutionAccuracy(BaseMetric):
    """Score 1.0 when the predicted SQL returns the gold result (Spider test-suite rules), else 0.0.

    `reason` is "match", "result differs" (with details), "prediction error: <kind>: <message>",
    "gold query error: <kind>: <message>", "timeout" (stopped by SQLite's progress handler) or
    "timeout: exceeded <timeout> s (worker killed)" (a step the progress handler cannot
    interrupt: the worker was killed); `error` is set only for a problem with the test case
    itself (no database, or a `db_id` that is not a plain name: an absolute path or one with
    `..` or a separator is refused, so no file outside `db_dir` is ever read).

    `timeout` (seconds per query) must be a finite number in (0, 86400], else `ValueError`.
    With `isolate=True` (the default) each test case is scored in a forked worker process
    (`isolation.run_isolated`): a query still running at `timeout + HARD_KILL_SLACK_S` (0.5 s)
    is killed with its worker, a case still running at 3 x `timeout` likewise, and the worker
    may add at most `memory_mb` MiB to its size (None: no cap), so every `measure` ends within
    those bounds (the fork costs 20-40 ms a case). `isolate=False` runs everything in this
    process (for trusted SQL, about 1 ms a case): SQLite's limits, the SQL size bound and the
    progress handler still hold; the hard kill and the memory cap do not. The SQL extraction
    from `actual_output` runs in the same worker (it is Python work on untrusted text);
    `predicted_sql` is what it extracted (None when the worker was killed).
    """

    def __init__(self, db_dir: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S,
                 threshold: float = 1.0, extract: bool = True, keep_distinct: bool = False,
                 isolate: bool = True, memory_mb: int | None = DEFAULT_MEMORY_MB):
        self.db_dir = Path(db_dir)
        self.timeout = check_timeout(timeout, "timeout")
        self.threshold = threshold
        self.extract = extract
        self.keep_distinct = keep_distinct
        self.isolate = bool(isolate)
        if memory_mb is not None and (isinstance(memory_mb, bool) or not isinstance(memory_mb, int)
                                      or memory_mb <= 0):
            raise ValueError(f"memory_mb must be a positive whole number of MiB or None, "
                             f"got {memory_mb!r}")
        self.memory_mb = memory_mb
        self.async_mode = True
        self.verbose_mode = False
        self.include_reason = True
        self.strict_mode = False
        self.evaluation_model = None
        self.evaluation_cost = 0.0
        self.predicted_sql: Optional[str] = None
        self.kind: Optional[str] = None

    @property
    def __name__(self) -> str:  # shown by deepeval
        return "Execution Accuracy"

    def _db_id(self, test_case: LLMTestCase) -> str:
        meta = getattr(test_case, "metadata", None) or getattr(test_case, "additional_metadata", None)
        if isinstance(meta, dict) and meta.get("db_id"):
            return check_db_id(str(meta["db_id"]))
        for entry in getattr(test_case, "context", None) or []:
            m = _CONTEXT_DB.match(str(entry))
            if m:
                return check_db_id(m.group(1))
            if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", str(entry).strip()) and \
                    db_path_for(self.db_dir, str(entry).strip()).is_file():
                return str(entry).strip()
        raise ValueError("test case names no database: set metadata={'db_id': ...} "
                         "or a context entry 'db_id: <id>'")

    def measure(self, test_case: LLMTestCase, *args, **kwargs) -> float:
        self.error = None
        try:
            db_id = self._db_id(test_case)
            db_path = db_path_for(self.db_dir, db_id)
            if not db_path.is_file():
                raise ValueError(f"database `{db_id}` not found: {db_path} does not exist "
                                 f"(db_dir {self.db_dir})")
            if not test_case.expected_output:
                raise ValueError("test case has no expected_output (the gold SQL)")
        except ValueError as exc:
            self.error = str(exc)
            self.score, self.success, self.reason, self.kind = 0.0, False, f"error: {exc}", None
            raise
        case = (str(db_path), test_case.expected_output, test_case.actual_output or "",
                self.extract, self.timeout, self.keep_distinct)
        if self.isolate:        # the extraction too: it is Python work on untrusted text
            ((_, (pred, out)),) = run_isolated([[(0, case)]], _score_case, _case_failed,
                                               timeout_s=self.timeout, memory_mb=self.memory_mb)
        else:
            pred, out = _score_case(case)
        self.predicted_sql = pred
        self.kind = out.kind
        self.score = 1.0 if out.match else 0.0
        if out.match:
            self.reason = "match"
        elif out.kind == TIMEOUT:
            self.reason = f"timeout: {out.reason}" if "killed" in out.reason else "timeout"
        elif out.kind in ("wrong_result", "empty_result"):
            self.reason = f"result differs: {out.reason}" if out.reason else "result differs"
        elif out.kind == "gold_error":
            self.reason = f"gold query error: {out.reason}"
        else:
            self.reason = f"prediction error: {out.error}"
        self.success = self.score >= self.threshold
        return self.score

    async def a_measure(self, test_case: LLMTestCase, *args, **kwargs) -> float:
        return self.measure(test_case, *args, **kwargs)

    def is_successful(self) -> bool:
        if self.error is not None or self.score is None:
            self.success = False
        else:
            self.success = self.score >= self.threshold
        return self.success
