"""Prompt text and chat-template rendering (Mistral-7B-Instruct-v0.2 template, real Qwen tokenizer)."""
from __future__ import annotations

from pathlib import Path

import pytest

from sqltradeoff import prompts
from sqltradeoff.errors import UserError
from shared_paths import DB_DIR, GGUF_DIR, needs

REPO = Path(__file__).resolve().parents[1]
QWEN = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

# The chat template of mistralai/Mistral-7B-Instruct-v0.2 as released (tokenizer_config.json):
# BOS once, user turns in [INST] ... [/INST], assistant turns followed by EOS, no system role.
MISTRAL_V02_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# The widely used whitespace fix of that template (assistant text after one space, as
# mistral-common tokenizes it): renders `<s>[INST] ... [/INST] SQL</s>`.
MISTRAL_SPACED_TEMPLATE = MISTRAL_V02_TEMPLATE.replace("{{ message['content'] + eos_token}}",
                                                       "{{ ' ' + message['content'] + eos_token}}")
SQL = "SELECT count(*) FROM singer"


def word_tokenizer(template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = template
    return tok


def test_mistral_v02_exact_rendering():
    tok = word_tokenizer(MISTRAL_V02_TEMPLATE)
    user = prompts.user_text("How many singers are there?", None)
    prompt, completion = prompts.render(tok, user, SQL)
    assert prompt == f"<s>[INST] {user} [/INST]"
    assert completion == f"{SQL}</s>"
    assert prompts.render(tok, user) == (prompt, None)


def test_mistral_spaced_template_exact_rendering():
    tok = word_tokenizer(MISTRAL_SPACED_TEMPLATE)
    prompt, completion = prompts.render(tok, "Q?", SQL)
    assert (prompt, completion) == ("<s>[INST] Q? [/INST]", f" {SQL}</s>")


def test_template_errors_are_user_errors():
    with pytest.raises(UserError, match="no chat template"):
        prompts.render(word_tokenizer(None), "Q?", SQL)
    # a template whose generation prompt is not a prefix of the full conversation
    broken = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
              "{% if add_generation_prompt %}assistant (thinking):{% endif %}")
    with pytest.raises(UserError, match="not a prefix"):
        prompts.render(word_tokenizer(broken), "Q?", SQL)
    raising = "{{ raise_exception('nope') }}"
    with pytest.raises(UserError, match="chat template failed.*nope"):
        prompts.render(word_tokenizer(raising), "Q?", SQL)


@needs(DB_DIR / "concert_singer")
def test_schema_none_vs_create_table():
    with_schema = prompts.user_text("How many singers?", prompts.schema_for(DB_DIR, "concert_singer",
                                                                          prompts.check_prompt_cfg({})))
    without = prompts.user_text("How many singers?", prompts.schema_for(DB_DIR, "concert_singer",
                                                                      prompts.check_prompt_cfg({"schema": "none"})))
    assert with_schema.startswith(prompts.INSTRUCTION_SCHEMA)
    assert "Database schema:\nCREATE TABLE \"stadium\"" in with_schema
    assert with_schema.count("CREATE TABLE") == 4 and with_schema.endswith("Question: How many singers?")
    assert without == f"{prompts.INSTRUCTION_NO_SCHEMA}\n\nQuestion: How many singers?"
    rows = prompts.user_text("Q", prompts.schema_for(DB_DIR, "concert_singer", prompts.check_prompt_cfg({"sample_rows": 1})))
    assert rows.count("INSERT INTO") == 4


def test_few_shot_text_order():
    shots = [{"question": "Q1", "query": "SELECT 1"}, {"question": "Q2", "query": "SELECT 2"}]
    text = prompts.user_text("Target?", "CREATE TABLE t (a int);", shots)
    assert text.index("Question: Q1\nSQL: SELECT 1") < text.index("Question: Q2\nSQL: SELECT 2") \
        < text.index("Database schema:") < text.index("Question: Target?")


def test_prompt_cfg_checks():
    assert prompts.check_prompt_cfg({}) == {"schema": "create_table", "sample_rows": 0, "few_shot": 3}
    with pytest.raises(UserError, match="prompt.schema must be one of"):
        prompts.check_prompt_cfg({"schema": "ddl"})
    with pytest.raises(UserError, match="prompt.few_shot"):
        prompts.check_prompt_cfg({"few_shot": -1})


@pytest.fixture(scope="module")
def qwen():
    if not (GGUF_DIR / QWEN).is_file():
        pytest.skip(f"{QWEN} not found in {GGUF_DIR} (set SQLTRADEOFF_GGUF_DIR)")
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(GGUF_DIR), gguf_file=QWEN)


def test_qwen_real_template(qwen):
    prompt, completion = prompts.render(qwen, "How many singers?", SQL)
    assert prompt.endswith("<|im_start|>user\nHow many singers?<|im_end|>\n<|im_start|>assistant\n")
    assert completion == f"{SQL}<|im_end|>\n"
    # prompt tokens are a prefix of the conversation's tokens (completion-only loss relies on it)
    p = qwen(prompt, add_special_tokens=False)["input_ids"]
    full = qwen(prompt + completion, add_special_tokens=False)["input_ids"]
    assert full[: len(p)] == p and qwen.convert_ids_to_tokens(full[-2]) == "<|im_end|>"
