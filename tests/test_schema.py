"""Schema text read from SQLite files."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sqltradeoff import schema
from sqltradeoff.errors import UserError
from shared_paths import CONCERT_SINGER_DB, needs

REPO = Path(__file__).resolve().parents[1]
DB = CONCERT_SINGER_DB


@needs(DB)
def test_real_database_schema():
    text = schema.schema_text(DB)
    lines = text.splitlines()
    con = sqlite3.connect(f"{DB.resolve().as_uri()}?mode=ro", uri=True)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")]
    con.close()
    assert tables == ["stadium", "singer", "concert", "singer_in_concert"]
    assert len(lines) == 4
    for name, line in zip(tables, lines):
        assert line.startswith(f'CREATE TABLE "{name}" (') and line.endswith(");")
        assert "\n" not in line and "  " not in line
    assert 'FOREIGN KEY ("Stadium_ID") REFERENCES "stadium"("Stadium_ID")' in lines[2]
    with_rows = schema.schema_text(DB, 2).splitlines()
    assert len(with_rows) == 4 + 4 * 2
    assert with_rows[1] == "INSERT INTO \"stadium\" VALUES (1, 'Raith Rovers', 'Stark''s Park', 10104, 4812, 1294, 2106);"


def test_normalise_and_literals(tmp_path):
    db = tmp_path / "x.sqlite"
    con = sqlite3.connect(db)
    con.execute('CREATE TABLE "a b"(\n\tid   INTEGER ,\n  note TEXT\n)')
    con.execute('CREATE TABLE t2 (v BLOB)')
    con.execute("INSERT INTO \"a b\" VALUES (1, ?)", ("x" * 100,))
    con.execute("INSERT INTO \"a b\" VALUES (2, NULL)")
    con.execute("INSERT INTO t2 VALUES (?)", (b"\x00\x01",))
    con.commit()
    con.close()
    assert schema.schema_text(db) == 'CREATE TABLE "a b"(id INTEGER, note TEXT);\nCREATE TABLE t2 (v BLOB);'
    rows = schema.schema_text(db, 5).splitlines()
    assert rows[1] == f"INSERT INTO \"a b\" VALUES (1, '{'x' * 60}...');"
    assert rows[2] == 'INSERT INTO "a b" VALUES (2, NULL);'
    assert rows[4] == "INSERT INTO \"t2\" VALUES (X'0001');"


def test_read_only_and_cache(tmp_path):
    db = tmp_path / "x.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id int)")
    con.commit()
    con.close()
    before = db.read_bytes()
    schema.schema_text(db)
    hits = schema._schema_text.cache_info().hits
    schema.schema_text(db)
    assert schema._schema_text.cache_info().hits == hits + 1
    assert db.read_bytes() == before
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        schema.connect_readonly(db).execute("CREATE TABLE u (x int)")
    # a changed file is read again, not served stale from the cache
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE u (x int)")
    con.commit()
    con.close()
    assert "CREATE TABLE u" in schema.schema_text(db)


def test_errors(tmp_path):
    with pytest.raises(UserError, match="database not found"):
        schema.schema_text(tmp_path / "nope.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all" * 100)
    with pytest.raises(UserError, match="cannot read the schema"):
        schema.schema_text(bad)
    with pytest.raises(UserError, match="sample_rows"):
        schema.schema_text(bad, -1)
    with pytest.raises(UserError, match="invalid db_id"):
        schema.db_path(tmp_path, "../etc")
