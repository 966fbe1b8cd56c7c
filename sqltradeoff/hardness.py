"""Spider hardness (easy / medium / hard / extra) of a gold query.

Computed from the parsed `sql` dict of Spider's dev.json with the rules of the official
evaluator (`Evaluator.eval_hardness` with `count_component1`, `count_component2`,
`count_others` in taoyds/test-suite-sql-eval `evaluation.py`), quirks included:
a NOT condition in WHERE counts as an aggregation (the code tests `cond_unit[0]`, the NOT flag),
and every element of HAVING, its AND/OR connectives included, counts as one.
On the 1,034 dev questions this gives 248 easy, 446 medium, 174 hard, 166 extra.

Parsed SQL layout (lists in JSON where the original uses tuples):
  select: [is_distinct, [[agg_id, val_unit], ...]]
  from: {"table_units": [...], "conds": condition}
  where / having: condition = [cond_unit, "and"|"or", cond_unit, ...]
  cond_unit: [not_op, op_id, val_unit, val1, val2]   (val1/val2 may be a nested sql dict)
  groupBy: [col_unit, ...];  orderBy: [] or ["asc"|"desc", [val_unit, ...]]
  val_unit: [unit_op, col_unit1, col_unit2];  col_unit: [agg_id, col_id, is_distinct]
  limit: None|int;  intersect / except / union: None|sql
"""
from __future__ import annotations

from typing import Any

WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
_LIKE = WHERE_OPS.index("like")
LEVELS = ("easy", "medium", "hard", "extra")


def _has_agg(unit: Any) -> bool:
    return unit[0] != 0        # AGG_OPS.index("none") == 0 (quirk: also NOT flags and "and"/"or")


def _count_agg(units: list) -> int:
    return sum(1 for u in units if _has_agg(u))


def _nested(sql: dict) -> list[dict]:
    nested = []
    for cond in sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]:
        if isinstance(cond[3], dict):
            nested.append(cond[3])
        if isinstance(cond[4], dict):
            nested.append(cond[4])
    for op in ("intersect", "except", "union"):
        if sql[op] is not None:
            nested.append(sql[op])
    return nested


def count_component1(sql: dict) -> int:
    count = 0
    count += len(sql["where"]) > 0
    count += len(sql["groupBy"]) > 0
    count += len(sql["orderBy"]) > 0
    count += sql["limit"] is not None
    if sql["from"]["table_units"]:
        count += len(sql["from"]["table_units"]) - 1           # joins
    connectives = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    count += sum(1 for c in connectives if c == "or")
    conds = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    count += sum(1 for c in conds if c[1] == _LIKE)
    return count


def count_component2(sql: dict) -> int:
    return len(_nested(sql))


def count_others(sql: dict) -> int:
    count = 0
    agg = _count_agg(sql["select"][1])
    agg += _count_agg(sql["where"][::2])
    agg += _count_agg(sql["groupBy"])
    if sql["orderBy"]:
        units = sql["orderBy"][1]
        agg += _count_agg([u[1] for u in units if u[1]] + [u[2] for u in units if u[2]])
    agg += _count_agg(sql["having"])
    count += agg > 1
    count += len(sql["select"][1]) > 1
    count += len(sql["where"]) > 1
    count += len(sql["groupBy"]) > 1
    return count


def hardness(sql: dict) -> str:
    """`easy`, `medium`, `hard` or `extra` for a parsed Spider `sql` dict."""
    try:
        c1, c2, co = count_component1(sql), count_component2(sql), count_others(sql)
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"not a parsed Spider `sql` dict ({type(exc).__name__}: {exc})") from None
    if c1 <= 1 and co == 0 and c2 == 0:
        return "easy"
    if (co <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and co < 2 and c2 == 0):
        return "medium"
    if ((co > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and co <= 2 and c2 == 0)
            or (c1 <= 1 and co == 0 and c2 <= 1)):
        return "hard"
    return "extra"
