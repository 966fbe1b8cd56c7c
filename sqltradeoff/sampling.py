"""Seeded, stable subsets of the raw data.

A sample depends only on the seed, the sample size, the *set* of ids it is drawn from and a
stream name: ids are sorted before drawing, and each stream (`spider_dev`, `spider_train`,
`mmlu:<subject>`) has its own generator, seeded from `(seed, sha256(stream name))`, so one
subject's sample does not change when another subject is added or removed.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from .errors import UserError


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """A generator for one named stream of draws, independent of the other streams."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"params: sample.seed must be a non-negative integer, got {seed!r}")
    key = int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def sample_ids(ids: Sequence[str], n: int | None, seed: int, stream: str) -> list[str]:
    """`n` distinct ids drawn without replacement (all of them when `n` is None), sorted.

    Raises `UserError` when more are asked for than there are."""
    pool = sorted(set(ids))
    if len(pool) != len(ids):
        raise UserError(f"{stream}: duplicate ids in the input")
    if n is None:
        return pool
    if n > len(pool):
        raise UserError(f"{stream}: a sample of {n} was asked for but only {len(pool)} examples are "
                        f"available; lower the sample size in params.yaml `sample` or use `all`")
    idx = stream_rng(seed, stream).choice(len(pool), size=n, replace=False)
    return sorted(pool[i] for i in idx)


def sample_rows(rows: Sequence[dict], n: int | None, seed: int, stream: str) -> list[dict]:
    """The rows whose ids `sample_ids` picks, in id order."""
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in sample_ids([r["id"] for r in rows], n, seed, stream)]


def sample_per_group(rows: Sequence[dict], key: str, n: int | None, seed: int, stream: str) -> dict[str, list[dict]]:
    """`n` rows from each group (`row[key]`), each group drawn from its own stream."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return {g: sample_rows(rs, n, seed, f"{stream}:{g}") for g, rs in groups.items()}


def pick_few_shot(rows: Sequence[dict], k: int, seed: int, stream: str = "few_shot") -> list[dict]:
    """`k` fixed examples from `rows`, each from a different database (`db_id`).

    Databases are drawn first (seeded), then one example within each drawn database."""
    if k <= 0:
        return []
    by_db: dict[str, list[dict]] = {}
    for r in rows:
        by_db.setdefault(r["db_id"], []).append(r)
    if k > len(by_db):
        raise UserError(f"few-shot: {k} examples from different databases were asked for, but the "
                        f"training sample has only {len(by_db)} database(s); lower prompt.few_shot")
    dbs = sample_ids(list(by_db), k, seed, f"{stream}:databases")
    order = stream_rng(seed, f"{stream}:order").permutation(k)
    picked = [sample_rows(by_db[db], 1, seed, f"{stream}:{db}")[0] for db in dbs]
    return [picked[i] for i in order]
