"""The answer letters of a four-way multiple-choice question (MMLU), in choice order."""
from __future__ import annotations

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
