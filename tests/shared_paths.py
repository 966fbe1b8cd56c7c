"""Where the tests find the read-only shared data (`../shared/data`, or $SQLTRADEOFF_SHARED_DATA)
and the offline GGUF models ($SQLTRADEOFF_GGUF_DIR), and how a test skips when one is absent.
One place for every test file (pytest puts tests/ on sys.path: `from shared_paths import ...`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQLTRADEOFF_SHARED_DATA") or REPO.parent / "shared" / "data")
SPIDER = SHARED / "spider"
DB_DIR = SPIDER / "database"
CONCERT_SINGER_DB = DB_DIR / "concert_singer" / "concert_singer.sqlite"
MMLU_DEV = SHARED / "mmlu" / "data" / "dev"
GGUF_DIR = Path(os.path.expanduser(os.environ.get("SQLTRADEOFF_GGUF_DIR", "~/.cache/offline-models")))


def _reason(path: Path) -> str:
    return f"{path} not found: the shared data mirror is absent (set SQLTRADEOFF_SHARED_DATA)"


def needs(path: Path) -> pytest.MarkDecorator:
    """A skip marker for tests that read `path` from the shared data."""
    return pytest.mark.skipif(not Path(path).exists(), reason=_reason(path))


def require(path: Path) -> Path:
    """Skip the running test unless `path` exists; returns it."""
    if not Path(path).exists():
        pytest.skip(_reason(path))
    return Path(path)


def sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def guarded_db_copy(tmp_path_factory, name: str):
    """A generator for a module fixture: a fresh copy of concert_singer under a `<db_id>/` folder;
    on teardown it checks that hostile SQL changed neither the copy nor the original, and left no
    file beside it (journal, attached database)."""
    import shutil

    from sqltradeoff import sqlexec

    root = tmp_path_factory.mktemp(name)
    dest = root / "concert_singer" / "concert_singer.sqlite"
    dest.parent.mkdir()
    shutil.copyfile(CONCERT_SINGER_DB, dest)
    before = sha256(dest)
    yield root
    sqlexec.close_all()
    assert sorted(p.name for p in root.rglob("*")) == ["concert_singer", "concert_singer.sqlite"]
    assert sha256(dest) == before == sha256(CONCERT_SINGER_DB)
