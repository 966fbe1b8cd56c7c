"""The score_sql stage: outputs on real databases, the gold-vs-gold self-check, clear errors."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA") or REPO.parent / "shared" / "data")
SPIDER = SHARED / "spider"
DB_DIR = SPIDER / "database"

pytestmark = pytest.mark.skipif(not (DB_DIR / "concert_singer" / "concert_singer.sqlite").is_file(),
                                reason=f"Spider databases not found under {DB_DIR} "
                                       f"(set SQLTRADEOFF_SHARED_DATA)")

_spec = importlib.util.spec_from_file_location("score_sql_stage", REPO / "stages" / "score_sql.py")
stage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PREDS = [
    {"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT count(*) FROM singer",
     "pred_sql": "select  count(*) from singer", "hardness": "easy", "question": "How many singers?"},
    {"id": "b", "db_id": "concert_singer", "gold_sql": "SELECT name FROM singer ORDER BY age",
     "pred_sql": "SELECT name FROM singer ORDER BY age DESC", "hardness": "medium"},
    {"id": "c", "db_id": "pets_1", "gold_sql": "SELECT count(*) FROM Pets",
     "pred_sql": "SELECT count(*) FROM pet", "hardness": "easy"},
    {"id": "d", "db_id": "world_1", "gold_sql": "SELECT Name FROM city WHERE Population > 9000000",
     "pred_sql": "SELECT Name FROM city WHERE Population > 1e12", "hardness": "hard"},
    {"id": "e", "db_id": "car_1", "gold_sql": "SELECT count(*) FROM cars_data",
     "pred_sql": "SELECT count(*) * 1.0 FROM cars_data"},
]


def run(argv, capsys):
    rc = stage.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_scores_rows_and_metrics(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", PREDS)
    rows_path, metrics_path = tmp_path / "out" / "rows.jsonl", tmp_path / "out" / "m.json"
    rc, out, err = run([preds, "--db-dir", DB_DIR, "--out-rows", rows_path, "--out-metrics", metrics_path,
                        "--workers", "2", "--timeout", "5"], capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert [r["exec_match"] for r in rows] == [1, 0, 0, 0, 1]
    assert [r["exact_match"] for r in rows] == [1, 0, 0, 0, 0]
    assert rows[0]["error"] is None
    assert rows[1]["error"].startswith("wrong_result: ")
    assert rows[2]["error"].startswith("unknown_table: no such table: pet")
    assert rows[3]["error"].startswith("empty_result: ")
    assert [r["hardness"] for r in rows] == ["easy", "medium", "easy", "hard", None]
    assert set(rows[0]) == {"id", "exec_match", "error", "exact_match", "hardness"}
    m = json.loads(metrics_path.read_text())
    assert m["n"] == 5 and m["n_correct"] == 2 and m["execution_accuracy"] == pytest.approx(0.4)
    assert m["exact_match"] == pytest.approx(0.2)
    assert m["by_hardness"] == {"easy": {"n": 2, "execution_accuracy": 0.5},
                                "medium": {"n": 1, "execution_accuracy": 0.0},
                                "hard": {"n": 1, "execution_accuracy": 0.0}}
    assert m["by_error"] == {"match": 2, "wrong_result": 1, "unknown_table": 1, "empty_result": 1}
    assert "execution accuracy 0.4000 (2/5)" in out


def test_gold_vs_gold_on_all_dev_questions(tmp_path, capsys):
    dev = json.loads((SPIDER / "dev.json").read_text())
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": f"dev-{i:04d}", "db_id": e["db_id"], "gold_sql": e["query"], "pred_sql": None}
        for i, e in enumerate(dev) if (DB_DIR / e["db_id"] / f"{e['db_id']}.sqlite").is_file()])
    rc, out, err = run([preds, "--db-dir", DB_DIR, "--gold-vs-gold", "--out-metrics", tmp_path / "m.json",
                        "--no-progress"], capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 972 and m["execution_accuracy"] == 1.0 and m["exact_match"] == 1.0


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT 1", "pred_sql": "SELECT 1"}\n{not json\n',
     "p.jsonl:2: not valid JSON"),
    ('{"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT 1"}\n', "p.jsonl:1: missing field(s) pred_sql"),
    ('[1, 2]\n', "p.jsonl:1: expected a JSON object"),
    ('{"id": "a", "db_id": "concert_singer", "gold_sql": 3, "pred_sql": "SELECT 1"}\n', "`gold_sql` must be"),
    ('{"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT 1", "pred_sql": 5}\n', "`pred_sql` must be"),
    ('{"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT 1", "pred_sql": ""}\n'
     '{"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT 1", "pred_sql": ""}\n', "appears twice"),
    ('\n', "no predictions"),
    ('{"id": "a", "db_id": "wta_1", "gold_sql": "SELECT 1", "pred_sql": "SELECT 1"}\n'
     '{"id": "b", "db_id": "no_such_db", "gold_sql": "SELECT 1", "pred_sql": "SELECT 1"}\n',
     "2 prediction(s) name database(s) not found in --db-dir"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, content, message):
    preds = tmp_path / "p.jsonl"
    preds.write_text(content)
    rows_path = tmp_path / "rows.jsonl"
    rc, out, err = run([preds, "--db-dir", DB_DIR, "--out-rows", rows_path], capsys)
    assert rc == 2
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not rows_path.exists()


def test_unknown_database_message_names_it_and_the_db_dir(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", [dict(PREDS[0], db_id="wta_1")])
    rc, _, err = run([preds, "--db-dir", DB_DIR], capsys)
    assert rc == 2 and "wta_1" in err and str(DB_DIR) in err


def test_missing_files_and_bad_options(tmp_path, capsys):
    rc, _, err = run([tmp_path / "nope.jsonl", "--db-dir", DB_DIR], capsys)
    assert rc == 2 and "nope.jsonl: file not found" in err
    preds = write_jsonl(tmp_path / "p.jsonl", PREDS[:1])
    rc, _, err = run([preds, "--db-dir", tmp_path / "no_dir"], capsys)
    assert rc == 2 and "no_dir" in err and "directory not found" in err
    rc, _, err = run([preds, "--db-dir", DB_DIR, "--timeout", "0"], capsys)
    assert rc == 2 and "--timeout" in err


def test_cli_subprocess_exit_code_and_help(tmp_path):
    env = dict(os.environ, PYTHONPATH="")
    bad = tmp_path / "p.jsonl"
    bad.write_text("{oops\n")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "score_sql.py"), str(bad), "--db-dir", str(DB_DIR)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "p.jsonl:1: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    helped = subprocess.run([sys.executable, str(REPO / "stages" / "score_sql.py"), "--help"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert helped.returncode == 0 and "--gold-vs-gold" in helped.stdout and "--db-dir" in helped.stdout


# ----------------------------------------------------------------------------- input faults (issue 14)

GOOD = {"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT count(*) FROM singer",
        "pred_sql": "SELECT count(*) FROM singer"}
_GOOD_TAIL = '"db_id": "concert_singer", "gold_sql": "SELECT 1", "pred_sql": "SELECT 1"}\n'


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, str(REPO / "stages" / "score_sql.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def _assert_refused(proc, message, tmp_path, allowed=()):
    """exit 2, exactly one line on stderr, `error: ` with `message`, no traceback, no output."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == sorted(allowed), left


@pytest.mark.parametrize("content, message", [
    (b'{"id": "a", "db_id": "concert_singer", "gold_sql": "SELECT \xe9", "pred_sql": "x"}\n',
     "p.jsonl:1: not UTF-8 text"),
    (b'{"id": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b", " + _GOOD_TAIL.encode(),
     "p.jsonl:1: JSON nested too deeply"),
    (('{"id": ' + "7" * 5000 + ", " + _GOOD_TAIL).encode(), "p.jsonl:1: Exceeds the limit"),
    (('{"id": "\\ud800", ' + _GOOD_TAIL).encode(), "record 1: `id` is not valid Unicode text"),
    (('{"id": NaN, ' + _GOOD_TAIL).encode(), "p.jsonl:1: NaN is not valid JSON"),
    (('{"id": "a", "hardness": Infinity, ' + _GOOD_TAIL).encode(), "p.jsonl:1: Infinity is not valid JSON"),
    (('{"id": ["a"], ' + _GOOD_TAIL).encode(), "`id` must be a string or a number"),
], ids=["latin1", "deep_nesting", "5000_digit_id", "lone_surrogate", "nan_id", "inf", "list_id"])
def test_bad_prediction_file_is_one_error_line(tmp_path, content, message):
    (tmp_path / "p.jsonl").write_bytes(content)
    proc = _cli(["p.jsonl", "--db-dir", DB_DIR, "--out-rows", "out/rows.jsonl",
                 "--out-metrics", "out/m.json"], tmp_path)
    _assert_refused(proc, message, tmp_path, ["p.jsonl"])


@pytest.mark.parametrize("db_id", ["/etc/passwd", "../concert_singer", "concert_singer/../pets_1",
                                   "a/b", "a\\b", "..", str(DB_DIR / "concert_singer")])
def test_db_id_that_is_a_path_is_refused(tmp_path, db_id):
    write_jsonl(tmp_path / "p.jsonl", [dict(GOOD, db_id=db_id)])
    proc = _cli(["p.jsonl", "--db-dir", DB_DIR, "--out-rows", "rows.jsonl"], tmp_path)
    _assert_refused(proc, "is not a database name", tmp_path, ["p.jsonl"])


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e308", "-1", "0", "-inf"])
def test_timeout_that_switches_the_limit_off_is_refused(tmp_path, timeout):
    write_jsonl(tmp_path / "p.jsonl", [GOOD])
    proc = _cli(["p.jsonl", "--db-dir", DB_DIR, "--out-rows", "rows.jsonl", f"--timeout={timeout}"],
                tmp_path)
    _assert_refused(proc, "--timeout must be a finite number of seconds", tmp_path, ["p.jsonl"])


def test_out_rows_that_is_a_directory_is_refused(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [GOOD])
    (tmp_path / "rows").mkdir()
    proc = _cli(["p.jsonl", "--db-dir", DB_DIR, "--out-rows", "rows", "--out-metrics", "m.json"], tmp_path)
    _assert_refused(proc, "--out-rows rows: is a directory", tmp_path, ["p.jsonl", "rows"])


def test_unwritable_out_metrics_leaves_no_rows(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [GOOD])
    (tmp_path / "afile").write_text("x")
    proc = _cli(["p.jsonl", "--db-dir", DB_DIR, "--out-rows", "rows.jsonl",
                 "--out-metrics", "afile/m.json"], tmp_path)
    _assert_refused(proc, "--out-metrics afile/m.json: afile is not a directory", tmp_path,
                    ["afile", "p.jsonl"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_read_only_out_dir_is_refused(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [GOOD])
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        proc = _cli(["p.jsonl", "--db-dir", DB_DIR, "--out-rows", "rows.jsonl",
                     "--out-metrics", "ro/m.json"], tmp_path)
        _assert_refused(proc, "is not writable", tmp_path, ["p.jsonl", "ro"])
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_write_texts_is_all_or_nothing(tmp_path):
    from sqltradeoff.io import write_texts
    (tmp_path / "blocker").mkdir()          # a rename onto a directory fails
    with pytest.raises(OSError):
        write_texts([(tmp_path / "rows.jsonl", "x\n"), (tmp_path / "blocker", "{}\n")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is unusable: truncated"),
    ("garbage", "is unusable: damaged"),
    ("empty", "is unusable: not an SQLite database"),
])
def test_damaged_database_is_one_error_line_naming_it(tmp_path, damage, message):
    """A damaged database would score every question on it 0 (`gold_error`) and exit 0: refused."""
    work = tmp_path / "work"
    db = work / "db" / "concert_singer" / "concert_singer.sqlite"
    db.parent.mkdir(parents=True)
    data = bytearray((DB_DIR / "concert_singer" / "concert_singer.sqlite").read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "garbage":
        data[4096:8192] = bytes(range(256)) * 16
    else:
        data = b""
    db.write_bytes(bytes(data))
    write_jsonl(work / "p.jsonl", [GOOD])
    proc = _cli(["p.jsonl", "--db-dir", "db", "--out-rows", "rows.jsonl", "--out-metrics", "m.json"], work)
    _assert_refused(proc, f"database concert_singer (db/concert_singer/concert_singer.sqlite) {message}",
                    work, ["db", "db/concert_singer", "db/concert_singer/concert_singer.sqlite", "p.jsonl"])


def test_nan_is_never_written(tmp_path, capsys):
    from sqltradeoff.io import dumps_jsonl
    with pytest.raises(ValueError):
        dumps_jsonl([{"id": float("nan")}], allow_nan=False)
    preds = write_jsonl(tmp_path / "p.jsonl", [dict(GOOD, id=1.5), dict(GOOD, id=7)])
    rc, _, err = run([preds, "--db-dir", DB_DIR, "--out-rows", tmp_path / "r.jsonl", "--no-progress"], capsys)
    assert rc == 0, err
    assert [json.loads(line)["id"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == [1.5, 7]
