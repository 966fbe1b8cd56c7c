"""SQL extraction from realistic model outputs."""
from __future__ import annotations

import pytest

from sqltradeoff.extract import extract_sql

CASES = [
    # bare queries
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("SELECT count(*) FROM singer;", "SELECT count(*) FROM singer"),
    ("  SELECT count(*) FROM singer ;  \n", "SELECT count(*) FROM singer"),
    ("select name from singer where age > 30", "select name from singer where age > 30"),
    # end-of-turn tokens left in the decoded text
    ("SELECT name FROM singer<|im_end|>", "SELECT name FROM singer"),
    ("SELECT name FROM singer</s>", "SELECT name FROM singer"),
    ("SELECT name FROM singer<|endoftext|>garbage", "SELECT name FROM singer"),
    ("[/INST] SELECT name FROM singer", "SELECT name FROM singer"),
    # markdown fences
    ("```sql\nSELECT name FROM singer WHERE age > 30;\n```", "SELECT name FROM singer WHERE age > 30"),
    ("```SQL\nSELECT name\nFROM singer\n```", "SELECT name\nFROM singer"),
    ("```sqlite\nSELECT 1\n```", "SELECT 1"),
    ("```\nSELECT name FROM singer\n```", "SELECT name FROM singer"),
    ("```SELECT name FROM singer```", "SELECT name FROM singer"),
    ("```sql\nSELECT name FROM singer\n", "SELECT name FROM singer"),        # never closed
    # a chat model's prose around a fenced block (Mistral-Instruct style)
    (" To find the number of singers, you can use the following SQL query:\n\n```sql\n"
     "SELECT COUNT(*) FROM singer;\n```\n\nThis query will count all the rows in the `singer` table.",
     "SELECT COUNT(*) FROM singer"),
    ("Sure! Here's the SQL query:\n\n```sql\nSELECT T1.name\nFROM singer AS T1\nJOIN singer_in_concert AS T2 "
     "ON T1.singer_id = T2.singer_id\nGROUP BY T1.name\nHAVING count(*) > 1;\n```\n\n"
     "Explanation:\n1. We join the tables.\n2. We group by name.",
     "SELECT T1.name\nFROM singer AS T1\nJOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id\n"
     "GROUP BY T1.name\nHAVING count(*) > 1"),
    ("First, a sketch:\n```python\nprint('hi')\n```\nThen:\n```sql\nSELECT 2\n```", "SELECT 2"),
    # prefixes
    ("SQL: SELECT name FROM singer", "SELECT name FROM singer"),
    ("SQL Query: SELECT name FROM singer;", "SELECT name FROM singer"),
    ("Query: select name from singer;\nExplanation: it selects the names", "select name from singer"),
    ("Answer: SELECT avg(age) FROM singer", "SELECT avg(age) FROM singer"),
    ("**SQL:** SELECT avg(age) FROM singer", "SELECT avg(age) FROM singer"),
    # quotes and inline code
    ('"SELECT name FROM singer"', "SELECT name FROM singer"),
    ("'SELECT name FROM singer'", "SELECT name FROM singer"),
    ("`SELECT name FROM singer`", "SELECT name FROM singer"),
    ("The answer is `SELECT count(*) FROM pets`.", "SELECT count(*) FROM pets"),
    # trailing prose without a semicolon
    ("SELECT name\nFROM singer\nWHERE country = 'France'\nThis query returns French singers.",
     "SELECT name\nFROM singer\nWHERE country = 'France'"),
    ("SELECT name FROM singer\n\nThe query above lists every singer.", "SELECT name FROM singer"),
    ("SELECT name FROM singer\nNote: names are unique.", "SELECT name FROM singer"),
    ("The SQL query is SELECT count(*) FROM singer.", "SELECT count(*) FROM singer"),
    # lower-case "select" in prose before the query
    ("To select the names, use: select name from singer", "select name from singer"),
    # multiple statements: the first
    ("SELECT a FROM t; SELECT b FROM u", "SELECT a FROM t"),
    ("SELECT name FROM singer;\nSELECT name FROM concert;", "SELECT name FROM singer"),
    # semicolons and quotes inside literals are kept
    ("SELECT name FROM singer WHERE name = 'a;b'; DROP TABLE singer", "SELECT name FROM singer WHERE name = 'a;b'"),
    ("SELECT name FROM singer WHERE name = 'O''Brien';", "SELECT name FROM singer WHERE name = 'O''Brien'"),
    ("SELECT \"name;x\" FROM singer;", "SELECT \"name;x\" FROM singer"),
    ("SELECT 'The end.' FROM singer", "SELECT 'The end.' FROM singer"),
    ("SELECT count(*) FROM singer WHERE age > 1.", "SELECT count(*) FROM singer WHERE age > 1."),
    # CTEs and multi-line queries with lines that start with column names
    ("WITH x AS (SELECT 1 AS a) SELECT a FROM x;", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
    ("SELECT\n  Result,\n  count(*)\nFROM t\nGROUP BY Result", "SELECT\n  Result,\n  count(*)\nFROM t\nGROUP BY Result"),
    ("SELECT name,\n       age\nFROM singer\nORDER BY age DESC\nLIMIT 3;", "SELECT name,\n       age\nFROM singer\nORDER BY age DESC\nLIMIT 3"),
    # no SQL at all: the text, for the error report
    ("I cannot answer that question.", "I cannot answer that question."),
    ("", ""),
    (None, ""),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_extract_sql(text, expected):
    assert extract_sql(text) == expected


# Verbatim outputs of Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M) and SmolLM2-135M-Instruct (GGUF Q4_1),
# greedy, on Spider dev questions.
REAL_OUTPUTS = [
    ("To find the number of singers in the `concert_singer` table, you can use the following SQLite query:\n\n```sql\nSELECT count(*) FROM concert_singer;\n```\n\nThis query uses the `count(*)` function to count the number of rows in the `concert_singer` table, which corresponds to the number of singers.<|im_end|>",
     "SELECT count(*) FROM concert_singer"),
    ("To answer this question, you can use the following SQLite query:\n\n```sql\nSELECT singer_name, country\nFROM concert_singer\nWHERE song_title LIKE '%Hey%';\n```\n\nThis query selects the `singer_name` and `country` columns from the `concert_singer` table where the `song_title` contains the word 'Hey'. The `LIKE` operator is used to match",
     "SELECT singer_name, country\nFROM concert_singer\nWHERE song_title LIKE '%Hey%'"),
    ("To retrieve the name of the airport with the code 'AKO' from the database `flight_2`, you can use the following SQL query:\n\n```sql\nSELECT name\nFROM flight_2\nWHERE code = 'AKO';\n```\n\nThis query selects the `name` column from the `flight_2` table where the `code` column matches 'AKO'.<|im_end|>",
     "SELECT name\nFROM flight_2\nWHERE code = 'AKO'"),
    ("SELECT SINGER_COUNT() as SINGER_COUNT\nFROM concert_singer\nWHERE SINGER_COUNT() > 1;<|im_end|>",
     "SELECT SINGER_COUNT() as SINGER_COUNT\nFROM concert_singer\nWHERE SINGER_COUNT() > 1"),
    ("To find the number of singers, we can use the `COUNT()` function in SQL. Here's how you can do it:\n\n"
     "```sql\nSELECT SUM(Song_ID) AS TotalSong_ID, SUM(Song_ID) AS TotalSong_ID\nFROM (\n  SELECT SINGER_",
     "SELECT SUM(Song_ID) AS TotalSong_ID, SUM(Song_ID) AS TotalSong_ID\nFROM (\n  SELECT SINGER_"),
    ("SELECT AVG(age), MIN(age), MAX(age) FROM concert_singer;<|im_end|>",
     "SELECT AVG(age), MIN(age), MAX(age) FROM concert_singer"),
    ("To calculate the average age, we can use the `sum()` function to add up the ages of all singers and "
     "divide it by the number of singers.\n\n```sql\nSELECT AVG(age) AS avg_age, MAX(age) AS max_age, AVG(age) AS",
     "SELECT AVG(age) AS avg_age, MAX(age) AS max_age, AVG(age) AS"),
]


@pytest.mark.parametrize("text, expected", REAL_OUTPUTS)
def test_real_small_model_outputs(text, expected):
    assert extract_sql(text) == expected


def test_small_model_rambling_output():
    # Shape of what a small chat model (SmolLM2-135M) produces: prose, then a query, then more.
    text = ("Here is a query that answers your question about the singers:\n\n"
            "SELECT Name, Country FROM singer WHERE Age > 40\n\n"
            "This will return the names and countries of all singers older than 40. "
            "Let me know if you need anything else!")
    assert extract_sql(text) == "SELECT Name, Country FROM singer WHERE Age > 40"


def test_extracted_sql_runs_on_a_real_database():
    from shared_paths import CONCERT_SINGER_DB, require

    from sqltradeoff.sqlexec import execute_sql

    db = require(CONCERT_SINGER_DB)
    for text, expected in CASES:
        if text and "singer" in expected and expected.upper().startswith("SELECT") \
                and "T1" not in expected and "Result" not in expected:
            res = execute_sql(db, extract_sql(text))
            assert res.ok, (text, res.describe())


# --- Linear time on hostile text, same outputs as before ----------------------------------------
# Reference: the extraction as it was before it was made linear (commit 046dab9,
# sqltradeoff/extract.py): its code verbatim, less comments and docstrings, the entry point renamed.
# It is super-linear on some texts (`"select a " * 20_000`: about two minutes), so it is run only
# on text of realistic length.
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

from sqltradeoff import extract  # noqa: E402

_END_OF_TURN = re.compile(r"<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|</s>|<end_of_turn>")
_SPECIAL_TOKENS = re.compile(
    r"<\|[a-zA-Z0-9_]+\|>|</s>|<s>|\[/?INST\]|<\|?eot_id\|?>|<end_of_turn>|<start_of_turn>\w*"
    r"|\[/?SQL\]|</?sql>|</?SQL>")
_FENCE = re.compile(r"```(?:[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n)?(.*?)(?:```|\Z)", re.DOTALL)
_PREFIX = re.compile(
    r"(?im)^[ \t>*#-]*(?:\*\*)?(?:final\s+)?(?:sql(?:ite)?\s*(?:query)?|query|answer|output)"
    r"(?:\*\*)?\s*:(?:\*\*)?[ \t]*")
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
    if _SQL_CONTINUATION.match(line) or not _PROSE_START.match(line):
        return False
    stripped = line.strip()
    return len(stripped.split()) >= 3 or stripped.endswith(":") or stripped.startswith(("#", "**"))


def _cut_prose(sql: str) -> str:
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
    starts = []
    with_m = _WITH.search(text)
    if with_m:
        starts.append(with_m.start())
    upper = [m.start() for m in _SELECT.finditer(text) if text[m.start():m.end()] == "SELECT"]
    anycase = [m.start() for m in _SELECT.finditer(text)]
    if upper:
        starts.append(upper[0])
    else:
        with_from = [s for s in anycase if re.match(r"select\s+[^;]*?\bfrom\b", text[s:], re.I | re.S)]
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


def reference_extract_sql(text: str | None) -> str:
    if not text:
        return ""
    text = str(text)
    end = _END_OF_TURN.search(text)
    if end and text[:end.start()].strip():
        text = text[:end.start()]
    text = _SPECIAL_TOKENS.sub("\n", text).replace("\r\n", "\n")
    blocks = [m.group(2) for m in _FENCE.finditer(text)]
    candidate = next((b for b in blocks if _find_start(b) is not None), None)
    if candidate is None:
        m = _PREFIX.search(text)
        candidate = text[m.end():] if m and _find_start(text[m.end():]) is not None else text
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


_QUERIES = [e for _, e in CASES + REAL_OUTPUTS if _STARTS_SQL.match(e)] + [
    "select T1.name from singer as T1 join concert as T2 on T1.id = T2.id where T2.year = 2014",
    "SELECT name FROM singer WHERE name LIKE '%a;b%' -- a comment; with a semicolon\nORDER BY name",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x FROM c",
    "with t as (select `a` from \"b\") select * from t", "SELECT 'it''s' , \"q\"\"x\" FROM t",
    "Select count(*)\nfrom pets\nwhere weight > 10.5", "SELECT 1.", "select name from singer.",
]
_PROSE = [
    "To find the number of singers, you can use the following SQL query:", "Here is the query:",
    "Sure! Here's the SQLite query that answers your question:", "To select the names, use:",
    "We select from the table where the age is large.", "The answer is", "Let me think; first:",
    "This query counts the rows in the `singer` table.", "Explanation:\n1. We join the tables.",
    "Note: names are unique.", "I hope this helps!", "- it selects the name\n- from singer",
    "**Explanation:** the `WHERE` clause filters; `GROUP BY` groups.", "In this query, 'x' is a column.",
]
_FENCES = ["```sql\n{}\n```", "```SQL\n{};\n```", "```sqlite\n{}\n```", "```\n{}\n```", "```{}```",
           "```sql\n{}\n", "``` sql \n{}\n```", "```python\nprint('hi')\n```\n```sql\n{}\n```"]
_WRAPS = ["{}", "{};", "{} ;  \n", "SQL: {}", "SQL Query: {};", "Query: {}\nExplanation: it works",
          "Answer: {}", "**SQL:** {}", "> sql: {}", "Final SQL query: {}", '"{}"', "'{}'", "`{}`",
          "The answer is `{}`.", "The SQL query is {}.", "{}<|im_end|>", "[/INST] {}", "{}</s>garbage",
          "{}; SELECT b FROM u", "**SQL Query**: {}", "**SQL**: {}", "sqlite query :  {}",
          "{}\n\nThe query above lists every singer.", "{}\nThis query returns rows."]
_NOISE = ["`", "'", '"', ";", "\n", "\n\n", "-", "--", "*", "**", "#", ":", " ", "\t", "(", ")",
          "```", "select", "SELECT", "from", "FROM", "with", "as (", "sql:", "<|im_end|>", "ſelect",
          "\u00a0", "\r\n", "1.", "x", "Note:", "This query", "''", '""', "``", "'a;b'", "select a",
          "from t", " from ", "Select", "``` sql \n", "``` select\n", "```sql\n", "SQL", "query", "sqlite",
          " **:", "(select", "\n  ", "Answer:", "with x as (select 1)", "e", ".", "5"]


def _realistic_output(rng: random.Random) -> str:
    """A model output like the ones the tests above list: a query in a fence, after a prefix, in
    prose or bare, then perhaps an explanation, cut short or sprinkled with stray characters."""
    query = rng.choice(_QUERIES)
    if rng.random() < 0.3:
        query = query.lower() if rng.random() < 0.5 else query.replace("SELECT", "select")
    body = rng.choice(_FENCES if rng.random() < 0.4 else _WRAPS).format(query)
    parts = [rng.choice(_PROSE) for _ in range(rng.randrange(3))] + [body]
    parts += [rng.choice(_PROSE) for _ in range(rng.randrange(3))]
    text = rng.choice(["\n\n", "\n", " "]).join(parts)
    for _ in range(rng.choice([0, 0, 1, 3])):
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice(_NOISE) + text[i:]
    if rng.random() < 0.15:                          # max_new_tokens ran out
        text = text[:rng.randrange(len(text) + 1)]
    return text


def _random_output(rng: random.Random) -> str:
    """Text made of the tokens that steer extraction, in any order."""
    pool = _NOISE if rng.random() < 0.7 else _NOISE + _QUERIES[:5] + _PROSE[:5]
    return "".join(rng.choice(pool) for _ in range(rng.randrange(40)))


def _spider_queries(n: int) -> list[str]:
    from shared_paths import SPIDER
    path = SPIDER / "dev_gold.sql"
    if not path.exists():
        return []
    return [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines()[:n]]


def test_same_output_as_the_reference_on_realistic_and_random_outputs():
    rng = random.Random(14)
    texts = [t for t, _ in CASES + REAL_OUTPUTS]
    texts += [_realistic_output(rng) for _ in range(3000)] + [_random_output(rng) for _ in range(3000)]
    texts += [rng.choice(_WRAPS + _FENCES).format(q) for q in _spider_queries(400)]
    differ = [t for t in texts if extract_sql(t) != reference_extract_sql(t)]
    assert not differ, (len(differ), differ[:3])
    # The texts reach every branch: fences, prefixes, prose, nothing found.
    outs = [extract_sql(t) for t in texts]
    assert len(set(outs)) > 1000 and outs.count("") < len(outs) // 10


N = 200_000
ADVERSARIAL = {
    "select a": "select a " * (N // 9), "SELECT a": "SELECT a " * (N // 9),
    "backticks": "`" * N, "fence then spaces": "```" + " " * (N - 4) + "x",
    "double quotes": '"' * N, "single quotes": "'" * N, "semicolons": ";" * N,
    "nested fences": "```sql\n" * (N // 7), "fences without a query": "```sql\nfoo\n```\n" * (N // 15),
    "SQL: repeated": "SQL: " * (N // 5), "sql then spaces": "sql" + " " * (N - 3),
    "newlines then a query": "\n" * (N - 20) + "x select a from t",
    "newline-space then a query": "\n " * (N // 2 - 10) + "x select a from t",
    "select and newlines": "select\n" * (N // 7), "select from ;": "select a from ;" * (N // 15),
    "colon select": ": select a " * (N // 11), "WITH (": "with a (" * (N // 8),
    "WITH name": "with " + "a" * (N - 5),
    "doubled quotes": "SELECT a FROM t WHERE x = '" + "''" * (N // 2 - 20),
    "comments": "--\n" * (N // 3), "stars": "*" * N, "hashes": "SELECT a\n" + "#" * (N - 9),
    "special tokens": "<|" * (N // 2),
    "mixed": "`'\";-\n select SELECT from ``` sql: with x as (" * (N // 50),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_hostile_text_takes_well_under_a_second(name):
    text = ADVERSARIAL[name]
    assert len(text) <= extract.MAX_TEXT_CHARS
    t0 = time.perf_counter()
    out = extract_sql(text)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"{name}: {elapsed:.2f} s"
    assert isinstance(out, str) and len(out) <= len(text)


def test_time_grows_linearly():
    """Four times the text, about four times the time (the reference: about sixteen times)."""
    def best(text):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            extract_sql(text)
            times.append(time.perf_counter() - t0)
        return min(times)
    shapes = {"select a": lambda n: "select a " * (n // 9), "fence then spaces": lambda n: "```" + " " * n,
              "sql then spaces": lambda n: "sql" + " " * n,
              "newlines": lambda n: "\n" * n + "x select a from t",
              "newline-space": lambda n: "\n x select a from t " * (n // 20)}
    for name, shape in shapes.items():
        small, large = best(shape(50_000)), best(shape(200_000))
        assert large < 8 * small + 0.05, (name, small, large)


def test_text_past_the_cap_is_ignored():
    cap = extract.MAX_TEXT_CHARS
    assert extract_sql("SELECT a FROM t " + " " * cap + "WHERE b = 1") == "SELECT a FROM t"
    assert extract_sql("SELECT a FROM t" + " " * (cap - 30) + "WHERE b = 1") == "SELECT a FROM t" + " " * (
        cap - 30) + "WHERE b = 1"
