"""Download stage logic: the real mirror, bad input, the hub/archive conversions with fakes."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import pytest

from sqltradeoff import data
from sqltradeoff.errors import UserError
from sqltradeoff.params import load_params
from sqltradeoff.io import read_json, read_jsonl, sha256_file
from shared_paths import SHARED, SPIDER, needs

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["high_school_computer_science", "philosophy", "high_school_macroeconomics"]
MMLU_CFG = {"subjects": SUBJECTS}
need_mirror = needs(SPIDER / "dev.json")


# ------------------------------------------------------------------ the real mirror

@need_mirror
def test_mirror_spider_counts_and_exclusions(tmp_path):
    out = tmp_path / "spider"
    m = data.spider_from_mirror(SHARED, out)
    dev = read_jsonl(out / "dev.jsonl")
    train = read_jsonl(out / "train.jsonl")
    assert m["counts"]["dev"] == {"source": 1034, "kept": 972, "excluded": 62}
    assert len(dev) == 972 and all("sql" in r for r in dev)
    excl_dev = m["excluded"]["missing_database"]["dev"]
    assert list(excl_dev) == ["wta_1"] and len(excl_dev["wta_1"]) == 62
    # ids are the index in dev.json; the excluded ones are exactly the wta_1 questions
    src = json.loads((SHARED / "spider" / "dev.json").read_text())
    assert {f"dev-{i:04d}" for i, ex in enumerate(src) if ex["db_id"] == "wta_1"} == set(excl_dev["wta_1"])
    assert dev[0]["id"] == "dev-0000" and dev[0]["query"] == src[0]["query"]
    # train: the 7,000 stand-in pairs minus the questions on baseball_1 / soccer_1
    excl_train = m["excluded"]["missing_database"]["train"]
    assert set(excl_train) == {"baseball_1", "soccer_1"}
    n_excl = sum(len(v) for v in excl_train.values())
    assert m["counts"]["train"] == {"source": 7000, "kept": 7000 - n_excl, "excluded": n_excl}
    assert len(train) == 7000 - n_excl and train[0]["id"] == "train-00000"
    assert m["train_is_standin"] and any("stand-in" in w for w in m["warnings"])
    # only the .sqlite files are copied, one per database; the manifest hashes what was written
    files = sorted(p.relative_to(out).as_posix() for p in (out / "database").rglob("*") if p.is_file())
    assert len(files) == m["counts"]["databases"] == 163
    assert all(f.endswith(".sqlite") for f in files)
    assert m["files"]["dev.jsonl"] == sha256_file(out / "dev.jsonl")
    assert m["verified_against"] == "MANIFEST.sha256"
    assert read_json(out / "manifest.json")["counts"] == m["counts"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


@need_mirror
def test_mirror_mmlu_counts(tmp_path):
    m = data.mmlu_from_mirror(SHARED, MMLU_CFG, tmp_path / "mmlu")
    assert m["counts"] == {"high_school_computer_science": {"test": 100, "dev": 5},
                           "philosophy": {"test": 311, "dev": 5},
                           "high_school_macroeconomics": {"test": 390, "dev": 5}}
    test = read_jsonl(tmp_path / "mmlu" / "test.jsonl")
    assert len(test) == 801 and {r["answer"] for r in test} == set("ABCD")
    assert all(len(r["choices"]) == 4 for r in test)
    assert test[0]["id"] == "high_school_computer_science-test-0000"


# ------------------------------------------------------------------ a small fake mirror

def make_db(path: Path, table: str = "t") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE {table} (id int, name text)")
    con.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    con.commit()
    con.close()


def ex(db, q="How many?", sql=True):
    e = {"db_id": db, "question": q, "query": "SELECT count(*) FROM t"}
    if sql:
        e["sql"] = {"select": [False, []]}
    return e


def make_mirror(root: Path, with_manifest: bool = True) -> Path:
    sp = root / "spider"
    (sp / "database").mkdir(parents=True)
    (sp / "dev.json").write_text(json.dumps([ex("db1"), ex("gone"), ex("db1", "Names?")]))
    (sp / "train_spider.json").write_text(json.dumps([ex("db2", sql=False), ex("gone", sql=False)]))
    (sp / "tables.json").write_text(json.dumps([{"db_id": d} for d in ("db1", "db2", "gone")]))
    make_db(sp / "database" / "db1" / "db1.sqlite")
    make_db(sp / "database" / "db2" / "db2.sqlite")
    (sp / "database" / "db1" / "schema.sql").write_text("-- not copied")
    mm = root / "mmlu" / "data"
    for split, n in (("test", 3), ("dev", 2)):
        (mm / split).mkdir(parents=True)
        (mm / split / f"philosophy_{split}.csv").write_text(
            "".join(f'"Q{i}, with comma",a,b,c,d,{"ABCD"[i % 4]}\n' for i in range(n)))
    if with_manifest:
        lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
                 for p in sorted(root.rglob("*")) if p.is_file()]
        (root / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    return root


def test_fake_mirror_spider(tmp_path, capsys):
    root = make_mirror(tmp_path / "mirror")
    m = data.spider_from_mirror(root, tmp_path / "out")
    assert m["counts"]["dev"] == {"source": 3, "kept": 2, "excluded": 1}
    assert m["excluded"]["missing_database"] == {"train": {"gone": ["train-00001"]}, "dev": {"gone": ["dev-0001"]}}
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "dev.jsonl")] == ["dev-0000", "dev-0002"]
    assert not m["train_is_standin"]
    assert not (tmp_path / "out" / "database" / "db1" / "schema.sql").exists()
    assert m["databases_missing"] == ["gone"]
    assert "database `gone` is missing" in capsys.readouterr().err


def test_fake_mirror_mmlu_csv_with_quotes(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    m = data.mmlu_from_mirror(root, {"subjects": ["philosophy"]}, tmp_path / "out")
    test = read_jsonl(tmp_path / "out" / "test.jsonl")
    assert m["counts"] == {"philosophy": {"test": 3, "dev": 2}}
    assert test[1] == {"id": "philosophy-test-0001", "subject": "philosophy", "question": "Q1, with comma",
                       "choices": ["a", "b", "c", "d"], "answer": "B"}


def test_manifest_mismatch_names_the_file(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    (root / "spider" / "tables.json").write_text("[]")
    with pytest.raises(UserError, match=r"tables\.json: sha256 .* does not match"):
        data.spider_from_mirror(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failure_keeps_previous_output(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    out = tmp_path / "out"
    data.spider_from_mirror(root, out)
    before = (out / "dev.jsonl").read_bytes()
    (root / "spider" / "dev.json").write_text('[{"db_id": "db1", "question": "q"}]')
    with pytest.raises(UserError, match=r"dev\.json: example 0: missing field\(s\) query"):
        data.spider_from_mirror(root, out)
    assert (out / "dev.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "out"]


def test_bad_json_names_file_and_line(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    (root / "spider" / "dev.json").write_text('[\n{"db_id": "db1",\n oops}\n]')
    with pytest.raises(UserError, match=r"dev\.json:3: not valid JSON"):
        data.spider_from_mirror(root, tmp_path / "out")


def test_empty_question_rejected(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    (root / "spider" / "train_spider.json").write_text(json.dumps([ex("db2"), {**ex("db2"), "question": " "}]))
    with pytest.raises(UserError, match=r"train_spider\.json: example 1: field `question`"):
        data.spider_from_mirror(root, tmp_path / "out")


def test_standin_used_and_recorded_when_train_missing(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    (root / "spider" / "train_spider.json").unlink()
    (root / "spider_derived").mkdir()
    (root / data.STANDIN_TRAIN).write_text(json.dumps([ex("db2", sql=False)] * 3))
    m = data.spider_from_mirror(root, tmp_path / "out")
    assert m["train_is_standin"] and m["train_files"] == [data.STANDIN_TRAIN]
    assert m["counts"]["train"]["kept"] == 3


def test_not_a_sqlite_file(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    (root / "spider" / "database" / "db2" / "db2.sqlite").write_text("hello")
    with pytest.raises(UserError, match=r"db2\.sqlite: not a SQLite database"):
        data.spider_from_mirror(root, tmp_path / "out")


@pytest.mark.parametrize("row, msg", [
    ("q,a,b,c,d\n", r"philosophy_test\.csv:1: expected 6 columns"),
    ("q,a,b,c,d,A\nq2,a,b,c,d,E\n", r"philosophy_test\.csv:2: answer must be one of A, B, C, D, got 'E'"),
    ('"multi\nline",a,b,c,d,A\nq,a,b\n', r"philosophy_test\.csv:3: expected 6 columns"),
])
def test_bad_csv(tmp_path, row, msg):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    (root / "mmlu" / "data" / "test" / "philosophy_test.csv").write_text(row)
    with pytest.raises(UserError, match=msg):
        data.mmlu_from_mirror(root, {"subjects": ["philosophy"]}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_subject_file(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    with pytest.raises(UserError, match=r"anatomy_test\.csv: file not found"):
        data.mmlu_from_mirror(root, {"subjects": ["anatomy"]}, tmp_path / "out")


def test_missing_mirror_says_what_to_set(tmp_path):
    with pytest.raises(UserError, match=r"set data\.mirror_dir .* data\.source: hub"):
        data.spider_from_mirror(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(UserError, match=r"data\.mirror_dir is not set"):
        data.mmlu_from_mirror(None, MMLU_CFG, tmp_path / "out")


# ------------------------------------------------------------------ checksums, archives, download

def test_verify_sha256_removes_bad_file(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert data.verify_sha256(f, None) == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(UserError, match="does not match"):
        data.verify_sha256(f, "0" * 64)
    assert not f.exists()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_truncated_archive_is_an_error_and_removed(tmp_path, kind):
    content = {"x/y.txt": os.urandom(20000)}
    raw = _zip_bytes(content) if kind == "zip" else _tar_bytes(content)
    good = tmp_path / f"good.{kind}"
    good.write_bytes(raw)
    assert (data.extract_archive(good, tmp_path / "ok") / "x" / "y.txt").read_bytes() == content["x/y.txt"]
    bad = tmp_path / f"bad.{kind}"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        data.extract_archive(bad, tmp_path / "bad")
    assert not bad.exists()


def test_http_download_truncated_removes_partial(tmp_path, monkeypatch):
    import requests

    class FakeResponse:
        headers = {"content-length": "100"}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def raise_for_status(self):
            pass

        def iter_content(self, n):
            yield b"x" * 60

    monkeypatch.setattr(requests, "get", lambda *a, **k: FakeResponse())
    dest = tmp_path / "data.tar"
    with pytest.raises(UserError, match="truncated"):
        data.fetch_url("https://example.org/data.tar", dest)
    assert list(tmp_path.iterdir()) == []
    FakeResponse.headers = {"content-length": "60"}
    with pytest.raises(UserError, match="does not match"):
        data.fetch_url("https://example.org/data.tar", dest, "f" * 64)
    assert list(tmp_path.iterdir()) == []
    digest = data.fetch_url("https://example.org/data.tar", dest)
    assert dest.read_bytes() == b"x" * 60 and digest == hashlib.sha256(b"x" * 60).hexdigest()


# ------------------------------------------------------------------ hub path with fakes

def test_hub_mmlu_rows_convert_answers():
    rows = [{"question": "Q", "subject": "philosophy", "choices": ["w", "x", "y", "z"], "answer": 2}]
    assert data.hub_mmlu_rows(rows, "philosophy", "test") == [
        {"id": "philosophy-test-0000", "subject": "philosophy", "question": "Q",
         "choices": ["w", "x", "y", "z"], "answer": "C"}]
    with pytest.raises(UserError, match="answer must be an integer 0-3, got 4"):
        data.hub_mmlu_rows([{**rows[0], "answer": 4}], "philosophy", "test")
    with pytest.raises(UserError, match="4 `choices`"):
        data.hub_mmlu_rows([{**rows[0], "choices": ["a"]}], "philosophy", "test")


def _fake_mmlu_hub(fail: bool = False):
    from datasets import Dataset, DatasetDict

    def loader(hub_id, name, revision):
        assert hub_id == "cais/mmlu"
        if fail:
            raise data.HubUnavailable("offline")
        rows = [{"question": f"{name} q{i}", "subject": name, "choices": list("abcd"), "answer": i % 4}
                for i in range(4)]
        return DatasetDict(test=Dataset.from_list(rows), dev=Dataset.from_list(rows[:2]))
    return loader


def test_mmlu_from_hub_with_fake_datasets(tmp_path):
    cfg = {"hub_id": "cais/mmlu", "hub_revision": "main", "subjects": ["philosophy", "virology"],
           "archive_url": "https://example.org/data.tar"}
    m = data.mmlu_from_hub(cfg, tmp_path / "out", tmp_path, loader=_fake_mmlu_hub())
    assert m["source"] == "hub" and m["counts"]["virology"] == {"test": 4, "dev": 2}
    assert [r["answer"] for r in read_jsonl(tmp_path / "out" / "test.jsonl")][:4] == list("ABCD")


def test_mmlu_hub_falls_back_to_archive(tmp_path, monkeypatch):
    tar = _tar_bytes({"data/test/philosophy_test.csv": b"q,a,b,c,d,D\n",
                      "data/dev/philosophy_dev.csv": b"q,a,b,c,d,A\n"})
    sha = hashlib.sha256(tar).hexdigest()

    def fake_fetch(url, dest, expected):
        dest.write_bytes(tar)
        return data.verify_sha256(dest, expected)

    monkeypatch.setattr(data, "fetch_url", fake_fetch)
    cfg = {"hub_id": "cais/mmlu", "subjects": ["philosophy"], "archive_url": "u", "archive_sha256": sha}
    (tmp_path / "cache").mkdir()
    m = data.mmlu_from_hub(cfg, tmp_path / "out", tmp_path / "cache", loader=_fake_mmlu_hub(fail=True))
    assert m["source"] == "archive" and m["archive_sha256"] == sha
    assert read_jsonl(tmp_path / "out" / "test.jsonl")[0]["answer"] == "D"
    # a wrong pinned checksum: clear error, the downloaded file removed, nothing written
    (tmp_path / "cache" / "mmlu_data.tar").unlink()
    with pytest.raises(UserError, match="does not match"):
        data.mmlu_from_hub({**cfg, "archive_sha256": "0" * 64}, tmp_path / "out2", tmp_path / "cache",
                           loader=_fake_mmlu_hub(fail=True))
    assert not (tmp_path / "cache" / "mmlu_data.tar").exists() and not (tmp_path / "out2").exists()


def test_spider_from_hub_with_fakes(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    dev_json = [ex("db1"), ex("gone", "Other?")]
    db_file = tmp_path / "db1.sqlite"
    make_db(db_file)
    archive = _zip_bytes({
        "spider_data/dev.json": json.dumps(dev_json).encode(),
        "spider_data/tables.json": json.dumps([{"db_id": "db1"}, {"db_id": "gone"}]).encode(),
        "spider_data/train_others.json": json.dumps([ex("db1", "Extra?", sql=False)]).encode(),
        "spider_data/database/db1/db1.sqlite": db_file.read_bytes(),
        "spider_data/database/db1/schema.sql": b"--",
    })

    def fake_fetch(url, dest, expected):
        assert "drive.google.com" in url
        dest.write_bytes(archive)
        return data.verify_sha256(dest, expected)

    hub_rows = lambda rows: Dataset.from_list([{k: r[k] for k in ("db_id", "question", "query")} for r in rows])
    fake = DatasetDict(train=hub_rows([ex("db1", "T?")]), validation=hub_rows(dev_json))
    monkeypatch.setattr(data, "fetch_url", fake_fetch)
    monkeypatch.setattr(data, "load_hub_dataset", lambda *a: fake)
    cfg = {"hub_id": "xlangai/spider", "hub_revision": "main",
           "archive_url": "https://drive.google.com/uc?id=X", "archive_sha256": None}
    m = data.spider_from_hub(cfg, tmp_path / "out", tmp_path)
    dev = read_jsonl(tmp_path / "out" / "dev.jsonl")
    assert dev == [{"id": "dev-0000", **{k: dev_json[0][k] for k in ("db_id", "question", "query", "sql")}}]
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "train.jsonl")] == ["train-00000", "train-00001"]
    assert m["source"] == "hub" and m["archive_sha256"] == hashlib.sha256(archive).hexdigest()
    assert m["excluded"]["missing_database"]["dev"] == {"gone": ["dev-0001"]}
    assert sorted(p.name for p in (tmp_path / "out" / "database").rglob("*") if p.is_file()) == ["db1.sqlite"]
    # hub validation and archive dev.json from different releases: refused
    fake["validation"] = hub_rows([ex("db1", "changed?"), dev_json[1]])
    with pytest.raises(UserError, match="validation row 0 differs from dev.json"):
        data.spider_from_hub(cfg, tmp_path / "out2", tmp_path)


# ------------------------------------------------------------------ download faults (issue 14 §2/§3)

def _download(tmp_path: Path, mirror: Path, *extra: str, wait: bool = True):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text(json.dumps({"data": {"source": "mirror", "mirror_dir": str(mirror)}}))
    cmd = [sys.executable, str(REPO / "stages" / "download.py"), "spider", "--out", str(tmp_path / "raw" / "spider"),
           "--params", str(tmp_path / "params.yaml"), *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def _assert_one_error(res, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), res.stderr
    assert "Traceback" not in res.stderr


def _assert_nothing_left(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    assert not raw.exists() or sorted(p.name for p in raw.iterdir()) == []


def test_mirror_without_dev_json_is_one_line_naming_the_file(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    (root / "spider" / "dev.json").unlink()
    res = _download(tmp_path, root)
    _assert_one_error(res, "dev.json", "not found")
    _assert_nothing_left(tmp_path)


def test_truncated_database_without_manifest_is_refused(tmp_path):
    root = make_mirror(tmp_path / "mirror", with_manifest=False)
    db = root / "spider" / "database" / "db2" / "db2.sqlite"
    whole = db.read_bytes()
    assert len(whole) >= 2 * 4096
    db.write_bytes(whole[: len(whole) // 2])
    res = _download(tmp_path, root)
    _assert_one_error(res, "db2.sqlite", "truncated")
    _assert_nothing_left(tmp_path)


def test_check_sqlite_finds_truncated_and_damaged_databases(tmp_path):
    db = tmp_path / "d" / "d.sqlite"
    make_db(db)
    con = sqlite3.connect(db)                       # a table and an index over several pages
    con.execute("CREATE INDEX i ON t(name)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 200) for i in range(200)])
    con.commit()
    con.close()
    data.check_sqlite(db)                           # a whole database passes
    whole = db.read_bytes()
    page = int.from_bytes(whole[16:18], "big")
    db.write_bytes(whole[: len(whole) - page])      # one page short
    with pytest.raises(UserError, match=r"d\.sqlite: truncated SQLite database"):
        data.check_sqlite(db)
    damaged = bytearray(whole)                      # the right size, a b-tree page overwritten
    damaged[page * 2: page * 3] = b"\x0d" + b"\xff" * (page - 1)
    db.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"d\.sqlite: damaged SQLite database"):
        data.check_sqlite(db)


@need_mirror
def test_sigterm_during_download_leaves_no_temporary_folder(tmp_path):
    import signal
    import time

    proc = _download(tmp_path, SHARED, wait=False)
    raw = tmp_path / "raw"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None and not list(raw.glob(".spider.*.tmp")):
            time.sleep(0.01)
        assert list(raw.glob(".spider.*.tmp")), "the download never started writing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGTERM") and "Traceback" not in err
    assert sorted(p.name for p in raw.iterdir()) == []


def test_manifest_records_the_mirror_as_params_write_it_so_checkouts_agree(tmp_path):
    """Two checkouts in different places, one params.yaml text (mirror_dir: ../mirror): the download
    stage writes the same manifest in both (the resolved, absolute path differs between them)."""
    import subprocess
    import sys

    make_mirror(tmp_path / "mirror", with_manifest=False)
    manifests = []
    for name in ("checkout_a", "checkout_b"):
        ws = tmp_path / name
        ws.mkdir()
        (ws / "params.yaml").write_text("data: {source: mirror, mirror_dir: ../mirror}\n")
        assert load_params(ws / "params.yaml").as_written == {"data.mirror_dir": "../mirror"}
        res = subprocess.run([sys.executable, str(REPO / "stages" / "download.py"), "spider", "--out", "raw/spider",
                              "--params", "params.yaml"], cwd=ws, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        manifests.append((ws / "raw" / "spider" / "manifest.json").read_bytes())
    assert json.loads(manifests[0])["mirror_dir"] == "../mirror"
    assert manifests[0] == manifests[1]
