"""Prepare stage: seeded samples of the raw data (params.yaml `sample`).

Writes to --out:
  spider_train.jsonl  {id, db_id, question, query}: `sample.spider_train_n` train examples
                      (`all`: every one) whose database exists
  spider_dev.jsonl    {id, db_id, question, query, hardness}: the evaluation sample of
                      `sample.spider_dev_n` dev questions (`all` allowed) whose database exists;
                      hardness (easy/medium/hard/extra) from the parsed `sql`
  mmlu_test.jsonl     `sample.mmlu_per_subject` test questions of each subject, drawn per subject
  mmlu_dev.jsonl      the whole dev split (few-shot examples)
  manifest.json       seed, sizes, sampled ids, exclusions carried over from the raw manifests

Samples are drawn with numpy generators seeded from (sample.seed, stream name) over sorted ids:
the same seed gives the same ids. Exit status 2 on bad input.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path

from sqltradeoff.data import staging_dir
from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.io import read_json, read_jsonl, write_json, write_jsonl
from sqltradeoff.params import load_params, parse_n, section
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


def prepare(spider: Path, mmlu: Path, out: Path, sample: dict) -> dict:
    seed = sample.get("seed")
    dev_n = parse_n(sample.get("spider_dev_n", 100), "sample.spider_dev_n")
    train_n = parse_n(sample.get("spider_train_n", "all"), "sample.spider_train_n")
    per_subject = parse_n(sample.get("mmlu_per_subject", 50), "sample.mmlu_per_subject")
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
    groups = sample_per_group(m_test, "subject", per_subject, seed, "mmlu")
    mmlu_test = [r for subject in sorted(groups) for r in groups[subject]]
    missing_dev = sorted(set(groups) - {r["subject"] for r in m_dev})
    if missing_dev:
        raise UserError(f"{mmlu / 'dev.jsonl'}: no dev (few-shot) examples for subject(s) {', '.join(missing_dev)}")

    raw_sp = read_json(spider / "manifest.json") if (spider / "manifest.json").is_file() else {}
    raw_mm = read_json(mmlu / "manifest.json") if (mmlu / "manifest.json").is_file() else {}
    hard_counts: dict[str, int] = {}
    for r in dev_s:
        hard_counts[r["hardness"]] = hard_counts.get(r["hardness"], 0) + 1
    manifest = {
        "seed": seed,
        "params": {"spider_dev_n": sample.get("spider_dev_n"), "spider_train_n": sample.get("spider_train_n"),
                   "mmlu_per_subject": sample.get("mmlu_per_subject")},
        "sizes": {"spider_train": len(train_s), "spider_dev": len(dev_s), "mmlu_test": len(mmlu_test),
                  "mmlu_dev": len(m_dev),
                  "mmlu_test_per_subject": {s: len(g) for s, g in sorted(groups.items())}},
        "available": {"spider_train": len(train), "spider_dev": len(dev), "mmlu_test": len(m_test)},
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
    with staging_dir(out) as tmp:  # the folder is replaced only when complete
        write_jsonl(tmp / "spider_train.jsonl", train_s)
        write_jsonl(tmp / "spider_dev.jsonl", dev_s)
        write_jsonl(tmp / "mmlu_test.jsonl", mmlu_test)
        write_jsonl(tmp / "mmlu_dev.jsonl", m_dev)
        write_json(tmp / "manifest.json", manifest)
    return manifest


@stage_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    params = load_params(args.params)
    m = prepare(args.spider, args.mmlu, args.out, section(params, "sample"))
    s = m["sizes"]
    print(f"prepared (seed {m['seed']}): spider train {s['spider_train']}, dev {s['spider_dev']} "
          f"{m['spider_dev_hardness']}, mmlu test {s['mmlu_test']}, dev {s['mmlu_dev']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
