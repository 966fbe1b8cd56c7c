"""Small, strict file helpers shared by the stages: JSON/JSONL read, atomic file and directory
writes, file checksums.

Readers turn every fault a file can have into a one-line `UserError` naming the file (and the
line): not UTF-8, not JSON, nested too deeply, an integer too long to convert, and (with
`allow_nan=False`) the non-standard constants NaN/Infinity. Writers write a temporary file
and rename it, so a crash never leaves a half-written file (`atomic_write_text`,
`atomic_write_bytes`, `write_json`, `write_jsonl`); `write_texts` writes several files
all-or-nothing; `atomic_dir` builds a whole directory beside its final place and renames it there
when complete; `check_writable` says before any work whether an output can be written.
`sha256_file` is the one file checksum (hex sha256).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import UserError


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (use null or a string)")


def _loads(text: str, where: str, allow_nan: bool) -> Any:
    """`json.loads(text)`; a `UserError` starting with `where` for anything wrong."""
    try:
        return json.loads(text, parse_constant=None if allow_nan else _refuse_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:       # an integer of more than 4,300 digits, NaN when refused
        raise UserError(f"{where}: {' '.join(str(exc).split())[:200]}") from None


def iter_jsonl(path: str | os.PathLike, required: Sequence[str] = (),
               allow_nan: bool = True) -> Iterator[dict]:
    """Yield the objects of a JSONL file; raise `UserError` naming the file and line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte "
                                f"{exc.start} of the line)") from None
            if not line.strip():
                continue
            obj = _loads(line, f"{path}:{lineno}", allow_nan)
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in required if k not in obj]
            if missing:
                raise UserError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            yield obj


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:
        raise UserError(f"{path}: {' '.join(str(exc).split())[:200]}") from None


def portable_path(value: Any) -> Any:
    """An absolute path inside the working directory (the repository root when DVC runs a stage) as
    a relative one, so that outputs recording where a model lives are the same bytes in every clone;
    anything else (a hub id, a path elsewhere, None) unchanged."""
    if not isinstance(value, (str, os.PathLike)) or not os.path.isabs(value):
        return value
    try:
        return str(Path(value).relative_to(Path.cwd()))
    except ValueError:
        return str(value)


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """`UserError` unless `path` could be written (as a file) now; creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path}: is a directory")
    if path.exists() and not path.is_file():
        raise UserError(f"{what} {path}: exists and is not a regular file")
    parent = path.parent
    while not parent.exists():      # the first existing ancestor must be a writable directory
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: directory {parent} is not writable")
    if path.exists() and path.parent == parent and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path}: file is not writable")


def _encode(path: Path, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(f"{path}: cannot write text that is not valid Unicode ({exc.reason})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at `path`, read `chunk` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically (a temporary file beside it, then a rename)."""
    write_texts([(Path(path), text)])


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (a temporary file beside it, then a rename)."""
    _write_files([(Path(path), bytes(data))])


def write_texts(items: Sequence[tuple[str | os.PathLike, str]]) -> None:
    """Write every `(path, text)` atomically, all or nothing as far as the OS allows: all
    temporary files are written first; if one fails or a rename fails, the temporary files
    and the files already renamed into place by this call are removed, and the error is raised."""
    _write_files([(Path(path), text) for path, text in items])


def _write_files(items: Sequence[tuple[Path, str | bytes]]) -> None:
    """`write_texts` for text (encoded as UTF-8 here) or bytes."""
    staged: list[tuple[Path, str]] = []
    placed: list[Path] = []
    try:
        for path, content in items:
            data = content if isinstance(content, bytes) else _encode(path, content)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((path, tmp))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        for path, tmp in staged:
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path, tmp in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if len(placed) < len(staged):
            for path in placed:
                path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside `out` (a hidden `.<name>.*.tmp`), renamed to `out` when the
    block completes; a previous `out` is moved aside first and removed after the rename. When the
    block raises (a `KeyboardInterrupt` too, and SIGTERM where the caller turns it into one with
    `interrupt.signals_raise`, as the download stage does), the temporary directory is removed and
    `out` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old.{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def dumps_json(obj: Any, allow_nan: bool = True) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False, allow_nan=allow_nan) + "\n"


def dumps_jsonl(rows: Iterable[dict], allow_nan: bool = True) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=allow_nan) + "\n" for r in rows)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (a crash never leaves a half-written file)."""
    atomic_write_text(path, dumps_json(obj))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write JSONL atomically; returns the number of rows."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)
