"""Prompt text for text-to-SQL and its rendering with the model's own chat template.

Three prompts (all one user turn; no system turn, which Mistral's template rejects):

* zero-shot with schema (`prompt.schema: create_table`): instruction, the CREATE TABLE
  statements of the database, the question;
* schema-less (`prompt.schema: none`, the study's prompt): instruction and question only;
* few-shot baseline: instruction, `prompt.few_shot` fixed question/SQL examples from the
  training sample (each from a different database), then the target database's schema and the
  question.

`render` applies `tokenizer.apply_chat_template`: the prompt is the user turn with the
generation prompt; the completion is the rendered conversation (user + assistant) minus that
prompt, so `prompt + completion` is exactly the full conversation (checked).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .config import SCHEMA_MODES, PromptConfig  # noqa: F401 (SCHEMA_MODES re-exported)
from .errors import UserError
from .schema import db_path, schema_text

INSTRUCTION_SCHEMA = ("Write a SQLite query that answers the question about the database below. "
                      "Reply with the SQL query only.")
INSTRUCTION_NO_SCHEMA = "Write a SQL query that answers the question. Reply with the SQL query only."


def prompt_config(cfg: PromptConfig | dict) -> PromptConfig:
    """`params.prompt` as a checked `PromptConfig` (a mapping is checked here)."""
    return cfg if isinstance(cfg, PromptConfig) else PromptConfig.build(cfg)


def check_prompt_cfg(cfg: PromptConfig | dict) -> dict:
    """`params.prompt` with defaults filled in and values checked, as a dict (schema, sample_rows,
    few_shot; the format manifest records it)."""
    return prompt_config(cfg).as_dict()


def user_text(question: str, schema: str | None, examples: Sequence[dict] = ()) -> str:
    """The user turn: instruction, optional examples, optional schema, question."""
    parts = [INSTRUCTION_SCHEMA if schema is not None else INSTRUCTION_NO_SCHEMA]
    if examples:
        shots = "\n\n".join(f"Question: {ex['question'].strip()}\nSQL: {ex['query'].strip()}" for ex in examples)
        parts.append("Examples:\n" + shots)
    if schema is not None:
        parts.append("Database schema:\n" + schema)
    parts.append(f"Question: {question.strip()}")
    return "\n\n".join(parts)


def schema_for(db_dir: str | Path, db_id: str, cfg: PromptConfig | dict) -> str | None:
    cfg = prompt_config(cfg)
    if cfg.schema == "none":
        return None
    return schema_text(db_path(db_dir, db_id), cfg.sample_rows)


def messages(user: str, answer: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": user}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def render(tokenizer, user: str, answer: str | None = None) -> tuple[str, str | None]:
    """(prompt, completion) rendered with the tokenizer's chat template.

    The prompt includes the generation prompt; the completion (None without an answer) is the
    assistant turn as the template writes it, end-of-turn token included."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template; use an instruction-tuned (chat) model in model.path")
    try:
        prompt = tokenizer.apply_chat_template(messages(user), tokenize=False, add_generation_prompt=True)
        if answer is None:
            return prompt, None
        full = tokenizer.apply_chat_template(messages(user, answer), tokenize=False)
    except UserError:
        raise
    except Exception as exc:  # jinja raise_exception, template errors
        raise UserError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from None
    if not full.startswith(prompt):
        raise UserError("the model's chat template does not render the conversation as prompt + answer "
                        "(the generation prompt is not a prefix of the full conversation), so a "
                        "completion cannot be split off; this template is not supported")
    completion = full[len(prompt):]
    if answer.strip() and answer.strip() not in completion:
        raise UserError("the model's chat template dropped or altered the answer in the assistant turn")
    return prompt, completion
