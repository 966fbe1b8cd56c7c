"""Safe execution of untrusted SQL (model predictions) on a SQLite database file.

`execute_sql(db_path, sql, timeout_s=..., max_rows=...)` runs one statement and returns an
`ExecResult`: the rows, or an error kind. The defences, in layers:

* the file is opened read-only through a URI (`mode=ro&immutable=1`): SQLite cannot write it,
  and creates no journal or WAL file next to it;
* an authorizer allows only what a query needs (SELECT, reading columns, calling functions,
  recursive CTEs) and denies everything else at compile time: INSERT/UPDATE/DELETE,
  CREATE/DROP/ALTER, ATTACH/DETACH (and so `VACUUM INTO`, which attaches its target),
  PRAGMA, transaction control, and the `load_extension()` SQL function;
  extension loading is also switched off on the connection;
* a statement that starts with a data- or schema-changing keyword (INSERT, DROP, PRAGMA, ...;
  after comments and parentheses) is refused before SQLite sees it, and only one statement
  is accepted (Python's sqlite3 refuses a second one before running anything);
* SQL text longer than `MAX_SQL_CHARS` is refused before any Python or SQLite pass over it,
  and SQLite's own limits are lowered (`SQLITE_LIMITS`: statement length, string/blob length,
  LIKE/GLOB pattern length, expression depth, compound SELECTs, function arguments, columns,
  VDBE program size), each far above what any Spider gold query needs (the 972 dev gold
  queries all run);
* a wall-clock time limit enforced *inside* SQLite by a progress handler, which interrupts a
  runaway query (an endless recursive CTE, a 6-way cross join) while it runs or fetches;
* at most `max_rows` rows are fetched (`fetchmany`).

A progress handler cannot stop one long SQLite step (a LIKE/GLOB/instr scan of a long string,
a huge printf, a long compile). `isolation.run_isolated` therefore runs the work in killable worker
processes (fork), each with a memory cap (`RLIMIT_AS` of its size at start plus `memory_mb`,
and SQLite's `hard_heap_limit`): the parent watches a clock in shared memory that
`execute_sql` sets at the start of each query, and kills the worker (SIGKILL) when a query
has run `timeout_s + HARD_KILL_SLACK_S` seconds; the worker is restarted for the rest of its
batch. So every query ends within its time limit plus HARD_KILL_SLACK_S (0.5 s) and the
kill-and-reap latency (milliseconds), whatever the statement does; a killed or dead worker's
item is reported through `on_fail` and the run goes on.

Connections are cached per database file in each process (`_CONNECTIONS`), so a worker that
scores many questions of one database opens it once.

Text is decoded as the official Spider evaluator does (`bytes.decode(errors="ignore")`).
"""
from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 100_000
MAX_VALUE_BYTES = 1_000_000       # SQLITE_LIMIT_LENGTH: longest string/blob a query may build
MAX_SQL_CHARS = 100_000           # longer SQL text is refused before anything looks at it
PROGRESS_STEPS = 1_000            # VM instructions between two clock checks
HARD_KILL_SLACK_S = 0.5           # a worker still in a query at timeout + this is killed
DEFAULT_MEMORY_MB = 2048          # memory a worker may add to its size at start
MAX_TIMEOUT_S = 86_400.0          # the largest time limit accepted (one day)

# SQLite's own limits on every connection (Spider needs: SQL <= 600 chars, values <= 213 bytes,
# LIKE patterns <= 12 chars, 2 compound SELECTs, 3 function arguments; the defaults are
# 1e9 bytes, 1e9 bytes, 50,000, 500 and 127).
SQLITE_LIMITS = {
    sqlite3.SQLITE_LIMIT_LENGTH: MAX_VALUE_BYTES,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: MAX_SQL_CHARS,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1_000,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 32,
    sqlite3.SQLITE_LIMIT_COLUMN: 1_000,
    sqlite3.SQLITE_LIMIT_VDBE_OP: 1_000_000,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
}

# Error kinds of an ExecResult.
OK = "ok"
SYNTAX_ERROR = "syntax_error"
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
OTHER_ERROR = "other_error"
TIMEOUT = "timeout"
TOO_MANY_ROWS = "too_many_rows"
FORBIDDEN = "forbidden"

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}


@dataclass
class ExecResult:
    """Outcome of one statement: `rows` (list of tuples) when `ok`, else `error` and `message`."""

    rows: list[tuple] | None = None
    error: str | None = None          # None when ok, else one of the kinds above
    message: str = ""
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """`"<kind>: <short reason>"` for an error, `"ok"` otherwise."""
        if self.ok:
            return OK
        msg = " ".join(self.message.split())
        if len(msg) > 160:
            msg = msg[:157] + "..."
        return f"{self.error}: {msg}" if msg else self.error


def _authorizer(action: int, arg1: Any, arg2: Any, dbname: Any, source: Any) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and isinstance(arg2, str) and arg2.lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class _Deadline:
    """The progress handler of one connection: interrupts when the current deadline has passed."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired = False

    def __call__(self) -> int:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.fired = True
            return 1          # non-zero: SQLite aborts the statement with SQLITE_INTERRUPT
        return 0


@dataclass
class _Conn:
    conn: sqlite3.Connection
    deadline: _Deadline


_CONNECTIONS: dict[str, _Conn] = {}
_LOCK = threading.Lock()


def _uri(path: Path) -> str:
    # Percent-encode what a URI path may not contain literally.
    quoted = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=ro&immutable=1"


def open_readonly(db_path: str | os.PathLike) -> sqlite3.Connection:
    """A new read-only, locked-down connection to `db_path` (no progress handler yet)."""
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database file not found: {path}")
    conn = sqlite3.connect(_uri(path), uri=True, isolation_level=None, check_same_thread=False)
    conn.text_factory = lambda b: b.decode(errors="ignore")
    try:
        conn.enable_load_extension(False)
    except AttributeError:     # Python built without extension support: already impossible
        pass
    for category, limit in SQLITE_LIMITS.items():
        conn.setlimit(category, limit)
    conn.set_authorizer(_authorizer)
    return conn


def _get(db_path: str | os.PathLike) -> _Conn:
    key = str(Path(db_path).resolve())
    with _LOCK:
        entry = _CONNECTIONS.get(key)
        if entry is None:
            conn = open_readonly(key)
            deadline = _Deadline()
            conn.set_progress_handler(deadline, PROGRESS_STEPS)
            entry = _Conn(conn, deadline)
            _CONNECTIONS[key] = entry
        return entry


class DatabaseFault(ValueError):
    """What is wrong with a database file: `kind` is `header`, `truncated` or `damaged`."""

    def __init__(self, kind: str, message: str, detail: str):
        super().__init__(message)
        self.kind, self.detail = kind, detail


def check_database(db_path: str | os.PathLike) -> None:
    """`DatabaseFault` (a `ValueError`) saying what is wrong unless `db_path` is a complete,
    undamaged SQLite file.

    Checks the header (magic string; a size that is a whole number of pages, and at least the
    header's page count when that count is valid) and runs `PRAGMA quick_check` on a private
    read-only connection (about 4 ms per Spider database). One check for the scorer and the
    download stage (`data.check_sqlite`).
    """
    path = Path(db_path)
    with path.open("rb") as fh:
        head = fh.read(100)
    if not head.startswith(b"SQLite format 3\x00"):
        raise DatabaseFault("header", "not an SQLite database (bad header)", "bad header")
    size = path.stat().st_size
    page_size = int.from_bytes(head[16:18], "big") if len(head) >= 18 else 0
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(head[28:32], "big") if len(head) >= 32 else 0
    valid_count = len(head) == 100 and head[24:28] == head[92:96] and n_pages > 0
    if len(head) < 100 or (valid_count and size < n_pages * page_size) or size % max(page_size, 1):
        detail = f"{size} bytes, the header says {n_pages} pages of {page_size}"
        raise DatabaseFault("truncated", f"truncated: {detail}", detail)
    conn = sqlite3.connect(_uri(path.resolve()), uri=True)
    try:
        result = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        raise DatabaseFault("damaged", f"damaged ({exc})", str(exc)) from None
    finally:
        conn.close()
    if result != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in result[:3])
        raise DatabaseFault("damaged", f"damaged ({detail})", f"quick_check: {detail}")


_INHERITED: list = []


def forget_inherited() -> None:
    """In a forked worker: set aside the parent's cached connections without using or closing them.

    (An SQLite connection must not be carried across `fork()`; the worker opens its own.)
    """
    global _LOCK
    _LOCK = threading.Lock()
    _INHERITED.extend(_CONNECTIONS.values())
    _CONNECTIONS.clear()


def close_all() -> None:
    """Close the cached connections of this process."""
    with _LOCK:
        for entry in _CONNECTIONS.values():
            entry.conn.close()
        _CONNECTIONS.clear()


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$)|\()*", re.DOTALL)
_STATEMENT_WORDS = {"insert", "update", "delete", "replace", "upsert", "create", "drop", "alter",
                    "attach", "detach", "pragma", "vacuum", "reindex", "analyze", "begin", "commit",
                    "end", "rollback", "savepoint", "release"}


def first_keyword(sql: str) -> str:
    """The first word of `sql`, lower-cased, after whitespace, comments and parentheses."""
    m = re.match(r"[A-Za-z_]+", sql[_LEADING_NOISE.match(sql).end():])
    return m.group(0).lower() if m else ""


_SYNTAX_PATTERNS = ("syntax error", "incomplete input", "unrecognized token", "near \"")


def classify_error(exc: BaseException) -> str:
    """Map an sqlite3 exception to an error kind."""
    msg = str(exc).lower()
    if isinstance(exc, sqlite3.ProgrammingError) and "one statement" in msg:
        return FORBIDDEN
    if isinstance(exc, sqlite3.Warning) and "one statement" in msg:   # older Pythons
        return FORBIDDEN
    if any(p in msg for p in ("not authorized", "authorization denied", "readonly database", "read-only")):
        return FORBIDDEN
    if msg.startswith("no such table") or "no such view" in msg:
        return UNKNOWN_TABLE
    if msg.startswith("no such column"):
        return UNKNOWN_COLUMN
    if any(p in msg for p in _SYNTAX_PATTERNS):
        return SYNTAX_ERROR
    return OTHER_ERROR


def check_timeout(timeout_s: Any, name: str = "timeout_s") -> float:
    """`timeout_s` as a float; `ValueError` unless it is a finite number in (0, MAX_TIMEOUT_S]."""
    try:
        t = float(timeout_s)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {timeout_s!r}") from None
    if isinstance(timeout_s, bool) or not math.isfinite(t) or not 0 < t <= MAX_TIMEOUT_S:
        raise ValueError(f"{name} must be a finite number of seconds in (0, {MAX_TIMEOUT_S:g}], "
                         f"got {timeout_s!r}")
    return t


# In a worker of `isolation.run_isolated`: shared doubles [query start (time.monotonic), query tag,
# item start, items of the batch finished]; 0.0 means "none running". CLOCK_MONOTONIC is one clock for all processes.
_CLOCK = None


def _fetch_all(cur: sqlite3.Cursor, max_rows: int) -> list[tuple] | None:
    """All rows, or None when there are more than `max_rows`."""
    rows: list[tuple] = []
    batch = max(1, min(1000, max_rows + 1))
    while True:
        chunk = cur.fetchmany(batch)
        if not chunk:
            return rows
        rows.extend(chunk)
        if len(rows) > max_rows:
            return None


def execute_sql(db_path: str | os.PathLike, sql: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                max_rows: int = DEFAULT_MAX_ROWS, tag: int = 0) -> ExecResult:
    """Run one untrusted statement read-only on `db_path`.

    Never raises for anything the SQL text can cause; a missing database file raises
    `FileNotFoundError` (that is a configuration problem, not a prediction error), and a
    time limit that is not a finite positive number raises `ValueError`. In this process the
    limit is the progress handler's (see the module docstring for what it cannot stop);
    `isolation.run_isolated` adds the hard kill. `tag` is what a killed query is reported as (`on_fail`).
    """
    timeout_s = check_timeout(timeout_s)
    start = time.monotonic()
    if sql is None:
        return ExecResult(error=SYNTAX_ERROR, message="empty query")
    sql = str(sql)
    if len(sql) > MAX_SQL_CHARS:
        return ExecResult(error=OTHER_ERROR, message=f"query longer than {MAX_SQL_CHARS} characters")
    if not sql.strip().strip(";").strip():
        return ExecResult(error=SYNTAX_ERROR, message="empty query")
    entry = _get(db_path)
    word = first_keyword(sql)
    if word in _STATEMENT_WORDS:
        return ExecResult(error=FORBIDDEN, message=f"only queries are allowed, not {word.upper()}")
    conn, deadline = entry.conn, entry.deadline
    deadline.deadline = start + timeout_s
    deadline.fired = False
    clock = _CLOCK
    if clock is not None:
        clock[1] = float(tag)
        clock[0] = start
    cur = None
    try:
        cur = conn.cursor()
        cur.execute(sql)
        if cur.description is None:       # only comments: nothing was run
            return ExecResult(error=SYNTAX_ERROR, message="empty query", seconds=time.monotonic() - start)
        rows = _fetch_all(cur, max_rows)
        if rows is None:
            return ExecResult(error=TOO_MANY_ROWS, message=f"more than {max_rows} rows",
                              seconds=time.monotonic() - start)
        columns = [d[0] for d in cur.description]
        return ExecResult(rows=rows, columns=columns, seconds=time.monotonic() - start)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as exc:
        elapsed = time.monotonic() - start
        if deadline.fired or (isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted"
                              and elapsed >= timeout_s):
            return ExecResult(error=TIMEOUT, message=f"exceeded {timeout_s:g} s", seconds=elapsed)
        if isinstance(exc, MemoryError) or "out of memory" in str(exc):
            return ExecResult(error=OTHER_ERROR, message="out of memory", seconds=elapsed)
        if isinstance(exc, UnicodeEncodeError):
            return ExecResult(error=OTHER_ERROR, message="query is not valid Unicode text", seconds=elapsed)
        return ExecResult(error=classify_error(exc), message=str(exc), seconds=elapsed)
    finally:
        if clock is not None:
            clock[0] = 0.0
        deadline.deadline = None
        if cur is not None:
            try:
                cur.close()
            except sqlite3.Error:
                pass
