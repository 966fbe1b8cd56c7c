"""Frozen fp32 linear layers through oneDNN with pre-packed weights, on CPU (`cpu_linear: onednn`).

torch's default fp32 `linear` on CPU calls a BLAS GEMM that re-reads the weight in its plain row-major
layout on every call. For the few rows of a decoding step (a batch of 8 prompts: 8 rows against a
151,936 x 896 LM head) that kernel is slow: on the 2-core AMD EPYC (Zen 4, AVX-512) the LM head
took 104 ms per step at 8 rows. oneDNN's linear with the weight reordered once into its blocked
layout (`torch.ops.mkldnn._reorder_linear_weight` + `torch.ops.mkldnn._linear_pointwise`, what torch's
own inductor uses for frozen CPU weights) took 23 ms; 0.75 ms instead of 1.9 ms for a 4864 x 896
projection at 8 rows, and 148 ms instead of 173 ms at 2,400 rows (prefill, training).
benchmarks/bench_cpu_linear.py measures it. The products agree with torch's to float rounding
(about 1e-6 relative: another summation order), so greedy outputs equal torch's up to near-ties.

`pack_linears(model)` patches the `forward` of every fp32 `nn.Linear` on the CPU (the module objects
stay, so state dicts, PEFT wrapping and tied weights are unchanged). A patched layer uses the packed
weight only while its weight needs no gradient (frozen: inference, or a LoRA base layer in training);
the input's gradient then comes from a second packed copy of the transposed weight, built on the first
backward. A layer whose weight is trainable (LoRA's A and B) runs torch's `linear` as before. A
weight replaced or changed in place (the tensor's version counter) is packed again on the next call,
so pack after the weights are final (after merging an adapter) to pack once.
"""
from __future__ import annotations

import types


def available() -> bool:
    """Whether this torch build has the oneDNN ops used here."""
    import torch

    return bool(torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
                and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _packed(weight):
    import torch

    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def _linear(x, packed, bias):
    import torch

    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


def _function():
    import torch

    class PackedLinear(torch.autograd.Function):
        """y = x W^T + b with W frozen: the input's gradient only (grad_y W, through packed W^T)."""

        @staticmethod
        def forward(ctx, x, layer):
            ctx.layer = layer
            bias = None if layer.bias is None else layer.bias.detach()
            return _linear(x, layer._onednn_weight, bias)

        @staticmethod
        def backward(ctx, grad):
            layer = ctx.layer
            if layer._onednn_weight_t is None:
                layer._onednn_weight_t = _packed(layer.weight.detach().t())
            return _linear(grad, layer._onednn_weight_t, None), None

    return PackedLinear


def _forward(self, x):
    import torch
    import torch.nn.functional as F

    weight = self.weight
    if (x.dtype != torch.float32 or x.device.type != "cpu" or weight.dtype != torch.float32
            or weight.device.type != "cpu"
            or (torch.is_grad_enabled() and (weight.requires_grad or (self.bias is not None and self.bias.requires_grad)))):
        return F.linear(x, weight, self.bias)
    if self._onednn_source != (weight.data_ptr(), weight._version):   # weights replaced or updated in place
        self._onednn_weight, self._onednn_weight_t = _packed(weight), None
        self._onednn_source = (weight.data_ptr(), weight._version)
    if torch.is_grad_enabled() and x.requires_grad:
        return self._onednn_fn.apply(x, self)
    bias = None if self.bias is None else self.bias.detach()
    return _linear(x, self._onednn_weight, bias)


def pack_linears(model) -> int:
    """Patch every fp32 CPU `nn.Linear` of `model` (see the module docstring); the number patched.
    0 (nothing changed) where this torch lacks the oneDNN ops."""
    import torch

    if not available():
        return 0
    fn = _function()
    n = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or getattr(module, "_onednn_fn", None) is not None:
            continue
        w = module.weight
        if w.dtype != torch.float32 or w.device.type != "cpu" or w.is_meta:
            continue
        module._onednn_fn = fn
        module._onednn_weight, module._onednn_weight_t = _packed(w), None
        module._onednn_source = (w.data_ptr(), w._version)
        module.forward = types.MethodType(_forward, module)
        n += 1
    return n
