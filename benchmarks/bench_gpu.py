"""GPU benchmark of the reference configuration: Mistral-7B-Instruct-v0.2, 4-bit QLoRA, Spider, MMLU.

Times the project's own CUDA code paths (sqltradeoff.modeling / training / generation / mmlu) on
a Mistral-7B-Instruct-v0.2-shaped model with RANDOM weights (hidden 4096, 32 layers, 32 heads,
8 KV heads, MLP 14336, vocabulary 32000, rope theta 1e6, no sliding window; cost does not depend
on the weight values) and the real Mistral tokenizer, on our real formatted Spider/MMLU prompts.
Prints one markdown table per measurement (and writes them, results.json and a log to --out).

Two subcommands:

  prepare   (on a CPU machine, once) builds the benchmark inputs under benchmarks/out/gpu/:
            mistral-tokenizer/ (the Mistral 7B v0.x SentencePiece model, converted to a fast
            tokenizer with the v0.2 chat template) and bench_data.json.gz (all 7,000 Spider train
            prompt/completion pairs, the dev prompts zero-/few-shot, the 150 MMLU questions and
            their 5-shot dev examples, rendered exactly as stages/format.py does, plus their
            token lengths). Needs `sentencepiece` and `protobuf` for the one-off tokenizer
            conversion and the SentencePiece file, which the `mistral-common` wheel ships as
            mistral_common/data/tokenizer.model.v1:

              pip download --no-deps mistral-common==1.13.1 -d /tmp/mc
              unzip -o /tmp/mc/mistral_common-*.whl 'mistral_common/data/tokenizer.model.v1' -d /tmp/mc
              python benchmarks/bench_gpu.py prepare --spm /tmp/mc/mistral_common/data/tokenizer.model.v1

  run       (on the GPU machine) builds the random-weight model once (saved under --model-dir,
            /dev/shm by default), loads it through `modeling.load_model` (4-bit NF4), and runs the
            phases: peak (bf16 matmul peak, copy bandwidth), train (reference recipe vs tuned
            settings through `training.train`), generate (batched vs one at a time through
            `generation`), mmlu (few-shot prefix KV cache reused vs recomputed through `mmlu`).

              python benchmarks/bench_gpu.py run --out $OUT

FLOP accounting (model FLOPs, recomputation by gradient checkpointing not counted):
  N_mm = parameters that take part in matrix products = all parameters minus the input embedding
       = 7,110,660,096 for Mistral-7B (lm_head included).
  LoRA training, frozen base: forward 2*N_mm per token, backward 2*N_mm per token (input
  gradients only: the frozen weights get no weight gradient), so 4*N_mm per token, plus the
  LoRA adapters 6*N_lora per token and causal attention 6*L*d*s^2 per sequence of length s
  (forward QK^T and PV: 2*L*d*s^2 with the causal half, backward twice that).
  The usual "6*N*tokens" rule counts weight gradients the frozen base does not compute; it
  would report 1.5x the MFU given here.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_PREP = REPO / "benchmarks" / "out" / "gpu"

# Mistral-7B-Instruct-v0.2 config.json (the fields that shape the computation).
MISTRAL_7B_V02 = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, vocab_size=32000, max_position_embeddings=32768,
    rope_theta=1e6, sliding_window=None, rms_norm_eps=1e-5, hidden_act="silu",
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.02,
)
# Mistral-7B-Instruct-v0.2's chat template (no system role).
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
       "DEEPEVAL_DISABLE_DOTENV": "1", "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false"}
for _k, _v in ENV.items():
    os.environ.setdefault(_k, _v)


# ============================================================================ small helpers

class Log:
    def __init__(self, path: Path | None):
        self.fh = open(path, "a") if path else None

    def __call__(self, *parts):
        msg = " ".join(str(p) for p in parts)
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self.fh:
            self.fh.write(line + "\n")
            self.fh.flush()


def stats(xs):
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]  # noqa: E731
    return {"n": len(xs), "min": xs[0], "mean": round(sum(xs) / len(xs), 1), "p50": q(0.5), "p95": q(0.95),
            "max": xs[-1]}


def fmt_time(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ============================================================================ prepare (CPU)

def build_tokenizer(spm: Path, dest: Path):
    """Convert the Mistral SentencePiece model to a fast tokenizer directory with the chat template."""
    from transformers import AutoTokenizer

    from sqltradeoff.io import sha256_file

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm, Path(tmp) / "tokenizer.model")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "add_bos_token": True, "add_eos_token": False, "legacy": False}))
        tok = AutoTokenizer.from_pretrained(tmp)
    if len(tok) != 32000:
        raise SystemExit(f"{spm}: {len(tok)} tokens, expected the 32,000 of Mistral 7B v0.x (tokenizer.model.v1)")
    tok.chat_template = MISTRAL_CHAT_TEMPLATE
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dest)
    (dest / "tokenizer.model").unlink(missing_ok=True)   # the fast tokenizer.json is all that is needed
    sha = sha256_file(spm)
    (dest / "SOURCE.json").write_text(json.dumps({"spm": str(spm), "sha256": sha}, indent=2))
    return AutoTokenizer.from_pretrained(dest)


def cmd_prepare(a):
    import csv

    import yaml

    from sqltradeoff import prompts
    from sqltradeoff.sampling import pick_few_shot, sample_per_group
    from sqltradeoff.schema import db_path
    from sqltradeoff.training import tokenize_examples

    out = Path(a.out)
    tok_dir = out / "mistral-tokenizer"
    if a.spm:
        tok = build_tokenizer(Path(a.spm), tok_dir)
    else:
        from transformers import AutoTokenizer
        if not (tok_dir / "tokenizer.json").is_file():
            raise SystemExit(f"no tokenizer in {tok_dir}: pass --spm PATH/tokenizer.model.v1 (see --help)")
        tok = AutoTokenizer.from_pretrained(tok_dir)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    pcfg = prompts.check_prompt_cfg(params.get("prompt") or {})
    seed = int(params["sample"]["seed"])
    data = Path(a.data)
    spider, dbdir = data / "spider", data / "spider" / "database"

    raw_train = json.loads((data / "spider_derived" / "train_spider.question_query_db_id.json").read_text())
    train_rows = [{"id": f"train-{i:05d}", **r} for i, r in enumerate(raw_train)]
    missing = sorted({r["db_id"] for r in train_rows if not db_path(dbdir, r["db_id"]).is_file()})
    kept = [r for r in train_rows if r["db_id"] not in missing]
    print(f"train: {len(train_rows)} pairs, {len(kept)} with a database here (missing: {missing})")
    train = []
    for r in kept:
        user = prompts.user_text(r["question"], prompts.schema_for(dbdir, r["db_id"], pcfg))
        p, c = prompts.render(tok, user, r["query"])
        train.append({"prompt": p, "completion": c})
    examples, tstats = tokenize_examples(train, tok, int(params["train"]["max_length"]))
    lengths = [len(x["input_ids"]) for x in tokenize_examples(train, tok, 10 ** 9)[0]]
    plen = [len(tok(t["prompt"], add_special_tokens=False)["input_ids"]) for t in train]
    clen = [len(tok(t["completion"], add_special_tokens=False)["input_ids"]) for t in train]

    dev_raw = json.loads((spider / "dev.json").read_text())
    shots = pick_few_shot(kept, pcfg["few_shot"], seed)
    dev, dev_few = [], []
    for i, r in enumerate(dev_raw):
        if not db_path(dbdir, r["db_id"]).is_file():
            continue
        schema = prompts.schema_for(dbdir, r["db_id"], pcfg)
        dev.append({"id": f"dev-{i:04d}", "prompt": prompts.render(tok, prompts.user_text(r["question"], schema))[0]})
        dev_few.append({"id": f"dev-{i:04d}",
                        "prompt": prompts.render(tok, prompts.user_text(r["question"], schema, shots))[0]})
    dlen = [len(tok(d["prompt"], add_special_tokens=False)["input_ids"]) for d in dev]
    flen = [len(tok(d["prompt"], add_special_tokens=False)["input_ids"]) for d in dev_few]
    print(f"dev: {len(dev_raw)} questions, {len(dev)} with a database here")

    subjects = params["sample"].get("mmlu_subjects") or params["data"]["mmlu"].get("subjects")
    per_subject = int(params["sample"]["mmlu_per_subject"])
    mroot = data / "mmlu" / "data"

    def read_csv(path, subject, split):
        with open(path, newline="", encoding="utf-8") as fh:
            return [{"id": f"{subject}-{split}-{j:04d}", "subject": subject, "question": row[0],
                     "choices": row[1:5], "answer": row[5].strip()} for j, row in enumerate(csv.reader(fh))]

    m_test, m_dev = [], []
    for s in subjects:
        m_test += read_csv(mroot / "test" / f"{s}_test.csv", s, "test")
        m_dev += read_csv(mroot / "dev" / f"{s}_dev.csv", s, "dev")
    groups = sample_per_group(m_test, "subject", per_subject, seed, "mmlu")
    mmlu_test = [it for s in subjects for it in groups[s]]

    bench = {
        "source": {"data": str(data), "params_prompt": pcfg, "seed": seed, "tokenizer": str(tok_dir)},
        "train": train, "train_tokenize_stats": tstats, "train_lengths": lengths,
        "max_length_params": int(params["train"]["max_length"]),
        "train_total_in_release": len(train_rows), "dev_total_in_release": len(dev_raw),
        "dev": dev, "dev_fewshot": dev_few, "mmlu_test": mmlu_test, "mmlu_dev": m_dev,
        "lengths": {"train_prompt": stats(plen), "train_completion": stats(clen),
                    "train_total": stats([x + y for x, y in zip(plen, clen)]),
                    "dev_prompt": stats(dlen), "dev_fewshot_prompt": stats(flen)},
    }
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "bench_data.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(bench, fh)
    print(json.dumps({"lengths": bench["lengths"], "train_tokenize_stats": tstats}, indent=1))
    print(f"wrote {out / 'bench_data.json.gz'} ({(out / 'bench_data.json.gz').stat().st_size / 1e6:.1f} MB) "
          f"and {tok_dir}")


# ============================================================================ run (GPU)

def n_params(cfg) -> dict:
    h, i, L, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    attn = h * nh * hd + 2 * h * nkv * hd + nh * hd * h
    mlp = 3 * h * i
    per_layer = attn + mlp + 2 * h
    total = L * per_layer + h + 2 * v * h
    return {"total": total, "embedding": v * h, "matmul": total - v * h, "layers": L, "d_attn": nh * hd,
            "linear_per_layer": attn + mlp}


def lora_params(cfg, r: int, targets) -> int:
    h, hd, nh, nkv = cfg["hidden_size"], cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    i = cfg["intermediate_size"]
    shapes = {"q_proj": (h, nh * hd), "k_proj": (h, nkv * hd), "v_proj": (h, nkv * hd), "o_proj": (nh * hd, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return cfg["num_hidden_layers"] * sum(r * (a + b) for t, (a, b) in shapes.items() if t in targets)


def train_flops(P: dict, n_lora: int, seq_lens) -> float:
    """Model FLOPs of LoRA training on sequences of the given lengths (see the module docstring)."""
    s1 = sum(seq_lens)
    s2 = sum(s * s for s in seq_lens)
    return 4 * P["matmul"] * s1 + 6 * n_lora * s1 + 6 * P["layers"] * P["d_attn"] * s2


def measure_peak(torch, log) -> dict:
    """bf16 matmul rate (8192^3, random inputs, 3 rotating input sets, median of CUDA-event timings)
    and device-to-device copy bandwidth (read + write bytes)."""
    res = {}
    for (m, k, n) in [(8192, 8192, 8192), (2048, 4096, 14336)]:
        sets = [(torch.randn(m, k, device="cuda", dtype=torch.bfloat16),
                 torch.randn(k, n, device="cuda", dtype=torch.bfloat16)) for _ in range(3)]
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        for j in range(10):
            torch.matmul(*sets[j % 3], out=out)
        times = []
        for j in range(60):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a_, b_ = sets[j % 3]
            s.record()
            torch.matmul(a_, b_, out=out)
            e.record()
            times.append((s, e))
        torch.cuda.synchronize()
        ms = statistics.median(s.elapsed_time(e) for s, e in times)
        # correctness of what we time: compare a slice with an fp32 product
        a_, b_ = sets[0]
        torch.matmul(a_, b_, out=out)
        ref = a_[:64].float() @ b_.float()
        rel = float((out[:64].float() - ref).norm() / ref.norm())
        key = f"bf16_matmul_{m}x{k}x{n}_tflops"
        res[key] = round(2 * m * k * n / (ms / 1e3) / 1e12, 1)
        res[key.replace("tflops", "rel_err")] = rel
        log(f"peak: {m}x{k}x{n} bf16 matmul {ms:.3f} ms -> {res[key]} TFLOP/s (rel err vs fp32 {rel:.1e})")
        del sets, out
    x = torch.randn(1 << 28, device="cuda", dtype=torch.float32)   # 1 GiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    times = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        times.append((s, e))
    torch.cuda.synchronize()
    ms = statistics.median(s.elapsed_time(e) for s, e in times)
    assert torch.equal(x[:1000], y[:1000])
    res["copy_tb_s"] = round(2 * x.numel() * 4 / (ms / 1e3) / 1e12, 2)
    log(f"peak: device copy 1 GiB {ms:.3f} ms -> {res['copy_tb_s']} TB/s (read+write)")
    del x, y
    torch.cuda.empty_cache()
    return res


TINY = dict(MISTRAL_7B_V02, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64)


def build_random_model(model_dir: Path, tok_dir: Path, log, arch: dict = MISTRAL_7B_V02) -> float:
    """Random-weight Mistral-7B-v0.2-shaped model saved as a Hugging Face directory (bf16)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, MistralConfig

    marker = model_dir / "BENCH_RANDOM_MISTRAL.json"
    if marker.is_file() and json.loads(marker.read_text()).get("config") == arch:
        log(f"model: reusing {model_dir}")
        return 0.0
    t0 = time.time()
    shutil.rmtree(model_dir, ignore_errors=True)
    cfg = MistralConfig(**arch)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if dev == "cuda" else torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(model_dir, max_shard_size="4GB")
    for f in tok_dir.iterdir():
        if f.is_file() and f.name != "SOURCE.json":
            shutil.copy(f, model_dir / f.name)
    del model
    torch.cuda.empty_cache()
    marker.write_text(json.dumps({"params": n, "config": arch}))
    dt = time.time() - t0
    log(f"model: built random Mistral-7B ({n:,} parameters) into {model_dir} in {dt:.0f} s")
    return dt


def ensure_dvclive_stub(log):
    """training.py logs to DVCLive; the GPU machine has no dvc/dvclive: use a no-op stand-in."""
    try:
        import dvclive  # noqa: F401
        return False
    except ImportError:
        pass

    class Live:
        def __init__(self, *a, **k):
            self.step = 0

        def __getattr__(self, name):
            return lambda *a, **k: None

    import importlib.machinery

    mod = types.ModuleType("dvclive")
    mod.__spec__ = importlib.machinery.ModuleSpec("dvclive", None)   # find_spec() callers need one
    mod.Live = Live
    sys.modules["dvclive"] = mod
    log("dvclive not installed here: training.py's DVCLive logging replaced by a no-op stand-in")
    return True


# The tuned settings are train params of the project (training.py, attention.py); this script only
# chooses them per variant.
from sqltradeoff.attention import TORCH_VARLEN as VARLEN  # noqa: E402


class ModelCache:
    """Serve training.train()'s `load_model` from a 4-bit load made just before the variant (so the
    load is outside the variant's timings and memory peak); each variant gets a fresh model."""

    def __init__(self, modeling):
        self.modeling = modeling
        self.real = modeling.load_model
        self.pair = None
        self.load_seconds = None

    def load_model(self, model_cfg, adapter=None, for_training=False):
        assert for_training and adapter is None, "the cache serves training loads only"
        if self.pair is None:
            t0 = time.time()
            self.pair = self.real(model_cfg, for_training=True)
            self.load_seconds = time.time() - t0
        pair, self.pair = self.pair, None      # handed out once
        return pair


def make_step_timer(torch):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time between consecutive optimizer-step ends (data loading, logging included) and the
        real (non-padding) tokens and sequence lengths the model saw in between."""

        def __init__(self):
            self.ends, self.tokens, self.padded, self.seqs = [], [], [], []
            self._tok = self._pad = 0
            self._seqs = []
            self.model = None
            self.handle = None

        def _hook(self, module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            am, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
            if ids is None:
                return
            self._pad += ids.numel()
            if am is not None and am.dim() == 2:
                lens = am.sum(dim=1).tolist()
            elif pos is not None:
                p = pos[0]
                starts = (p == 0).nonzero().flatten().tolist() + [p.numel()]
                lens = [b - a for a, b in zip(starts[:-1], starts[1:])]
            else:
                lens = [ids.shape[1]] * ids.shape[0]
            self._tok += int(sum(lens))
            self._seqs += [int(x) for x in lens]

        def on_train_begin(self, args, state, control, model=None, **kw):
            self.model = model
            self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.tokens.append(0), self.padded.append(0), self.seqs.append([])

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.tokens.append(self._tok), self.padded.append(self._pad), self.seqs.append(self._seqs)
            self._tok = self._pad = 0
            self._seqs = []

        def on_train_end(self, args, state, control, **kw):
            if self.handle is not None:
                self.handle.remove()

    return StepTimer()


# train params of each variant beyond micro-batch/accumulation/checkpointing
PF = {"padding_free": True}                                  # TRL padding-free batches
FA = {"padding_free": True, "attention": VARLEN}             # + PyTorch varlen FlashAttention
FA_BF16 = {"padding_free": True, "attention": VARLEN, "fp32_upcast": False}   # + no fp32 up-cast
TRAIN_VARIANTS = [
    # name, train params (batching), train params (throughput settings), timed optimizer steps, description
    ("ref", {"batch_size": 1, "grad_accum": 4, "gradient_checkpointing": False}, {}, 10,
     "reference recipe: micro-batch 1 x accumulation 4, padded batches, SDPA, no checkpointing (params.yaml)"),
    ("ref_gc", {"batch_size": 1, "grad_accum": 4, "gradient_checkpointing": True}, {}, 10,
     "reference recipe with gradient checkpointing (TRL's SFTConfig default)"),
    ("pf4", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": False}, PF, 10,
     "padding-free micro-batch 4 x accumulation 1 (the same 4 examples per optimizer step), SDPA"),
    ("pf4_gc", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True}, PF, 10,
     "pf4 + gradient checkpointing"),
    ("pf4_gc_fa", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True}, FA, 10,
     "pf4_gc with varlen FlashAttention per packed sequence instead of SDPA + block-diagonal mask"),
    ("pf4_gc_fa_bf16", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True}, FA_BF16, 10,
     "pf4_gc_fa without peft's fp32 up-cast of embeddings/norms/lm_head (bf16 residual stream)"),
    ("pf4_fa_bf16", {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": False}, FA_BF16, 10,
     "pf4_gc_fa_bf16 without gradient checkpointing"),
    ("pf16_gc", {"batch_size": 16, "grad_accum": 1, "gradient_checkpointing": True}, PF, 4,
     "padding-free micro-batch 16 x 1 + checkpointing, SDPA (16 examples per step: a different recipe)"),
    ("pf8_gc_fa_bf16", {"batch_size": 8, "grad_accum": 1, "gradient_checkpointing": True}, FA_BF16, 6,
     "pf4_gc_fa_bf16 with micro-batch 8 (8 examples per step: a different recipe)"),
    ("pf16_gc_fa_bf16", {"batch_size": 16, "grad_accum": 1, "gradient_checkpointing": True}, FA_BF16, 4,
     "pf4_gc_fa_bf16 with micro-batch 16 (16 examples per step: a different recipe)"),
]


def phase_train(a, bench, model_cfg, P, peak_tflops, log, results, variants):
    import gc

    import torch
    import yaml

    from sqltradeoff import modeling, training

    ensure_dvclive_stub(log)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    base_cfg = dict(params["train"])
    a.max_length = a.max_length or int(base_cfg["max_length"])
    base_cfg.update({"save_steps": 10 ** 6, "save_total_limit": 1, "warmup_ratio": 0.0,
                     "max_length": a.max_length})
    n_lora = lora_params(TINY if a.tiny else MISTRAL_7B_V02, base_cfg["lora_r"], base_cfg["target_modules"])
    lengths = bench["train_lengths"]
    kept = [i for i, n in enumerate(lengths) if n <= a.max_length]
    rng = random.Random(0)
    pool_idx = rng.sample(kept, min(len(kept), a.train_pool))
    work = Path(a.work) / "train"
    work.mkdir(parents=True, exist_ok=True)
    pool_path = work / "train_pool.jsonl"
    pool_path.write_text("".join(json.dumps(bench["train"][i]) + "\n" for i in pool_idx))
    longest = sorted(kept, key=lambda i: -lengths[i])
    # 7,000 in the release; here two training databases are missing: scale to the release's count
    scale = bench["train_total_in_release"] / len(lengths)
    epoch_tokens_full = sum(lengths[i] for i in kept) * scale
    all_tokens_full = sum(lengths) * scale
    results["train_epoch"] = {
        "max_length": a.max_length, "examples_here": len(lengths), "examples_kept": len(kept),
        "examples_full": round(len(kept) * scale), "tokens_full": round(epoch_tokens_full),
        "tokens_all_7000": round(all_tokens_full), "longest": max(lengths),
        "pool_mean_len": sum(lengths[i] for i in pool_idx) / len(pool_idx),
        "epoch_mean_len": sum(lengths[i] for i in kept) / len(kept),
        "dropped_here": len(lengths) - len(kept)}
    log("train: epoch", json.dumps(results["train_epoch"]))
    cache = ModelCache(modeling)
    modeling.load_model = cache.load_model
    out_rows = results.setdefault("train", {})

    from sqltradeoff.attention import varlen_available

    have_varlen = varlen_available()[0]

    def run_one(name, cfg, data_path, timer):
        gc.collect()
        torch.cuda.empty_cache()
        t0 = time.time()
        cache.pair = cache.real(model_cfg, for_training=True)   # fresh model, outside the peak
        cache.load_seconds = time.time() - t0
        if "model_load_4bit_s" not in results:
            results["model_load_4bit_s"] = round(cache.load_seconds, 1)
            results["model_weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
            log(f"model: 4-bit load through modeling.load_model {cache.load_seconds:.1f} s; "
                f"allocated {results['model_weights_gib']} GiB")
            if not a.skip_check:
                check_padding_free(cache.pair[0], log, results, have_varlen)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        err = info = None
        try:    # the project's training path; the variant's settings are ordinary train params
            info = training.train(cfg, model_cfg, data_path, work / name, work / name / "metrics", callbacks=[timer])
        except Exception as exc:  # keep going: report the failure in the table
            import traceback
            err = f"{type(exc).__name__}: {str(exc)[:300]}"
            log(f"train[{name}] FAILED: {err}\n{traceback.format_exc()}")
        peak = (torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30)
        cache.pair = None
        timer.model = None
        gc.collect()
        torch.cuda.empty_cache()
        return info, err, peak

    try:
        for name, tover, sover, steps, desc in variants:
            if a.quick:
                steps = max(2, steps // 3)
            warm = 2
            cfg = dict(base_cfg, **tover, **sover, max_steps=warm + steps)
            log(f"train[{name}]: {desc}; {warm} warm-up + {steps} timed optimizer steps")
            timer = make_step_timer(torch)
            info, err, (peak_alloc, peak_res) = run_one(name, cfg, pool_path, timer)
            if err is not None:
                out_rows[name] = {"desc": desc, "error": err}
                save_results(a, results)
                continue
            # worst case for memory: one optimizer step on the longest examples of the epoch
            ex_per_step = cfg["batch_size"] * cfg["grad_accum"]
            worst_path = work / f"worst_{ex_per_step}.jsonl"
            worst_path.write_text("".join(json.dumps(bench["train"][i]) + "\n" for i in longest[:ex_per_step]))
            leak = torch.cuda.memory_allocated() / 2**30
            wtimer = make_step_timer(torch)
            _, werr, (w_alloc, w_res) = run_one(name + "_worst", dict(cfg, max_steps=1), worst_path, wtimer)
            ends = timer.ends
            dts = [ends[i] - ends[i - 1] for i in range(warm + 1, len(ends))]
            toks = timer.tokens[warm + 1:]
            pads = timer.padded[warm + 1:]
            seqs = [s for ss in timer.seqs[warm + 1:] for s in ss]
            t = sum(dts)
            tok_s = sum(toks) / t
            flops = train_flops(P, n_lora, seqs)
            row = {
                "desc": desc, "micro_batch": cfg["batch_size"], "grad_accum": cfg["grad_accum"],
                "padding_free": cfg.get("padding_free", False), "grad_ckpt": cfg["gradient_checkpointing"],
                "attention": cfg.get("attention", "sdpa"), "fp32_upcast": cfg.get("fp32_upcast", True),
                "timed_steps": len(dts), "seconds_per_step": t / len(dts),
                "median_seconds_per_step": statistics.median(dts),
                "step_s_all": [round(x, 4) for x in dts], "tokens_timed": sum(toks),
                "tokens_per_s": tok_s, "examples_per_s": len(seqs) / t,
                "padding_fraction": 1 - sum(toks) / sum(pads), "mean_seq_len": sum(seqs) / len(seqs),
                "peak_alloc_gib": peak_alloc, "peak_reserved_gib": peak_res,
                "worst_peak_alloc_gib": w_alloc, "worst_peak_reserved_gib": w_res,
                "worst_tokens": sum(lengths[i] for i in longest[:ex_per_step]), "worst_error": werr,
                "allocated_before_worst_gib": leak,
                "tflops": flops / t / 1e12, "mfu": flops / t / 1e12 / peak_tflops,
                "mfu_6N_convention": 6 * P["total"] * sum(toks) / t / 1e12 / peak_tflops,
                "epoch_s": epoch_tokens_full / tok_s, "epoch_all_7000_s": all_tokens_full / tok_s,
                "examples_per_step": ex_per_step,
                "final_loss": info.get("final_loss"), "steps": info.get("steps"),
                "train_info_tokens_per_s": info.get("tokens_per_s"),
            }
            out_rows[name] = row
            log(f"train[{name}]: {tok_s:,.0f} tok/s, {row['seconds_per_step']:.3f} s/step, "
                f"peak {peak_alloc:.2f}/{peak_res:.2f} GiB (worst batch of {row['worst_tokens']} tokens: "
                f"{w_alloc:.2f}/{w_res:.2f}), MFU {row['mfu']:.1%}, epoch {fmt_time(row['epoch_s'])}, "
                f"loss {row['final_loss']}")
            save_results(a, results)
    finally:
        modeling.load_model = cache.real
        last = [v[0] for v in variants if "error" not in out_rows.get(v[0], {"error": 1})]
        if last and (work / last[-1] / "adapter" / "adapter_config.json").is_file():
            results["train_adapter_dir"] = str(work / last[-1] / "adapter")
        cache.pair = None
        gc.collect()
        torch.cuda.empty_cache()


def check_padding_free(model, log, results, have_varlen):
    """Packed (padding-free) forward == separate forwards: SDPA with position_ids (block-diagonal
    mask) and the varlen FlashAttention path with cu_seq_lens; and what ignoring boundaries gives."""
    import torch

    from sqltradeoff.attention import set_attention

    dev = next(model.parameters()).device
    lens = (37, 61, 20)
    ids = [torch.randint(3, 32000, (n,), generator=torch.Generator().manual_seed(n)) for n in lens]
    pos = torch.cat([torch.arange(len(x)) for x in ids])[None].to(dev)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    flat = torch.cat(ids)[None].to(dev)
    res = {}
    with torch.inference_mode():
        # use_cache=False as in training (TRL sets it): transformers derives the block-diagonal mask from
        # position_ids only when there is no attention mask and no KV cache
        set_attention(model, "sdpa")
        ref = torch.cat([model(input_ids=x[None].to(dev), use_cache=False).logits[0].float() for x in ids])
        rel = lambda out: float((out - ref).norm() / ref.norm())  # noqa: E731
        res["sdpa_packed"] = rel(model(input_ids=flat, position_ids=pos, use_cache=False).logits[0].float())
        res["boundaries_ignored"] = rel(model(input_ids=flat, use_cache=False).logits[0].float())
        if have_varlen:
            set_attention(model, VARLEN)
            try:
                res["varlen_packed"] = rel(model(input_ids=flat, position_ids=pos, use_cache=False,
                                                 cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lens),
                                                 max_length_k=max(lens)).logits[0].float())
            except Exception as exc:  # noqa: BLE001
                res["varlen_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            set_attention(model, "sdpa")
    results["padding_free_check"] = res
    log("check: packed vs separate logits, relative error:", json.dumps(res))


def train_in_subprocesses(a, model_dir, peak, log, results, variants):
    """One fresh Python process per training variant: no memory or state carried from one variant to
    the next (one process running them all leaked about 0.4 GiB of CUDA memory per training run)."""
    for i, v in enumerate(variants):
        name = v[0]
        sub_out = Path(a.work) / "variants" / name
        shutil.rmtree(sub_out, ignore_errors=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "run", "--phases", "train", "--variants", name,
               "--out", str(sub_out), "--prep", a.prep, "--model-dir", str(model_dir), "--work", a.work,
               "--peak-tflops", str(peak), "--train-pool", str(a.train_pool)]
        cmd += ["--quick"] if a.quick else []
        cmd += ["--tiny"] if a.tiny else []
        cmd += ["--max-length", str(a.max_length)] if a.max_length else []
        cmd += ["--skip-check"] if i > 0 else []
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, timeout=a.variant_timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            rc, out = "timeout", (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        (Path(a.out) / f"variant_{name}.log").write_text(out)
        try:
            sub = json.loads((sub_out / "results.json").read_text())
        except (OSError, ValueError):
            sub = {}
        row = sub.get("train", {}).get(name)
        if row is None:
            tail = "\n".join(out.strip().splitlines()[-5:])
            row = {"desc": v[4], "error": f"subprocess rc={rc}: {tail[-300:]}"}
        results.setdefault("train", {})[name] = row
        for key in ("train_epoch", "padding_free_check", "model_load_4bit_s", "model_weights_gib"):
            if key in sub and key not in results:
                results[key] = sub[key]
        if sub.get("train_adapter_dir"):
            results["train_adapter_dir"] = sub["train_adapter_dir"]
        log(f"train[{name}] (own process, {time.time() - t0:.0f} s): "
            + (f"{row['tokens_per_s']:,.0f} tok/s, peak {row['peak_alloc_gib']:.2f} GiB, worst "
               f"{row['worst_peak_alloc_gib']:.2f} GiB" if "error" not in row else row["error"]))
        save_results(a, results)


def save_results(a, results):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


def _cpu_shims(torch):
    """--tiny on a CPU machine: make the CUDA timing/memory calls no-ops (script check only)."""
    class _Ev:
        def __init__(self, **k):
            self.t = 0.0

        def record(self):
            self.t = time.perf_counter()

        def elapsed_time(self, other):
            return (other.t - self.t) * 1e3

    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        setattr(torch.cuda, name, lambda *a, **k: None)
    for name in ("max_memory_allocated", "max_memory_reserved", "memory_allocated"):
        setattr(torch.cuda, name, lambda *a, **k: 0)
    torch.cuda.Event = _Ev
    torch.cuda.get_device_name = lambda *a: "cpu"

    class _Props:
        multi_processor_count = 0
        total_memory = 0

    torch.cuda.get_device_properties = lambda *a: _Props()


def env_info(log) -> dict:
    import torch

    info = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0), "sm_count": torch.cuda.get_device_properties(0).multi_processor_count,
            "gpu_mem_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    for mod in ("transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            info[mod] = f"missing ({type(exc).__name__}: {exc})"
    with contextlib.suppress(Exception):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    log("env:", json.dumps(info))
    return info


def load_bench(a):
    path = Path(a.prep) / "bench_data.json.gz"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run `python benchmarks/bench_gpu.py prepare` first (see --help)")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def cmd_run(a):
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "bench_log.txt")
    if not torch.cuda.is_available():
        if not a.tiny:
            raise SystemExit("no CUDA GPU: `run` is for the GPU machine (prepare runs on CPU; "
                             "--tiny runs a 2-layer model on CPU to check the script)")
        _cpu_shims(torch)
    results = {"env": env_info(log), "args": vars(a)}
    bench = load_bench(a)
    results["lengths"] = bench["lengths"]
    phases = a.phases.split(",")
    arch = TINY if a.tiny else MISTRAL_7B_V02
    P = n_params(arch)
    results["params"] = P
    peak = None
    if "peak" in phases:
        results["peak"] = measure_peak(torch, log)
        peak = max(v for k, v in results["peak"].items() if k.endswith("_tflops"))   # the higher rate measured
    peak = peak or a.peak_tflops
    results["peak_tflops_used"] = peak
    save_results(a, results)
    model_dir = Path(a.model_dir)
    with contextlib.suppress(OSError):
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (model_dir / "BENCH_RANDOM_MISTRAL.json").is_file() and shutil.disk_usage(model_dir.parent).free < 20e9:
            log(f"model: {model_dir.parent} has under 20 GB free; using {a.work}/model instead")
            model_dir = Path(a.work) / "model"
    results["model_build_s"] = round(build_random_model(model_dir, Path(a.prep) / "mistral-tokenizer", log, arch), 1)
    model_cfg = {"path": str(model_dir), "revision": "main", "load_in_4bit": torch.cuda.is_available(),
                 "cache_dir": str(Path(a.work) / "models")}
    if "train" in phases:
        names = a.variants.split(",") if a.variants else [v[0] for v in TRAIN_VARIANTS]
        variants = [v for v in TRAIN_VARIANTS if v[0] in names]
        if a.in_process or len(variants) == 1:
            phase_train(a, bench, model_cfg, P, peak, log, results, variants)
        else:
            train_in_subprocesses(a, model_dir, peak, log, results, variants)
    save_results(a, results)
    if "generate" in phases or "mmlu" in phases or "generate_bf16" in phases:
        phase_infer(a, bench, model_cfg, P, log, results, phases)
    save_results(a, results)
    report = render_report(results)
    (out / "tables.md").write_text(report)
    print("\n" + report)


# ---------------------------------------------------------------------------- inference phases

def _adapter_for_inference(a, results, model_cfg, log):
    """The LoRA adapter the predict/MMLU stages would load: the one trained above, or (generate-only
    runs) a fresh r=8 q/k/v/o adapter saved once (same shapes, so the same cost)."""
    import yaml

    adapter = results.get("train_adapter_dir")
    if adapter and (Path(adapter) / "adapter_config.json").is_file():
        return adapter
    from peft import LoraConfig, get_peft_model

    from sqltradeoff.modeling import load_model

    dest = Path(a.work) / "fresh_adapter"
    if not (dest / "adapter_config.json").is_file():
        t = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
        model, _ = load_model(model_cfg, for_training=True)
        peft_model = get_peft_model(model, LoraConfig(r=t["lora_r"], lora_alpha=t["lora_alpha"],
                                                      target_modules=t["target_modules"], task_type="CAUSAL_LM"))
        peft_model.save_pretrained(dest)
        del model, peft_model
        log(f"model: no trained adapter in this run; saved a fresh LoRA adapter to {dest}")
    return str(dest)


def phase_infer(a, bench, model_cfg, P, log, results, phases):
    import gc

    import torch

    from sqltradeoff import modeling

    adapter = _adapter_for_inference(a, results, model_cfg, log)
    gc.collect()
    torch.cuda.empty_cache()
    setups = [("nf4+LoRA", model_cfg, a.gen_batch_sizes)]
    if "generate_bf16" in phases:
        # the project's unquantised path: bf16 weights with the adapter merged (load_model merges it)
        setups.append(("bf16 merged", dict(model_cfg, load_in_4bit=False), a.gen_batch_sizes_bf16))
    for label, cfg, sizes in setups:
        t0 = time.time()
        model, tok = modeling.load_model(cfg, adapter=adapter)
        results.setdefault("model_load_infer_s", {})[label] = round(time.time() - t0, 1)
        log(f"model: inference load ({label}) {results['model_load_infer_s'][label]} s, "
            f"{torch.cuda.memory_allocated() / 2**30:.2f} GiB")
        try:
            if "generate" in phases:
                try:
                    phase_generate(a, bench, model, tok, log, results, label, sizes)
                except Exception as exc:  # noqa: BLE001
                    import traceback
                    log(f"generate ({label}) FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                    results[f"generate_error {label}"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                save_results(a, results)
            if "mmlu" in phases and label == "nf4+LoRA":
                try:
                    phase_mmlu(a, bench, model, tok, log, results)
                except Exception as exc:  # noqa: BLE001
                    import traceback
                    log(f"mmlu FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                    results["mmlu_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            del model
            gc.collect()
            torch.cuda.empty_cache()


@contextlib.contextmanager
def fixed_length_generation(generation):
    """EOS disabled for timing: every output is exactly max_new_tokens long (min_new_tokens masks the
    stop tokens until then), whatever the random weights would emit."""
    real = generation.greedy_generation_config

    def patched(tokenizer, model, max_new_tokens):
        cfg = real(tokenizer, model, max_new_tokens)
        cfg.min_new_tokens = int(max_new_tokens)
        return cfg

    generation.greedy_generation_config = patched
    try:
        yield
    finally:
        generation.greedy_generation_config = real


def phase_generate(a, bench, model, tok, log, results, label, sizes):
    import torch

    from sqltradeoff import generation

    n_dev = bench["dev_total_in_release"]
    rng = random.Random(1)
    prompts = [d["prompt"] for d in rng.sample(bench["dev"], min(a.gen_subset, len(bench["dev"])))]
    res = results.setdefault("generate", {"max_new_tokens": a.max_new_tokens, "subset": len(prompts),
                                          "dev_questions": n_dev})
    with fixed_length_generation(generation):
        generation.generate(model, tok, prompts[:2], batch_size=2, max_new_tokens=8, progress=False)  # warm-up
        for bs in [int(x) for x in sizes.split(",")]:
            sub = prompts if bs > 1 else prompts[:a.gen_single]
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            outs, st = generation.generate(model, tok, sub, batch_size=bs, max_new_tokens=a.max_new_tokens,
                                           progress=False)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            per_q = dt / len(sub)
            res[f"{label} bs{bs}"] = {"questions": len(sub), "seconds": dt, "seconds_per_question": per_q,
                              "prompt_tokens": st.prompt_tokens, "full_length_outputs": st.hit_max_new_tokens,
                              "tokens_per_s": len(sub) * a.max_new_tokens / dt, "projected_dev_s": per_q * n_dev,
                              "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30}
            log(f"generate {label} bs{bs}: {len(sub)} questions ({st.prompt_tokens} prompt tokens) in {dt:.1f} s "
                f"({per_q:.3f} s/question, {res[f'{label} bs{bs}']['tokens_per_s']:.0f} new tok/s, "
                f"{st.hit_max_new_tokens}/{len(sub)} full length) -> {n_dev} dev questions ~ {fmt_time(per_q * n_dev)}")


def phase_mmlu(a, bench, model, tok, log, results):
    import torch

    from sqltradeoff import mmlu
    from sqltradeoff.answers import LETTERS

    test, dev = bench["mmlu_test"], bench["mmlu_dev"]
    res = results.setdefault("mmlu", {"questions": len(test), "k_shot": 5})
    preds = {}
    for reuse in (True, False, True):
        scorer = mmlu.HFLetterScorer(model, tok, batch_size=a.mmlu_batch_size, reuse_prefix=reuse)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        rows, metrics = mmlu.evaluate(test, dev, method="loglik", k_shot=5, scorer=scorer,
                                      batch_size=a.mmlu_batch_size, progress=False)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        key = "reuse" if reuse else "recompute"
        res[key] = {"seconds": dt, "stats": dict(scorer.stats)}
        preds[key] = rows
        log(f"mmlu {key}: {len(test)} questions in {dt:.1f} s; {dict(scorer.stats)}")
    a_rows, b_rows = preds["reuse"], preds["recompute"]
    agree = sum(x["pred"] == y["pred"] for x, y in zip(a_rows, b_rows))
    maxdiff = max(abs(x["logprobs"][L] - y["logprobs"][L]) for x, y in zip(a_rows, b_rows) for L in LETTERS)
    res["agreement"] = agree
    res["max_abs_logprob_diff"] = maxdiff
    log(f"mmlu: reuse vs recompute predictions agree {agree}/{len(test)}, max |logprob diff| {maxdiff:.3g}")


# ---------------------------------------------------------------------------- report

def render_report(r) -> str:
    env = r.get("env", {})
    parts = [f"Card: {env.get('gpu')} ({env.get('nvidia_smi', '')}); torch {env.get('torch')} CUDA {env.get('cuda')}, "
             f"transformers {env.get('transformers')}, peft {env.get('peft')}, trl {env.get('trl')}, "
             f"bitsandbytes {env.get('bitsandbytes')}; {env.get('date_utc')}."]
    pk = r.get("peak")
    if pk:
        parts.append(f"Measured ceilings: bf16 matmul 8192^3 {pk['bf16_matmul_8192x8192x8192_tflops']} TFLOP/s "
                     f"(2048x4096x14336: {pk['bf16_matmul_2048x4096x14336_tflops']}), device copy "
                     f"{pk['copy_tb_s']} TB/s.")
    if "padding_free_check" in r:
        c = r["padding_free_check"]
        parts.append("Padding-free check, packed vs separate logits (relative error; bf16 + NF4): "
                     + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()))
    tr = r.get("train")
    if tr:
        ep = r.get("train_epoch", {})
        ref = tr.get("ref", {})
        rows = []
        for name, x in tr.items():
            if "error" in x:
                rows.append([name, x["desc"], "FAILED: " + x["error"][:80]] + [""] * 10)
                continue
            vs = (f"{x['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref.get("tokens_per_s") else "")
            rows.append([name, f"{x['micro_batch']}x{x['grad_accum']}", "yes" if x["padding_free"] else "no",
                         "varlen FA" if x.get("attention") == VARLEN else "SDPA",
                         "fp32" if x.get("fp32_upcast", True) else "bf16",
                         "on" if x["grad_ckpt"] else "off", f"{x['tokens_per_s']:,.0f}", vs,
                         f"{x['seconds_per_step']:.3f} ({x.get('median_seconds_per_step', 0):.3f})",
                         f"{fmt_time(x['epoch_s'])} ({fmt_time(x['epoch_all_7000_s'])})",
                         f"{x['peak_alloc_gib']:.1f}/{x['peak_reserved_gib']:.1f} ; "
                         f"{x['worst_peak_alloc_gib']:.1f}/{x['worst_peak_reserved_gib']:.1f}",
                         f"{x['mfu']:.1%} ({x['mfu_6N_convention']:.1%})", f"{x['padding_fraction']:.0%}"])
        parts.append(f"Training (QLoRA r=8 q/k/v/o, NF4 + bf16 compute, paged_adamw_8bit; one epoch = "
                     f"the {ep.get('examples_full')} of 7,000 examples within max_length {ep.get('max_length')}, "
                     f"{ep.get('tokens_full'):,} tokens (all 7,000: {ep.get('tokens_all_7000'):,} tokens, longest "
                     f"{ep.get('longest')}); peak memory: timed random batches ; the epoch's longest batch):\n\n"
                     + md_table(
                         ["variant", "micro-batch x accum", "padding-free", "attention", "norms/emb/head", "grad ckpt",
                          "tokens/s", "vs ref",
                          "s / optimizer step (median)", "1 epoch (all 7,000)", "peak GiB alloc/res ; worst batch", "MFU (6N conv.)",
                          "padding"], rows))
    g = r.get("generate")
    if g:
        rows = []
        for k, x in g.items():
            if isinstance(x, dict) and "seconds" in x:
                rows.append([k, x["questions"], f"{x['seconds']:.1f}", f"{x['seconds_per_question']:.3f}",
                             f"{x['tokens_per_s']:,.0f}", fmt_time(x["projected_dev_s"]),
                             f"{x['peak_alloc_gib']:.2f}"])
        parts.append(f"Generation (greedy, {g['max_new_tokens']} new tokens, EOS disabled; timed on a random "
                     f"subset of dev prompts, projected linearly to {g['dev_questions']}):\n\n" + md_table(
                         ["batch", "questions timed", "s", "s / question", "new tokens/s", "projected 1,034",
                          "peak GiB"], rows))
    m = r.get("mmlu")
    if m and "reuse" in m:
        parts.append(md_table(["MMLU 5-shot loglik", "questions", "s"],
                              [["prefix KV reused", m["questions"], f"{m['reuse']['seconds']:.1f}"],
                               ["recomputed", m["questions"], f"{m['recompute']['seconds']:.1f}"]])
                     + f"\n\nreuse vs recompute: {m['agreement']}/{m['questions']} same predictions, "
                       f"max |log-prob difference| {m['max_abs_logprob_diff']:.3g}")
    return "\n\n".join(parts) + "\n"


# ============================================================================ several GPUs

def cmd_stage_train(argv):
    """stages/train.py, unchanged, with a no-op DVCLive where dvclive is not installed (GPU machine)."""
    import runpy

    ensure_dvclive_stub(lambda *a: print(*a, file=sys.stderr))
    sys.argv = [str(REPO / "stages" / "train.py"), *argv]
    runpy.run_path(str(REPO / "stages" / "train.py"), run_name="__main__")


TUNED_TRAIN = {"batch_size": 4, "grad_accum": 1, "gradient_checkpointing": True, "padding_free": True,
               "attention": VARLEN, "fp32_upcast": False}     # the tuned QLoRA settings (train params)


def cmd_multi_gpu(a):
    """The train stage on 1 GPU (plain `python stages/train.py`: it pins itself to GPU 0) and on N GPUs
    (accelerate launch, data parallel), on the random-weight Mistral-7B in 4-bit, for each recipe
    (ref: params.yaml; tuned: TUNED_TRAIN); prints a table."""
    import yaml

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "multi_gpu_log.txt")
    import torch
    n_gpu = torch.cuda.device_count()
    results = {"env": env_info(log), "gpus": n_gpu}
    bench = load_bench(a)
    model_dir = Path(a.model_dir)
    build_random_model(model_dir, Path(a.prep) / "mistral-tokenizer", log)
    work = Path(a.work) / "multi_gpu"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update({"path": str(model_dir), "load_in_4bit": True, "cache_dir": str(work / "cache")})
    params["train"].update({"max_steps": a.steps, "save_steps": 10 ** 6})
    maxlen = int(params["train"]["max_length"])
    rng = random.Random(0)
    rows = [r for r, n in zip(bench["train"], bench["train_lengths"]) if n <= maxlen]
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rng.sample(rows, 1024)))
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    rows_out = []
    for recipe in a.recipes.split(","):
        rp = yaml.safe_load(yaml.safe_dump(params))
        if recipe == "tuned":
            rp["train"].update(TUNED_TRAIN)
        elif recipe != "ref":
            raise SystemExit(f"unknown recipe {recipe!r} (ref, tuned)")
        (work / f"params_{recipe}.yaml").write_text(yaml.safe_dump(rp))
        for n in [1, n_gpu] if n_gpu > 1 else [1]:
            tag = f"{recipe}_{n}"
            stage = [str(Path(__file__).resolve()), "stage-train", "--run", "run1", "--data",
                     str(work / "train.jsonl"), "--out", str(work / f"out_{tag}"), "--metrics-dir",
                     str(work / f"metrics_{tag}"), "--params", str(work / f"params_{recipe}.yaml")]
            if n == 1:     # no CUDA_VISIBLE_DEVICES: the stage itself must keep to one GPU
                cmd = [sys.executable, *stage]
            else:
                cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *stage]
            log("multi-gpu:", " ".join(cmd))
            t0 = time.time()
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=a.variant_timeout)
            wall = time.time() - t0
            (out / f"multi_gpu_{tag}.log").write_text(proc.stdout)
            info = {}
            for line in proc.stdout.splitlines():
                if line.startswith("{") and '"steps"' in line:
                    with contextlib.suppress(ValueError):
                        info = json.loads(line)
            t = rp["train"]
            row = {"recipe": recipe, "processes": n, "rc": proc.returncode, "command_wall_s": round(wall, 1),
                   "examples_per_step": t["batch_size"] * t["grad_accum"] * n,
                   "adapter_written": (work / f"out_{tag}" / "adapter" / "adapter_model.safetensors").is_file(),
                   **info}
            if proc.returncode != 0:
                row["tail"] = "\n".join(proc.stdout.strip().splitlines()[-8:])
            rows_out.append(row)
            log("multi-gpu:", json.dumps(row)[:600])
    results["runs"] = rows_out
    (out / "multi_gpu.json").write_text(json.dumps(results, indent=1))
    table = md_table(["recipe", "processes (GPUs)", "exit", "adapter", "optimizer steps", "examples / step",
                      "train wall s", "tokens/s", "command wall s"],
                     [[r["recipe"], r["processes"], r["rc"], "yes" if r["adapter_written"] else "no",
                       r.get("steps", ""), r["examples_per_step"], r.get("wall_time_s", ""),
                       r.get("tokens_per_s", ""), r["command_wall_s"]] for r in rows_out])
    print("\n" + table)
    (out / "multi_gpu.md").write_text(table + "\n")


# ============================================================================ CLI

def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_gpu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="build the tokenizer and prompt data (CPU machine)")
    pp.add_argument("--spm", help="Mistral 7B v0.x SentencePiece model (mistral_common/data/tokenizer.model.v1)")
    pp.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                    help="Spider/MMLU mirror (default: %(default)s)")
    pp.add_argument("--out", default=str(DEFAULT_PREP), help="output folder (default: %(default)s)")
    pr = sub.add_parser("run", help="run the benchmark (GPU machine)")
    pr.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out/run"), help="results folder")
    pr.add_argument("--prep", default=str(DEFAULT_PREP), help="folder written by `prepare`")
    pr.add_argument("--model-dir", default="/dev/shm/mistral7b-random", help="where the random model is saved")
    pr.add_argument("--work", default="/tmp/bench_gpu", help="scratch folder (adapters, training data)")
    pr.add_argument("--phases", default="peak,train,generate,generate_bf16,mmlu")
    pr.add_argument("--variants", default="", help="training variants (comma list; default all)")
    pr.add_argument("--quick", action="store_true", help="fewer timed steps (smoke test)")
    pr.add_argument("--tiny", action="store_true", help="a 2-layer Mistral instead of 7B (checks the script; runs on CPU)")
    pr.add_argument("--in-process", action="store_true",
                    help="run all training variants in this process (default: one process each)")
    pr.add_argument("--variant-timeout", type=int, default=240, help="seconds per training-variant process")
    pr.add_argument("--skip-check", action="store_true", help=argparse.SUPPRESS)
    pr.add_argument("--peak-tflops", type=float, default=798.0, help="bf16 peak if the peak phase is skipped")
    pr.add_argument("--train-pool", type=int, default=256, help="training examples sampled for the timing runs")
    pr.add_argument("--max-length", type=int, default=None,
                    help="train.max_length for the runs (default: params.yaml's; 2304 keeps every Spider "
                         "train example with the Mistral tokenizer)")
    pr.add_argument("--max-new-tokens", type=int, default=64)
    pr.add_argument("--gen-subset", type=int, default=64, help="dev prompts timed batched (random subset)")
    pr.add_argument("--gen-single", type=int, default=4, help="dev prompts timed one at a time")
    pr.add_argument("--gen-batch-sizes", default="1,8,32,64", help="batch sizes, 4-bit model + LoRA adapter")
    pr.add_argument("--gen-batch-sizes-bf16", default="1,64",
                    help="batch sizes, bf16 model with the adapter merged (phase generate_bf16)")
    pr.add_argument("--mmlu-batch-size", type=int, default=8)
    pm = sub.add_parser("multi-gpu", help="the train stage on 1 GPU and, data parallel, on all GPUs (GPU machine)")
    pm.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out/multi_gpu"))
    pm.add_argument("--prep", default=str(DEFAULT_PREP))
    pm.add_argument("--model-dir", default="/dev/shm/mistral7b-random")
    pm.add_argument("--work", default="/tmp/bench_gpu")
    pm.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    pm.add_argument("--recipes", default="ref,tuned", help="ref (params.yaml), tuned (TUNED_TRAIN), comma list")
    pm.add_argument("--variant-timeout", type=int, default=300)
    sub.add_parser("stage-train", help="stages/train.py with a no-op DVCLive if dvclive is missing "
                                       "(for `accelerate launch` on the GPU machine); arguments pass through")
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["stage-train"]:
        return cmd_stage_train(raw[1:])
    a = p.parse_args(argv)
    if a.cmd == "multi-gpu":
        return cmd_multi_gpu(a)
    if a.cmd == "prepare":
        cmd_prepare(a)
    else:
        cmd_run(a)


if __name__ == "__main__":
    main()
