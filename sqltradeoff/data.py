"""Raw data: Spider and MMLU from a local mirror, the Hugging Face hub, or the official archives.

Every source ends in the same files (docs/design.md, "Data contracts"):

* `data/raw/spider/`: `train.jsonl`, `dev.jsonl` (with the parsed `sql`), `tables.json`,
  `database/<db_id>/<db_id>.sqlite`, `manifest.json`;
* `data/raw/mmlu/`: `test.jsonl`, `dev.jsonl`, `manifest.json` (only the configured subjects).

Each example is checked; a question whose database is missing is excluded, counted and listed
in the manifest (never silently dropped). Bad input raises `UserError` naming file and line.
The output directory is assembled in a temporary sibling directory and renamed into place only
when complete, so a failure leaves the previous output (or nothing) behind.

Getting and checking the files (sha256 manifests, downloads, archives, the hub's
`datasets.load_dataset`) is `fetch.py`; this module converts what they give. The names of
`fetch.py` used here (`fetch_url`, `load_hub_dataset`, `verify_sha256`, `Verifier`, ...) are
importable from here as well.
"""
from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .answers import LETTERS
from .errors import UserError
from .fetch import (HubUnavailable, Verifier, extract_archive, fetch_url, find_release_root,  # noqa: F401
                    load_hub_dataset, read_sha256_manifest, verify_sha256, warn)
from .io import atomic_dir, read_json, sha256_file, write_json, write_jsonl

SPIDER_FIELDS = ("db_id", "question", "query")
STANDIN_TRAIN = "spider_derived/train_spider.question_query_db_id.json"


# --------------------------------------------------------------------------------------------
# Spider


def load_spider_json(path: Path, required: Sequence[str] = SPIDER_FIELDS) -> list[dict]:
    """A Spider JSON file (a list of example objects), checked for the fields we use."""
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
    for i, ex in enumerate(data):
        if not isinstance(ex, dict):
            raise UserError(f"{path}: example {i}: expected an object, got {type(ex).__name__}")
        missing = [k for k in required if k not in ex]
        if missing:
            raise UserError(f"{path}: example {i}: missing field(s) {', '.join(missing)}")
        for k in SPIDER_FIELDS:
            if k in required and (not isinstance(ex[k], str) or not ex[k].strip()):
                raise UserError(f"{path}: example {i}: field `{k}` must be a non-empty string")
    return data


def load_tables(path: Path) -> list[dict]:
    tables = read_json(path)
    if not isinstance(tables, list) or not all(isinstance(t, dict) and "db_id" in t for t in tables):
        raise UserError(f"{path}: expected a list of database objects with `db_id`")
    return tables


def check_sqlite(path: Path) -> None:
    """A whole SQLite database (`sqlexec.check_database`: header, size, `PRAGMA quick_check` on a
    read-only connection), as a one-line error naming the file: a truncated or damaged copy --
    e.g. in a mirror without MANIFEST.sha256 -- would otherwise surface as gold-query errors."""
    from .sqlexec import check_database

    try:
        check_database(path)
    except ValueError as exc:
        kind, detail = getattr(exc, "kind", "damaged"), getattr(exc, "detail", str(exc))
        if kind == "header":
            raise UserError(f"{path}: not a SQLite database (bad header)") from None
        raise UserError(f"{path}: {kind} SQLite database ({detail}): replace it with a complete copy") from None


def find_databases(db_root: Path) -> dict[str, Path]:
    """{db_id: path} of `db_root/<db_id>/<db_id>.sqlite` files, each checked whole (`check_sqlite`)."""
    found: dict[str, Path] = {}
    if not db_root.is_dir():
        raise UserError(f"{db_root}: database folder not found")
    for sub in sorted(p for p in db_root.iterdir() if p.is_dir()):
        f = sub / f"{sub.name}.sqlite"
        if f.is_file():
            check_sqlite(f)
            found[sub.name] = f
    return found


def spider_rows(examples: Iterable[dict], split: str, start: int = 0, width: int = 5,
                keep_sql: bool = False) -> list[dict]:
    """Source examples -> our rows with ids `<split>-<index>` (the index in the source)."""
    rows = []
    for i, ex in enumerate(examples, start):
        row = {"id": f"{split}-{i:0{width}d}", "db_id": ex["db_id"], "question": ex["question"],
               "query": ex["query"]}
        if keep_sql:
            row["sql"] = ex["sql"]
        rows.append(row)
    return rows


def split_by_database(rows: list[dict], available: set[str], what: str) -> tuple[list[dict], dict[str, list[str]]]:
    """Keep rows whose database exists; the others by db_id (with a warning)."""
    kept, missing = [], {}
    for r in rows:
        if r["db_id"] in available:
            kept.append(r)
        else:
            missing.setdefault(r["db_id"], []).append(r["id"])
    for db, ids in sorted(missing.items()):
        warn(f"{what}: {len(ids)} question(s) excluded: database `{db}` is missing")
    return kept, missing


def write_spider(out: Path, *, train: list[dict], dev: list[dict], tables_path: Path,
                 databases: dict[str, Path], manifest: dict[str, Any]) -> dict[str, Any]:
    """Check every example against the databases and write the raw Spider directory atomically."""
    tables = load_tables(tables_path)
    table_ids = {t["db_id"] for t in tables}
    available = set(databases)
    train_kept, train_missing = split_by_database(train, available, "spider train")
    dev_kept, dev_missing = split_by_database(dev, available, "spider dev")
    no_schema = sorted({r["db_id"] for r in train_kept + dev_kept} - table_ids)
    if no_schema:
        raise UserError(f"{tables_path}: no schema for database(s) {', '.join(no_schema)} used by the questions")
    from tqdm import tqdm

    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", train_kept)
        write_jsonl(tmp / "dev.jsonl", dev_kept)
        shutil.copyfile(tables_path, tmp / "tables.json")
        for db, src in tqdm(sorted(databases.items()), desc="copy databases", unit="db", file=sys.stderr):
            dst = tmp / "database" / db / f"{db}.sqlite"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            **manifest,
            "counts": {
                "train": {"source": len(train), "kept": len(train_kept), "excluded": len(train) - len(train_kept)},
                "dev": {"source": len(dev), "kept": len(dev_kept), "excluded": len(dev) - len(dev_kept)},
                "databases": len(databases),
                "tables_json_databases": len(table_ids),
            },
            "excluded": {
                "missing_database": {
                    "train": {db: ids for db, ids in sorted(train_missing.items())},
                    "dev": {db: ids for db, ids in sorted(dev_missing.items())},
                },
            },
            "databases_missing": sorted(table_ids - available),
            "files": files,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _mirror_root(mirror_dir: str | os.PathLike | None, base: Path) -> Path:
    if not mirror_dir:
        raise UserError("params: data.mirror_dir is not set; set it to the local data mirror "
                        "or set data.source: hub")
    root = Path(mirror_dir)
    if not root.is_absolute():
        root = (base / root).resolve()
    if not root.is_dir():
        raise UserError(f"data mirror {root} not found: set data.mirror_dir to the folder holding "
                        f"spider/ and mmlu/, or set data.source: hub to download from the hub")
    return root


def spider_from_mirror(mirror_dir: str | os.PathLike, out: Path, base: Path = Path("."),
                       recorded: str | None = None) -> dict:
    """Spider from a mirror in the release layout (see the module docstring). The manifest records
    `recorded` (the params file's own spelling of the mirror) if given, else `mirror_dir`."""
    root = _mirror_root(mirror_dir, base)
    sp = root / "spider"
    if not sp.is_dir():
        raise UserError(f"{sp}: not found (the mirror must hold Spider in spider/)")
    ver = Verifier(root)
    warnings: list[str] = []
    train_src: list[dict] = []
    train_files: list[str] = []
    official = sp / "train_spider.json"
    if official.is_file():
        ver.check(official)
        train_src += load_spider_json(official)
        train_files.append("spider/train_spider.json")
    else:
        standin = root / STANDIN_TRAIN
        if not standin.is_file():
            raise UserError(f"{official}: not found, and no stand-in {standin} either")
        ver.check(standin)
        train_src += load_spider_json(standin)
        train_files.append(STANDIN_TRAIN)
        msg = (f"spider/train_spider.json is missing in the mirror; using the stand-in {STANDIN_TRAIN} "
               f"({len(train_src)} question/query/db_id pairs, not an original release file)")
        warn(msg)
        warnings.append(msg)
    others = sp / "train_others.json"
    if others.is_file():
        ver.check(others)
        train_src += load_spider_json(others)
        train_files.append("spider/train_others.json")
    else:
        warnings.append("spider/train_others.json is missing in the mirror; train has train_spider only")
    dev_path = sp / "dev.json"
    ver.check(dev_path)
    dev_src = load_spider_json(dev_path, SPIDER_FIELDS + ("sql",))
    tables_path = sp / "tables.json"
    ver.check(tables_path)
    databases = find_databases(sp / "database")
    for p in databases.values():
        ver.check(p)
    manifest = {
        "source": "mirror",
        "mirror_dir": recorded or str(mirror_dir),
        "train_files": train_files,
        "train_is_standin": not official.is_file(),
        "warnings": warnings,
        "input_sha256": dict(sorted(ver.checked.items())),
        "verified_against": "MANIFEST.sha256" if ver.manifest is not None else None,
    }
    return write_spider(out, train=spider_rows(train_src, "train"), dev=spider_rows(dev_src, "dev", width=4, keep_sql=True),
                        tables_path=tables_path, databases=databases, manifest=manifest)


# --- hub + archive


def hub_spider_rows(train: Iterable[dict], validation: Iterable[dict], dev_json: list[dict]) -> tuple[list[dict], list[dict]]:
    """Hub splits (+ the release dev.json for the `sql` parse) -> our train and dev rows.

    The hub validation split must be dev.json in the same order (checked question by question)."""
    train = list(train)
    validation = list(validation)
    for i, ex in enumerate(train):
        missing = [k for k in SPIDER_FIELDS if k not in ex]
        if missing:
            raise UserError(f"hub spider train row {i}: missing field(s) {', '.join(missing)}")
    if len(validation) != len(dev_json):
        raise UserError(f"hub spider validation has {len(validation)} rows but the archive's dev.json "
                        f"has {len(dev_json)}: they must be the same release")
    dev = []
    for i, (hub, rel) in enumerate(zip(validation, dev_json)):
        if (hub.get("db_id"), hub.get("question"), hub.get("query")) != (rel["db_id"], rel["question"], rel["query"]):
            raise UserError(f"hub spider validation row {i} differs from dev.json example {i}: "
                            f"the hub revision and the archive are not the same release")
        dev.append({**hub, "sql": rel["sql"]})
    return spider_rows(train, "train"), spider_rows(dev, "dev", width=4, keep_sql=True)


def spider_from_hub(cfg: dict, out: Path, cache_dir: Path) -> dict:
    """Spider questions from the hub, databases (+ dev.json `sql`) from the official archive."""
    ds = load_hub_dataset(cfg["hub_id"], None, cfg.get("hub_revision"))
    archive = cache_dir / "spider_archive.zip"
    if archive.is_file():  # an earlier complete download (partial ones are never renamed here)
        digest = verify_sha256(archive, cfg.get("archive_sha256"))
    else:
        digest = fetch_url(cfg["archive_url"], archive, cfg.get("archive_sha256"))
    if not cfg.get("archive_sha256"):
        warn(f"spider archive sha256 {digest} (set data.spider.archive_sha256 to pin it)")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmpd:
        root = find_release_root(extract_archive(archive, Path(tmpd)), "tables.json")
        dev_json = load_spider_json(root / "dev.json", SPIDER_FIELDS + ("sql",))
        train, dev = hub_spider_rows(ds["train"], ds["validation"], dev_json)
        others = root / "train_others.json"
        train_files = [f"{cfg['hub_id']}:train"]
        if others.is_file():
            train += spider_rows(load_spider_json(others), "train", start=len(train))
            train_files.append("archive:train_others.json")
        manifest = {
            "source": "hub",
            "hub_id": cfg["hub_id"], "hub_revision": cfg.get("hub_revision"),
            "archive_url": cfg["archive_url"], "archive_sha256": digest,
            "archive_sha256_pinned": bool(cfg.get("archive_sha256")),
            "train_files": train_files, "train_is_standin": False, "warnings": [],
        }
        return write_spider(out, train=train, dev=dev, tables_path=root / "tables.json",
                            databases=find_databases(root / "database"), manifest=manifest)


# --------------------------------------------------------------------------------------------
# MMLU


def read_mmlu_csv(path: Path, subject: str, split: str) -> list[dict]:
    """A headerless MMLU CSV (question, A, B, C, D, answer letter) -> our rows."""
    if not path.is_file():
        raise UserError(f"{path}: file not found (MMLU subject `{subject}`, split {split})")
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            for i, rec in enumerate(reader):
                where = f"{path}:{reader.line_num}"
                if len(rec) != 6:
                    raise UserError(f"{where}: expected 6 columns (question,A,B,C,D,answer), got {len(rec)}")
                answer = rec[5].strip()
                if answer not in LETTERS:
                    raise UserError(f"{where}: answer must be one of A, B, C, D, got {rec[5]!r}")
                rows.append(mmlu_row(subject, split, i, rec[0], rec[1:5], answer))
        except csv.Error as exc:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def mmlu_row(subject: str, split: str, index: int, question: str, choices: Sequence[str], answer: str) -> dict:
    return {"id": f"{subject}-{split}-{index:04d}", "subject": subject, "question": question,
            "choices": list(choices), "answer": answer}


def hub_mmlu_rows(rows: Iterable[dict], subject: str, split: str) -> list[dict]:
    """`cais/mmlu` rows (question, choices[4], answer 0-3) -> our rows (answer letter)."""
    out = []
    for i, r in enumerate(rows):
        where = f"{subject} {split} row {i}"
        choices = r.get("choices")
        if not isinstance(r.get("question"), str) or not isinstance(choices, (list, tuple)) or len(choices) != 4:
            raise UserError(f"hub mmlu {where}: expected `question` and 4 `choices`")
        ans = r.get("answer")
        if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans <= 3:
            raise UserError(f"hub mmlu {where}: answer must be an integer 0-3, got {ans!r}")
        out.append(mmlu_row(subject, split, i, r["question"], choices, LETTERS[ans]))
    return out


def write_mmlu(out: Path, test: list[dict], dev: list[dict], manifest: dict) -> dict:
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "test.jsonl", test)
        write_jsonl(tmp / "dev.jsonl", dev)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        counts: dict[str, dict[str, int]] = {}
        for split, rows in (("test", test), ("dev", dev)):
            for r in rows:
                counts.setdefault(r["subject"], {"test": 0, "dev": 0})[split] += 1
        manifest = {**manifest, "counts": counts,
                    "total": {"test": len(test), "dev": len(dev)}, "files": files}
        write_json(tmp / "manifest.json", manifest)
    return manifest


# The 57 MMLU subjects (cais/mmlu configs, data.tar's file names), in alphabetical order.
MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)


def _subjects(cfg: dict) -> list[str] | None:
    """`data.mmlu.subjects`: absent, null or `all` (the default): every subject the source has
    (None); a list (older params files): only those. Which subjects are evaluated is chosen
    later, by `sample.mmlu_subjects` in stage prepare."""
    subjects = cfg.get("subjects")
    if subjects is None or (isinstance(subjects, str) and subjects.strip().lower() == "all"):
        return None
    if not subjects or not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
        raise UserError("params: data.mmlu.subjects must be `all` (the default) or a non-empty list of subject names")
    return list(subjects)


def mmlu_from_csv_root(root: Path, subjects: Sequence[str] | None, verifier: Verifier | None = None
                       ) -> tuple[list[dict], list[dict]]:
    """Rows of the given subjects (None: every `test/<subject>_test.csv`, in name order) from a
    `data/{test,dev}/<subject>_<split>.csv` tree. With None, a subject without a dev file has no
    dev rows (the manifest names it); a listed subject must have both files."""
    every = subjects is None
    if every:
        subjects = sorted(p.name[:-len("_test.csv")] for p in (root / "test").glob("*_test.csv"))
        if not subjects:
            raise UserError(f"{root / 'test'}: no <subject>_test.csv files")
    test, dev = [], []
    for subject in subjects:
        for split, bucket in (("test", test), ("dev", dev)):
            path = root / split / f"{subject}_{split}.csv"
            if every and split == "dev" and not path.is_file():
                continue
            if verifier is not None and path.is_file():
                verifier.check(path)
            bucket += read_mmlu_csv(path, subject, split)
    return test, dev


def _subject_manifest(test: Sequence[dict], dev: Sequence[dict]) -> dict:
    with_dev = {r["subject"] for r in dev}
    subjects = list(dict.fromkeys(r["subject"] for r in test))
    missing = [s for s in subjects if s not in with_dev]
    if missing:
        warn(f"mmlu: {len(missing)} of {len(subjects)} subject(s) have no dev (few-shot) rows in this source: "
             f"{', '.join(missing)} (with mmlu.k_shot > 0 stage prepare leaves them out)")
    return {"subjects": subjects, "subjects_without_dev": missing}


def mmlu_from_mirror(mirror_dir: str | os.PathLike, cfg: dict, out: Path, base: Path = Path("."),
                     recorded: str | None = None) -> dict:
    root = _mirror_root(mirror_dir, base)
    data = root / "mmlu" / "data"
    if not data.is_dir():
        raise UserError(f"{data}: not found (the mirror must hold MMLU in mmlu/data/{{test,dev}}/)")
    ver = Verifier(root)
    test, dev = mmlu_from_csv_root(data, _subjects(cfg), ver)
    manifest = {"source": "mirror", "mirror_dir": recorded or str(mirror_dir), **_subject_manifest(test, dev),
                "input_sha256": dict(sorted(ver.checked.items())),
                "verified_against": "MANIFEST.sha256" if ver.manifest is not None else None}
    return write_mmlu(out, test, dev, manifest)


def mmlu_from_archive(cfg: dict, out: Path, cache_dir: Path) -> dict:
    archive = cache_dir / "mmlu_data.tar"
    if archive.is_file():
        digest = verify_sha256(archive, cfg.get("archive_sha256"))
    else:
        digest = fetch_url(cfg["archive_url"], archive, cfg.get("archive_sha256"))
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmpd:
        root = extract_archive(archive, Path(tmpd))
        data = root / "data" if (root / "data").is_dir() else find_release_root(root, "test")
        test, dev = mmlu_from_csv_root(data, _subjects(cfg))
    manifest = {"source": "archive", "archive_url": cfg["archive_url"], "archive_sha256": digest,
                **_subject_manifest(test, dev)}
    return write_mmlu(out, test, dev, manifest)


def mmlu_from_hub(cfg: dict, out: Path, cache_dir: Path,
                  loader: Callable[[str, str | None, str | None], Any] | None = None) -> dict:
    """MMLU from `cais/mmlu` (one config per subject, splits test/dev); if the hub cannot be
    reached, from the official archive `data.tar` (sha256 checked)."""
    loader = loader or load_hub_dataset
    test, dev = [], []
    try:
        for subject in _subjects(cfg) or MMLU_SUBJECTS:
            ds = loader(cfg["hub_id"], subject, cfg.get("hub_revision"))
            test += hub_mmlu_rows(ds["test"], subject, "test")
            dev += hub_mmlu_rows(ds["dev"], subject, "dev")
    except HubUnavailable as exc:
        if not cfg.get("archive_url"):
            raise
        warn(f"{exc}\nfalling back to the archive {cfg['archive_url']}")
        return mmlu_from_archive(cfg, out, cache_dir)
    manifest = {"source": "hub", "hub_id": cfg["hub_id"], "hub_revision": cfg.get("hub_revision"),
                **_subject_manifest(test, dev)}
    return write_mmlu(out, test, dev, manifest)
