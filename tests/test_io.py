"""The shared file helpers of sqltradeoff.io: checksum, atomic file writes, atomic directory swap."""
from __future__ import annotations

import hashlib
import os

import pytest

from sqltradeoff.io import atomic_dir, atomic_write_bytes, atomic_write_text, portable_path, sha256_file


def test_sha256_file_matches_hashlib_for_any_chunk(tmp_path):
    f = tmp_path / "blob"
    data = os.urandom(3000)
    f.write_bytes(data)
    for chunk in (1, 7, 1 << 20):
        assert sha256_file(f, chunk=chunk) == hashlib.sha256(data).hexdigest()


def test_atomic_writes_replace_and_leave_no_temporary(tmp_path):
    f = tmp_path / "sub" / "out.txt"
    atomic_write_text(f, "é\n")
    assert f.read_bytes() == "é\n".encode("utf-8")
    atomic_write_bytes(f, b"\x89PNG")
    assert f.read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in f.parent.iterdir()) == ["out.txt"]


def test_atomic_dir_replaces_an_old_directory_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out
        (tmp / "new.txt").write_text("new")
        assert (out / "stale.txt").is_file()           # untouched until the block completes
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no temporary or old copy left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's 0700


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_keeps_the_old_directory_and_removes_the_temporary_on_error(tmp_path, exc):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("old")
    with pytest.raises(exc):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise exc()
    assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_portable_path_makes_paths_inside_the_working_directory_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / ".cache" / "models" / "m-1234"
    assert portable_path(str(inside)) == ".cache/models/m-1234"
    assert portable_path(inside) == ".cache/models/m-1234"
    elsewhere = tmp_path.parent / "other" / "model"
    assert portable_path(str(elsewhere)) == str(elsewhere)          # outside the checkout: kept
    assert portable_path("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert portable_path("relative/dir") == "relative/dir"
    assert portable_path(None) is None and portable_path(True) is True
