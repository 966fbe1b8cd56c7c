"""What the phases of the GPU benchmark share: the model shape, logging, tables, FLOP counts,
results files, the random-weight model (see `benchmarks/bench_gpu.py` for the FLOP accounting)."""
from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH_GPU = REPO / "benchmarks" / "bench_gpu.py"
DEFAULT_PREP = REPO / "benchmarks" / "out" / "gpu"
MMLU_K_SHOT = 5      # the 5-shot MMLU of the study (prepare keeps subjects with 5 dev rows)

# Mistral-7B-Instruct-v0.2 config.json (the fields that shape the computation).
MISTRAL_7B_V02 = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, vocab_size=32000, max_position_embeddings=32768,
    rope_theta=1e6, sliding_window=None, rms_norm_eps=1e-5, hidden_act="silu",
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.02,
)
TINY = dict(MISTRAL_7B_V02, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64)
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

# The tuned settings are train params of the project (training.py, attention.py); the benchmark
# only chooses them per variant.
from sqltradeoff.attention import TORCH_VARLEN as VARLEN  # noqa: E402


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
    """Model FLOPs of LoRA training on sequences of the given lengths (see bench_gpu.py's docstring)."""
    s1 = sum(seq_lens)
    s2 = sum(s * s for s in seq_lens)
    return 4 * P["matmul"] * s1 + 6 * n_lora * s1 + 6 * P["layers"] * P["d_attn"] * s2


def save_results(a, results):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


def load_bench(a):
    path = Path(a.prep) / "bench_data.json.gz"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run `python benchmarks/bench_gpu.py prepare` first (see --help)")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def load_train_params() -> dict:
    """params.yaml's `train` section (checked), as written."""
    from sqltradeoff.params import load_params

    return dict(load_params(REPO / "params.yaml").config.need("train"))


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
