"""Download stage: Spider or MMLU into data/raw/<dataset>/ (contracts in docs/design.md).

Sources (params.yaml `data.source`):

  mirror  a local folder (`data.mirror_dir`, relative to the params file) in the release
          layouts: spider/{dev.json,tables.json,train_spider.json,train_others.json,
          database/<db>/<db>.sqlite}, mmlu/data/{test,dev}/<subject>_<split>.csv. When
          spider/train_spider.json is absent, spider_derived/train_spider.question_query_db_id.json
          stands in (warned and recorded in the manifest). Files are verified against the
          mirror's MANIFEST.sha256 when there is one.
  hub     Spider questions from `data.spider.hub_id` (splits train/validation) plus the
          databases, tables.json and dev.json (for the parsed `sql`) from the official archive
          `data.spider.archive_url` (Google Drive via gdown; sha256 checked when
          `archive_sha256` is set, else computed and recorded). MMLU: `data.mmlu.hub_id`, one
          config per subject (splits test/dev); if the hub cannot be reached, the official
          archive `data.mmlu.archive_url` (sha256 `data.mmlu.archive_sha256`) is used instead.

Questions whose database is missing are excluded with a warning and listed in manifest.json.
The output folder is replaced only when complete. Exit status 2 on bad input or configuration;
Ctrl-C (SIGINT) or SIGTERM removes the partial output and exits 130 or 143.
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import signal
from pathlib import Path

from sqltradeoff import data
from sqltradeoff.errors import UserError, stage_main
from sqltradeoff.interrupt import Interrupted, signals_raise
from sqltradeoff.config import as_mapping
from sqltradeoff.params import load_params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="download.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["spider", "mmlu"], help="which dataset to fetch")
    p.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/raw/spider)")
    p.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: %(default)s)")
    p.add_argument("--cache-dir", default=Path(".cache/downloads"), type=Path,
                   help="where hub-mode archives are downloaded and kept (default: %(default)s)")
    return p


@stage_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with signals_raise((signal.SIGINT, signal.SIGTERM)):   # SIGTERM too runs the temporary folders' cleanups
            return download(args)
    except Interrupted as exc:
        print(f"interrupted by {exc}: {args.out} left as it was", file=sys.stderr)
        return exc.exit_status


def _source(cfg, name: str) -> dict:
    """`data.spider` / `data.mmlu` as the data functions take it (a mapping)."""
    if getattr(cfg, name) is None:
        raise UserError(f"params: section `data.{name}` is missing or not a mapping")
    return as_mapping(getattr(cfg, name))


def download(args) -> int:
    params = load_params(args.params)
    cfg = params.config.need("data")     # every value checked (sqltradeoff/config.py)
    # the manifest records the mirror as params.yaml writes it: the same in every checkout and DVC workspace
    recorded = params.as_written.get("data.mirror_dir")
    source = cfg.source
    base = args.params.resolve().parent
    if source not in ("mirror", "hub"):
        raise UserError(f"params: data.source must be `mirror` or `hub`, got {source!r}")
    if args.dataset == "spider":
        if source == "mirror":
            m = data.spider_from_mirror(cfg.mirror_dir, args.out, base=base, recorded=recorded)
        else:
            args.cache_dir.mkdir(parents=True, exist_ok=True)
            m = data.spider_from_hub(_source(cfg, "spider"), args.out, args.cache_dir)
        c = m["counts"]
        print(f"spider ({m['source']}): train {c['train']['kept']}/{c['train']['source']} kept, "
              f"dev {c['dev']['kept']}/{c['dev']['source']} kept, {c['databases']} databases -> {args.out}")
    else:
        mcfg = _source(cfg, "mmlu")
        if source == "mirror":
            m = data.mmlu_from_mirror(cfg.mirror_dir, mcfg, args.out, base=base, recorded=recorded)
        else:
            args.cache_dir.mkdir(parents=True, exist_ok=True)
            m = data.mmlu_from_hub(mcfg, args.out, args.cache_dir)
        per = ", ".join(f"{s} {n['test']}/{n['dev']}" for s, n in m["counts"].items())
        print(f"mmlu ({m['source']}): test/dev rows {per} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
