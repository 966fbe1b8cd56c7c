"""Shared test fixtures.

`tiny_llama`: a random-weight tiny Llama (2 layers, hidden 64) with a byte-level BPE tokenizer
that has a ChatML chat template (no BOS, `<|im_end|>` as EOS, no pad token: `load_tokenizer`
sets one), saved as a Hugging Face directory. Session-scoped; returns the directory (Path).
`tiny_model_cfg`: the matching `params["model"]` section.
Real GGUF models: `gguf_path(name)`, the `smollm2_gguf` fixture (skips when absent) and
`smollm2_cfg` (its model section, converted once per session into a temporary cache).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared_paths import GGUF_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
os.environ.setdefault("DEEPEVAL_DISABLE_DOTENV", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "SELECT count(*) FROM singer WHERE age > 20;",
    "SELECT name, country FROM singer ORDER BY age DESC LIMIT 3",
    "SELECT T1.name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id",
    "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);",
    "How many singers do we have? What are the names of the stadiums? Answer with SQL only.",
    "system user assistant You are a helpful assistant that writes SQLite queries.",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ( ) * = < > ' \" _ -",
]


def gguf_path(name: str) -> Path:
    p = GGUF_DIR / name
    if not p.is_file():
        pytest.skip(f"real model {p} not present (set SQLTRADEOFF_GGUF_DIR)")
    return p


def build_tiny_llama(dest: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|im_start|>", "<|im_end|>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, bos_token_id=None)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Directory of a random-weight tiny Llama + ChatML tokenizer (Hugging Face layout)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_model_cfg(tiny_llama, tmp_path_factory) -> dict:
    """`params["model"]` for the tiny Llama."""
    return {"path": str(tiny_llama), "revision": "main", "load_in_4bit": False,
            "cache_dir": str(tmp_path_factory.mktemp("model_cache"))}


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return gguf_path("smollm2-135m-instruct-q4_1.gguf")


@pytest.fixture(scope="session")
def smollm2_cfg(smollm2_gguf, tmp_path_factory) -> dict:
    """`params["model"]` for the real SmolLM2-135M GGUF, converted once per test session into a
    temporary cache (`cfg["_convert_seconds"]` records how long the first load took)."""
    import time

    from sqltradeoff.modeling import convert_gguf

    cache = tmp_path_factory.mktemp("gguf_cache")
    t0 = time.time()
    convert_gguf(smollm2_gguf, cache)
    return {"path": str(smollm2_gguf), "revision": "main", "load_in_4bit": False, "cache_dir": str(cache),
            "_convert_seconds": time.time() - t0}
