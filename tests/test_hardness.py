"""Spider hardness levels (official Evaluator.eval_hardness rules)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sqltradeoff.hardness import count_component1, count_component2, count_others, hardness
from shared_paths import SPIDER, require

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dev():
    return json.loads(require(SPIDER / "dev.json").read_text())


def test_full_dev_distribution(dev):
    assert len(dev) == 1034
    assert Counter(hardness(e["sql"]) for e in dev) == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}


def _find(dev, query):
    return next(e["sql"] for e in dev if e["query"] == query)


def test_known_queries(dev):
    # one table, no clause: easy
    sql = _find(dev, "SELECT count(*) FROM singer")
    assert (count_component1(sql), count_component2(sql), count_others(sql)) == (0, 0, 0)
    assert hardness(sql) == "easy"
    # a nested query: component2 = 1
    nested = next(e["sql"] for e in dev if e["sql"]["intersect"] is not None)
    assert count_component2(nested) >= 1
    assert hardness(nested) in ("hard", "extra")


def _empty_sql(**kw):
    base = {"select": [False, [[0, [0, [0, 1, False], None]]]], "from": {"table_units": [["table_unit", 0]],
            "conds": []}, "where": [], "groupBy": [], "orderBy": [], "having": [], "limit": None,
            "intersect": None, "except": None, "union": None}
    base.update(kw)
    return base


def test_rules_on_constructed_queries():
    cond = [False, 2, [0, [0, 1, False], None], 1.0, None]
    like = [False, 9, [0, [0, 2, False], None], '"%a%"', None]
    assert hardness(_empty_sql()) == "easy"
    assert hardness(_empty_sql(where=[cond])) == "easy"                      # one component
    assert hardness(_empty_sql(where=[cond], limit=1)) == "medium"           # two components
    assert hardness(_empty_sql(where=[cond, "or", like], limit=1)) == "extra"  # or + like: 4 components, 1 other
    assert hardness(_empty_sql(where=[cond, "and", like], limit=1, orderBy=["asc", [[0, [0, 1, False], None]]])) == "extra"
    # the official quirk: a NOT condition counts as an aggregation
    not_cond = [True, 2, [0, [0, 1, False], None], 1.0, None]
    assert count_others(_empty_sql(where=[not_cond])) == 0
    assert count_others(_empty_sql(where=[not_cond], select=[False, [[3, [0, [0, 0, False], None]]]])) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="parsed Spider"):
        hardness({"select": []})
