"""Execution accuracy with the comparison rules of Spider's official test-suite evaluator.

Reference: taoyds/test-suite-sql-eval, `exec_eval.py` (`eval_exec_match`, `result_eq`,
`postprocess`) and `parse.remove_distinct`, run with its default settings
(`keep_distinct=False`, `plug_value=False`). What that code does, and what this module does:

* both queries are post-processed: `"> ="`, `"< ="`, `"! ="` lose their inner space;
* the keyword DISTINCT is deleted from both queries (every standalone word `distinct` outside
  string literals and quoted identifiers, also inside `COUNT(DISTINCT x)`: the official quirk);
* row order matters only when the (processed) gold query contains the substring `order by`;
  then results are compared as ordered lists, otherwise as multisets (duplicates count);
* columns may be permuted: the prediction matches if some permutation of its columns makes the
  results equal; values are compared with Python equality (`1 == 1.0`, `'1' != 1`);
* the official "quick rejection" (each row's values sorted by `str(v) + str(type(v))`, compared
  as sets, or as lists when order matters) is applied first, with its quirks;
* `YEAR(CURDATE())` is replaced with 2020; text is decoded with `errors="ignore"`;
* a prediction that fails or times out scores 0.

Deviations (none changes a score on Spider dev, see the tests):

* the official code restricts column permutations by sampling 20 random rows (only for more
  than 3 columns) and then tries every remaining permutation; here a prediction column is a
  candidate for a gold column only when their value multisets are equal, and permutations
  that would produce identical rows are tried once. Every pruned permutation is one that
  cannot make the results equal, so the outcome is the same, deterministically and faster
  (after 100,000 candidate permutations, which needs many look-alike columns, the answer is
  "different");
* the official evaluator compares on every `*.sqlite` file in the database's directory
  (the test-suite databases); here, on `<db_dir>/<db_id>/<db_id>.sqlite` only (the original
  Spider databases: one file per directory);
* a prediction may fetch at most `max_rows` rows. If the gold result fits, a prediction with
  more rows cannot be equal to it, so this only saves memory; a gold query over the cap is a
  `gold_error`. The official code asserts that gold queries run; here a failing gold query is
  reported as `gold_error` and scores 0;
* limits the official code does not have (`sqlexec`, `isolation`): SQL longer than 100,000
  characters is refused unread, SQLite's limits are lowered (1 MB strings, LIKE patterns of
  1,000 bytes, ...), a query still running 0.5 s after its time limit is killed with its
  worker process (`timeout`), a pair still running after 3 x the limit likewise, and a worker
  past its memory cap gives `other_error: out of memory`. No Spider gold query comes near.

Error kinds for the breakdown: `match`, `wrong_result`, `empty_result` (prediction ran, no rows,
gold has rows), `syntax_error`, `unknown_table`, `unknown_column`, `other_error`, `timeout`,
`forbidden`, and `gold_error`.
"""
from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from . import sqlexec
from .isolation import run_isolated
from .sqlexec import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S

MATCH = "match"
WRONG_RESULT = "wrong_result"
EMPTY_RESULT = "empty_result"
GOLD_ERROR = "gold_error"
ERROR_KINDS = (MATCH, WRONG_RESULT, EMPTY_RESULT, sqlexec.SYNTAX_ERROR, sqlexec.UNKNOWN_TABLE,
               sqlexec.UNKNOWN_COLUMN, sqlexec.OTHER_ERROR, sqlexec.TIMEOUT, sqlexec.FORBIDDEN,
               GOLD_ERROR)
HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")


# --------------------------------------------------------------------------- query processing

def postprocess(query: str) -> str:
    """The official `postprocess`: join `> =`, `< =`, `! =`."""
    return query.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)


def replace_cur_year(query: str) -> str:
    """The official `replace_cur_year`: `YEAR(CURDATE())` becomes 2020."""
    return _CUR_YEAR.sub("2020", query)


# One pass of the regex engine (linear time): literals, quoted names and comments are matched
# (and kept) as wholes, so a DISTINCT inside them is never seen; a `[` starts a quoted name
# only after a non-word character; an unterminated literal or comment runs to the end.
_DISTINCT_SCAN = re.compile(r"""
    (?P<keep> '[^']*(?:''[^']*)*'?
            | "[^"]*(?:""[^"]*)*"?
            | `[^`]*(?:``[^`]*)*`?
            | (?<![\w$#])\[[^\]]*\]?
            | --[^\n]*
            | /\*(?s:.*?)(?:\*/|\Z) )
  | (?<![\w$#])[dD][iI][sS][tT][iI][nN][cC][tT](?![\w$#])
""", re.VERBOSE)


def _keep_or_drop(m: re.Match) -> str:
    return m.group("keep") or ""


def remove_distinct(query: str) -> str:
    """Delete every standalone word DISTINCT outside literals, quoted names and comments.

    Same result as the official `parse.remove_distinct` (which joins the sqlparse tokens whose
    lower-cased value is not `distinct`): the text around the word, whitespace included, is kept.
    Linear time (one regular-expression scan).
    """
    return _DISTINCT_SCAN.sub(_keep_or_drop, query)


def normalize_exact(query: str | None) -> str:
    """The reference study's exact-string form: lower-cased, whitespace runs collapsed."""
    return " ".join((query or "").lower().split())


def exact_match(gold: str, pred: str | None) -> bool:
    """Lower-cased, whitespace-normalised string equality (the reference study's metric)."""
    return normalize_exact(gold) == normalize_exact(pred)


# --------------------------------------------------------------------------- result comparison

def _unorder_row(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda v: str(v) + str(type(v))))


def _quick_accept_possible(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """The official quick rejection test (a necessary condition, with its sort-key quirk)."""
    g = [_unorder_row(r) for r in gold]
    p = [_unorder_row(r) for r in pred]
    return g == p if order_matters else set(g) == set(p)


MAX_PERMUTATIONS = 100_000


def _column_permutations(gold: list[tuple], pred: list[tuple],
                         order_matters: bool) -> Iterator[tuple[int, ...]]:
    """Permutations `perm` (gold column i <- pred column perm[i]) worth trying.

    A pred column is a candidate for a gold column only if their value multisets are equal
    (when order matters: their value sequences); among pred columns with identical contents,
    only the first unused one is tried; when order does not matter, a partial assignment is
    extended only if the chosen columns already give the gold's multiset of partial rows.
    """
    ncols = len(gold[0])
    gvecs = [tuple(r[i] for r in gold) for i in range(ncols)]
    pvecs = [tuple(r[j] for r in pred) for j in range(ncols)]
    if order_matters:
        cand = [[j for j in range(ncols) if pvecs[j] == gvecs[i]] for i in range(ncols)]
    else:
        gcols = [Counter(v) for v in gvecs]
        pcols = [Counter(v) for v in pvecs]
        cand = [[j for j in range(ncols) if pcols[j] == gcols[i]] for i in range(ncols)]
    if any(not c for c in cand):
        return
    used = [False] * ncols
    perm: list[int] = []
    # Unordered: the chosen columns must already agree as a multiset of partial rows.
    gold_prefix = None if order_matters else [None] + [
        Counter(r[:i + 1] for r in gold) for i in range(1, ncols - 1)]

    def prefix_ok(i: int) -> bool:
        if gold_prefix is None or i == 0 or i >= ncols - 1:
            return True
        return Counter(tuple(r[k] for k in perm) for r in pred) == gold_prefix[i]

    def rec(i: int) -> Iterator[tuple[int, ...]]:
        if i == ncols:
            yield tuple(perm)
            return
        tried: list[tuple] = []
        for j in cand[i]:
            if used[j] or any(pvecs[j] == t for t in tried):
                continue
            tried.append(pvecs[j])
            used[j] = True
            perm.append(j)
            if prefix_ok(i):
                yield from rec(i + 1)
            perm.pop()
            used[j] = False

    yield from rec(0)


def result_eq(gold: Sequence[tuple], pred: Sequence[tuple], order_matters: bool) -> bool:
    """Whether two results are equal under the official rules (see the module docstring)."""
    gold, pred = list(gold), list(pred)
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    ncols = len(gold[0])
    if len(pred[0]) != ncols:
        return False
    if not _quick_accept_possible(gold, pred, order_matters):
        return False
    gold_counts = None if order_matters else Counter(gold)
    for n_tried, perm in enumerate(_column_permutations(gold, pred, order_matters)):
        if n_tried >= MAX_PERMUTATIONS:       # pathological: many look-alike columns
            return False
        permuted = pred if perm == tuple(range(ncols)) else [tuple(r[j] for j in perm) for r in pred]
        if order_matters:
            if permuted == gold:
                return True
        elif Counter(permuted) == gold_counts:
            return True
    return False


# --------------------------------------------------------------------------- one pair

@dataclass(frozen=True)
class Outcome:
    """The verdict on one (gold, prediction) pair."""

    match: bool
    kind: str              # one of ERROR_KINDS
    reason: str = ""

    @property
    def error(self) -> str | None:
        """None for a match, else `"<kind>: <short reason>"`."""
        if self.match:
            return None
        return f"{self.kind}: {self.reason}" if self.reason else self.kind


_DB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_db_id(db_id: object) -> str:
    """`db_id` if it is a plain database name (letters, digits, `_`, `.`, `-`; no `..`, no
    separator, not absolute), else `ValueError`: a name never reaches outside the db dir."""
    if not isinstance(db_id, str) or not _DB_ID.fullmatch(db_id) or ".." in db_id:
        shown = repr(db_id) if len(repr(db_id)) <= 80 else repr(db_id)[:77] + "..."
        raise ValueError(f"db_id {shown} is not a database name (allowed: letters, digits, "
                         f"'_', '.', '-'; no '..', no path separators)")
    return db_id


def db_path_for(db_dir: str | os.PathLike, db_id: str) -> Path:
    """`<db_dir>/<db_id>/<db_id>.sqlite`, the Spider release layout (`db_id` is checked)."""
    check_db_id(db_id)
    return Path(db_dir) / db_id / f"{db_id}.sqlite"


GOLD_TAG, PRED_TAG = 1, 2        # `execute_sql` tags: which query a killed worker was running


def compare(db_path: str | os.PathLike, gold: str, pred: str | None, *,
            timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
            keep_distinct: bool = False) -> Outcome:
    """Execute gold and prediction on `db_path` and compare them with the official rules.

    SQL longer than `sqlexec.MAX_SQL_CHARS` is refused before any pass over it (a gold query:
    `gold_error`; a prediction: `other_error`, once the gold query has run).
    """
    too_long = f"query longer than {sqlexec.MAX_SQL_CHARS} characters"
    if len(gold) > sqlexec.MAX_SQL_CHARS:
        return Outcome(False, GOLD_ERROR, f"{sqlexec.OTHER_ERROR}: {too_long}")
    pred_too_long = pred is not None and len(pred) > sqlexec.MAX_SQL_CHARS
    g = postprocess(gold)
    p = "" if pred_too_long else postprocess(pred or "")
    if not keep_distinct:
        g, p = remove_distinct(g), remove_distinct(p)
    order_matters = "order by" in g.lower()
    gres = sqlexec.execute_sql(db_path, replace_cur_year(g), timeout_s=timeout_s, max_rows=max_rows,
                               tag=GOLD_TAG)
    if not gres.ok:
        return Outcome(False, GOLD_ERROR, gres.describe())
    if pred_too_long:
        return Outcome(False, sqlexec.OTHER_ERROR, too_long)
    pres = sqlexec.execute_sql(db_path, replace_cur_year(p), timeout_s=timeout_s, max_rows=max_rows,
                               tag=PRED_TAG)
    if not pres.ok:
        if pres.error == sqlexec.TOO_MANY_ROWS:
            return Outcome(False, WRONG_RESULT,
                           f"more than {max_rows} rows (gold has {len(gres.rows)})")
        msg = " ".join(pres.message.split())
        return Outcome(False, pres.error, msg[:160])
    if result_eq(gres.rows, pres.rows, order_matters):
        return Outcome(True, MATCH)
    if not pres.rows:
        return Outcome(False, EMPTY_RESULT, f"no rows (gold has {len(gres.rows)})")
    gcols, pcols = len(gres.rows[0]) if gres.rows else 0, len(pres.rows[0])
    if gres.rows and gcols != pcols:
        why = f"{pcols} columns (gold has {gcols})"
    elif len(gres.rows) != len(pres.rows):
        why = f"{len(pres.rows)} rows (gold has {len(gres.rows)})"
    else:
        why = "different values" + (" or order" if order_matters else "")
    return Outcome(False, WRONG_RESULT, why)


def exec_match(db_path: str | os.PathLike, gold: str, pred: str | None, *,
               timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
               keep_distinct: bool = False) -> tuple[bool, str | None]:
    """`(matches, error)`: error is None on a match, else `"<kind>: <short reason>"`."""
    out = compare(db_path, gold, pred, timeout_s=timeout_s, max_rows=max_rows,
                  keep_distinct=keep_distinct)
    return out.match, out.error


# --------------------------------------------------------------------------- many pairs

def _chunks(pairs: Sequence[dict], db_dir: str | os.PathLike,
            chunk_size: int) -> list[tuple[str, list[tuple[int, str, str | None]]]]:
    by_db: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
    for idx, pair in enumerate(pairs):
        by_db[pair["db_id"]].append((idx, pair["gold_sql"], pair.get("pred_sql")))
    chunks = []
    for db_id, items in by_db.items():
        path = str(db_path_for(db_dir, db_id))
        for start in range(0, len(items), chunk_size):
            chunks.append((path, items[start:start + chunk_size]))
    chunks.sort(key=lambda c: -len(c[1]))        # big chunks first: better load balance
    return chunks


def _failed(item, kind: str, tag: int, message: str) -> Outcome:
    """The outcome of a pair whose worker was killed or died (`isolation.run_isolated`)."""
    if tag == GOLD_TAG:
        return Outcome(False, GOLD_ERROR, f"{kind}: {message}")
    return Outcome(False, kind, message)


def score_pairs(pairs: Sequence[dict], db_dir: str | os.PathLike, *, workers: int = 1,
                timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
                keep_distinct: bool = False, chunk_size: int = 32,
                progress: bool = False, isolate: bool = True,
                memory_mb: int | None = sqlexec.DEFAULT_MEMORY_MB) -> list[Outcome]:
    """Score `pairs` (dicts with `db_id`, `gold_sql`, `pred_sql`); outcomes in input order.

    Work is chunked by database (each worker process caches one connection per database) and
    spread over `workers` killable processes (`isolation.run_isolated`, each capped at
    `memory_mb` MiB beyond its start size): a query that runs past `timeout_s` is stopped by
    SQLite's progress handler, or else killed with its worker at `timeout_s +
    sqlexec.HARD_KILL_SLACK_S`; a pair whose worker was killed or died scores 0 (`timeout`,
    or `other_error`; `gold_error` when the gold query was running) and the rest goes on.
    `isolate=False` runs everything in this process (no hard kill, no memory cap). The
    databases must exist (`db_path_for`); check that first (`missing_databases`).
    """
    from tqdm import tqdm

    timeout_s = sqlexec.check_timeout(timeout_s)
    results: list[Outcome | None] = [None] * len(pairs)
    chunks = _chunks(pairs, db_dir, chunk_size)
    bar = tqdm(total=len(pairs), unit="pair", desc="scoring", disable=not progress,
               dynamic_ncols=True)

    def one(item: tuple[str, str, str | None]) -> Outcome:
        path, gold, pred = item
        return compare(path, gold, pred, timeout_s=timeout_s, max_rows=max_rows,
                       keep_distinct=keep_distinct)

    batches = [[(idx, (path, gold, pred)) for idx, gold, pred in items] for path, items in chunks]
    try:
        if isolate:
            done = run_isolated(batches, one, _failed, workers=max(1, workers),
                                        timeout_s=timeout_s, memory_mb=memory_mb)
        else:
            done = ((idx, one(item)) for batch in batches for idx, item in batch)
        for idx, out in done:
            results[idx] = out
            bar.update(1)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def missing_databases(db_ids: Iterable[str], db_dir: str | os.PathLike) -> list[str]:
    """The db_ids whose `<db_dir>/<db_id>/<db_id>.sqlite` file does not exist (sorted)."""
    return sorted({d for d in db_ids if not db_path_for(db_dir, d).is_file()})


def summarize(rows: Sequence[dict]) -> dict:
    """Metrics of scored rows (`exec_match`, `exact_match`, `error`, optional `hardness`)."""
    n = len(rows)
    n_correct = sum(int(r["exec_match"]) for r in rows)
    by_h: dict[str, list[int]] = {}
    for r in rows:
        h = r.get("hardness")
        if h:
            by_h.setdefault(h, []).append(int(r["exec_match"]))
    order = {h: i for i, h in enumerate(HARDNESS_LEVELS)}
    by_hardness = {h: {"n": len(v), "execution_accuracy": sum(v) / len(v)}
                   for h, v in sorted(by_h.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))}
    by_error: Counter = Counter()
    for r in rows:
        by_error[MATCH if r["exec_match"] else (r["error"] or WRONG_RESULT).split(":", 1)[0]] += 1
    return {
        "execution_accuracy": n_correct / n if n else 0.0,
        "exact_match": sum(int(r["exact_match"]) for r in rows) / n if n else 0.0,
        "n": n,
        "n_correct": n_correct,
        "by_hardness": by_hardness,
        "by_error": dict(by_error.most_common()),
    }
