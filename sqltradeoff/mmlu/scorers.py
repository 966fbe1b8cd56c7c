"""The model side of MMLU scoring: log-likelihoods of the answer continuations.

Context and continuation are tokenized as lm-evaluation-harness's HFLM does (`_encode_pair`:
encode context and context+continuation without special tokens, continuation = the tail of the
joint encoding), so when every letter is a single token one forward pass gives all four
log-probabilities; otherwise each letter is scored on its own (general path). The few-shot
prefix, the same for every question of a subject, is run once and its KV cache reused for each
batch of questions (`HFLetterScorer`); `BatchedHFLetterScorer` scores a whole subject per call.
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from typing import Callable, Protocol, Sequence

from ..errors import UserError
from ..generation import copied_cache


class LetterScorer(Protocol):
    def score(self, prefix: str, suffixes: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """log P(continuation | prefix + suffix) for every suffix and continuation."""


def _model_device(model):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


class FunctionScorer:
    """A scorer from a plain function `(context, continuations) -> [logprob, ...]` (tests, stubs)."""

    def __init__(self, fn: Callable[[str, Sequence[str]], Sequence[float]]):
        self.fn = fn

    def score(self, prefix, suffixes, continuations):
        return [[float(x) for x in self.fn(prefix + s, continuations)] for s in suffixes]


def split_request(ctx: list[int], joint: list[int], continuation: str, context: str, offset: int = 0
                  ) -> tuple[list[int], list[int], int]:
    """(model input ids, target ids, 1 if the boundary case applied) from the encodings of the
    (space-moved) context and of context + continuation; see `HFLetterScorer.request_tokens`.
    With `offset`, both encodings are given without their first `offset` tokens (known to be
    equal), and so is the returned input."""
    whole, cont, boundary = joint, joint[len(ctx):], 0
    if joint[:len(ctx)] != ctx:
        common = 0
        while common < min(len(joint), len(ctx)) and joint[common] == ctx[common]:
            common += 1
        cont, boundary = joint[max(common + offset, 1) - offset:], 1
    if not cont:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens after {context[-40:]!r}")
    return whole[:-1], cont, boundary


def shared_length(prefix_ids: Sequence[int], rows: Sequence[tuple[list[int], dict]]) -> int:
    """How many leading tokens every row shares with the tokenized prefix, keeping at least one
    token to run per row (token equality makes prefix reuse exact whatever the tokenizer does at
    the prefix/question boundary)."""
    shared = len(prefix_ids)
    for ids, _ in rows:
        n, limit = 0, min(shared, len(ids) - 1)
        while n < limit and ids[n] == prefix_ids[n]:
            n += 1
        shared = n
    return shared


class HFLetterScorer:
    """Log-likelihoods from a Hugging Face causal LM, tokenized exactly as lm-eval's HFLM.

    `reuse_prefix=True` runs the shared prefix once and reuses its KV cache; `False` recomputes
    every sequence from its first token (same numbers, slower; used to check the fast path).
    """

    def __init__(self, model, tokenizer, batch_size: int = 8, reuse_prefix: bool = True):
        import torch  # noqa: F401  (fail early if missing)

        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.reuse_prefix = reuse_prefix
        self._prefix_cache: tuple[tuple[int, ...], object] | None = None
        self.device = _model_device(model)
        self.stats = Counter()  # fast/general rows, prefix tokens reused, forward calls

    # -- tokenization, as HFLM.tok_encode / _encode_pair (add_bos_token=False)
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    def request_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(model input ids, target ids): the targets are scored at the last len(targets) positions.

        As the harness: input = context_enc + continuation_enc, minus the last token. When the
        joint encoding does not start with the context's encoding (the tokenizer merges across the
        boundary, e.g. ":" + " A" -> ":ĠA", where the harness's continuation would be empty or
        wrong), the joint encoding is scored from the first token where it differs instead.
        """
        ctx, _ = self.encode_pair(context, continuation)
        inp, cont, boundary = split_request(ctx, self.encode(context + continuation), continuation, context)
        self.stats["boundary_rows"] += boundary
        return inp, cont

    def _rows(self, prefix: str, suffixes: Sequence[str], continuations: Sequence[str]):
        """Rows to run: (input ids, {(suffix index, continuation index): target ids}).

        Fast path: every continuation is one token after the same input -> one row per suffix,
        all four targets read at its last position. General path: one row per continuation.
        """
        rows = []
        for si, suffix in enumerate(suffixes):
            self._add_rows(rows, si, [self.request_tokens(prefix + suffix, c) for c in continuations])
        return rows

    def _add_rows(self, rows: list, si: int, reqs: Sequence[tuple[list[int], list[int]]]) -> None:
        """Append suffix `si`'s requests to `rows`: one row when every target is one token after
        the same input (fast path), else one row per continuation (general path)."""
        if all(len(t) == 1 for _, t in reqs) and all(inp == reqs[0][0] for inp, _ in reqs):
            rows.append((reqs[0][0], {(si, ci): t for ci, (_, t) in enumerate(reqs)}))
            self.stats["fast_rows"] += 1
        else:
            for ci, (inp, t) in enumerate(reqs):
                rows.append((inp, {(si, ci): t}))
                self.stats["general_rows"] += 1

    def _get_prefix_cache(self, ids: tuple[int, ...]):
        import torch

        if self._prefix_cache is not None and self._prefix_cache[0] == ids:
            return self._prefix_cache[1]
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], dtype=torch.long, device=self.device), use_cache=True)
        self.stats["prefix_forwards"] += 1
        self._prefix_cache = (ids, out.past_key_values)
        return out.past_key_values

    def score(self, prefix: str, suffixes: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        import torch

        rows = self._rows(prefix, suffixes, continuations)
        # How many leading tokens every row shares with the tokenized prefix (token equality makes
        # the reuse exact whatever the tokenizer does at the prefix/question boundary).
        shared = shared_length(self.encode(prefix), rows) if self.reuse_prefix and rows else 0
        cache = self._get_prefix_cache(tuple(rows[0][0][:shared])) if shared > 0 else None
        self.stats["prefix_tokens_reused"] += shared * len(rows)

        out = [[math.nan] * len(continuations) for _ in suffixes]
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][0]))  # similar lengths together
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            batch = [rows[r] for r in order[start:start + self.batch_size]]
            tails = [ids[shared:] for ids, _ in batch]
            width = max(len(t) for t in tails)
            n_keep = max(len(t) for _, targets in batch for t in targets.values())
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), shared + width), dtype=torch.long)
            positions = torch.full((len(batch), width), shared, dtype=torch.long)
            attention[:, :shared] = 1
            for b, tail in enumerate(tails):  # left padding: every row ends at the last column
                pad = width - len(tail)
                input_ids[b, pad:] = torch.tensor(tail, dtype=torch.long)
                attention[b, shared + pad:] = 1
                positions[b, pad:] = torch.arange(shared, shared + len(tail))
            kwargs = {}
            if cache is not None:
                kwargs["past_key_values"] = copied_cache(cache, len(batch))
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                    position_ids=positions.to(self.device),
                                    use_cache=cache is not None, logits_to_keep=n_keep, **kwargs).logits
            logprobs = torch.log_softmax(logits[:, -n_keep:, :].float(), dim=-1).cpu()
            self.stats["forwards"] += 1
            for b, (_, targets) in enumerate(batch):
                for (si, ci), target in targets.items():
                    # target token j is predicted at position -(len(target)) + j of the row
                    idx = torch.arange(n_keep - len(target), n_keep)
                    tok = torch.tensor(target, dtype=torch.long)
                    out[si][ci] = float(logprobs[b, idx, tok].sum())
        return out


def token_budget_batches(lengths: Sequence[int], shared: int, batch_size: int,
                         batch_tokens: int | None) -> list[list[int]]:
    """Consecutive index groups of `lengths` (sorted longest first): at most `batch_size` rows
    and, with `batch_tokens`, at most that many (rows x (shared prefix + longest tail)) tokens."""
    batches: list[list[int]] = []
    for i, n in enumerate(lengths):
        cur = batches[-1] if batches else None
        if cur is not None and len(cur) < batch_size and (
                batch_tokens is None or (len(cur) + 1) * (shared + lengths[cur[0]]) <= batch_tokens):
            cur.append(i)
        else:
            batches.append([i])
    return batches


class BatchedHFLetterScorer(HFLetterScorer):
    """The same log-likelihoods as `HFLetterScorer`, many questions per forward pass.

    `evaluate` hands it all of a subject's questions at once (`whole_subject`). Tokenization is
    batched and does not re-tokenize the few-shot prefix for every text (same token ids as the
    reference, checked; see `_encode_after`); the rows are sorted by length and cut into batches
    of at most `batch_size` rows and `batch_tokens` tokens (rows x (prefix + longest tail));
    the few-shot prefix runs once per subject and its key/value tensors are shared read-only by
    every batch (a broadcast view per batch, no deep copy); logits are computed only at the target
    positions (`logits_to_keep`) and gathered on the device, with one host transfer per call.
    """

    whole_subject = True

    def __init__(self, model, tokenizer, batch_size: int = 64, batch_tokens: int | None = None,
                 splice: bool = True, splice_checks: int = 8):
        super().__init__(model, tokenizer, batch_size=batch_size, reuse_prefix=True)
        self.splice, self.splice_checks = splice, splice_checks
        if batch_tokens is not None and (isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int)
                                         or batch_tokens < 1):
            raise UserError(f"mmlu.batch_tokens must be a positive integer or null, got {batch_tokens!r}")
        self.batch_tokens = batch_tokens

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def _encode_after(self, prefix: str, texts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """(head, tails): encode(t) == head + tail for every text t (each starts with `prefix`).

        The shared prefix is not re-tokenized for every text: `head` is encode(prefix) minus the
        tokens of its last lines (the anchor, at least 64 characters), and each tail is
        encode(anchor + rest of t). Exact when no token and no pre-tokenizer match spans the
        head/anchor boundary, which holds for tokenizers that split text into words and
        whitespace runs before merging (byte-level BPE: GPT-2, Llama 3, Qwen, SmolLM), as the
        anchor starts a line more than 64 characters before the question. Used only when
        encode(prefix) == head + encode(anchor) and the first `splice_checks` texts, encoded in
        full, agree; otherwise (or with `splice=False`) every text is encoded in full (head = [])."""
        cut = prefix.rfind("\n", 0, max(0, len(prefix) - 64)) + 1
        if self.splice and cut > 0 and all(t.startswith(prefix) for t in texts):
            anchor = prefix[cut:]
            full_prefix, a = self.encode(prefix), self.encode(anchor)
            if 0 < len(a) < len(full_prefix) and full_prefix[len(full_prefix) - len(a):] == a:
                head = full_prefix[:len(full_prefix) - len(a)]
                encoded = self.encode_many([anchor + t[len(prefix):] for t in texts])
                probe = self.encode_many(list(texts[:self.splice_checks]))
                if all(f == head + e for f, e in zip(probe, encoded)):
                    return head, encoded
            self.stats["unspliced_calls"] += 1
        return [], self.encode_many(texts)

    def _encode_joints(self, ctx_ids: dict[str, list[int]], requests) -> list[list[int]] | None:
        """encode(context + continuation) for every request, relative like `ctx_ids`, or None.

        Each context's encoding already holds every token but those of its last line ("Answer:"):
        the joint is ctx_ids minus that line's tokens plus encode(last line + continuation), a
        handful of distinct short texts. Used only when every context's encoding ends with its
        last line's encoding (`_rows` then checks the first `splice_checks` against a full one)."""
        if not self.splice:
            return None
        short: dict[str, list[int]] = {}
        wanted = []
        for _, context, c, moved in requests:
            line = moved[moved.rfind("\n") + 1:] if "\n" in moved else None
            if not line:
                return None
            wanted += [line, line + (context + c)[len(moved):]]
        missing = list(dict.fromkeys(t for t in wanted if t not in short))
        short.update(zip(missing, self.encode_many(missing)))
        joints = []
        for i, (_, context, c, moved) in enumerate(requests):
            rel, last = ctx_ids[moved], short[wanted[2 * i]]
            if not last or len(last) >= len(rel) or rel[len(rel) - len(last):] != last:
                self.stats["unspliced_joints"] += 1
                return None
            joints.append(rel[:len(rel) - len(last)] + short[wanted[2 * i + 1]])
        return joints

    def _rows(self, prefix: str, suffixes: Sequence[str], continuations: Sequence[str]):
        """(rows as `HFLetterScorer._rows` gives them, each without the first len(head) tokens,
        head): the same token ids from one batched tokenizer call over the texts' tails."""
        requests = []  # (suffix index, context, continuation, space-moved context)
        for si, suffix in enumerate(suffixes):
            context = prefix + suffix
            n_spaces = len(context) - len(context.rstrip())
            for c in continuations:
                requests.append((si, context, c, context[:-n_spaces] if n_spaces else context))
        contexts = list(dict.fromkeys(r[3] for r in requests))
        head, encoded = self._encode_after(prefix, contexts)
        ctx_ids = dict(zip(contexts, encoded))
        joints = self._encode_joints(ctx_ids, requests)
        if joints is not None:  # check the first joints against a full encoding
            probe = self.encode_many([ctx + c for _, ctx, c, _ in requests[:self.splice_checks]])
            if any(f != head + j for f, j in zip(probe, joints)):
                self.stats["unspliced_joints"] += 1
                joints = None
        if joints is None:  # not spliced at the end: encode context + continuation after the head
            joints = self._encode_after(prefix, [ctx + c for _, ctx, c, _ in requests])[1] if head else \
                self.encode_many([ctx + c for _, ctx, c, _ in requests])
        by_suffix: dict[int, list] = defaultdict(list)
        for (si, context, c, moved), joint in zip(requests, joints):
            inp, cont, boundary = split_request(ctx_ids[moved], joint, c, context, offset=len(head))
            self.stats["boundary_rows"] += boundary
            by_suffix[si].append((inp, cont))
        rows = []
        for si in range(len(suffixes)):
            self._add_rows(rows, si, by_suffix[si])
        return rows, head

    def _prefix_kv(self, ids: Sequence[int]):
        """The prefix's cache as [(keys, values), ...] per layer, or the cache object itself when
        it has no plain key/value layers (then each batch gets a copy)."""
        cache = self._get_prefix_cache(tuple(ids))
        layers = getattr(cache, "layers", None)
        if layers and all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
            return [(layer.keys, layer.values) for layer in layers]
        return cache

    def _batch_cache(self, kv, n: int):
        from transformers import DynamicCache

        if isinstance(kv, list):  # broadcast views: the prefix tensors are read, never written
            return DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv],
                                config=getattr(self.model, "config", None))
        return copied_cache(kv, n)

    def score(self, prefix: str, suffixes: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        import torch

        t0 = time.perf_counter()
        rows, head = self._rows(prefix, suffixes, continuations)
        self.stats["tokenize_s"] += time.perf_counter() - t0
        if not rows:
            return []
        # rows are relative to `head` (a token prefix they all share): shared counts from there
        shared = len(head) + shared_length(self.encode(prefix)[len(head):], rows)
        kv = self._prefix_kv(head + rows[0][0][:shared - len(head)]) if shared > 0 else None
        self.stats["prefix_tokens_reused"] += shared * len(rows)
        tails = sorted(((ids[shared - len(head):], targets) for ids, targets in rows), key=lambda r: -len(r[0]))
        batches = token_budget_batches([len(t) for t, _ in tails], shared, self.batch_size, self.batch_tokens)
        slots: list[tuple[int, int]] = []
        values = []
        for idx in batches:
            values.append(self._score_batch([tails[i] for i in idx], shared, kv, slots))
        flat = torch.cat(values).cpu().tolist()  # the only device -> host transfer
        out = [[math.nan] * len(continuations) for _ in suffixes]
        for (si, ci), v in zip(slots, flat):
            out[si][ci] = v
        return out

    def _score_batch(self, batch, shared: int, kv, slots: list):
        """Summed target log-probs of one batch of (tail ids after the shared prefix, targets) rows
        (a device tensor), appending their (si, ci) to slots."""
        import torch

        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        tails = [tail for tail, _ in batch]
        width = max(len(t) for t in tails)
        n_keep = max(len(t) for _, targets in batch for t in targets.values())
        ids_rows, mask_rows, pos_rows = [], [], []
        b_idx, p_idx, t_idx, g_idx = [], [], [], []
        for b, (tail, (_, targets)) in enumerate(zip(tails, batch)):  # left padding
            pad = width - len(tail)
            ids_rows.append([pad_id] * pad + tail)
            mask_rows.append([1] * shared + [0] * pad + [1] * len(tail))
            pos_rows.append([shared] * pad + list(range(shared, shared + len(tail))))
            for key, target in targets.items():
                g = len(slots)
                slots.append(key)
                for j, tok in enumerate(target):
                    b_idx.append(b), p_idx.append(n_keep - len(target) + j), t_idx.append(tok), g_idx.append(g)
        dev = self.device
        as_tensor = lambda x: torch.tensor(x, dtype=torch.long).to(dev, non_blocking=True)  # noqa: E731
        kwargs = {"past_key_values": self._batch_cache(kv, len(batch))} if kv is not None else {}
        with torch.inference_mode():
            logits = self.model(input_ids=as_tensor(ids_rows), attention_mask=as_tensor(mask_rows),
                                position_ids=as_tensor(pos_rows), use_cache=kv is not None,
                                logits_to_keep=n_keep, **kwargs).logits
            logprobs = torch.log_softmax(logits[:, -n_keep:, :].float(), dim=-1)
            picked = logprobs[as_tensor(b_idx), as_tensor(p_idx), as_tensor(t_idx)]
            n_groups = len(slots) - g_idx[0]
            sums = torch.zeros(n_groups, dtype=picked.dtype, device=picked.device)
            sums.index_add_(0, as_tensor(g_idx) - g_idx[0], picked)
        self.stats["forwards"] += 1
        self.stats["batch_rows"] += len(batch)
        return sums


def naive_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Reference: one full forward over the request's whole token sequence (no cache, no batching,
    no padding), summing the log-softmax of the continuation tokens."""
    import torch

    inp, target = HFLetterScorer(model, tokenizer, batch_size=1, reuse_prefix=False).request_tokens(
        context, continuation)
    ids = torch.tensor([inp + target[-1:]], dtype=torch.long, device=_model_device(model))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float().cpu()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(inp) - len(target)   # position predicting target[0]
    return float(sum(logprobs[start + j, t] for j, t in enumerate(target)))
