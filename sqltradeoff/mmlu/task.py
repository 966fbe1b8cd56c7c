"""The MMLU task: lm-evaluation-harness prompts, input records, answer parsing, per-subject summary.

Prompt (byte for byte the harness's default `mmlu` task, `lm_eval/tasks/mmlu/default`):

    description  "The following are multiple choice questions (with answers) about {subject with _ as space}.\\n\\n"
    each shot    "{question.strip()}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {letter}\\n\\n"
    target       "{question.strip()}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:"

The shots are the first `k` examples of the subject's dev split, in order (`fewshot_split: dev`,
`sampler: first_n`); the prompt is plain text (no chat template). Nothing here needs a model.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Sequence

from ..answers import LETTERS
from ..errors import UserError

CONTINUATIONS: tuple[str, ...] = tuple(" " + letter for letter in LETTERS)
METHODS: tuple[str, ...] = ("loglik", "debiased", "pride", "generate")
REQUIRED_FIELDS = ("id", "subject", "question", "choices", "answer")


# --------------------------------------------------------------------------------------------
# Prompts


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def format_question(question: str, choices: Sequence[str]) -> str:
    """The harness's `doc_to_text`: the question stripped, the choices as given, then "Answer:"."""
    return (f"{question.strip()}\nA. {choices[0]}\nB. {choices[1]}\nC. {choices[2]}\nD. {choices[3]}"
            f"\nAnswer:")


def format_shot(example: dict) -> str:
    """A labelled few-shot example: text, target delimiter " ", the letter, fewshot delimiter "\\n\\n"."""
    return format_question(example["question"], example["choices"]) + " " + example["answer"] + "\n\n"


def fewshot_prefix(subject: str, dev_examples: Sequence[dict], k_shot: int) -> str:
    """Description plus the first `k_shot` dev examples of the subject (the harness's first_n sampler)."""
    if k_shot < 0:
        raise UserError(f"mmlu.k_shot must be >= 0, got {k_shot}")
    if len(dev_examples) < k_shot:
        raise UserError(f"subject `{subject}` has {len(dev_examples)} dev example(s) but mmlu.k_shot={k_shot} "
                        f"needs {k_shot}; lower mmlu.k_shot or supply the subject's full dev split")
    return description(subject) + "".join(format_shot(ex) for ex in dev_examples[:k_shot])


def render_prompt(item: dict, dev_examples: Sequence[dict], k_shot: int) -> str:
    """The full prompt for one test question (context of the loglik request)."""
    return fewshot_prefix(item["subject"], dev_examples, k_shot) + format_question(item["question"], item["choices"])


def permute(choices: Sequence[str], shift: int) -> list[int]:
    """Cyclic permutation `shift`: position j shows the original option (j + shift) % 4."""
    return [(j + shift) % 4 for j in range(4)]


# --------------------------------------------------------------------------------------------
# Input validation


def validate_items(items: Sequence[dict], source: str) -> None:
    """Check MMLU records ({id, subject, question, choices[4], answer A-D}); raise UserError if bad."""
    seen: set[str] = set()
    for i, item in enumerate(items, 1):
        where = f"{source}: record {i}"
        missing = [k for k in REQUIRED_FIELDS if k not in item]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
        if not isinstance(item["id"], str) or not item["id"]:
            raise UserError(f"{where}: `id` must be a non-empty string")
        where = f"{source}: record {i} (id {item['id']})"
        if item["id"] in seen:
            raise UserError(f"{where}: duplicate id")
        seen.add(item["id"])
        if not isinstance(item["subject"], str) or not re.fullmatch(r"[A-Za-z0-9_]+", item["subject"]):
            raise UserError(f"{where}: `subject` must be a name like high_school_computer_science, "
                            f"got {item['subject']!r}")
        if not isinstance(item["question"], str) or not item["question"].strip():
            raise UserError(f"{where}: `question` must be a non-empty string")
        choices = item["choices"]
        if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
            raise UserError(f"{where}: `choices` must be a list of 4 strings, got {choices!r:.80}")
        if item["answer"] not in LETTERS:
            raise UserError(f"{where}: `answer` must be one of A, B, C, D, got {item['answer']!r}")


def group_dev(dev: Sequence[dict]) -> dict[str, list[dict]]:
    """Dev examples per subject, in file order (the order the harness's first_n sampler uses)."""
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for ex in dev:
        by_subject[ex["subject"]].append(ex)
    return dict(by_subject)



def subject_prefixes(test: Sequence[dict], dev: Sequence[dict], k_shot: int) -> dict[str, str]:
    """The few-shot prefix of every subject of `test`, in order of first appearance (raises the
    UserError of `fewshot_prefix` before any model work when a subject lacks dev examples)."""
    dev_by_subject = group_dev(dev)
    subjects = dict.fromkeys(item["subject"] for item in test)
    return {s: fewshot_prefix(s, dev_by_subject.get(s, []), k_shot) for s in subjects}


def load_items(path) -> list[dict]:
    """Read and validate an MMLU JSONL file (UserError naming file and record on bad input)."""
    from ..io import read_jsonl

    items = read_jsonl(path, required=REQUIRED_FIELDS)
    validate_items(items, str(path))
    return items


# --------------------------------------------------------------------------------------------
# Answer parsing (method generate)


_ANSWER_PATTERNS = [
    # "Answer: C", "the answer is (B)", "correct answer is: D", "Answer - A"
    re.compile(r"\banswer\s*(?:is|would be|:|-)?\s*(?:option\s*)?[:\-]?\s*\(?\s*([ABCD])\b(?![a-z'])", re.I),
    # starts with the letter: "B", " B.", "(C)", "D)", "A:", "**A**", "B\n\nQuestion ..."
    re.compile(r"^[\s*\[]*\(?([BCD])\)?(?![\w'])"),
    # ... but a leading "A" followed by a lowercase word is the article ("A good question")
    re.compile(r"^[\s*\[]*\(?(A)\)?(?:[.:,)\]*]|\s*$|\s*\n|\s+(?![a-z]))"),
    # "option B", "choice (C)"
    re.compile(r"\b(?:option|choice)\s*\(?([ABCD])\b", re.I),
    # a parenthesized letter anywhere: "... so (D)"
    re.compile(r"\(([ABCD])\)"),
    # a letter followed by a period/colon and the option text: "... C. 42"
    re.compile(r"(?:^|\s)([ABCD])[.:]\s"),
]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".").lower()


def parse_answer(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The answer letter in a generated text, or None when none can be found.

    Tries, in order: an "answer is X" phrase, a leading letter (with brackets/punctuation),
    "option X", "(X)" anywhere, "X." followed by text; then, if `choices` are given, an output that
    starts with exactly one option's text.
    """
    if not text:
        return None
    for pattern in _ANSWER_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1).upper()
    if choices:
        first = _norm(text.split("\n")[0] if text.strip() else text)
        hits = [LETTERS[i] for i, c in enumerate(choices) if _norm(c) and first.startswith(_norm(c))]
        if len(hits) == 1:
            return hits[0]
    return None



# --------------------------------------------------------------------------------------------
# Summary


def summarize(rows: Sequence[dict], pred_key: str) -> dict:
    """Micro-averaged accuracy, per-subject accuracy, predicted vs gold letter distributions, bias."""
    n = len(rows)
    correct = sum(1 for r in rows if r[pred_key] == r["answer"])
    by_subject: dict[str, dict] = {}
    for subject in dict.fromkeys(r["subject"] for r in rows):
        sub = [r for r in rows if r["subject"] == subject]
        k = sum(1 for r in sub if r[pred_key] == r["answer"])
        by_subject[subject] = {"accuracy": round(k / len(sub), 4), "n": len(sub), "n_correct": k}
    pred = Counter(r[pred_key] for r in rows)
    gold = Counter(r["answer"] for r in rows)
    pred_distribution = {L: pred.get(L, 0) for L in LETTERS}
    gold_distribution = {L: gold.get(L, 0) for L in LETTERS}
    bias = max(abs(pred_distribution[L] - gold_distribution[L]) / n for L in LETTERS) if n else 0.0
    return {"accuracy": round(correct / n, 4) if n else 0.0, "n": n, "n_correct": correct,
            "by_subject": by_subject, "pred_distribution": pred_distribution,
            "gold_distribution": gold_distribution, "bias": round(bias, 4)}
