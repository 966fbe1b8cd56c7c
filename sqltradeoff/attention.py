"""Attention implementations for training: transformers' own names, plus `torch_varlen`; for the
CPU's predict and MMLU stages, `cpu_grouped_sdpa` (grouped key/value heads without copies); and for
the predict stage's `graphs` backend, `sdpa_grouped_decode` (`grouped_decode_attention`: a decoding
step's grouped key/value heads without copies, on any device).

`train.attention` in params.yaml picks the attention a training run uses:

* a name transformers knows (`sdpa`, the default; `eager`; `flash_attention_2` when the flash-attn
  package is installed, ...) is set with `PreTrainedModel.set_attn_implementation`;
* `torch_varlen` is PyTorch's own variable-length FlashAttention kernel
  (`torch.nn.attention.varlen.varlen_attn`, CUDA, PyTorch >= 2.9), registered here with
  transformers' `AttentionInterface` for padding-free batches. TRL's padding-free collator
  (`SFTConfig(padding_free=True)`) flattens a micro-batch into one row and passes the boundaries
  as `cu_seq_lens_q/k`; the kernel attends within each example only. SDPA, given the same flat
  row, must build a dense (total x total) block-diagonal mask, which disables its flash kernel and
  computes the masked-out blocks (measured: -31% step time on an H200 with this one,
  BENCHMARKS.md). It needs no extra package, unlike `flash_attention_2`.

Without `cu_seq_lens` (a single unpadded sequence, e.g. micro-batch 1 without padding-free) it is
causal SDPA. It cannot take padded batches: transformers builds no mask for a registered
attention, so padding would be attended to; `training.validate_config` therefore only allows it
with `padding_free: true` or `batch_size: 1`.
"""
from __future__ import annotations

import inspect
from typing import Any

from .errors import UserError

TORCH_VARLEN = "torch_varlen"
GROUPED_DECODE = "sdpa_grouped_decode"


def varlen_available() -> tuple[bool, str]:
    """(available, reason if not): PyTorch's varlen kernel needs CUDA and PyTorch >= 2.9."""
    import torch

    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False, f"PyTorch {torch.__version__} has no torch.nn.attention.varlen (needs >= 2.9)"
    if not torch.cuda.is_available():
        return False, "it is a CUDA kernel and no CUDA GPU is visible"
    return True, ""


def _varlen_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    **kwargs: Any):
    """transformers attention function: (B, H, T, D) query/key/value -> ((B, T, H, D) output, None)."""
    import torch
    from torch.nn.attention.varlen import varlen_attn
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1:
        if attention_mask is not None or query.shape[0] != 1:
            raise ValueError(f"attention {TORCH_VARLEN!r} takes padding-free batches (train.padding_free: true) "
                             "or one unpadded sequence, not padded batches")
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling,
                                      is_causal=True)
    params = inspect.signature(varlen_attn).parameters
    dtype = query.dtype if query.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    q = query[0].transpose(0, 1).to(dtype)    # (T, H, D)
    k = key[0].transpose(0, 1).to(dtype)
    v = value[0].transpose(0, 1).to(dtype)
    extra: dict[str, Any] = {}
    if q.shape[1] != k.shape[1]:              # grouped-query attention
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if "is_causal" in params:                 # PyTorch 2.9/2.10
        extra["is_causal"] = True
    else:                                     # later: a (left, right) window; (-1, 0) is causal
        extra["window_size"] = (-1, 0)
    if scaling is not None and "scale" in params:
        extra["scale"] = scaling
    cu_q = cu_q.to(device=q.device, dtype=torch.int32)
    cu_k = cu_k.to(device=q.device, dtype=torch.int32)
    out = varlen_attn(q, k, v, cu_q, cu_k, int(kwargs["max_length_q"]), int(kwargs["max_length_k"]), **extra)
    return out.to(query.dtype)[None], None


def register_torch_varlen() -> None:
    """Make `torch_varlen` a transformers attention implementation (idempotent)."""
    ok, why = varlen_available()
    if not ok:
        raise UserError(f"params: train.attention {TORCH_VARLEN!r} is unavailable here: {why}; "
                        "use sdpa")
    from transformers import AttentionInterface

    AttentionInterface.register(TORCH_VARLEN, _varlen_forward)


def set_attention(model, name: str) -> None:
    """Switch a loaded model's attention to `name` (a transformers name or `torch_varlen`)."""
    if name == TORCH_VARLEN:
        register_torch_varlen()
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError) as exc:
        raise UserError(f"params: train.attention {name!r} cannot be used with this model: "
                        f"{str(exc).splitlines()[0]}") from None
    actual = model.config._attn_implementation
    if actual != name:
        raise UserError(f"params: train.attention {name!r} was not applied (the model uses {actual!r})")


def cpu_grouped_sdpa():
    """On the CPU, let transformers' `sdpa` attention hand grouped key/value heads to torch as they are
    (`scaled_dot_product_attention(..., enable_gqa=True)`) also when the batch has an attention mask;
    returns a function that undoes it (the stages keep it for the process).

    Models with grouped-query attention (Qwen2.5-0.5B: 14 query heads on 2 key/value heads)
    attend through transformers' `sdpa_attention_forward`, which passes `enable_gqa=True` only
    without an attention mask (`use_gqa_in_sdpa`: on CUDA a mask sends SDPA's GQA to the math
    kernel); with the padding mask of a batched prompt it first copies every key/value head 7
    times (`repeat_kv`), the whole cache, in every layer, at every decoding step. torch's CPU
    kernel takes the mask and the grouped heads together: on the 2-core Zen 4 one decoding step's
    attention of 8 rows over 490 cached positions took 0.71 ms instead of 4.21 ms per layer, and
    the outputs were equal bit for bit (benchmarks/bench_cpu_attention.py). This replaces
    transformers' `use_gqa_in_sdpa` with one that answers True for CPU tensors (equal head sizes,
    torch >= 2.5) and defers to the original otherwise; a transformers without that function
    is left as it is."""
    try:
        from transformers.integrations import sdpa_attention
        from transformers.utils.import_utils import is_torch_greater_or_equal
    except ImportError:
        return lambda: None
    original = getattr(sdpa_attention, "use_gqa_in_sdpa", None)
    if original is None or getattr(original, "_cpu_grouped", False) or not is_torch_greater_or_equal("2.5"):
        return lambda: None       # absent, already in place, or a torch without `enable_gqa`

    def use_gqa_in_sdpa(attention_mask, key, value):
        if key.device.type == "cpu" and key.shape[-1] == value.shape[-1]:
            return True
        return original(attention_mask, key, value)

    use_gqa_in_sdpa._cpu_grouped = True
    sdpa_attention.use_gqa_in_sdpa = use_gqa_in_sdpa

    def undo():
        if sdpa_attention.use_gqa_in_sdpa is use_gqa_in_sdpa:
            sdpa_attention.use_gqa_in_sdpa = original

    return undo


def grouped_decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             is_causal=None, **kwargs):
    """transformers attention function for the `graphs` backend: a one-token query (a decoding step)
    with grouped key/value heads attends as (batch, kv heads, group, dim) against the keys as they are,
    the padding mask broadcast over the group: the same dot products as `repeat_kv` + SDPA, without
    copying every key/value head `group` times (the whole static cache, every layer, every step).
    Anything else (prefill, equal head counts, dropout) goes to transformers' `sdpa_attention_forward`."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if (q_len != 1 or heads == kv_heads or dropout or attention_mask is None or attention_mask.ndim != 4
            or key.shape[-1] != value.shape[-1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    grouped = query.reshape(b, kv_heads, heads // kv_heads, dim)     # head h reads key/value head h // group
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(b, heads, 1, dim).transpose(1, 2).contiguous(), None


def register_grouped_decode() -> None:
    """Make `sdpa_grouped_decode` a transformers attention implementation, with sdpa's mask function
    (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_DECODE, grouped_decode_attention)
    AttentionMaskInterface.register(GROUPED_DECODE, sdpa_mask)
