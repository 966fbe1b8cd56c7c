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
the same seed gives the same ids. Exit status 2 on bad input. The logic is
`sqltradeoff.preparing.prepare`; this script reads the parameters and prints a summary.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
from pathlib import Path

from sqltradeoff.errors import stage_main
from sqltradeoff.params import load_params
from sqltradeoff.preparing import prepare


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepare.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spider", required=True, type=Path, help="raw Spider folder (data/raw/spider)")
    p.add_argument("--mmlu", required=True, type=Path, help="raw MMLU folder (data/raw/mmlu)")
    p.add_argument("--out", required=True, type=Path, help="output folder (data/prepared)")
    p.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: %(default)s)")
    return p


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
