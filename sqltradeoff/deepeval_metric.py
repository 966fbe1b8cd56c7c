"""`ExecutionAccuracy`: Spider execution accuracy as a deterministic deepeval metric.

A test case is an `LLMTestCase` with
  input           = the question,
  actual_output   = the predicted SQL (raw model text is fine: the SQL is extracted first),
  expected_output = the gold SQL,
and the database named by `metadata={"db_id": ...}` (`additional_metadata=` is accepted by
`LLMTestCase` as the same field), or by a `context` entry `"db_id: <id>"` (or just `"<id>"`).

No LLM judge, API key or network is involved: the queries are executed on
`<db_dir>/<db_id>/<db_id>.sqlite` with the rules of `sqltradeoff.execution`.

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

from .execution import check_db_id, compare, db_path_for
from .extract import extract_sql
from .sqlexec import DEFAULT_TIMEOUT_S, check_timeout

_CONTEXT_DB = re.compile(r"^\s*db(?:_id)?\s*[:=]\s*(\S+)\s*$", re.IGNORECASE)


class ExecutionAccuracy(BaseMetric):
    """Score 1.0 when the predicted SQL returns the gold result (Spider test-suite rules), else 0.0.

    `reason` is "match", "result differs" (with details), "prediction error: <kind>: <message>"
    or "timeout"; `error` is set only for a problem with the test case itself (no database,
    or a `db_id` that is not a plain name: an absolute path or one with `..` or a separator is
    refused, so no file outside `db_dir` is ever read).

    `timeout` (seconds per query) must be a finite number in (0, 86400], else `ValueError`.
    The queries run in this process: SQLite's limits, the SQL size bound and the progress
    handler hold; the hard kill and memory cap of `score_pairs` (a worker process) do not.
    """

    def __init__(self, db_dir: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S,
                 threshold: float = 1.0, extract: bool = True, keep_distinct: bool = False):
        self.db_dir = Path(db_dir)
        self.timeout = check_timeout(timeout, "timeout")
        self.threshold = threshold
        self.extract = extract
        self.keep_distinct = keep_distinct
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
        raw = test_case.actual_output or ""
        pred = extract_sql(raw) if self.extract else raw
        self.predicted_sql = pred
        out = compare(db_path, test_case.expected_output, pred, timeout_s=self.timeout,
                      keep_distinct=self.keep_distinct)
        self.kind = out.kind
        self.score = 1.0 if out.match else 0.0
        if out.match:
            self.reason = "match"
        elif out.kind == "timeout":
            self.reason = "timeout"
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
