"""Batched greedy generation for already-rendered prompts, with interchangeable backends.

Prompts are tokenised with `add_special_tokens=False` (the chat template already wrote any BOS),
generated greedily, cut at the first stop token (EOS or an end-of-turn token, see
`modeling.stop_token_ids`), and returned in input order. Greedy decoding is deterministic, so the
backend and the batching change speed, not the text (up to floating-point near-ties).

Backends (`predict.backend`):

* `reference`: prompts sorted by length (longest first: similar lengths share a batch, so little
  padding, and an out-of-memory shows up on the first batch), left-padded, `model.generate`.
* `prefix`: prompts that share a long token prefix (every question of one database shares the
  system turn, instruction and schema) form a group (`prefix_groups`: sorted token lists,
  split where that minimises the prefill tokens computed). Each group's prefix KV cache is computed
  once; the prompts of all groups are then batched together by suffix length (a batch mixes
  databases, so a sample of a few questions per database still decodes in full batches). A batch's
  cache holds each row's own prefix, left-padded to the batch's longest prefix; the suffixes are
  left-padded *between* the prefix and the suffix. The attention mask hides both pads, and
  `generate`'s position ids (cumulative sum of the mask) are those of the unpadded prompt. The
  tokens *all* prompts share (chat template, instruction, the few-shot baseline's examples) are
  computed once and every group's prefix is computed on top of them; a prompt of a group of one
  runs behind that common prefix alone.
* `static`: `reference`'s batches with a static KV cache of one size for every batch (the longest
  prompt plus `max_new_tokens`) and, on CUDA, the decoding step compiled with CUDA graphs
  (transformers' `CompileConfig`, mode `reduce-overhead`: one graph replay per step instead of
  hundreds of kernel launches). Every batch keeps `batch_size` rows (the last is filled with copies
  of its last prompt, whose outputs are dropped), so the graph is captured once. Elsewhere it runs
  uncompiled (tests: the same outputs as `reference`).
* `graphs`: `static`'s batches and transformers' `StaticCache`, with the decoding loop written around
  the model's forward (`_run_graphs`): one decoding step (forward, greedy argmax, stop flags, the
  next step's inputs, all on the GPU) is captured as a CUDA graph with torch's `torch.cuda.CUDAGraph`
  and replayed for every step, the host checking the stop flags every 8 steps; no torch.compile, so
  no compile time (capture takes well under a second). Grouped key/value heads attend without
  copies (`attention.grouped_decode_attention`). Needs the model's sdpa attention and full-attention layers;
  `predict.use_liger_kernel` (CUDA) adds liger-kernel's fused RMSNorm/RoPE/SwiGLU (fewer kernels
  per step). Off CUDA the same loop runs without graphs (tests: the same outputs as `reference`).
* `continuous`: transformers' continuous batching (`model.generate_batch`, paged attention;
  full-attention models share equal KV blocks between requests, i.e. prefix caching at
  `CB_BLOCK_SIZE`-token granularity). For CUDA (it runs on CPU too, slowly: tests only).
  `predict.cuda_graphs` (auto | true | false) and `predict.compile_level` (0-3) are passed to its
  `ContinuousBatchingConfig` (`use_cuda_graph`, `default_compile_level`).

Statistics: `prompt_tokens` (sum of prompt lengths), `prefill_tokens_computed` (prompt tokens run
through the model, pads excluded: the reference computes every prompt token; prefix computes each
group's prefix once plus the suffixes), `prefix_tokens_reused` (prompt tokens taken from a cache).
"""
from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from .config import PREDICT_BACKENDS as BACKENDS
from .errors import UserError

CB_BLOCK_SIZE = 32          # paged-cache block (tokens); prefixes are shared in whole blocks
_DP_WINDOW = 2048           # prefix_groups looks back at most this many prompts (O(n * window) work)


@dataclass
class GenerationStats:
    prompts: int = 0
    batches: int = 0
    batch_size: int = 0
    max_new_tokens: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    hit_max_new_tokens: int = 0        # outputs cut by max_new_tokens (no stop token)
    wall_time_s: float = 0.0
    tokens_per_s: float = 0.0          # generated tokens / wall time
    first_batch_s: float = 0.0         # wall time to the first finished batch (includes compiling, static backend)
    backend: str = "reference"
    prefix_groups: int = 0             # groups sharing one prefix cache (prefix backend)
    prefill_tokens_computed: int | None = 0   # None: not known (continuous without its counter)
    prefix_tokens_reused: int | None = 0

    def as_dict(self) -> dict:
        return asdict(self)


def check_backend(backend: str) -> str:
    """`backend` if it can run here, else a one-line UserError (call before loading the model)."""
    if backend not in BACKENDS:
        raise UserError(f"params: predict.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "continuous":
        from transformers import GenerationMixin
        if not hasattr(GenerationMixin, "generate_batch"):
            import transformers
            raise UserError(f"predict.backend continuous needs transformers' continuous batching "
                            f"(model.generate_batch), which transformers {transformers.__version__} lacks; "
                            f"use predict.backend prefix or reference")
    return backend


def apply_liger_kernels(model) -> None:
    """liger-kernel's fused Triton kernels (RMSNorm, rotary embedding, SwiGLU) in `model`'s layers, for
    prediction on CUDA (`predict.use_liger_kernel`; fewer kernels per decoding step). Through
    liger's own `_apply_liger_kernel_to_instance`, as transformers' Trainer applies it; no loss kernels."""
    from .modeling import require_liger

    require_liger("predict.use_liger_kernel", next(model.parameters()).device.type == "cuda")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)


def greedy_generation_config(tokenizer, model, max_new_tokens: int, min_new_tokens: int | None = None):
    """A fully specified greedy GenerationConfig (the model's own may ask for sampling).
    `min_new_tokens`: the stop tokens are masked until then (benchmarks time fixed-length outputs)."""
    from transformers import GenerationConfig

    from .modeling import stop_token_ids

    cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens),
                           eos_token_id=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id,
                           temperature=None, top_p=None, top_k=None)
    if min_new_tokens:
        cfg.min_new_tokens = int(min_new_tokens)
    return cfg


def copied_cache(cache, n: int):
    """A copy of a one-row prefix KV cache repeated for a batch of `n` rows (the model writes
    into the cache it is given, so every batch gets its own)."""
    past = copy.deepcopy(cache)
    if n > 1:
        past.batch_repeat_interleave(n)
    return past


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(encoded: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
    """Partition prompts into groups that share a token prefix: [(prefix length, [prompt indices])].

    The prompts are sorted by their tokens; a contiguous run of that order shares the minimum of its
    neighbours' common-prefix lengths (capped so every prompt keeps at least one token to run). A
    dynamic programme picks the split that minimises the prefill tokens computed (each group's prefix
    once, plus every suffix), fewer groups breaking ties. A group of one has prefix length 0.
    """
    order = sorted(range(len(encoded)), key=lambda i: (list(encoded[i]), i))
    n = len(order)
    if n == 0:
        return []
    adj = [_lcp(encoded[order[k]], encoded[order[k + 1]]) for k in range(n - 1)]
    lens = [len(encoded[i]) for i in order]
    # best[j] = (tokens computed, groups) for order[:j]; cut[j] = start of the last group
    best: list[tuple[int, int]] = [(0, 0)] + [(0, 0)] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        shared, shortest, total = None, lens[j - 1], 0
        choice = None
        for i in range(j - 1, max(-1, j - 1 - _DP_WINDOW), -1):    # last group = order[i:j]
            total += lens[i]
            shortest = min(shortest, lens[i])
            if i < j - 1:
                shared = adj[i] if shared is None else min(shared, adj[i])
            p = 0 if shared is None else min(shared, shortest - 1)
            size = j - i
            cost = total - (size - 1) * p if p > 0 else total
            cand = (best[i][0] + cost, best[i][1] + 1)
            if choice is None or cand < choice:
                choice, cut[j] = cand, i
        best[j] = choice
    groups = []
    j = n
    while j > 0:
        i = cut[j]
        members = order[i:j]
        p = 0
        if len(members) > 1:
            p = min(min(adj[i:j - 1]), min(lens[i:j]) - 1)
        groups.append((p, sorted(members)))
        j = i
    return groups[::-1]


class _Collector:
    """Cuts generated token lists at the first stop token, decodes them, counts, and drives the bar."""

    def __init__(self, tokenizer, model, n_prompts: int, stats: GenerationStats, desc: str, progress: bool,
                 stop_ids: Sequence[int] | None = None):
        from tqdm import tqdm

        from .modeling import stop_token_ids

        self.tokenizer, self.stats = tokenizer, stats
        self.stops = set(stop_token_ids(tokenizer, model) if stop_ids is None else stop_ids)
        self.outputs: list[str | None] = [None] * n_prompts
        self.t0 = time.time()
        self.bar = tqdm(total=n_prompts, desc=desc, unit="prompt", disable=not progress, file=sys.stderr,
                        dynamic_ncols=True)

    def add(self, indices: Sequence[int], generated: Sequence[Sequence[int]], batch: bool = True) -> None:
        for i, tokens in zip(indices, generated):
            tokens = list(tokens)
            cut = next((k for k, t in enumerate(tokens) if t in self.stops), None)
            if cut is None:
                self.stats.hit_max_new_tokens += 1
                kept, n_gen = tokens, len(tokens)
            else:
                kept, n_gen = tokens[:cut], cut + 1
            self.stats.generated_tokens += n_gen
            self.outputs[i] = self.tokenizer.decode(kept, skip_special_tokens=True)
        if not self.stats.first_batch_s:
            self.stats.first_batch_s = round(time.time() - self.t0, 3)
        if batch:
            self.stats.batches += 1
            self.bar.update(len(indices))
            self.bar.set_postfix(tok_s=f"{self.stats.generated_tokens / max(time.time() - self.t0, 1e-9):.1f}")

    def finish(self) -> list[str]:
        self.bar.close()
        st = self.stats
        st.wall_time_s = round(time.time() - self.t0, 3)
        st.tokens_per_s = round(st.generated_tokens / st.wall_time_s, 2) if st.wall_time_s > 0 else 0.0
        return [o if o is not None else "" for o in self.outputs]


def _padded_batch(prefixes: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], pad_id: int, device):
    """Input ids `pads + prefix + pads + row` for each (prefix, row) and the mask hiding the pads:
    every prefix right-aligned in the longest prefix's width, every row in the longest row's."""
    import torch

    lp, width = max(len(p) for p in prefixes), max(len(r) for r in rows)
    ids = torch.full((len(rows), lp + width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), lp + width), dtype=torch.long)
    for b, (p, r) in enumerate(zip(prefixes, rows)):
        if p:
            ids[b, lp - len(p):lp] = torch.tensor(list(p), dtype=torch.long)
            mask[b, lp - len(p):lp] = 1
        ids[b, lp + width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[b, lp + width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _longest_first_batches(encoded, batch_size: int, fill: bool):
    """(prompt indices, row indices) of each batch: prompts longest first, `batch_size` a batch.
    `fill`: every batch has the same number of rows (the last filled with copies of its last prompt,
    whose outputs are dropped)."""
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    rows_per_batch = min(batch_size, len(order))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, (idx + [idx[-1]] * (rows_per_batch - len(idx)) if fill else idx)


def _run_reference(model, encoded, batch_size: int, gen_cfg, collect: _Collector, pad_id: int,
                   fill: bool = False) -> None:
    """The reference backend: prompts longest first, left-padded batches, `model.generate`
    (`fill`: see `_longest_first_batches`)."""
    device = next(model.parameters()).device
    for idx, batch in _longest_first_batches(encoded, batch_size, fill):
        input_ids, attention_mask = _padded_batch([()] * len(batch), [encoded[i] for i in batch], pad_id, device)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_cfg)
        collect.stats.prefill_tokens_computed += sum(len(encoded[i]) for i in idx)
        collect.add(idx, out[:len(idx), input_ids.shape[1]:].tolist())


def _prefix_cache(model, tokens: Sequence[int], device, base=None):
    """The KV cache of a prompt prefix, [(keys, values)] per layer, each (1, heads, len, dim): of
    `tokens`, or of `base` (such a cache, left unchanged) followed by `tokens`."""
    import torch
    from transformers import DynamicCache

    past = None
    if base is not None:
        past = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in base], config=model.config)
    out = model(input_ids=torch.tensor([list(tokens)], dtype=torch.long, device=device), past_key_values=past,
                use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def _batch_cache(model, parts: Sequence[list | None], lens: Sequence[int], width: int):
    """One DynamicCache for a batch: row b holds `parts[b]` (a `_prefix_cache`, or None for no
    prefix) right-aligned in `width` slots, zeros before it (those slots are masked)."""
    from transformers import DynamicCache

    ref = next(p for p in parts if p is not None)
    layers = []
    for li, (k0, v0) in enumerate(ref):
        keys = k0.new_zeros((len(parts), k0.shape[1], width, k0.shape[3]))
        values = v0.new_zeros((len(parts), v0.shape[1], width, v0.shape[3]))
        for b, (part, n) in enumerate(zip(parts, lens)):
            if part is not None and n:
                keys[b, :, width - n:] = part[li][0][0]
                values[b, :, width - n:] = part[li][1][0]
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers, config=model.config)


def common_prefix_len(encoded: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with (the chat template, the instruction, few-shot examples),
    capped so every prompt keeps at least one token to run; 0 for fewer than two prompts."""
    if len(encoded) < 2:
        return 0
    lo, hi = min(encoded), max(encoded)          # the sorted extremes bound every common prefix
    return min(_lcp(lo, hi), min(len(e) for e in encoded) - 1)


def _run_prefix(model, encoded, groups, batch_size: int, gen_cfg, collect: _Collector, pad_id: int) -> None:
    """The prefix backend: the prefix all prompts share computed once, each group's prefix on top of
    it, then batches of any groups' suffixes (a prompt of no group runs behind the common prefix)."""
    device = next(model.parameters()).device
    common = common_prefix_len(encoded)
    base = _prefix_cache(model, encoded[0][:common], device) if common else None
    collect.stats.prefill_tokens_computed += common
    caches, prefix_len = [], {}
    for g, (p, members) in enumerate(groups):
        p = max(p, common)
        if p > common:
            caches.append(_prefix_cache(model, encoded[members[0]][common:p], device, base))
            collect.stats.prefill_tokens_computed += p - common
        else:
            caches.append(base)
        for i in members:
            prefix_len[i] = (g, p)
    order = sorted(prefix_len, key=lambda i: (-(len(encoded[i]) - prefix_len[i][1]), i))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lp = max(prefix_len[i][1] for i in idx)
        rows = [encoded[i][prefix_len[i][1]:] for i in idx]
        ids, mask = _padded_batch([encoded[i][:prefix_len[i][1]] for i in idx], rows, pad_id, device)
        kwargs = {}
        if lp:
            kwargs["past_key_values"] = _batch_cache(model, [caches[prefix_len[i][0]] for i in idx],
                                                     [prefix_len[i][1] for i in idx], lp)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg, **kwargs)
        collect.stats.prefill_tokens_computed += sum(len(r) for r in rows)
        collect.stats.prefix_tokens_reused += sum(prefix_len[i][1] for i in idx)
        collect.add(idx, out[:, ids.shape[1]:].tolist())


def _run_static(model, encoded, batch_size: int, gen_cfg, collect: _Collector, pad_id: int) -> None:
    """`reference`'s batches with one static cache size and a compiled (CUDA-graph) decoding step."""
    from transformers import CompileConfig

    device = next(model.parameters()).device
    cfg = copy.deepcopy(gen_cfg)
    cfg.cache_implementation = "static"
    cfg.max_cache_len = max(len(e) for e in encoded) + int(gen_cfg.max_new_tokens)
    if device.type == "cuda":      # elsewhere transformers would only warn that it cannot compile
        cfg.compile_config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")
    _run_reference(model, encoded, batch_size, cfg, collect, pad_id, fill=True)


def _use_grouped_decode(model) -> str:
    """Switch `model` from sdpa to `attention.grouped_decode_attention`; returns the implementation to restore."""
    from .attention import GROUPED_DECODE, register_grouped_decode

    attn = model.config._attn_implementation
    if attn != "sdpa":
        raise UserError(f"predict.backend graphs needs the model's sdpa attention (it has {attn!r}); "
                        f"use predict.backend static")
    register_grouped_decode()
    model.set_attn_implementation(GROUPED_DECODE)
    return attn


def _full_attention_only(model, width: int) -> bool:
    """Whether every layer of `model` attends to the whole cache of `width` slots (a 4D mask given to
    transformers is used as it is for every layer type, so a shorter sliding window would be lost)."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    window = getattr(cfg, "sliding_window", None)
    return not (types - {"full_attention"} and window is not None and window < width)


def capture_step(step: Callable[[], None], warmup: int = 2):
    """`step` (work on the current CUDA device whose tensors stay where they are) run `warmup` times on
    a side stream, then captured as a `torch.cuda.CUDAGraph` (recorded, not run) and returned for
    `replay()`. A step that cannot be captured (a host synchronisation inside it, a kernel or library
    that does not support capture, e.g. some quantised layers) is one UserError line naming the
    backends that need no capture; an error of the step itself (in the eager warm-up) is raised as
    it is."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"predict.backend graphs could not capture the decoding step as a CUDA graph "
                        f"({first[:200]}); use predict.backend static or reference") from None
    return graph


def _run_graphs(model, encoded, batch_size: int, gen_cfg, collect: _Collector, pad_id: int,
                check_every: int = 8) -> None:
    """`static`'s batches (longest first, every batch `batch_size` rows) with transformers'
    `StaticCache`, but the decoding loop written around the model's forward: one decoding step
    (forward, greedy argmax, stop tracking, the next step's inputs) is captured as a CUDA graph and
    replayed for every step, with no Python per step beyond the replay; the host looks at the stop
    flags every `check_every` steps. Prefill runs eagerly, one forward per batch, into the same cache.
    Elsewhere the same loop runs without the graph (the CPU tests). (Narrowing each batch's keys to its
    own cache width, one graph per width, was measured on an H200 and gained nothing: BENCHMARKS.md.)

    Exactness: the reference's inputs, positions (cumulative sum of the mask), padding mask (a key is
    seen if it is a real prompt token or an already generated one), greedy choice and the pad token
    fed to finished rows, as `generate` does; what differs is the attention's key length (masked
    empty slots) and the grouping of key/value heads (`attention.grouped_decode_attention`): float
    reassociation only."""
    import torch
    from transformers import StaticCache

    if not encoded:
        return
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    max_new = int(gen_cfg.max_new_tokens)
    min_new = int(getattr(gen_cfg, "min_new_tokens", None) or 0)
    eos = gen_cfg.eos_token_id
    stops = torch.tensor(sorted({eos} if isinstance(eos, int) else set(eos or ())), dtype=torch.long, device=device)
    batches = list(_longest_first_batches(encoded, batch_size, fill=True))
    rows = len(batches[0][1])
    width = max(len(e) for e in encoded) + max_new
    if not _full_attention_only(model, width):
        raise UserError("predict.backend graphs needs full attention (this model has sliding-window layers "
                        "shorter than the cache); use predict.backend static")
    cache = StaticCache(config=model.config, max_cache_len=width)
    mask = torch.zeros((rows, 1, 1, width), dtype=torch.bool, device=device)
    ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
    pos = torch.zeros((rows, 1), dtype=torch.long, device=device)
    column = torch.zeros((1,), dtype=torch.long, device=device)      # the cache slot the next token fills
    step = torch.zeros((1,), dtype=torch.long, device=device)        # index of the next generated token
    done = torch.zeros((rows,), dtype=torch.bool, device=device)
    out = torch.full((rows, max_new), pad_id, dtype=torch.long, device=device)
    stop_cols: list = []         # (vocab,) bool, True at the stop tokens: made at the first (eager) call

    def choose(logits):
        """Greedy next tokens from (rows, vocab) logits; stop tokens masked before `min_new` tokens."""
        if min_new and stops.numel():
            if not stop_cols:
                stop_cols.append(torch.zeros(logits.shape[-1], dtype=torch.bool, device=device).index_fill_(0, stops, True))
            logits = logits.masked_fill(stop_cols[0] & (step < min_new), float("-inf"))
        nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out.index_copy_(1, step, nxt[:, None])
        done.logical_or_(torch.isin(nxt, stops))
        ids.copy_(nxt[:, None])
        step.add_(1)

    def decode_step():
        mask.index_fill_(3, column, True)
        logits = model(input_ids=ids, position_ids=pos, attention_mask=mask, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        choose(logits)
        pos.add_(1)
        column.add_(1)

    def prefill(batch):
        """Reset every buffer and the cache for `batch` (token lists) and choose its first token."""
        input_ids, pad_mask = _padded_batch([()] * len(batch), batch, pad_id, device)
        n = input_ids.shape[1]
        cache.reset()
        keep = pad_mask.bool()
        causal = torch.ones((n, n), dtype=torch.bool, device=device).tril()
        full = torch.zeros((rows, 1, n, width), dtype=torch.bool, device=device)
        full[:, 0, :, :n] = causal[None] & keep[:, None, :]
        positions = pad_mask.long().cumsum(-1) - 1
        positions.masked_fill_(pad_mask == 0, 1)
        mask.zero_()
        mask[:, 0, 0, :n] = keep
        done.zero_()
        out.fill_(pad_id)
        step.zero_()
        logits = model(input_ids=input_ids, position_ids=positions, attention_mask=full,
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        choose(logits)
        pos.copy_(positions[:, -1:] + 1)
        column.fill_(n)

    graph = None
    if cuda and max_new > 1:
        prefill([encoded[i] for i in batches[0][1]])     # allocates the cache
        graph = capture_step(decode_step)
    for idx, batch in batches:
        prefill([encoded[i] for i in batch])
        for t in range(1, max_new):
            if t % check_every == 0 and bool(done.all()):
                break
            if graph is not None:
                graph.replay()
            else:
                decode_step()
        collect.stats.prefill_tokens_computed += sum(len(encoded[i]) for i in idx)
        collect.add(idx, out[:len(idx)].tolist())


def _run_continuous(model, encoded, batch_size: int, max_new_tokens: int, gen_cfg, collect: _Collector,
                    progress: bool, cuda_graphs: bool | None = None, compile_level: int = 0) -> None:
    """All prompts through `model.generate_batch` (continuous batching, paged attention, shared blocks)."""
    from transformers import ContinuousBatchingConfig

    cuda = next(model.parameters()).device.type == "cuda"
    blocks = sum(-(-(len(e) + max_new_tokens) // CB_BLOCK_SIZE) for e in encoded) + 1
    # The paged cache holds exactly what the prompts need; on CUDA the batch-token budget is solved from
    # at most a quarter of the free memory, so other processes on the card (training) keep theirs.
    cb_cfg = ContinuousBatchingConfig(
        block_size=CB_BLOCK_SIZE, allow_block_sharing=True, max_requests_per_batch=batch_size,
        num_blocks=blocks, max_memory_percent=0.25 if cuda else None,
        max_batch_tokens=None if cuda else max(len(e) for e in encoded) * min(batch_size, len(encoded)),
        use_cuda_graph=cuda_graphs, default_compile_level=int(compile_level))
    attn = model.config._attn_implementation
    cb_log = logging.getLogger("ContinuousBatchingLogger")     # silence its persistent-manager notice
    level = cb_log.level
    cb_log.setLevel(logging.ERROR)
    try:
        results = model.generate_batch([list(e) for e in encoded], generation_config=gen_cfg,
                                       continuous_batching_config=cb_cfg, progress_bar=progress,
                                       persistent_manager=True, warmup=cuda)
        manager = getattr(model, "_cached_continuous_batching_manager", None)
        cache = getattr(getattr(manager, "batch_processor", None), "cache", None)
        reused = getattr(cache, "_total_prefix_length", None)
    finally:
        cb_log.setLevel(level)
        if hasattr(model, "destroy_cached_continuous_batching_manager"):
            model.destroy_cached_continuous_batching_manager()
        if model.config._attn_implementation != attn:
            model.set_attn_implementation(attn)
    got = list(results.values())
    if len(got) != len(encoded) or any(r.error is not None for r in got):
        bad = len(encoded) - sum(r.error is None for r in got)
        raise UserError(f"continuous batching failed for {bad} of {len(encoded)} prompts (see the log above); "
                        f"use predict.backend prefix or reference")
    st = collect.stats
    st.batches = 1
    st.prefix_tokens_reused = reused
    st.prefill_tokens_computed = None if reused is None else st.prompt_tokens - reused
    collect.add(range(len(encoded)), [r.generated_tokens for r in got], batch=False)
    collect.bar.update(len(encoded))


def generate(model, tokenizer, prompts: Sequence[str], batch_size: int = 8, max_new_tokens: int = 128,
             desc: str = "generate", progress: bool = True, backend: str = "reference",
             stop_ids: Sequence[int] | None = None, min_new_tokens: int | None = None,
             cuda_graphs: bool | None = None, compile_level: int = 0) -> tuple[list[str], GenerationStats]:
    """Greedy completions of `prompts` (in input order) and throughput statistics.

    `stop_ids`: the token ids that end a completion (default `modeling.stop_token_ids`: EOS and
    the end-of-turn tokens; MMLU passes the model's own EOS, as a plain `model.generate` stops).
    A tokenizer without a pad token pads with its EOS token (the pads are masked).
    `min_new_tokens` (benchmarks): no output stops before that many new tokens.
    `cuda_graphs` (None: transformers decides), `compile_level`: the continuous backend's settings."""
    import torch

    check_backend(backend)
    if batch_size < 1 or max_new_tokens < 1:
        raise UserError(f"predict.batch_size and predict.max_new_tokens must be positive "
                        f"(got {batch_size}, {max_new_tokens})")
    gen_cfg = greedy_generation_config(tokenizer, model, max_new_tokens, min_new_tokens)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        gen_cfg.pad_token_id = pad_id
    if stop_ids is not None:
        gen_cfg.eos_token_id = list(stop_ids) or None
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise UserError(f"prompt {empty[0] + 1} is empty")
    stats = GenerationStats(prompts=len(prompts), batch_size=batch_size, max_new_tokens=max_new_tokens,
                            prompt_tokens=sum(len(e) for e in encoded), backend=backend)
    collect = _Collector(tokenizer, model, len(prompts), stats, desc, progress and backend != "continuous",
                         stop_ids)
    if backend == "continuous":
        # no_grad, not inference_mode: the manager allocates its static tensors in this thread (warm-up
        # on CUDA) and updates them in place from its own generation thread, which is not in inference
        # mode; inference tensors would refuse that ("Inplace update to inference tensor outside
        # InferenceMode", seen on an H200).
        with torch.no_grad():
            _run_continuous(model, encoded, batch_size, max_new_tokens, gen_cfg, collect, progress,
                            cuda_graphs, compile_level)
        return collect.finish(), stats
    with torch.inference_mode():
        if backend == "prefix":
            groups = prefix_groups(encoded)
            stats.prefix_groups = sum(p > 0 for p, _ in groups)
            _run_prefix(model, encoded, groups, batch_size, gen_cfg, collect, pad_id)
        elif backend == "static":
            _run_static(model, encoded, batch_size, gen_cfg, collect, pad_id)
        elif backend == "graphs":
            restore = _use_grouped_decode(model)
            try:
                _run_graphs(model, encoded, batch_size, gen_cfg, collect, pad_id)
            finally:
                model.set_attn_implementation(restore)
        else:
            _run_reference(model, encoded, batch_size, gen_cfg, collect, pad_id)
    return collect.finish(), stats
