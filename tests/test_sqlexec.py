"""Safe execution of untrusted SQL on the real Spider databases.

Hostile statements run on a temporary copy of every Spider database, so that /work/shared is
never at risk; afterwards every file's sha256 must be unchanged and no file may have appeared.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from sqltradeoff import sqlexec
from sqltradeoff.sqlexec import execute_sql

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA") or REPO.parent / "shared" / "data")
DB_DIR = SHARED / "spider" / "database"

pytestmark = pytest.mark.skipif(not (DB_DIR / "concert_singer" / "concert_singer.sqlite").is_file(),
                                reason=f"Spider databases not found under {DB_DIR} "
                                       f"(set SQLTRADEOFF_SHARED_DATA)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def db_copy(tmp_path_factory):
    """A temporary copy of every Spider database (<db_id>/<db_id>.sqlite), plus its snapshot."""
    root = tmp_path_factory.mktemp("spider_db_copy")
    for src in sorted(DB_DIR.glob("*/*.sqlite")):
        dest = root / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    yield root, _snapshot(root)
    sqlexec.close_all()


def _db(root: Path, db_id: str) -> Path:
    return root / db_id / f"{db_id}.sqlite"


def test_select_returns_rows_and_columns():
    res = execute_sql(DB_DIR / "concert_singer" / "concert_singer.sqlite",
                      "SELECT name, age FROM singer WHERE country = 'France' ORDER BY age")
    assert res.ok and res.error is None
    assert res.columns == ["Name", "Age"]
    assert res.rows == [("Tribal King", 25), ("Justin Brown", 29), ("Rose White", 41), ("John Nizinik", 43)]


@pytest.mark.parametrize("sql, kind", [
    ("SELEC name FROM singer", "syntax_error"),
    ("SELECT name FROM singer WHERE", "syntax_error"),
    ("SELECT name FROM singers", "unknown_table"),
    ("SELECT nme FROM singer", "unknown_column"),
    ("SELECT no_such_function(name) FROM singer", "other_error"),
    ("", "syntax_error"),
    ("  ;  ", "syntax_error"),
    ("-- only a comment", "syntax_error"),
    ("/* a comment */ ;", "syntax_error"),
    ("SELECT 1\x00", "other_error"),
])
def test_error_kinds(sql, kind):
    res = execute_sql(DB_DIR / "concert_singer" / "concert_singer.sqlite", sql)
    assert not res.ok and res.error == kind, res.describe()
    assert res.describe().startswith(kind)


def test_ambiguous_column_is_other_error():
    res = execute_sql(DB_DIR / "concert_singer" / "concert_singer.sqlite",
                      "SELECT Singer_ID FROM singer JOIN singer_in_concert")
    assert res.error == "other_error" and "ambiguous" in res.message


def test_row_cap():
    db = DB_DIR / "world_1" / "world_1.sqlite"
    assert execute_sql(db, "SELECT * FROM city", max_rows=5000).ok
    res = execute_sql(db, "SELECT * FROM city", max_rows=4078)      # the table has 4,079 rows
    assert res.error == "too_many_rows"
    assert len(execute_sql(db, "SELECT * FROM city", max_rows=4079).rows) == 4079


def test_connections_are_cached_per_database():
    sqlexec.close_all()
    db = DB_DIR / "pets_1" / "pets_1.sqlite"
    execute_sql(db, "SELECT 1")
    conn = sqlexec._CONNECTIONS[str(db.resolve())].conn
    execute_sql(db, "SELECT count(*) FROM Pets")
    assert sqlexec._CONNECTIONS[str(db.resolve())].conn is conn
    assert len(sqlexec._CONNECTIONS) == 1
    sqlexec.close_all()
    assert not sqlexec._CONNECTIONS


def test_missing_database_raises():
    with pytest.raises(FileNotFoundError):
        execute_sql(DB_DIR / "wta_1" / "wta_1.sqlite", "SELECT 1")


def test_recursive_cte_that_ends_is_allowed():
    res = execute_sql(DB_DIR / "pets_1" / "pets_1.sqlite",
                      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
                      "SELECT sum(x) FROM c")
    assert res.rows == [(15,)]


# ----------------------------------------------------------------------------- time limit

@pytest.mark.parametrize("sql", [
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM city a, city b, city c, city d, city e, city f",
    # the time limit also applies while rows are being fetched
    "SELECT a.ID, b.ID FROM city a, city b, city c WHERE a.Name || b.Name || c.Name = 'x' OR 1",
    "SELECT * FROM city a, city b ORDER BY random()",          # a 16.6M-row sort
])
def test_runaway_queries_end_within_the_time_limit(db_copy, sql):
    root, _ = db_copy
    limit = 1.0
    t0 = time.monotonic()
    res = execute_sql(_db(root, "world_1"), sql, timeout_s=limit, max_rows=10**9)
    elapsed = time.monotonic() - t0
    assert res.error == "timeout", res.describe()
    assert limit * 0.9 <= elapsed < limit + 0.75, elapsed
    # the cached connection still works after an interrupt
    assert execute_sql(_db(root, "world_1"), "SELECT count(*) FROM city").rows == [(4079,)]


# ----------------------------------------------------------------------------- hostile SQL

HOSTILE = [
    "DELETE FROM singer",
    "UPDATE singer SET name = 'x'",
    "INSERT INTO singer (Singer_ID, Name) VALUES (99, 'x')",
    "REPLACE INTO singer (Singer_ID, Name) VALUES (1, 'x')",
    "DROP TABLE singer",
    "DROP VIEW IF EXISTS v",
    "CREATE TABLE t (x)",
    "CREATE TEMP TABLE t (x)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE INDEX i ON singer (name)",
    "CREATE TRIGGER tr AFTER INSERT ON singer BEGIN DELETE FROM singer; END",
    "ALTER TABLE singer ADD COLUMN x",
    "ALTER TABLE singer RENAME TO s2",
    "ATTACH DATABASE '{other}' AS other",
    "ATTACH DATABASE '{new_file}' AS newdb",
    "DETACH DATABASE main",
    "PRAGMA writable_schema = 1",
    "PRAGMA journal_mode = WAL",
    "PRAGMA journal_mode",
    "PRAGMA table_info(singer)",
    "PRAGMA query_only = 0",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT load_extension('libsqlite3_mod_evil')",
    "VACUUM",
    "VACUUM INTO '{new_file}'",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "COMMIT",
    "SAVEPOINT s",
    "SELECT 1; DELETE FROM singer",
    "SELECT count(*) FROM singer; DROP TABLE singer;",
    "DELETE FROM singer; SELECT 1",
    "WITH x AS (SELECT 1) DELETE FROM singer",
    "INSERT INTO singer SELECT * FROM singer",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_statements_fail_safely(db_copy, template):
    root, _ = db_copy
    new_file = root / "created_by_attack.db"
    sql = template.format(other=_db(root, "pets_1"), new_file=new_file)
    res = execute_sql(_db(root, "concert_singer"), sql, timeout_s=5)
    assert not res.ok, f"{sql!r} was allowed"
    assert res.error == "forbidden", res.describe()
    assert not new_file.exists()


def test_nothing_changed_after_hostile_statements(db_copy):
    root, before = db_copy
    for template in HOSTILE:          # once more, on several databases
        for db_id in ("concert_singer", "pets_1", "car_1", "world_1"):
            sql = template.replace("singer", "t").format(other=_db(root, "pets_1"),
                                                          new_file=root / "x.db")
            assert not execute_sql(_db(root, db_id), sql, timeout_s=5).ok
    sqlexec.close_all()
    after = _snapshot(root)
    assert after.keys() == before.keys(), f"new or missing files: {set(after) ^ set(before)}"
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, changed
    assert len(before) >= 160


def test_the_file_cannot_be_written_even_without_the_authorizer(db_copy):
    """Second layer: the URI opens the file read-only, so a write fails even if allowed."""
    root, _ = db_copy
    db = _db(root, "pets_1")
    before = _sha256(db)
    conn = sqlexec.open_readonly(db)
    conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        conn.execute("DELETE FROM Pets")
    conn.close()
    assert _sha256(db) == before


def test_huge_strings_are_refused(db_copy):
    root, _ = db_copy
    res = execute_sql(_db(root, "pets_1"), "SELECT zeroblob(100000000)", timeout_s=5)
    assert res.error == "other_error" and "too big" in res.message
