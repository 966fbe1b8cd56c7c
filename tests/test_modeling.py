"""modeling.py: model sources, GGUF conversion cache, device/precision, user errors."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from sqltradeoff.errors import UserError
from sqltradeoff.modeling import (device_settings, gguf_cache_path, load_model, load_tokenizer, resolve_model_dir,
                                  stop_token_ids)


def test_local_directory_loads_fp32_eval_with_left_padding(tiny_model_cfg):
    model, tok = load_model(tiny_model_cfg)
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    assert tok.padding_side == "left"
    assert tok.pad_token is not None          # the tiny tokenizer has none; one was set
    assert tok.chat_template
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok, model)


def test_for_training_leaves_train_mode(tiny_model_cfg):
    model, _ = load_model(tiny_model_cfg, for_training=True)
    assert model.training


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_cpu_settings_and_4bit_refused_on_cpu(tiny_model_cfg):
    s = device_settings(False)
    assert (s.device, s.dtype, s.bf16) == ("cpu", torch.float32, False)
    with pytest.raises(UserError, match="load_in_4bit"):
        load_model({**tiny_model_cfg, "load_in_4bit": True})


def test_unknown_hub_id_offline_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as exc:
        load_tokenizer({"path": "no-such-org/no-such-model-xyz", "revision": "main", "cache_dir": str(tmp_path)})
    msg = str(exc.value)
    assert "model.path" in msg and "HF_HUB_OFFLINE" in msg


@pytest.mark.parametrize("path", ["./does/not/exist", "/nonexistent/model.gguf", "missing.gguf"])
def test_missing_local_paths_are_user_errors(path, tmp_path):
    with pytest.raises(UserError, match="model.path"):
        load_model({"path": path, "cache_dir": str(tmp_path)})


def test_directory_without_config_is_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json"):
        resolve_model_dir({"path": str(tmp_path / "empty"), "cache_dir": str(tmp_path)})


def test_missing_path_key_is_user_error():
    with pytest.raises(UserError, match="model.path"):
        load_tokenizer({"revision": "main"})


def test_bad_adapter_dir_is_user_error(tiny_model_cfg, tmp_path):
    with pytest.raises(UserError, match="adapter"):
        load_model(tiny_model_cfg, adapter=tmp_path)


def test_corrupt_gguf_is_user_error_and_leaves_no_cache(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="GGUF"):
        load_tokenizer({"path": str(bad), "cache_dir": str(cache)})
    assert not gguf_cache_path(bad, cache).exists()
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_gguf_conversion_cache_identical_logits_and_fast_reload(smollm2_cfg, smollm2_gguf):
    from transformers import AutoModelForCausalLM

    target = gguf_cache_path(smollm2_gguf, smollm2_cfg["cache_dir"])
    assert (target / "config.json").is_file() and (target / "chat_template.jinja").is_file()
    t0 = time.time()
    model, tok = load_model(smollm2_cfg)          # reads the converted copy
    reload_s = time.time() - t0
    assert reload_s < smollm2_cfg["_convert_seconds"] / 2, (reload_s, smollm2_cfg["_convert_seconds"])
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    direct = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name,
                                                  dtype=torch.float32).eval()
    ids = tok("SELECT name FROM singer WHERE age > 30", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, direct(**ids).logits)
    # the tokenizer reproduces the GGUF tokenizer's ids
    from transformers import AutoTokenizer
    gtok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    text = "<|im_start|>user\nHow many heads?<|im_end|>\n"
    assert tok(text, add_special_tokens=False)["input_ids"] == gtok(text, add_special_tokens=False)["input_ids"]
    # no temporary conversion directories are left behind
    assert not [p for p in Path(smollm2_cfg["cache_dir"]).iterdir() if ".tmp-" in p.name]


def test_cuda_4bit_loading_arguments(monkeypatch, tiny_model_cfg):
    """CUDA cannot run here: check what load_model asks transformers for on a GPU with load_in_4bit."""
    import transformers

    seen = {}

    def fake_from_pretrained(where, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    with pytest.raises(UserError):
        load_model({**tiny_model_cfg, "load_in_4bit": True})
    q = seen["quantization_config"]
    assert seen["dtype"] == torch.bfloat16 and seen["device_map"] == {"": 0}
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    seen.clear()
    with pytest.raises(UserError):
        load_model({**tiny_model_cfg, "load_in_4bit": False})
    assert seen["dtype"] == torch.bfloat16 and "quantization_config" not in seen
