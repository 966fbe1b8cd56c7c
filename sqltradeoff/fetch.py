"""Getting raw files and checking them, below the dataset conversions of `data.py`.

* checksums: a mirror's `MANIFEST.sha256` (`read_sha256_manifest`, `Verifier`), a download
  against its expected sha256 (`verify_sha256`);
* downloads: `fetch_url` (Google Drive through gdown, else streamed HTTP), `extract_archive`
  (.zip / .tar, member paths checked), `find_release_root`;
* the hub: `load_hub_dataset`, the one call of `datasets.load_dataset`, raising `HubUnavailable`.

The network calls are kept in these thin functions so that the conversions they feed are plain
functions, unit-tested with small fake inputs (`tests/test_data.py` replaces `data.fetch_url`
and `data.load_hub_dataset`, which `data.py` imports from here).
"""
from __future__ import annotations

import os
import sys
import tarfile
import zipfile
from pathlib import Path

from .errors import UserError
from .io import sha256_file


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# checksums


def read_sha256_manifest(path: Path) -> dict[str, str]:
    """`sha256sum` output (`<hex>  <relative path>`) as {relative path: hex}."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise UserError(f"{path}:{lineno}: expected `<sha256>  <path>`, got {line[:80]!r}")
        out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


class Verifier:
    """Checks files of a mirror against its `MANIFEST.sha256` (when there is one)."""

    def __init__(self, root: Path):
        self.root = root
        mpath = root / "MANIFEST.sha256"
        self.manifest = read_sha256_manifest(mpath) if mpath.is_file() else None
        self.checked: dict[str, str] = {}

    def check(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        if not path.is_file():
            raise UserError(f"{path}: not found in the mirror {self.root} (expected `{rel}`)")
        digest = sha256_file(path)
        if self.manifest is not None:
            expected = self.manifest.get(rel)
            if expected is None:
                warn(f"{rel} is not listed in {self.root / 'MANIFEST.sha256'}; not verified")
            elif expected != digest:
                raise UserError(f"{path}: sha256 {digest} does not match {expected} in "
                                f"{self.root / 'MANIFEST.sha256'} (corrupt or modified copy)")
        self.checked[rel] = digest
        return digest


def verify_sha256(path: Path, expected: str | None) -> str:
    """sha256 of `path`; if `expected` is set and differs, delete the file and raise."""
    digest = sha256_file(path)
    if expected and digest != expected.lower():
        path.unlink(missing_ok=True)
        raise UserError(f"{path.name}: sha256 {digest} does not match the expected {expected} "
                        f"(corrupt or partial download; the file was removed, run again)")
    return digest


# --------------------------------------------------------------------------------------------
# downloads and archives


def fetch_url(url: str, dest: Path, expected_sha256: str | None = None) -> str:
    """Download `url` to `dest` (gdown for Google Drive, else streamed HTTP with a progress bar).

    Returns the sha256; a mismatch or an interrupted download removes the partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        if "drive.google.com" in url:
            import gdown

            got = gdown.download(url, str(part), quiet=False)
            if not got or not part.is_file():
                raise UserError(f"download of {url} failed (gdown returned nothing); check the link "
                                f"or download the archive by hand")
        else:
            import requests
            from tqdm import tqdm

            with requests.get(url, stream=True, timeout=60) as resp:
                resp.raise_for_status()
                total = int(resp.headers.get("content-length") or 0) or None
                with part.open("wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                                                 file=sys.stderr) as bar:
                    for block in resp.iter_content(1 << 20):
                        fh.write(block)
                        bar.update(len(block))
                if total is not None and part.stat().st_size != total:
                    raise UserError(f"download of {url} is truncated ({part.stat().st_size} of {total} bytes)")
    except UserError:
        part.unlink(missing_ok=True)
        raise
    except Exception as exc:  # network errors of requests/gdown
        part.unlink(missing_ok=True)
        raise UserError(f"download of {url} failed: {type(exc).__name__}: {exc}") from None
    digest = verify_sha256(part, expected_sha256)
    os.replace(part, dest)
    return digest


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a .zip or .tar(.gz) archive into `dest`; a corrupt/truncated archive is removed."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"CRC error in member {bad}")
                for name in zf.namelist():
                    if name.startswith("/") or ".." in Path(name).parts:
                        raise UserError(f"{archive}: unsafe member path {name!r}")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except UserError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        archive.unlink(missing_ok=True)
        raise UserError(f"{archive.name}: corrupt or truncated archive ({exc}); the file was removed, "
                        f"download it again") from None
    return dest


def find_release_root(root: Path, marker: str) -> Path:
    """The folder under `root` that holds `marker` (archives nest their content differently)."""
    hits = sorted(root.rglob(marker), key=lambda p: len(p.parts))
    hits = [h for h in hits if "__MACOSX" not in h.parts]
    if not hits:
        raise UserError(f"archive content has no {marker}")
    return hits[0].parent


# --------------------------------------------------------------------------------------------
# the Hugging Face hub


class HubUnavailable(UserError):
    """The hub could not give a dataset (offline, unknown id/revision, ...)."""


def load_hub_dataset(hub_id: str, name: str | None, revision: str | None):
    """Thin wrapper over `datasets.load_dataset` (the one network call of the hub path)."""
    import datasets

    try:
        return datasets.load_dataset(hub_id, name, revision=revision)
    except Exception as exc:
        raise HubUnavailable(f"could not load {hub_id}{'/' + name if name else ''} (revision {revision}) from "
                        f"the Hugging Face hub: {type(exc).__name__}: {exc}. Offline? Set data.source: "
                        f"mirror and data.mirror_dir") from None
