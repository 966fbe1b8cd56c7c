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
