"""SQL extraction from raw model output.

`extract_sql(text)` returns the one SQL statement a model meant, from outputs such as

* a bare query (`SELECT ...`), possibly followed by `;`, an end-of-turn token or an explanation;
* a markdown block (```` ```sql ... ``` ````, also unlabelled or never closed);
* a prefixed answer (`SQL: ...`, `Query: ...`, `SQL query: ...`, `Answer: ...`);
* a chat model's prose ("To find ..., you can use the following query: ...");
* an inline code span or a quoted query (`` `SELECT ...` ``, `"SELECT ..."`).

Only the first statement is kept (cut at the first `;` outside literals), without the `;`.
Prose after the query (a blank line, or a line that starts like a sentence: "This query ...",
"Explanation:", "Note:") is dropped. When nothing looks like SQL, the cleaned text is returned
as is, so that scoring reports the model's answer as a syntax error; empty text gives "".

Model text is untrusted, so the time is linear in its length: no pattern here can read one stretch
of text in two ways (the cause of quadratic backtracking), and nothing rescans the text once per
match. Only the first `MAX_TEXT_CHARS` characters are read: a model's answer is
`predict.max_new_tokens` tokens (a few kB), and `sqlexec` refuses SQL over `MAX_SQL_CHARS` anyway.
Hostile texts at the cap take well under a second (tests/test_extract.py times them).
"""
from __future__ import annotations

import bisect
import re

MAX_TEXT_CHARS = 200_000    # text past this many characters is ignored (twice sqlexec.MAX_SQL_CHARS)

# The model's turn ended: whatever follows is not part of the answer.
_END_OF_TURN = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|</s>|<end_of_turn>")
_SPECIAL_TOKENS = re.compile(
    r"<\|[a-zA-Z0-9_]+\|>|</s>|<s>|\[/?INST\]|<\|?eot_id\|?>|<end_of_turn>|<start_of_turn>\w*"
    r"|\[/?SQL\]|</?sql>|</?SQL>")
# No two quantifiers here can take the same characters (`[ \t]*([A-Za-z0-9_+-]*)[ \t]*` could, and then
# a run of spaces after ``` took quadratic time to refuse); the language and the matches are the same.
_FENCE = re.compile(r"```(?:[ \t]*(?:([A-Za-z0-9_+-]+)[ \t]*)?\n)?(.*?)(?:```|\Z)", re.DOTALL)
# `sql\s*(?:query)?(?:\*\*)?\s*:` let two `\s*` share a run of whitespace (quadratic when no `:` follows);
# the `**` and the second `\s*` now belong to the optional word. The leading run of `[ \t>*#-]` is
# taken whole (`(?=(...))\1` acts as an atomic group): a keyword, not one of those characters, must follow,
# so giving some back never helped, and a long run of `*` no longer costs a retry per character.
# The language and the matches are the same as before.
_PREFIX = re.compile(
    r"(?im)^(?=([ \t>*#-]*))\1(?:final\s+)?"
    r"(?:sql(?:ite)?\s*(?:query(?:\*\*)?\s*|\*\*\s*)?|(?:query|answer|output)(?:\*\*)?\s*)"
    r":(?:\*\*)?[ \t]*")
# Where a statement starts: SELECT ..., or a WITH clause that defines a CTE.
_SELECT = re.compile(r"\bselect\b", re.IGNORECASE)
_WITH = re.compile(r"\bwith\s+(?:recursive\s+)?[\w\"`\[\]]+\s*(?:\([^()]*\)\s*)?as\s*\(", re.IGNORECASE)
_FROM = re.compile(r"\bfrom\b", re.IGNORECASE)
_STARTS_SQL = re.compile(r"\s*(?:select\b|with\s)", re.IGNORECASE)
_SQL_CONTINUATION = re.compile(
    r"^\s*(?:(?:select|from|where|group|order|having|limit|offset|union|intersect|except|join|inner|"
    r"left|right|cross|natural|outer|on|and|or|not|as|in|is|like|between|case|when|then|else|end|"
    r"asc|desc|by|with|values|exists|distinct|all|count|sum|avg|min|max)\b|[(),*=<>!'\"`\[0-9.+-])",
    re.IGNORECASE)
# What `_first_statement` steps over: a quoted literal or identifier (a doubled quote inside it is
# an escaped quote; one never closed runs to the end), a `--` comment to the end of its line, or
# the `;` it looks for. `'?` cannot fail, so the first, greedy, reading is the one taken: the same
# reading as a left-to-right scan, in one pass without backtracking.
_STATEMENT_TOKEN = re.compile(
    r"'[^']*(?:''[^']*)*'?|\"[^\"]*(?:\"\"[^\"]*)*\"?|`[^`]*(?:``[^`]*)*`?|--[^\n]*|;")
_PROSE_START = re.compile(
    r"^\s*(?:#+\s|\*\*|[-*]\s+\w|\d+\.\s+[A-Za-z]|(?:explanation|note|this|these|that|those|the|here|"
    r"in|it|its|it's|we|i|you|output|result|results|question|answer|assistant|user|to|if|please|"
    r"also|alternatively|however|so|then|now|finally|first|for|make|remember|hope|let's|let)(?:\s|:))",
    re.IGNORECASE)


def _first_statement(sql: str) -> str:
    """Text before the first `;` outside string literals and quoted identifiers."""
    for m in _STATEMENT_TOKEN.finditer(sql):
        if m.group() == ";":
            return sql[:m.start()]
    return sql


def _is_prose(line: str) -> bool:
    """A line that starts like a sentence ("This query ...", "Explanation:"), not like SQL."""
    if _SQL_CONTINUATION.match(line) or not _PROSE_START.match(line):
        return False
    stripped = line.strip()
    return len(stripped.split()) >= 3 or stripped.endswith(":") or stripped.startswith(("#", "**"))


def _cut_prose(sql: str) -> str:
    """Drop trailing lines that are prose, not SQL."""
    lines = sql.split("\n")
    kept = [lines[0]]
    blank = False
    for line in lines[1:]:
        if not line.strip():
            blank = True
            continue
        if _is_prose(line):
            break
        if blank and not _SQL_CONTINUATION.match(line):
            break
        blank = False
        kept.append(line)
    return "\n".join(kept)


def _find_start(text: str) -> int | None:
    """Index where the SQL statement starts, or None."""
    starts = []
    with_m = _WITH.search(text)
    if with_m:
        starts.append(with_m.start())
    # Prefer an upper-case SELECT (prose says "select" in lower case); then one followed by FROM.
    selects = list(_SELECT.finditer(text))
    upper = next((m.start() for m in selects if m.group() == "SELECT"), None)
    if upper is not None:
        starts.append(upper)
    elif selects:
        starts.append(_pick_select(text, selects))
    return min(starts) if starts else None


def _pick_select(text: str, selects: list[re.Match]) -> int:
    r"""Among lower/mixed-case SELECTs: the first one followed by FROM that starts a line or follows
    a colon, quote or parenthesis; else the first one followed by FROM; else the first one.

    "Followed by FROM" is `select\s+[^;]*?\bfrom\b` matching there: whitespace right after the
    keyword, then a `\bfrom\b` before any `;`. It is answered from the sorted positions of every FROM
    and every `;` (one pass each, then a bisection per SELECT) rather than by a scan per SELECT,
    which took quadratic time on texts with many SELECTs and no FROM.
    """
    froms = [m.start() for m in _FROM.finditer(text)]
    semicolons = [m.start() for m in re.finditer(";", text)]
    first_with_from = None
    for m in selects:
        end = m.end()
        if end >= len(text) or not text[end].isspace():
            continue
        i = bisect.bisect_left(froms, end + 1)
        if i == len(froms):
            break                                   # no FROM after this SELECT, nor after later ones
        j = bisect.bisect_left(semicolons, end)
        if j < len(semicolons) and semicolons[j] < froms[i]:
            continue
        if _placed(text, m.start()):
            return m.start()
        if first_with_from is None:
            first_with_from = m.start()
    return first_with_from if first_with_from is not None else selects[0].start()


def _placed(text: str, start: int) -> bool:
    r"""Whether `text[:start]` matches `(?:^|\n|[:`"'(])\s*$`: only whitespace back to the start of the
    text, to a newline, or to one of ``:`"'(``. The walk back from one SELECT stops at the end of the
    previous one at the latest, so the walks for all SELECTs add up to one pass over the text."""
    i = start
    while i > 0 and text[i - 1].isspace():
        if text[i - 1] == "\n":
            return True
        i -= 1
    return i == 0 or text[i - 1] in ":`\"'("


def _strip_wrapping(sql: str) -> str:
    sql = sql.strip()
    for _ in range(3):
        if len(sql) >= 2 and sql[0] == sql[-1] and sql[0] in "`\"'":
            sql = sql[1:-1].strip()
        else:
            break
    return sql


def extract_sql(text: str | None) -> str:
    """The first SQL statement in a model's output, without the final `;` (see the module doc)."""
    if not text:
        return ""
    text = str(text)[:MAX_TEXT_CHARS]
    end = _END_OF_TURN.search(text)
    if end and text[:end.start()].strip():
        text = text[:end.start()]
    text = _SPECIAL_TOKENS.sub("\n", text).replace("\r\n", "\n")

    # 1. Markdown code blocks: the first one that contains a query.
    blocks = (m.group(2) for m in _FENCE.finditer(text))
    candidate = next((b for b in blocks if _SELECT.search(b) or _WITH.search(b)), None)
    if candidate is None:
        # 2. A "SQL:" / "Query:" prefix: what follows it.
        m = _PREFIX.search(text)
        candidate = text[m.end():] if m and _find_start(text[m.end():]) is not None else text
    # 3. An inline code span holding the query (when the text does not start with one).
    if "`" in candidate and not _STARTS_SQL.match(candidate):
        spans = [sp for sp in re.findall(r"`([^`\n]+)`", candidate) if _STARTS_SQL.match(sp)]
        if spans:
            candidate = spans[0]

    start = _find_start(candidate)
    if start is None:
        return _strip_wrapping(_first_statement(candidate)).strip()
    sql = candidate[start:]
    sql = _first_statement(sql)
    sql = _cut_prose(sql)
    sql = sql.strip()
    # A closing quote or backtick left by a quoted query, a trailing full stop from prose.
    while sql and sql[-1] in "`" and sql.count("`") % 2 == 1:
        sql = sql[:-1].rstrip()
    if sql.endswith('"') and sql.count('"') % 2 == 1:
        sql = sql[:-1].rstrip()
    if sql.endswith("'") and _unbalanced_single(sql):
        sql = sql[:-1].rstrip()
    if sql.endswith(".") and not re.search(r"\d\.$", sql):
        sql = sql[:-1].rstrip()
    return sql


def _unbalanced_single(sql: str) -> bool:
    return sql.replace("''", "").count("'") % 2 == 1
