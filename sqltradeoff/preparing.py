"""Stage prepare's logic: seeded samples of the raw data (params.yaml `sample`).

`prepare(spider, mmlu, out, sample, k_shot)` reads the raw folders written by stage download and
writes spider_train.jsonl, spider_dev.jsonl, mmlu_test.jsonl, mmlu_dev.jsonl and manifest.json
to `out`, atomically (contents: `stages/prepare.py --help` and docs/design.md, "Data contracts").

With `k_shot` > 0 every evaluated subject needs k_shot dev rows: under `all`, subjects without
them are left out with a warning and named in the manifest, never scored zero-shot; a listed
subject without them is a `UserError`. Samples are drawn with numpy generators seeded from
(sample.seed, stream name) over sorted ids: the same seed gives the same ids.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config import SampleConfig
from .errors import UserError
from .io import atomic_dir, read_json, read_jsonl, write_json, write_jsonl
from .sampling import sample_per_group, sample_rows

SPIDER_FIELDS = ("id", "db_id", "question", "query")
MMLU_FIELDS = ("id", "subject", "question", "choices", "answer")


def _with_database(rows: list[dict], db_dir: Path, what: str) -> tuple[list[dict], list[str]]:
    kept, dropped = [], []
    for r in rows:
        (kept if (db_dir / r["db_id"] / f"{r['db_id']}.sqlite").is_file() else dropped).append(r)
    if dropped:
        print(f"warning: {what}: {len(dropped)} example(s) skipped, database missing in {db_dir}", file=sys.stderr)
    return kept, [r["id"] for r in dropped]


def _hardness(sql: dict, qid: str) -> str:
    from .hardness import hardness  # lazy: written separately

    try:
        return hardness(sql)
    except Exception as exc:  # a malformed `sql` parse in the input
        raise UserError(f"dev.jsonl {qid}: cannot compute hardness from `sql` ({type(exc).__name__}: {exc})") from None


def select_mmlu_subjects(test: list[dict], dev: list[dict], wanted, k_shot: int, mmlu: Path
                         ) -> tuple[list[str], list[str]]:
    """(subjects to evaluate, subjects left out for lack of k_shot dev rows) from
    `sample.mmlu_subjects` (`all` or a list); UserError on unknown or unscorable listed subjects."""
    available = list(dict.fromkeys(r["subject"] for r in test))
    n_dev: dict[str, int] = {}
    for r in dev:
        n_dev[r["subject"]] = n_dev.get(r["subject"], 0) + 1
    every = isinstance(wanted, str) and wanted.strip().lower() == "all"
    if every:
        subjects = sorted(available)
    elif isinstance(wanted, list) and wanted and all(isinstance(x, str) for x in wanted):
        subjects = list(dict.fromkeys(wanted))
        unknown = [x for x in subjects if x not in available]
        if unknown:
            raise UserError(f"params: sample.mmlu_subjects: {', '.join(unknown)} not in {mmlu / 'test.jsonl'} "
                            f"({len(available)} subject(s) there; data.mmlu.subjects, if set, limits the download)")
    else:
        raise UserError(f"params: sample.mmlu_subjects must be `all` or a non-empty list of subject names, "
                        f"got {wanted!r}")
    left_out = [x for x in subjects if n_dev.get(x, 0) < k_shot]
    if left_out and not every:
        raise UserError(f"{mmlu / 'dev.jsonl'}: no dev (few-shot) examples for subject(s) {', '.join(left_out)} "
                        f"(mmlu.k_shot={k_shot} needs {k_shot} each); set mmlu.k_shot: 0, use data.source: hub "
                        f"(all 57 subjects have dev rows there) or remove them from sample.mmlu_subjects")
    if left_out:
        print(f"warning: mmlu: {len(left_out)} of {len(subjects)} subject(s) left out, fewer than "
              f"mmlu.k_shot={k_shot} dev (few-shot) rows: {', '.join(left_out)}", file=sys.stderr)
    subjects = [x for x in subjects if x not in left_out]
    if not subjects:
        raise UserError(f"params: sample.mmlu_subjects: no subject with {k_shot} dev (few-shot) rows to evaluate")
    return subjects, left_out


def _sample_spider(spider: Path, sample: SampleConfig) -> dict:
    """The Spider train and dev samples (dev with hardness), the rows they were drawn from and
    the ids skipped for a missing database."""
    db_dir = spider / "database"
    train = read_jsonl(spider / "train.jsonl", SPIDER_FIELDS)
    dev = read_jsonl(spider / "dev.jsonl", SPIDER_FIELDS + ("sql",))
    train, train_skipped = _with_database(train, db_dir, "spider train")
    dev, dev_skipped = _with_database(dev, db_dir, "spider dev")
    train_s = sample_rows(train, sample.spider_train_n, sample.seed, "spider_train")
    dev_s = [{"id": r["id"], "db_id": r["db_id"], "question": r["question"], "query": r["query"],
              "hardness": _hardness(r["sql"], r["id"])}
             for r in sample_rows(dev, sample.spider_dev_n, sample.seed, "spider_dev")]
    train_s = [{k: r[k] for k in SPIDER_FIELDS} for r in train_s]
    return {"train": train_s, "dev": dev_s, "train_available": len(train), "dev_available": len(dev),
            "skipped": {"train": train_skipped, "dev": dev_skipped}}


def _sample_mmlu(mmlu: Path, sample: SampleConfig, wanted, k_shot: int) -> dict:
    """The MMLU test sample (per subject, subjects in name order), the dev rows of the evaluated
    subjects, and which subjects were evaluated and left out."""
    m_test = read_jsonl(mmlu / "test.jsonl", MMLU_FIELDS)
    m_dev = read_jsonl(mmlu / "dev.jsonl", MMLU_FIELDS)
    subjects, left_out = select_mmlu_subjects(m_test, m_dev, wanted, k_shot, mmlu)
    chosen = set(subjects)
    groups = sample_per_group([r for r in m_test if r["subject"] in chosen], "subject", sample.mmlu_per_subject,
                              sample.seed, "mmlu")
    mmlu_test = [r for subject in sorted(groups) for r in groups[subject]]
    dev_by_subject: dict[str, list[dict]] = {}
    for r in m_dev:
        dev_by_subject.setdefault(r["subject"], []).append(r)
    mmlu_dev = [r for subject in subjects for r in dev_by_subject.get(subject, [])]
    return {"test": mmlu_test, "dev": mmlu_dev, "groups": groups, "subjects": subjects, "left_out": left_out,
            "test_available": len(m_test), "subjects_available": len({r["subject"] for r in m_test})}


def _manifest(sample: SampleConfig, wanted, k_shot: int, sp: dict, mm: dict, raw_sp: dict, raw_mm: dict) -> dict:
    written, left_out = sample.written, mm["left_out"]
    hard_counts: dict[str, int] = {}
    for r in sp["dev"]:
        hard_counts[r["hardness"]] = hard_counts.get(r["hardness"], 0) + 1
    return {
        "seed": sample.seed,
        "params": {"spider_dev_n": written.get("spider_dev_n"), "spider_train_n": written.get("spider_train_n"),
                   "mmlu_per_subject": written.get("mmlu_per_subject"),
                   "mmlu_subjects": wanted, "mmlu_k_shot": k_shot},
        "sizes": {"spider_train": len(sp["train"]), "spider_dev": len(sp["dev"]), "mmlu_test": len(mm["test"]),
                  "mmlu_dev": len(mm["dev"]), "mmlu_subjects": len(mm["subjects"]),
                  "mmlu_test_per_subject": {s: len(g) for s, g in sorted(mm["groups"].items())}},
        "available": {"spider_train": sp["train_available"], "spider_dev": sp["dev_available"],
                      "mmlu_test": mm["test_available"], "mmlu_subjects": mm["subjects_available"]},
        "mmlu_subjects": {"evaluated": mm["subjects"],
                          "left_out": {"count": len(left_out), "subjects": left_out,
                                       "reason": f"fewer than mmlu.k_shot={k_shot} dev (few-shot) rows in the "
                                                 f"raw data" if left_out else None}},
        "spider_dev_hardness": dict(sorted(hard_counts.items())),
        "ids": {"spider_train": [r["id"] for r in sp["train"]], "spider_dev": [r["id"] for r in sp["dev"]],
                "mmlu_test": [r["id"] for r in mm["test"]]},
        "excluded": {
            "raw_spider": raw_sp.get("excluded", {}),
            "raw_spider_warnings": raw_sp.get("warnings", []),
            "raw_spider_train_is_standin": raw_sp.get("train_is_standin"),
            "database_missing_here": sp["skipped"],
        },
        "sources": {"spider": raw_sp.get("source"), "mmlu": raw_mm.get("source")},
    }


def prepare(spider: Path, mmlu: Path, out: Path, sample: SampleConfig | dict, k_shot: int = 5) -> dict:
    """Write the prepared samples and manifest.json to `out` (see the module docstring); returns
    the manifest."""
    if not isinstance(sample, SampleConfig):
        sample = SampleConfig.build(sample)
    wanted = sample.mmlu_subjects if isinstance(sample.mmlu_subjects, str) else list(sample.mmlu_subjects)
    sp = _sample_spider(spider, sample)
    mm = _sample_mmlu(mmlu, sample, wanted, k_shot)
    raw_sp = read_json(spider / "manifest.json") if (spider / "manifest.json").is_file() else {}
    raw_mm = read_json(mmlu / "manifest.json") if (mmlu / "manifest.json").is_file() else {}
    manifest = _manifest(sample, wanted, k_shot, sp, mm, raw_sp, raw_mm)
    with atomic_dir(out) as tmp:  # the folder is replaced only when complete
        write_jsonl(tmp / "spider_train.jsonl", sp["train"])
        write_jsonl(tmp / "spider_dev.jsonl", sp["dev"])
        write_jsonl(tmp / "mmlu_test.jsonl", mm["test"])
        write_jsonl(tmp / "mmlu_dev.jsonl", mm["dev"])
        write_json(tmp / "manifest.json", manifest)
    return manifest
