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
"""
from __future__ import annotations

import re

# The model's turn ended: whatever follows is not part of the answer.
_END_OF_TURN = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|</s>|<end_of_turn>")
_SPECIAL_TOKENS = re.compile(
    r"<\|[a-zA-Z0-9_]+\|>|</s>|<s>|\[/?INST\]|<\|?eot_id\|?>|<end_of_turn>|<start_of_turn>\w*"
    r"|\[/?SQL\]|</?sql>|</?SQL>")
_FENCE = re.compile(r"```(?:[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n)?(.*?)(?:```|\Z)", re.DOTALL)
_PREFIX = re.compile(
    r"(?im)^[ \t>*#-]*(?:\*\*)?(?:final\s+)?(?:sql(?:ite)?\s*(?:query)?|query|answer|output)"
    r"(?:\*\*)?\s*:(?:\*\*)?[ \t]*")
# Where a statement starts: SELECT ..., or a WITH clause that defines a CTE.
_SELECT = re.compile(r"\bselect\b", re.IGNORECASE)
_WITH = re.compile(r"\bwith\s+(?:recursive\s+)?[\w\"`\[\]]+\s*(?:\([^()]*\)\s*)?as\s*\(", re.IGNORECASE)
_STARTS_SQL = re.compile(r"\s*(?:select\b|with\s)", re.IGNORECASE)
_SQL_CONTINUATION = re.compile(
    r"^\s*(?:(?:select|from|where|group|order|having|limit|offset|union|intersect|except|join|inner|"
    r"left|right|cross|natural|outer|on|and|or|not|as|in|is|like|between|case|when|then|else|end|"
    r"asc|desc|by|with|values|exists|distinct|all|count|sum|avg|min|max)\b|[(),*=<>!'\"`\[0-9.+-])",
    re.IGNORECASE)
_PROSE_START = re.compile(
    r"^\s*(?:#+\s|\*\*|[-*]\s+\w|\d+\.\s+[A-Za-z]|(?:explanation|note|this|these|that|those|the|here|"
    r"in|it|its|it's|we|i|you|output|result|results|question|answer|assistant|user|to|if|please|"
    r"also|alternatively|however|so|then|now|finally|first|for|make|remember|hope|let's|let)(?:\s|:))",
    re.IGNORECASE)


def _first_statement(sql: str) -> str:
    """Text before the first `;` outside string literals and quoted identifiers."""
    quote = None
    i = 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                if i + 1 < len(sql) and sql[i + 1] == quote:
                    i += 2
                    continue
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            if j < 0:
                break
            i = j
            continue
        elif ch == ";":
            return sql[:i]
        i += 1
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
    upper = [m.start() for m in _SELECT.finditer(text) if text[m.start():m.end()] == "SELECT"]
    anycase = [m.start() for m in _SELECT.finditer(text)]
    if upper:
        starts.append(upper[0])
    else:
        with_from = [s for s in anycase if re.match(r"select\s+[^;]*?\bfrom\b", text[s:], re.I | re.S)]
        # A query in prose usually starts a line or follows a colon or quote.
        placed = [s for s in with_from if re.search(r"(?:^|\n|[:`\"'(])\s*$", text[:s])]
        pick = placed or with_from or anycase
        if pick:
            starts.append(pick[0])
    return min(starts) if starts else None


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
    text = str(text)
    end = _END_OF_TURN.search(text)
    if end and text[:end.start()].strip():
        text = text[:end.start()]
    text = _SPECIAL_TOKENS.sub("\n", text).replace("\r\n", "\n")

    # 1. Markdown code blocks: the first one that contains a query.
    blocks = [m.group(2) for m in _FENCE.finditer(text)]
    candidate = next((b for b in blocks if _find_start(b) is not None), None)
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
