"""Load the tokenizer and model named by `params["model"]`; choose device and precision.

`model_cfg` is the `model` section of params.yaml: `{path, revision, load_in_4bit, cache_dir}`.

`path` may be
- a Hugging Face hub id (`org/name`), loaded with `from_pretrained(id, revision=...)`;
- a local Hugging Face model directory;
- a `.gguf` file. transformers dequantises GGUF weights to fp32 on every load, which takes
  about a minute for a 0.5B model, so the file is converted ONCE into a Hugging Face directory
  under `cache_dir` (keyed by the file's sha256) and later loads read that copy (seconds).
  The conversion is done under a file lock into a temporary directory that is renamed into
  place, so stages running at the same time never see a half-written copy.

Device and precision (one place: `device_settings`):
- CUDA: bf16; with `load_in_4bit`, 4-bit NF4 weights (double quantisation, bf16 compute).
- CPU: fp32 (bf16 kills some CPUs with SIGILL). `load_in_4bit` on CPU raises `UserError`:
  bitsandbytes 4-bit on CPU crashes or is unsupported, and silently training a different
  (unquantised) model would change the study without anyone noticing; set
  `model.load_in_4bit: false` to run on CPU.

Relative `path` and `cache_dir` are relative to the current directory (the project root for
DVC stages).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import atomic_dir, sha256_file

log = logging.getLogger(__name__)

# Tokens that end an assistant turn in common chat templates (used as extra stop tokens).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")

_CONVERTED_MARKER = "sqltradeoff_gguf_source.json"


@dataclass(frozen=True)
class DeviceSettings:
    device: str            # "cuda" or "cpu"
    dtype: Any             # torch dtype of weights / compute
    load_in_4bit: bool

    @property
    def bf16(self) -> bool:
        import torch
        return self.dtype == torch.bfloat16


def device_settings(load_in_4bit: bool = False) -> DeviceSettings:
    """The single place where device and precision are chosen from the hardware."""
    import torch

    if torch.cuda.is_available():
        return DeviceSettings("cuda", torch.bfloat16, bool(load_in_4bit))
    if load_in_4bit:
        raise UserError(
            "model.load_in_4bit is true but no CUDA GPU is available: 4-bit NF4 (bitsandbytes) is "
            "for CUDA only. Set `model.load_in_4bit: false` in params.yaml to run in fp32 on CPU "
            "(or run on a GPU machine).")
    return DeviceSettings("cpu", torch.float32, False)


def require_liger(key: str, cuda: bool) -> None:
    """A one-line UserError unless liger-kernel's fused Triton kernels can run for the params key `key`
    (`train.use_liger_kernel`, `predict.use_liger_kernel`) that is true: they need a CUDA GPU and a
    liger-kernel this transformers supports (`is_liger_kernel_available` also checks its version).
    Called before the model loads."""
    if not cuda:
        raise UserError(f"params: {key} is true, but liger-kernel runs only on a CUDA GPU "
                        f"(this run is on the CPU): set it to false")
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():
        raise UserError(f"params: {key} is true, but liger-kernel is not installed "
                        f"(pip install liger-kernel) or too old for this transformers: install it or set it to false")


def _cfg(model_cfg) -> tuple[str, str | None, bool, Path]:
    from .config import ModelConfig, as_mapping

    if isinstance(model_cfg, ModelConfig):   # the typed `model` section (config.py)
        model_cfg = as_mapping(model_cfg)
    if not isinstance(model_cfg, dict):
        raise UserError("params: section `model` must be a mapping with `path`")
    path = model_cfg.get("path")
    if not path or not isinstance(path, str):
        raise UserError("params: model.path is not set (a hub id, a local model directory or a .gguf file)")
    revision = model_cfg.get("revision") or None
    cache_dir = Path(os.path.expanduser(str(model_cfg.get("cache_dir") or ".cache/models")))
    return path, revision, bool(model_cfg.get("load_in_4bit", False)), cache_dir


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`org/name` or `name`)."""
    return (path.startswith((".", "/", "~")) or path.endswith(".gguf") or path.count("/") > 1
            or "\\" in path or Path(os.path.expanduser(path)).exists())


def _offline_hint() -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if offline:
        return ("HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache can be loaded: "
                "download it on a connected machine first, or point model.path at a local model "
                "directory or .gguf file")
    return ("the hub may be unreachable: point model.path at a local model directory or .gguf file, "
            "or set HF_HUB_OFFLINE=1 to use only the local Hugging Face cache")


def _gguf_cache_key(gguf: Path) -> str:
    """sha256 of the file, memoised per (realpath, size, mtime) so later loads skip hashing."""
    st = gguf.stat()
    memo_key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = Path(tempfile.gettempdir()) / f"sqltradeoff-sha256-{hashlib.sha1(memo_key.encode()).hexdigest()}"
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = sha256_file(gguf, chunk=1 << 22)
    try:
        memo.write_text(digest)
    except OSError:
        pass
    return digest


def gguf_cache_path(gguf: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    gguf = Path(gguf)
    return Path(cache_dir) / f"{gguf.stem}-{_gguf_cache_key(gguf)[:16]}"


def convert_gguf(gguf: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Convert a GGUF file to a Hugging Face directory under `cache_dir` once; return the directory."""
    from filelock import FileLock

    gguf = Path(os.path.expanduser(str(gguf)))
    if not gguf.is_file():
        raise UserError(f"model.path: GGUF file {gguf} not found (set model.path in params.yaml to an "
                        f"existing .gguf file, a local model directory or a hub id)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = gguf_cache_path(gguf, cache_dir)
    if (target / _CONVERTED_MARKER).is_file():
        return target
    with FileLock(str(target) + ".lock"):
        if (target / _CONVERTED_MARKER).is_file():   # another process converted it meanwhile
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"converting {gguf} to a Hugging Face directory {target} (once) ...", file=sys.stderr)
        t0 = time.time()
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
        except Exception as exc:  # a corrupt or unsupported file is user input
            raise UserError(f"model.path: could not read GGUF file {gguf}: {exc}") from None
        # GGUF weights are dequantised; drop the GGUF "quantizer" so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_dir(target) as tmp:   # replaces a stale partial copy without marker
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / _CONVERTED_MARKER).write_text(json.dumps(
                {"gguf": str(gguf.resolve()), "sha256": _gguf_cache_key(gguf),
                 "size": gguf.stat().st_size, "seconds": round(time.time() - t0, 1)}, indent=2))
        print(f"converted in {time.time() - t0:.0f} s", file=sys.stderr)
    return target


def resolve_model_dir(model_cfg: dict) -> tuple[str, str | None]:
    """Where `from_pretrained` loads from: (local directory or hub id, revision or None)."""
    path, revision, _, cache_dir = _cfg(model_cfg)
    if path.endswith(".gguf"):
        return str(convert_gguf(path, cache_dir)), None
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"model.path: {local} is a directory but not a Hugging Face model directory "
                            f"(no config.json); set model.path to a model directory, a .gguf file or a hub id")
        return str(local), None
    if _looks_local(path):
        raise UserError(f"model.path: {path} does not exist; set model.path in params.yaml to a hub id, "
                        f"a local model directory or a .gguf file")
    return path, revision


def _hub_error(path: str, revision: str | None, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"model.path: cannot load `{path}` (revision {revision or 'main'}) from the "
                     f"Hugging Face hub or its cache: {first}. Set model.path in params.yaml; {_offline_hint()}")


def _prepare_tokenizer(tok):
    if tok.pad_token is None:
        for candidate in (tok.eos_token, tok.unk_token):
            if candidate is not None:
                tok.pad_token = candidate
                break
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = "left"          # generation pads on the left
    return tok


def token_ids(tokenizer, texts: list[str], batch: int = 512) -> list[list[int]]:
    """Token ids of each text (no special tokens added), tokenized in batches (the same ids as one
    call per text; the fast tokenizer encodes a batch on all its threads)."""
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        out += tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"]
    return out


def load_tokenizer(model_cfg: dict):
    """The tokenizer of `model_cfg` (pad token set, left padding)."""
    from transformers import AutoTokenizer

    where, revision = resolve_model_dir(model_cfg)
    try:
        tok = AutoTokenizer.from_pretrained(where, revision=revision)
    except (OSError, ValueError) as exc:
        raise _hub_error(where, revision, exc) from None
    return _prepare_tokenizer(tok)


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS plus the end-of-turn tokens the vocabulary has (generation stops at any of them)."""
    ids: list[int] = []

    def add(x):
        if x is None:
            return
        for i in (x if isinstance(x, (list, tuple)) else [x]):
            if isinstance(i, int) and i >= 0 and i not in ids:
                ids.append(i)

    add(tokenizer.eos_token_id)
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        add(gen_cfg.eos_token_id)
    vocab = tokenizer.get_vocab()
    for t in END_OF_TURN_TOKENS:
        if t in vocab:
            add(vocab[t])
    return ids


def load_model(model_cfg: dict, adapter: str | os.PathLike | None = None, for_training: bool = False,
               adapter_scale: float = 1.0):
    """Load (model, tokenizer). `adapter`: a PEFT adapter directory applied on top.

    Inference (`for_training=False`): eval mode; an adapter on an unquantised model is merged
    (faster generation, same outputs). Training: the plain base model is returned (training.py adds
    LoRA and, for 4-bit, `prepare_model_for_kbit_training`); with `adapter`, it is loaded trainable.

    `adapter_scale` s (inference only): the adapter's LoRA update is multiplied by s, i.e. the
    weights W + s·ΔW (peft `rescale_adapter_scale`; for s in [0, 1] this is WiSE-FT's interpolation
    between the base and the fine-tuned weights). 0 gives the base model, 1 the adapter as trained.
    """
    import torch
    from transformers import AutoModelForCausalLM

    adapter_scale = check_adapter_scale(adapter_scale)
    if adapter_scale != 1.0 and (adapter is None or for_training):
        raise UserError("--adapter-scale needs --adapter and applies to inference only")
    path, _, load_in_4bit, _ = _cfg(model_cfg)
    settings = device_settings(load_in_4bit)
    tok = load_tokenizer(model_cfg)
    where, revision = resolve_model_dir(model_cfg)
    kwargs: dict[str, Any] = {"dtype": settings.dtype, "revision": revision}
    if settings.device == "cuda":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}  # DDP: own GPU
        if settings.load_in_4bit:
            from transformers import BitsAndBytesConfig
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(where).is_dir():
            raise UserError(f"model.path: cannot load the model in {where}: {exc}") from None
        raise _hub_error(where, revision, exc) from None
    if len(tok) > model.get_input_embeddings().weight.shape[0]:   # a pad token was added
        model.resize_token_embeddings(len(tok))
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if adapter is not None:
        model = apply_adapter(model, adapter, trainable=for_training, merge=not settings.load_in_4bit,
                              scale=adapter_scale)
    if for_training:
        model.train()
        model.config.use_cache = False        # no KV cache while training (and with checkpointing)
    else:
        model.eval()
    return model, tok


def check_target_modules(model_cfg: dict, target_modules) -> None:
    """LoRA `target_modules` that name no module of the model: a one-line UserError before the weights
    load. The model is built from its config on the meta device (no memory, no weights); a name fits
    as peft matches it: the whole module name or its last dotted part(s)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(target_modules, str):          # `all-linear`: peft picks the linear layers itself
        return
    where, revision = resolve_model_dir(model_cfg)
    try:
        config = AutoConfig.from_pretrained(where, revision=revision)
    except (OSError, ValueError) as exc:
        if Path(where).is_dir():
            raise UserError(f"model.path: cannot read the model config in {where}: {exc}") from None
        raise _hub_error(where, revision, exc) from None
    with torch.device("meta"):
        modules = [(n, m) for n, m in AutoModelForCausalLM.from_config(config).named_modules() if n]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n, _ in modules)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in modules if isinstance(m, torch.nn.Linear)})
        raise UserError(f"params: train.target_modules {', '.join(missing)} name no module of this model "
                        f"({config.model_type}); its linear layers are {', '.join(linear)}")


def check_adapter_scale(scale) -> float:
    """An adapter scale: a finite number >= 0 (UserError otherwise)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise UserError(f"adapter scale must be a finite number >= 0, got {scale!r}")
    return float(scale)


def apply_adapter(model, adapter: str | os.PathLike, trainable: bool = False, merge: bool = True,
                  scale: float = 1.0):
    """`model` with the PEFT adapter in `adapter` applied; `scale` multiplies its LoRA update.

    Merged (`merge`, inference): the weights become W + scale·ΔW (merged inside peft's
    `rescale_adapter_scale`). Unmerged (4-bit): every LoRA layer's scaling is multiplied by `scale`
    for the model's lifetime (peft `LoraLayer.scale_layer`).
    """
    from peft import PeftModel
    from peft.helpers import rescale_adapter_scale
    from peft.tuners.lora import LoraLayer

    scale = check_adapter_scale(scale)
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {adapter}: not a PEFT adapter directory (no adapter_config.json); "
                        f"train it first (stage train) or pass the models/<run>/adapter directory")
    if trainable and scale != 1.0:
        raise UserError("an adapter loaded for training cannot be rescaled (adapter scale must be 1)")
    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    if scale != 1.0 and not any(isinstance(m, LoraLayer) for m in model.modules()):
        raise UserError(f"--adapter {adapter}: no LoRA layers to rescale (adapter scale {scale:g})")
    if merge and not trainable:
        if scale == 1.0:
            return model.merge_and_unload()
        with rescale_adapter_scale(model, scale):
            return model.merge_and_unload()
    for layer in (m for m in model.modules() if isinstance(m, LoraLayer)):
        layer.scale_layer(scale)     # a no-op at scale 1
    return model
