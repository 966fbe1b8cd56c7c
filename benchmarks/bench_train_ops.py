"""How many ATen operations one LoRA training step dispatches, by phase, for the study model's shape.

On a GPU a step of the 0.5B model at 4 examples is bound by the host (19% GPU busy on an H200,
BENCHMARKS.md): every operation costs host time to dispatch (views included) whether or not it
launches a kernel. This counts them on the CPU with a `TorchDispatchMode` around one optimizer step
(the third, after warm-up) of `training.train`, for a random-weight Qwen2.5-0.5B shape (hidden 896,
14 heads on 2 key/value heads, MLP 4864, vocabulary 151,936) built with --layers each, LoRA r 8 on
q/k/v/o, padding-free batches of 4 real Spider training examples (data/formatted/train.jsonl).
Two layer counts give the operations per decoder layer and the rest (embedding, LM head and loss,
Trainer); the count for the real 24 layers follows. Phases: `forward_backward` (on_step_begin to
on_pre_optimizer_step: forward, backward, gradient clipping) and `optimizer` (the optimizer step, the
scheduler, zero_grad: torch's AdamW here; the GPU's paged 8-bit AdamW issues other operations).

    .venv/bin/python benchmarks/bench_train_ops.py [--layers 2 4] [--tokenizer .cache/models/qwen2.5-...]
        [--out benchmarks/results/train_ops.json]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.record import write_result  # noqa: E402

QWEN05 = dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
              vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768, rope_theta=1e6)
RUN = dict(epochs=1, max_steps=3, max_length=1024, batch_size=4, grad_accum=1, learning_rate=2e-4,
           lr_scheduler="linear", warmup_ratio=0.0, lora_r=8, lora_alpha=16, lora_dropout=0.05,
           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], optim_cuda="paged_adamw_8bit",
           optim_cpu="adamw_torch", gradient_checkpointing=False, save_steps=1000, save_total_limit=1, seed=42,
           padding_free=True)


def count(layers: int, tokenizer: str, data: Path) -> dict:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, TrainerCallback

    from sqltradeoff.training import train

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.phase, self.ops, self.names = "forward_backward", collections.Counter(), collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[self.phase] += 1
            self.names[(self.phase, str(func.overloadpacket))] += 1
            return func(*args, **(kwargs or {}))

    mode, tokens = Count(), []

    class Phases(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 2:
                mode.__enter__()

        def on_pre_optimizer_step(self, args, state, control, **kw):
            if state.global_step == 2:
                mode.phase = "optimizer"

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                mode.__exit__(None, None, None)

    def record_tokens(trainer):
        collate = trainer.data_collator

        def recording(examples):
            batch = collate(examples)
            tokens.append(int(batch["input_ids"].shape[1]))
            return batch
        trainer.data_collator = recording

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=layers, **QWEN05))
    tok = AutoTokenizer.from_pretrained(tokenizer)
    with tempfile.TemporaryDirectory(prefix="bench_train_ops") as tmp:
        train(RUN, {"path": "random", "load_in_4bit": False}, data, Path(tmp) / "m", Path(tmp) / "x",
              callbacks=[Phases()], trainer_hook=record_tokens, model=model, tokenizer=tok, live=False)
    return {"layers": layers, "step_tokens": tokens[2], "ops": dict(mode.ops),
            "top": [{"phase": p, "op": n, "count": k} for (p, n), k in mode.names.most_common(20)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs=2, default=[2, 4])
    ap.add_argument("--tokenizer", default=None, help="a directory with the Qwen2.5 tokenizer (default: the "
                    "converted GGUF under .cache/models)")
    ap.add_argument("--data", default=str(REPO / "data/formatted/train.jsonl"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/train_ops.json"))
    a = ap.parse_args(argv)
    os.chdir(REPO)
    tokenizer = a.tokenizer or next(str(p) for p in sorted((REPO / ".cache/models").glob("qwen2.5-coder-0.5b*"))
                                    if p.is_dir())
    small, large = (count(n, tokenizer, Path(a.data)) for n in a.layers)
    dl = large["layers"] - small["layers"]
    per_layer = {k: (large["ops"].get(k, 0) - small["ops"].get(k, 0)) / dl for k in small["ops"]}
    rest = {k: small["ops"].get(k, 0) - per_layer[k] * small["layers"] for k in small["ops"]}
    at24 = {k: round(rest[k] + 24 * per_layer[k]) for k in small["ops"]}
    write_result(a.out, "benchmarks/bench_train_ops.py", argv, runs=[small, large], per_layer=per_layer,
                 outside_layers=rest, qwen05_24_layers=at24)
    print("| phase | per decoder layer | outside the layers | 24 layers (Qwen2.5-0.5B) |")
    print("| --- | ---: | ---: | ---: |")
    for k in small["ops"]:
        print(f"| {k} | {per_layer[k]:g} | {rest[k]:g} | {at24[k]:,} |")
    print(f"(step tokens: {small['step_tokens']} and {large['step_tokens']}; the same batch in both runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
