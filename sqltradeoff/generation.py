"""Batched greedy generation for already-rendered prompts.

Prompts are tokenised with `add_special_tokens=False` (the chat template already wrote any BOS),
sorted by length (longest first: similar lengths share a batch, so little padding, and an
out-of-memory shows up on the first batch), left-padded, generated greedily, cut at the first
stop token (EOS or an end-of-turn token, see `modeling.stop_token_ids`), and returned in input
order. Greedy decoding is deterministic, so batching changes speed, not the text (up to
floating-point ties).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Sequence

from .errors import UserError


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

    def as_dict(self) -> dict:
        return asdict(self)


def greedy_generation_config(tokenizer, model, max_new_tokens: int):
    """A fully specified greedy GenerationConfig (the model's own may ask for sampling)."""
    from transformers import GenerationConfig

    from .modeling import stop_token_ids

    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens),
                            eos_token_id=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id,
                            temperature=None, top_p=None, top_k=None)


def generate(model, tokenizer, prompts: Sequence[str], batch_size: int = 8, max_new_tokens: int = 128,
             desc: str = "generate", progress: bool = True) -> tuple[list[str], GenerationStats]:
    """Greedy completions of `prompts` (in input order) and throughput statistics."""
    import torch
    from tqdm import tqdm

    from .modeling import stop_token_ids

    if batch_size < 1 or max_new_tokens < 1:
        raise UserError(f"predict.batch_size and predict.max_new_tokens must be positive "
                        f"(got {batch_size}, {max_new_tokens})")
    stops = set(stop_token_ids(tokenizer, model))
    gen_cfg = greedy_generation_config(tokenizer, model, max_new_tokens)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise UserError(f"prompt {empty[0] + 1} is empty")
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    outputs: list[str | None] = [None] * len(prompts)
    stats = GenerationStats(prompts=len(prompts), batch_size=batch_size, max_new_tokens=max_new_tokens,
                            prompt_tokens=sum(len(e) for e in encoded))
    device = next(model.parameters()).device
    t0 = time.time()
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, padding_side="left",
                                  return_tensors="pt")
            input_ids = batch["input_ids"].to(device)
            attention_mask = batch["attention_mask"].to(device)
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_cfg)
            new = out[:, input_ids.shape[1]:].tolist()
            for i, tokens in zip(idx, new):
                cut = next((k for k, t in enumerate(tokens) if t in stops), None)
                if cut is None:
                    stats.hit_max_new_tokens += 1
                    kept, n_gen = tokens, len(tokens)
                else:
                    kept, n_gen = tokens[:cut], cut + 1
                stats.generated_tokens += n_gen
                outputs[i] = tokenizer.decode(kept, skip_special_tokens=True)
            stats.batches += 1
            elapsed = time.time() - t0
            bar.update(len(idx))
            bar.set_postfix(tok_s=f"{stats.generated_tokens / max(elapsed, 1e-9):.1f}")
    bar.close()
    stats.wall_time_s = round(time.time() - t0, 3)
    stats.tokens_per_s = round(stats.generated_tokens / stats.wall_time_s, 2) if stats.wall_time_s > 0 else 0.0
    return [o if o is not None else "" for o in outputs], stats
