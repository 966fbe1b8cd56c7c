"""onednn.py: frozen fp32 linear layers through oneDNN with packed weights (`cpu_linear: onednn`)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sqltradeoff import mmlu
from sqltradeoff.config import build_config
from sqltradeoff.errors import UserError
from sqltradeoff.generation import generate
from sqltradeoff.modeling import load_model
from sqltradeoff.onednn import available, pack_linears

TRAIN = dict(epochs=1, max_steps=1, max_length=64, batch_size=1, grad_accum=1, learning_rate=1e-3,
             lr_scheduler="linear", warmup_ratio=0.0, lora_r=2, lora_alpha=4, lora_dropout=0.0,
             target_modules=["q_proj"], optim_cuda="paged_adamw_8bit", optim_cpu="adamw_torch",
             gradient_checkpointing=False, save_steps=1, save_total_limit=1, seed=1)

pytestmark = pytest.mark.skipif(not available(), reason="this torch build lacks the oneDNN linear ops")


def _net(bias=True):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(24, 40, bias=bias), torch.nn.GELU(), torch.nn.Linear(40, 8))
    return net.requires_grad_(False)


def test_packed_layers_give_torchs_products_and_input_gradients():
    ref, packed = _net(), _net()
    assert pack_linears(packed) == 2
    assert packed[0].forward.__func__ is not torch.nn.Linear.forward          # really patched
    x = torch.randn(3, 5, 24, requires_grad=True)
    y_ref = ref(x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    y = packed(x)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    assert y.shape == y_ref.shape and torch.allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g, g_ref, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(packed(x.detach()), y_ref, rtol=1e-5, atol=1e-6)
    assert pack_linears(packed) == 0                                             # once only


def test_trainable_weights_keep_torchs_linear_and_their_gradients():
    net = _net()
    pack_linears(net)
    net[2].requires_grad_(True)                      # e.g. a LoRA matrix: trainable
    x = torch.randn(4, 24)
    out = net(x).sum()
    out.backward()
    assert net[2].weight.grad is not None and net[2].bias.grad is not None
    expected = F.linear(F.gelu(F.linear(x, net[0].weight, net[0].bias)), net[2].weight, net[2].bias).sum()
    assert torch.allclose(out, expected, rtol=1e-5)


def test_weights_changed_after_packing_are_repacked():
    net = _net(bias=False)
    pack_linears(net)
    x = torch.randn(2, 24)
    before = net(x)
    with torch.no_grad():
        net[0].weight.mul_(3.0)                      # in place (e.g. an adapter merged afterwards)
    after = net(x)
    expected = F.linear(F.gelu(F.linear(x, net[0].weight)), net[2].weight, net[2].bias)
    assert not torch.allclose(before, after) and torch.allclose(after, expected, rtol=1e-5, atol=1e-6)
    net[0].weight = torch.nn.Parameter(torch.randn(40, 24), requires_grad=False)      # replaced
    assert torch.allclose(net(x), F.linear(F.gelu(F.linear(x, net[0].weight)), net[2].weight, net[2].bias),
                          rtol=1e-5, atol=1e-6)


def _prompts(tok):
    qs = ["How many singers do we have?", "List the names of the stadiums ordered by capacity.",
          "What is the average age of singers from France?", "Which concert had the most singers?"]
    schema = "CREATE TABLE singer (id int, name text, country text, age int)\n"
    return [tok.apply_chat_template([{"role": "user", "content": schema + q}], tokenize=False,
                                    add_generation_prompt=True) for q in qs]


def _onednn_equals_aten(model_cfg, new_tokens):
    model, tok = load_model(model_cfg)
    packed, _ = load_model(model_cfg)
    pack_linears(packed)
    n = sum(getattr(m, "_onednn_fn", None) is not None for m in packed.modules())
    assert n == sum(type(m) is torch.nn.Linear for m in packed.modules()) and n > 0
    prompts = _prompts(tok)
    for backend in ("reference", "prefix"):
        ref, _ = generate(model, tok, prompts, batch_size=2, max_new_tokens=new_tokens, progress=False,
                          backend=backend)
        out, _ = generate(packed, tok, prompts, batch_size=2, max_new_tokens=new_tokens, progress=False,
                          backend=backend)
        assert out == ref
    ids = tok(prompts[1], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        a, b = model(input_ids=ids).logits, packed(input_ids=ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    return model, packed, tok


def test_tiny_model_generates_the_same_text_with_onednn(tiny_model_cfg):
    _onednn_equals_aten(tiny_model_cfg, 10)


@pytest.mark.slow
def test_smollm2_generates_the_same_text_and_mmlu_log_probs_with_onednn(smollm2_cfg):
    model, packed, tok = _onednn_equals_aten(smollm2_cfg, 16)
    prefix = "The following are multiple choice questions (with answers) about philosophy.\n\n"
    suffixes = [f"Question {i}: which is right?\nA. one\nB. two\nC. three\nD. four\nAnswer:" for i in range(3)]
    ref = mmlu.BatchedHFLetterScorer(model, tok, batch_size=2).score(prefix, suffixes, mmlu.CONTINUATIONS)
    got = mmlu.BatchedHFLetterScorer(packed, tok, batch_size=2).score(prefix, suffixes, mmlu.CONTINUATIONS)
    assert torch.allclose(torch.tensor(got), torch.tensor(ref), atol=1e-4)


def test_cpu_linear_param_is_checked():
    def value(cfg, section):          # train: each run's complete settings (`train` + `runs.<run>`)
        return cfg.run("run1").cpu_linear if section == "train" else getattr(cfg, section).cpu_linear

    for section in ("predict", "mmlu", "train"):
        base = {"predict": {"batch_size": 2, "max_new_tokens": 4}, "mmlu": {}, "train": {**TRAIN},
                "runs": {"run1": {}}}
        cfg = build_config(copy.deepcopy(base))
        assert value(cfg, section) == "aten"                                     # default: torch's GEMM
        bad = copy.deepcopy(base)
        bad[section]["cpu_linear"] = "mkl"
        with pytest.raises(UserError, match=f"{section}.cpu_linear"):
            build_config(bad)
        good = copy.deepcopy(base)
        good[section]["cpu_linear"] = "onednn"
        assert value(build_config(good), section) == "onednn"
    with pytest.raises(UserError, match="run1.cpu_linear"):      # a run's override is checked too
        build_config({**copy.deepcopy(base), "runs": {"run1": {"cpu_linear": "mkl"}}})
