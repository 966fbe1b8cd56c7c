"""Prepare stage: seeded samples of the raw data (params.yaml `sample`).

Writes to --out:
  spider_train.jsonl  {id, db_id, question, query}: `sample.spider_train_n` train examples
                      (`all`: every one) whose database exists
  spider_dev.jsonl    {id, db_id, question, query, hardness}: the evaluation sample of
                      `sample.spider_dev_n` dev questions (`all` allowed) whose database exists;
                      hardness (easy/medium/hard/extra) from the parsed `sql`
  mmlu_test.jsonl     `sample.mmlu_per_subject` test questions (`all` allowed) of each subject of
                      `sample.mmlu_subjects` (a list, default the study's three, or `all`), drawn
                      per subject
  mmlu_dev.jsonl      the dev split (few-shot examples) of those subjects
  manifest.json       seed, sizes, sampled ids, exclusions carried over from the raw manifests,
                      MMLU subjects left out

With `mmlu.k_shot` > 0 every evaluated subject needs k_shot dev rows: under `all`, subjects
without them (the offline mirror lacks the dev file of 14 of the 57) are left out with a warning
and named in the manifest (`mmlu_subjects.left_out`), never scored zero-shot; a listed subject
without them is an error.

Samples are drawn with numpy generators seeded from (sample.seed, stream name) over sorted ids:
the same seed gives the same ids. Exit status 2 on bad input.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path

from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.config import SampleConfig
from sqltradeoff.io import atomic_dir, read_json, read_jsonl, write_json, write_jsonl
from sqltradeoff.params import load_params
from sqltradeoff.sampling import sample_per_group, sample_rows

SPIDER_FIELDS = ("id", "db_id", "question", "query")
MMLU_FIELDS = ("id", "subject", "question", "choices", "answer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepare.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spider", required=True, type=Path, help="raw Spider folder (data/raw/spider)")
    p.add_argument("--mmlu", required=True, type=Path, help="raw MMLU folder (data/raw/mmlu)")
    p.add_argument("--out", required=True, type=Path, help="output folder (data/prepared)")
    p.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: %(default)s)")
    return p


def _with_database(rows: list[dict], db_dir: Path, what: str) -> tuple[list[dict], list[str]]:
    kept, dropped = [], []
    for r in rows:
        (kept if (db_dir / r["db_id"] / f"{r['db_id']}.sqlite").is_file() else dropped).append(r)
    if dropped:
        print(f"warning: {what}: {len(dropped)} example(s) skipped, database missing in {db_dir}", file=sys.stderr)
    return kept, [r["id"] for r in dropped]


def _hardness(sql: dict, qid: str) -> str:
    from sqltradeoff.hardness import hardness  # lazy: written separately

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


def prepare(spider: Path, mmlu: Path, out: Path, sample: SampleConfig | dict, k_shot: int = 5) -> dict:
    if not isinstance(sample, SampleConfig):
        sample = SampleConfig.build(sample)
    seed, dev_n, train_n, per_subject = sample.seed, sample.spider_dev_n, sample.spider_train_n, sample.mmlu_per_subject
    wanted = sample.mmlu_subjects if isinstance(sample.mmlu_subjects, str) else list(sample.mmlu_subjects)
    written = sample.written
    db_dir = spider / "database"
    train = read_jsonl(spider / "train.jsonl", SPIDER_FIELDS)
    dev = read_jsonl(spider / "dev.jsonl", SPIDER_FIELDS + ("sql",))
    train, train_skipped = _with_database(train, db_dir, "spider train")
    dev, dev_skipped = _with_database(dev, db_dir, "spider dev")

    train_s = sample_rows(train, train_n, seed, "spider_train")
    dev_s = [{"id": r["id"], "db_id": r["db_id"], "question": r["question"], "query": r["query"],
              "hardness": _hardness(r["sql"], r["id"])}
             for r in sample_rows(dev, dev_n, seed, "spider_dev")]
    train_s = [{k: r[k] for k in SPIDER_FIELDS} for r in train_s]

    m_test = read_jsonl(mmlu / "test.jsonl", MMLU_FIELDS)
    m_dev = read_jsonl(mmlu / "dev.jsonl", MMLU_FIELDS)
    subjects, left_out = select_mmlu_subjects(m_test, m_dev, wanted, k_shot, mmlu)
    chosen = set(subjects)
    groups = sample_per_group([r for r in m_test if r["subject"] in chosen], "subject", per_subject, seed, "mmlu")
    mmlu_test = [r for subject in sorted(groups) for r in groups[subject]]
    dev_by_subject: dict[str, list[dict]] = {}
    for r in m_dev:
        dev_by_subject.setdefault(r["subject"], []).append(r)
    mmlu_dev = [r for subject in subjects for r in dev_by_subject.get(subject, [])]

    raw_sp = read_json(spider / "manifest.json") if (spider / "manifest.json").is_file() else {}
    raw_mm = read_json(mmlu / "manifest.json") if (mmlu / "manifest.json").is_file() else {}
    hard_counts: dict[str, int] = {}
    for r in dev_s:
        hard_counts[r["hardness"]] = hard_counts.get(r["hardness"], 0) + 1
    manifest = {
        "seed": seed,
        "params": {"spider_dev_n": written.get("spider_dev_n"), "spider_train_n": written.get("spider_train_n"),
                   "mmlu_per_subject": written.get("mmlu_per_subject"),
                   "mmlu_subjects": wanted, "mmlu_k_shot": k_shot},
        "sizes": {"spider_train": len(train_s), "spider_dev": len(dev_s), "mmlu_test": len(mmlu_test),
                  "mmlu_dev": len(mmlu_dev), "mmlu_subjects": len(subjects),
                  "mmlu_test_per_subject": {s: len(g) for s, g in sorted(groups.items())}},
        "available": {"spider_train": len(train), "spider_dev": len(dev), "mmlu_test": len(m_test),
                      "mmlu_subjects": len({r["subject"] for r in m_test})},
        "mmlu_subjects": {"evaluated": subjects,
                          "left_out": {"count": len(left_out), "subjects": left_out,
                                       "reason": f"fewer than mmlu.k_shot={k_shot} dev (few-shot) rows in the "
                                                 f"raw data" if left_out else None}},
        "spider_dev_hardness": dict(sorted(hard_counts.items())),
        "ids": {"spider_train": [r["id"] for r in train_s], "spider_dev": [r["id"] for r in dev_s],
                "mmlu_test": [r["id"] for r in mmlu_test]},
        "excluded": {
            "raw_spider": raw_sp.get("excluded", {}),
            "raw_spider_warnings": raw_sp.get("warnings", []),
            "raw_spider_train_is_standin": raw_sp.get("train_is_standin"),
            "database_missing_here": {"train": train_skipped, "dev": dev_skipped},
        },
        "sources": {"spider": raw_sp.get("source"), "mmlu": raw_mm.get("source")},
    }
    with atomic_dir(out) as tmp:  # the folder is replaced only when complete
        write_jsonl(tmp / "spider_train.jsonl", train_s)
        write_jsonl(tmp / "spider_dev.jsonl", dev_s)
        write_jsonl(tmp / "mmlu_test.jsonl", mmlu_test)
        write_jsonl(tmp / "mmlu_dev.jsonl", mmlu_dev)
        write_json(tmp / "manifest.json", manifest)
    return manifest


@stage_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_params(args.params).config      # every value checked (sqltradeoff/config.py)
    k_shot = config.mmlu.k_shot if config.mmlu is not None else 5
    m = prepare(args.spider, args.mmlu, args.out, config.need("sample"), k_shot=k_shot)
    s = m["sizes"]
    n_out = m["mmlu_subjects"]["left_out"]["count"]
    print(f"prepared (seed {m['seed']}): spider train {s['spider_train']}, dev {s['spider_dev']} "
          f"{m['spider_dev_hardness']}, mmlu test {s['mmlu_test']} ({s['mmlu_subjects']} subjects"
          f"{f', {n_out} left out' if n_out else ''})"
          f", dev {s['mmlu_dev']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
