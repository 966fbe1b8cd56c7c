"""Database schema text for prompts, read from the SQLite file itself.

`schema_text(db_path)` gives the CREATE TABLE statements stored in `sqlite_master` (whitespace
normalised: one statement per line, runs of blanks collapsed, a `;` at the end), in the order
the tables were created, and optionally the first `sample_rows` rows of each table as INSERT
statements. Databases are opened read-only; results are cached per (file, sample_rows).
"""
from __future__ import annotations

import functools
import os
import re
import sqlite3
from pathlib import Path

from .errors import UserError

MAX_VALUE_CHARS = 60
_WS = re.compile(r"\s+")


def normalise_sql(sql: str) -> str:
    """Collapse whitespace (newlines, tabs, runs of blanks) and tidy parenthesis spacing."""
    s = _WS.sub(" ", sql).strip().rstrip(";").strip()
    s = re.sub(r"\(\s+", "(", s)
    s = re.sub(r"\s+\)", ")", s)
    s = re.sub(r"\s+,", ",", s)
    return s + ";"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        return "X'" + value[:16].hex() + "'"
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "..."
    return "'" + text.replace("'", "''") + "'"


def connect_readonly(db_path: str | os.PathLike) -> sqlite3.Connection:
    path = Path(db_path)
    if not path.is_file():
        raise UserError(f"{path}: database not found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


def schema_text(db_path: str | os.PathLike, sample_rows: int = 0) -> str:
    """CREATE TABLE statements of a database (+ `sample_rows` INSERT lines per table)."""
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 0:
        raise UserError(f"params: prompt.sample_rows must be a non-negative integer, got {sample_rows!r}")
    path = Path(db_path).resolve()
    if not path.is_file():
        raise UserError(f"{path}: database not found")
    st = path.stat()
    return _schema_text(str(path), sample_rows, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=512)
def _schema_text(path: str, sample_rows: int, _mtime: int, _size: int) -> str:
    try:
        conn = connect_readonly(path)
        try:
            tables = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
            lines = []
            for name, sql in tables:
                lines.append(normalise_sql(sql))
                if sample_rows:
                    rows = conn.execute(f"SELECT * FROM {quote_ident(name)} LIMIT ?", (sample_rows,)).fetchall()
                    for row in rows:
                        values = ", ".join(sql_literal(v) for v in row)
                        lines.append(f"INSERT INTO {quote_ident(name)} VALUES ({values});")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: cannot read the schema ({exc})") from None
    if not lines:
        raise UserError(f"{path}: the database has no tables")
    return "\n".join(lines)


def db_path(db_dir: str | os.PathLike, db_id: str) -> Path:
    """`<db_dir>/<db_id>/<db_id>.sqlite` (Spider layout)."""
    if not db_id or "/" in db_id or "\\" in db_id or db_id.startswith("."):
        raise UserError(f"invalid db_id {db_id!r}")
    return Path(db_dir) / db_id / f"{db_id}.sqlite"
