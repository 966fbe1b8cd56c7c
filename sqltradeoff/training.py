"""LoRA / QLoRA fine-tuning with TRL's `SFTTrainer` on prompt/completion data.

Data: `data/formatted/train.jsonl` rows with `prompt` (the rendered conversation up to and
including the generation prompt, BOS text included when the template emits it) and `completion`
(the SQL plus the end-of-turn text). `prompt + completion` is exactly the rendered conversation.

Tokenisation is done here, not by TRL: TRL's string prompt/completion path appends
`tokenizer.eos_token` to every completion that does not end with it (a ChatML completion ends
with `<|im_end|>\\n`, so it would get a second end-of-turn/EOS the model never sees at
inference). We tokenise `prompt + completion` with `add_special_tokens=False` (no second BOS, no
extra EOS) and mark the completion tokens (`completion_mask`); TRL turns the mask into labels
(-100 on the prompt), so the loss is on the SQL and end-of-turn only. Examples longer than
`max_length` tokens are dropped (not truncated) and counted.

Device/precision come from `modeling.device_settings`: CUDA -> bf16, `optim_cuda`
(paged_adamw_8bit), QLoRA when `model.load_in_4bit`; CPU -> fp32 (`bf16=False`), `optim_cpu`
(adamw_torch).

Throughput settings (measured on an H100/H200 in BENCHMARKS.md; their defaults are the reference
study's recipe):
* `padding_free` -- TRL's padding-free batches: a micro-batch is one flat row with the example
  boundaries passed along (no pad tokens). `max_length` is then not handed to TRL (it would refuse
  it); examples longer than it are dropped here as always.
* `attention` -- `sdpa` (default), any other transformers implementation name, or `torch_varlen`
  (PyTorch's variable-length FlashAttention for padding-free batches; see `attention.py`).
* `fp32_upcast` (QLoRA only) -- true: peft's `prepare_model_for_kbit_training`, which also casts
  every non-quantised weight (embeddings, norms, lm_head) to fp32 and so carries an fp32 residual
  stream; false: keep them bf16 (the base model is frozen either way).

* `use_liger_kernel` -- liger-kernel's fused layer kernels through TRL's `use_liger_kernel` (CUDA
  and the liger-kernel package; refused with a one-line error before the model loads otherwise).
* `torch_compile` -- true: the Trainer's `torch.compile` of the whole model
  (TrainingArguments.torch_compile; it recompiles as padding-free lengths change); `regional`:
  accelerate's regional compilation (`TorchDynamoPlugin.use_regional_compilation`), each repeated
  decoder block compiled once with dynamic shapes and reused by every layer, the model's own Python
  (masks, TRL's loss) left eager (`compile_settings`; refused with `use_liger_kernel`, `check_compile`);
  `regional_graphs`: the same with torch.compile's `mode="reduce-overhead"` and static shapes, so on
  CUDA each compiled block runs as a recorded CUDA graph (one compile and graph per padded length: it
  needs padded batches, `padding_free: false`, with `pad_to_multiple_of` bounding the lengths; on the
  CPU no graphs are recorded).
  Not part of the resume hash (it changes speed, not the optimisation; with LoRA dropout the
  compiled step draws other dropout masks).
* `pad_to_multiple_of` -- TRL's collator pads each batch's length up to a multiple of it (labels -100,
  attention mask 0 on the padding): the loss is the same, the number of distinct shapes is bounded.
  Not part of the resume hash. Refused with `attention: sdpa` (NaN gradients on a card in bf16).
* `cpu_linear` -- CPU, fp32: `onednn` runs the frozen base layers (forward and the input's gradient)
  through oneDNN with weights packed once (onednn.py), `aten` through torch's GEMM; not part of the
  resume hash (the same products up to float rounding).

On the CPU the LM head of the loss scores only the labelled positions (`compact_lm_head`), as TRL
does on CUDA.

Checkpoints go to `<out>/checkpoints` (outside DVC) every `save_steps`; a rerun with the same
configuration (hash of train config, model and data) resumes from the latest complete one
(checkpoints.py: one cut short by a kill is removed with a warning).
Ctrl-C / SIGTERM stop training within seconds even inside a CPU backward pass (interrupt.py). Checkpoints
of a different configuration are removed (they cannot be resumed), and so is the directory once
the run has written its adapter (a finished run is retrained from scratch when DVC asks). DVCLive
logs loss and learning rate per step into the metrics directory.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterable

from .checkpoints import HASH_FILE, _prepare_checkpoints, checkpoint_problem, checkpoints, latest_checkpoint  # noqa: F401 (re-exported)
from .config import REQUIRED, TORCH_COMPILE, TrainConfig, as_mapping
from .errors import UserError
from .io import atomic_dir, portable_path, read_jsonl, sha256_file, write_json
from .modeling import token_ids

_SPECS = {f.name: f.metadata["default"] for f in fields(TrainConfig) if "check" in f.metadata}
TRAIN_KEYS = tuple(k for k, d in _SPECS.items() if d is REQUIRED)
# Optional keys and their defaults (the reference study's recipe).
TRAIN_DEFAULTS = {k: d for k, d in _SPECS.items() if d is not REQUIRED}
# Keys that do not change the trained weights (excluded from the resume hash).
_NO_RESULT_KEYS = ("save_steps", "save_total_limit", "torch_compile", "pad_to_multiple_of", "cpu_linear")


def train_config(cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
    """A run's train settings as a checked `TrainConfig` (a mapping is checked here: config.py)."""
    return cfg if isinstance(cfg, TrainConfig) else TrainConfig.build(cfg)


def validate_config(cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Check a run's train settings; returns them as a dict with the optional keys' defaults filled in."""
    return train_config(cfg).as_dict()


# ---------------------------------------------------------------- data

def tokenize_examples(rows: Iterable[dict], tokenizer, max_length: int) -> tuple[list[dict], dict[str, Any]]:
    """Tokenise prompt/completion rows; drop (and count) the ones longer than `max_length`.

    Returns (examples with `input_ids` and `completion_mask`, stats).
    """
    examples: list[dict] = []
    dropped_long = dropped_empty = boundary_merges = 0
    lengths: list[int] = []
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
            raise UserError(f"training data row {i + 1} (id {row.get('id')!r}): `prompt` and `completion` must be strings")
    # batched calls: the same ids as one call per text, the fast tokenizer's threads doing the work
    full = token_ids(tokenizer, [r["prompt"] + r["completion"] for r in rows])
    prompts = token_ids(tokenizer, [r["prompt"] for r in rows])
    for full_ids, prompt_ids in zip(full, prompts):
        n = 0
        for a, b in zip(prompt_ids, full_ids):
            if a != b:
                break
            n += 1
        if n < len(prompt_ids):   # a token spans the prompt/completion boundary: it belongs to the prompt side
            boundary_merges += 1
        n_completion = len(full_ids) - n
        if n_completion <= 0:
            dropped_empty += 1
            continue
        if len(full_ids) > max_length:
            dropped_long += 1
            continue
        examples.append({"input_ids": full_ids, "completion_mask": [0] * n + [1] * n_completion})
        lengths.append(len(full_ids))
    stats = {
        "examples_total": len(examples) + dropped_long + dropped_empty,
        "examples_used": len(examples),
        "examples_dropped_too_long": dropped_long,
        "examples_dropped_empty_completion": dropped_empty,
        "prompt_completion_boundary_merges": boundary_merges,
        "tokens_used": int(sum(lengths)),
        "max_tokens": max(lengths) if lengths else 0,
    }
    return examples, stats


def config_hash(cfg: dict, model_cfg: dict, data_sha256: str) -> str:
    relevant = {k: v for k, v in sorted(cfg.items()) if k not in _NO_RESULT_KEYS}
    model = {k: model_cfg.get(k) for k in ("path", "revision", "load_in_4bit")}
    model["path"] = os.path.basename(str(model["path"])) if str(model["path"]).endswith(".gguf") else model["path"]
    blob = json.dumps({"train": relevant, "model": model, "data": data_sha256}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()



# ---------------------------------------------------------------- logging

LOGGED = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "num_input_tokens_seen")


def _open_live(metrics_dir: Path, resume_step: int | None):
    """A DVCLive logger in `metrics_dir` (no dvc.yaml edits, no experiment commits, no params file:
    only metrics.json and plots/, the outputs dvc.yaml declares; the config is in training_info.json).

    On resume, rows logged after the resumed checkpoint (by the interrupted run) are dropped so the
    plots hold each optimizer step once."""
    from dvclive import Live

    if resume_step is not None:
        for tsv in (metrics_dir / "plots" / "metrics").rglob("*.tsv"):
            lines = tsv.read_text().splitlines(keepends=True)
            kept = lines[:1] + [ln for ln in lines[1:] if int(ln.split("\t", 1)[0]) <= resume_step]
            tsv.write_text("".join(kept))
    return Live(dir=str(metrics_dir), resume=resume_step is not None, report=None, save_dvc_exp=False,
                dvcyaml=None)


def _live_callback(live):
    from transformers import TrainerCallback

    class LiveCallback(TrainerCallback):
        """Log the per-step training series to DVCLive with the optimizer step as x axis."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            live.step = state.global_step
            for key in LOGGED:
                if key in logs and logs[key] is not None:
                    live.log_metric(key, float(logs[key]))
            live.make_summary()

        def on_train_end(self, args, state, control, **kwargs):
            live.end()

    return LiveCallback()


# ---------------------------------------------------------------- training

def pin_single_gpu(environ=os.environ) -> bool:
    """One process without a distributed launcher trains on one GPU: make only GPU 0 visible.

    With several GPUs visible to one process, `Trainer` would wrap the model in `nn.DataParallel`,
    which TRL refuses; several GPUs are used with `accelerate launch` (docs/multi-gpu.md), which sets
    WORLD_SIZE. Call before CUDA is initialised. Returns whether it changed `environ`."""
    if "WORLD_SIZE" in environ or "CUDA_VISIBLE_DEVICES" in environ:
        return False
    environ["CUDA_VISIBLE_DEVICES"] = "0"
    return True


def sft_config_kwargs(cfg: dict[str, Any], settings, output_dir: str | os.PathLike) -> dict[str, Any]:
    """The `SFTConfig` arguments of a run on the device `settings` (modeling.device_settings)."""
    cfg = validate_config(cfg)
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=float(cfg["epochs"]),
        max_steps=int(cfg["max_steps"]),
        per_device_train_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["grad_accum"],
        learning_rate=float(cfg["learning_rate"]),
        lr_scheduler_type=cfg["lr_scheduler"],
        warmup_steps=float(cfg["warmup_ratio"]),      # transformers 5: a float in [0, 1) is a ratio
        optim=cfg["optim_cuda"] if settings.device == "cuda" else cfg["optim_cpu"],
        bf16=settings.bf16,
        fp16=False,
        gradient_checkpointing=bool(cfg["gradient_checkpointing"]),
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg["gradient_checkpointing"] else None,
        # padding-free: TRL refuses a max_length it cannot enforce; tokenize_examples drops long examples
        max_length=None if cfg["padding_free"] else cfg["max_length"],
        padding_free=bool(cfg["padding_free"]),
        completion_only_loss=True,
        packing=False,
        logging_steps=1,
        logging_nan_inf_filter=False,     # a non-finite loss is logged as it is (`_finite_guard` stops the run)
        save_strategy="steps",
        save_steps=cfg["save_steps"],
        save_total_limit=cfg["save_total_limit"],
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        report_to="none",
        # padding-free rows have no padding and no attention mask; "non_padding" would then skip every
        # token equal to the pad id (often the end-of-turn token, which is in every completion)
        include_num_input_tokens_seen="all" if cfg["padding_free"] else "non_padding",
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=settings.device == "cpu",
        use_liger_kernel=bool(cfg["use_liger_kernel"]),
        torch_compile=cfg["torch_compile"] is not False,
        # TRL's own default ("auto": no padding off Neuron) unless set
        **({"pad_to_multiple_of": cfg["pad_to_multiple_of"]} if cfg["pad_to_multiple_of"] else {}),
    )


def check_compile(torch_compile: bool | str, use_liger_kernel: bool) -> None:
    """`train.torch_compile: regional` (or `regional_graphs`), checked before the model loads: it needs
    accelerate's regional compilation, and it cannot be combined with liger-kernel (dynamo fails to trace
    liger's fused RMSNorm: an AssertionError in `overwrite_tensor_vt_proxy` with torch 2.11 and
    liger-kernel 0.8.5, on an H100, BENCHMARKS.md)."""
    if torch_compile not in TORCH_COMPILE:
        return
    if use_liger_kernel:
        raise UserError(f"params: train.torch_compile '{torch_compile}' and train.use_liger_kernel cannot be "
                        f"combined (torch.compile cannot trace liger-kernel's fused RMSNorm); set one of them")
    from accelerate.utils import TorchDynamoPlugin

    if "use_regional_compilation" not in getattr(TorchDynamoPlugin, "__dataclass_fields__", {}):
        import accelerate
        raise UserError(f"params: train.torch_compile '{torch_compile}' needs accelerate's regional compilation "
                        f"(accelerate >= 1.6; this is {accelerate.__version__}): set it to true or false")


def compile_settings(trainer, torch_compile: bool | str) -> None:
    """`train.torch_compile: regional` (checked by `check_compile`): the trainer's accelerator compiles
    the model region by region (accelerate's `compile_regions`: each block of the decoder's layer list,
    then the other leaf modules) with dynamic shapes, when it prepares the model at the start of
    training. Set on the accelerator's `TorchDynamoPlugin` (what `ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION`
    and `ACCELERATE_DYNAMO_USE_DYNAMIC` would set), so nothing outside this trainer changes.
    `regional_graphs`: the same with `mode="reduce-overhead"` and static shapes (`_graphs_settings`;
    inductor's CUDA graph trees: each compiled region's forward and backward are recorded once per input
    shape and replayed), and every optimizer step marked as a new iteration for the graph trees
    (`torch.compiler.cudagraph_mark_step_begin`)."""
    if torch_compile not in TORCH_COMPILE:
        return
    plugin = trainer.accelerator.state.dynamo_plugin
    plugin.use_regional_compilation = True
    plugin.dynamic = True
    if torch_compile == "regional_graphs":
        plugin.mode = "reduce-overhead"
        trainer.add_callback(_mark_graph_steps())
        _graphs_settings(plugin)


def _graphs_settings(plugin) -> None:
    """`regional_graphs` compiles with static shapes: one graph per padded length (`pad_to_multiple_of` bounds
    how many), with dynamo's recompile limits raised to hold them all (16 lengths of 64 tokens up to
    max_length 1024, each for the first block and the others). With dynamic shapes (accelerate's default
    for regional compilation) the compiled backward died with SIGSEGV in its first CUDA-graph warm-up on an
    H100 (ninth lease, BENCHMARKS.md); static shapes ran with no CUDA-graph skip.
    Experiment knobs (environment, so that params and the resume hash stay as they are):
    SQLTRADEOFF_GRAPHS_DYNAMIC=1 compiles with dynamic shapes again (reproduces the crash);
    SQLTRADEOFF_GRAPHS_TREES=0 uses inductor's plain cudagraphify instead of CUDA graph trees."""
    import torch._dynamo
    import torch._inductor.config

    plugin.dynamic = os.environ.get("SQLTRADEOFF_GRAPHS_DYNAMIC") == "1"
    if not plugin.dynamic:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)
    if os.environ.get("SQLTRADEOFF_GRAPHS_TREES") == "0":
        torch._inductor.config.triton.cudagraph_trees = False


def _mark_graph_steps():
    """A callback that starts each training step as a new iteration of the CUDA graph trees: the
    outputs of the previous step's graphs (its activations, consumed by then) may be overwritten."""
    import torch
    from transformers import TrainerCallback

    class MarkGraphSteps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            torch.compiler.cudagraph_mark_step_begin()

    return MarkGraphSteps()


def cudagraph_skips() -> int:
    """How many compiled graphs inductor ran without CUDA graphs in this process (`TORCH_LOGS=cudagraphs`
    says why: a CPU tensor, a mutated input, a dynamic shape it could not record, ...)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def _add_lora(model, cfg: dict[str, Any], settings):
    """Attention implementation, QLoRA up-cast, then the LoRA adapter on `model` (a base model)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from .attention import set_attention

    if cfg["attention"] != model.config._attn_implementation:
        set_attention(model, cfg["attention"])
    if settings.load_in_4bit and cfg["fp32_upcast"]:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg["gradient_checkpointing"])
    lora = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
                      target_modules=cfg["target_modules"], bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(f"params: train.target_modules {cfg['target_modules']} do not fit this model: {exc}") from None
    if cfg["gradient_checkpointing"]:
        model.enable_input_require_grads()
    return model


@contextmanager
def compact_lm_head(enabled: bool = True):
    """Within the block, TRL's fused LM head (SFTTrainer's loss) scores only the positions that have a
    label on the CPU too, as it does on CUDA.

    TRL (`trl.trainer.utils.add_fused_lm_head`) projects through the LM head only the positions whose
    next-token label is not -100 on Triton devices (CUDA, XPU), and every position elsewhere: on
    devices that compile, a changing number of positions would recompile every batch. An eager CPU
    step has no such cost, and scoring every position is most of the LM head's work: a Spider
    example is about 400 tokens of which about 40 (the SQL and the end of turn) carry a label, against
    a 151,936-row head for the 0.5B model. The loss, its gradient and the logged metrics are those of
    the labelled positions either way (the other positions are masked out); only the float summation
    order of the projection changes. TRL decides through its module's `_use_triton(device)`; the block
    answers True for a CPU tensor there (the chunked kernel keeps its own copy of the function, so it
    still runs its torch code on the CPU). A TRL without that hook is left as it is."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if not enabled or original is None:
        yield False
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield True
    finally:
        trl_utils._use_triton = original


def _run_trainer(trainer, resume_from: Path | None, ckpt_dir: Path, on_cpu: bool, compact: bool = False):
    """`trainer.train()`, stopped within seconds by SIGINT/SIGTERM (interrupt.py): then a
    `TrainingInterrupted` carrying the last step and the newest complete checkpoint is raised.
    `compact`: TRL's LM head scores the labelled positions only on the CPU too (`compact_lm_head`)."""
    from .interrupt import TrainingInterrupted, interruptible

    with interruptible(trainer.model, hooks=on_cpu) as stop, compact_lm_head(compact):
        trainer.add_callback(stop.callback)
        try:
            result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            if stop.signum is not None:   # came after the last forward/backward: the run is complete
                print(f"warning: {signal.Signals(stop.signum).name} came after the last training step; "
                      f"the finished run's outputs are written", file=sys.stderr)
            return result
        except TrainingInterrupted as exc:
            for cb in trainer.callback_handler.callbacks:   # end the progress bar's line (transformers' ProgressCallback)
                bar = getattr(cb, "training_bar", None)
                if bar is not None:
                    bar.close()
                    cb.training_bar = None
            last = latest_checkpoint(ckpt_dir)
            raise TrainingInterrupted(exc.signum, trainer.state.global_step, str(last) if last else None) from None
        finally:
            trainer.remove_callback(stop.callback)


def train(cfg: TrainConfig | dict[str, Any], model_cfg, data_path: str | os.PathLike, out_dir: str | os.PathLike,
          metrics_dir: str | os.PathLike, callbacks: list | None = None,
          trainer_hook: Callable | None = None, *, model=None, tokenizer=None, live=None,
          cpu_compact_lm_head: bool = True) -> dict[str, Any]:
    """Train one LoRA adapter; write `<out>/adapter` (+ training_info.json) and `<metrics_dir>/metrics.json`.

    Returns the training info dict. `callbacks`: extra `transformers.TrainerCallback`s;
    `trainer_hook(trainer)`: called before training (tests inspect the prepared dataset).
    `model`, `tokenizer`: an already-loaded base model (as `modeling.load_model(model_cfg,
    for_training=True)` returns it, e.g. random weights for a benchmark) and its tokenizer, used
    instead of loading `model_cfg` (which still names the model in the config hash and the info).
    `live`: a DVCLive `Live` (or an object with its `step`, `log_metric`, `make_summary`, `end`) to
    log to instead of opening one in `metrics_dir`; `False`: no per-step logging.
    SIGINT/SIGTERM stop training within seconds with `interrupt.TrainingInterrupted` (a
    KeyboardInterrupt); the complete checkpoints are kept for a resume.
    On the CPU (fp32): the LM head scores the labelled positions only (`compact_lm_head`; with
    `cpu_compact_lm_head=False`, and under `torch_compile`, every position, as TRL does), and with
    `cpu_linear: onednn` the frozen base layers run through oneDNN with packed weights (onednn.py;
    the LoRA matrices stay torch's).
    """
    cfg = validate_config(cfg)        # a dict: the config hash and training_info.json record it
    model_cfg = as_mapping(model_cfg)
    data_path, out_dir, metrics_dir = Path(data_path), Path(out_dir), Path(metrics_dir)
    rows = read_jsonl(data_path, required=("prompt", "completion"))
    if not rows:
        raise UserError(f"{data_path}: no training examples")
    if (model is None) != (tokenizer is None):
        raise ValueError("train(): pass both `model` and `tokenizer`, or neither")
    ckpt_dir = out_dir / "checkpoints"
    settings, args = _settings(cfg, model_cfg, ckpt_dir)

    from transformers import set_seed

    from .modeling import check_target_modules, load_model

    set_seed(cfg["seed"])
    if model is None:
        check_target_modules(model_cfg, cfg["target_modules"])     # before the weights load
        model, tokenizer = load_model(model_cfg, for_training=True)
    examples, data_stats = _examples(rows, tokenizer, cfg["max_length"], data_path)
    model = _add_lora(model, cfg, settings)
    on_cpu = settings.device == "cpu"
    if on_cpu and cfg["cpu_linear"] == "onednn":
        from .onednn import pack_linears

        pack_linears(model)      # fp32 CPU layers; LoRA's trainable A and B keep torch's linear
    digest = config_hash(cfg, model_cfg, sha256_file(data_path))
    # data parallel (accelerate launch): rank 0 prepares the checkpoint directory and logs to DVCLive;
    # the other ranks wait for it, then resume from the same checkpoint
    main_process = args.process_index == 0
    with args.main_process_first(local=False, desc="checkpoint preparation"):
        resume_from = (_prepare_checkpoints(ckpt_dir, digest, int(cfg["max_steps"])) if main_process
                       else latest_checkpoint(ckpt_dir))
    start_step = int(resume_from.name.split("-")[1]) if resume_from else 0
    live_callbacks = []
    if main_process and live is not False:
        if live is None:
            live = _open_live(metrics_dir, resume_step=start_step if resume_from else None)
        live_callbacks.append(_live_callback(live))

    from datasets import Dataset
    from trl import SFTTrainer

    guard = _finite_guard()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer,
                         callbacks=[guard, *live_callbacks, *(callbacks or [])])
    compile_settings(trainer, cfg["torch_compile"])
    if cfg["torch_compile"] == "regional_graphs" and settings.device != "cuda":
        print(f"note: train.torch_compile 'regional_graphs' records CUDA graphs on CUDA only; on {settings.device} "
              f"it compiles as 'regional'", file=sys.stderr)
    if trainer_hook is not None:
        trainer_hook(trainer)
    if resume_from is not None:
        print(f"resuming from {resume_from}", file=sys.stderr)
    t0 = time.time()
    result = _run_trainer(trainer, resume_from, ckpt_dir, on_cpu=on_cpu,
                          compact=on_cpu and cpu_compact_lm_head and cfg["torch_compile"] is False)
    wall = time.time() - t0
    if guard.bad is not None:
        step, key, value = guard.bad
        last = latest_checkpoint(ckpt_dir)
        raise UserError(f"train: the {key.replace('_', ' ')} was {value} at step {step}: the run diverged, so no adapter "
                        f"is written ({f'the checkpoint {last.name} is kept' if last else 'no checkpoint was kept'}); "
                        f"lower train.learning_rate or change the precision/attention settings")
    info = _run_info(trainer, result, wall, cfg, model_cfg, settings, digest, resume_from, start_step, data_stats)
    if cfg["torch_compile"] == "regional_graphs" and settings.device == "cuda":
        info["cudagraph_skips"] = skips = cudagraph_skips()
        if skips:
            print(f"warning: train.torch_compile 'regional_graphs': {skips} compiled graphs ran without CUDA graphs "
                  f"(TORCH_LOGS=cudagraphs says why)", file=sys.stderr)
    if trainer.accelerator.is_main_process:   # data parallel (accelerate launch): rank 0 alone writes outputs
        _write_outputs(trainer, info, out_dir, ckpt_dir, metrics_dir, live_summary=bool(live_callbacks))
    return info


def _finite_guard():
    """A callback that stops training at the first logged step (every step is logged) whose gradient norm or
    loss is not finite: the run has diverged (a NaN gradient turns every LoRA weight into NaN at the
    optimizer step, and transformers' `logging_nan_inf_filter` logs the later NaN losses as finite values).
    That step saves no checkpoint, so the kept ones are from before it; `train` then raises a `UserError`."""
    from transformers import TrainerCallback

    class FiniteGuard(TrainerCallback):
        bad = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("grad_norm", "loss"):
                try:
                    value = float((logs or {}).get(key))
                except (TypeError, ValueError):
                    continue
                if self.bad is None and not math.isfinite(value):
                    self.bad = (state.global_step, key, value)
                    control.should_training_stop = True
                    control.should_save = False       # _maybe_log_save_evaluate saves after logging
            return control

    return FiniteGuard()


def _settings(cfg: dict[str, Any], model_cfg: dict, ckpt_dir: Path):
    """(device settings, `SFTConfig`), every setting checked before anything slow or destructive."""
    from trl import SFTConfig

    from .attention import TORCH_VARLEN, register_torch_varlen
    from .modeling import device_settings, require_liger

    if cfg["attention"] == TORCH_VARLEN:   # unavailable here (no CUDA, old PyTorch): say so before loading
        register_torch_varlen()
    settings = device_settings(bool(model_cfg.get("load_in_4bit", False)))
    check_compile(cfg["torch_compile"], cfg["use_liger_kernel"])
    if cfg["use_liger_kernel"]:
        require_liger("train.use_liger_kernel", settings.device == "cuda")
    try:
        args = SFTConfig(**sft_config_kwargs(cfg, settings, ckpt_dir))
    except ValueError as exc:   # unknown scheduler / optimizer name, ...
        raise UserError(f"params: invalid training setting: {exc}") from None
    return settings, args


def _examples(rows: list[dict], tokenizer, max_length: int, data_path: Path) -> tuple[list[dict], dict]:
    """`tokenize_examples`, refusing a file with no usable example and warning about dropped ones."""
    examples, data_stats = tokenize_examples(rows, tokenizer, max_length)
    if not examples:
        raise UserError(f"{data_path}: all {data_stats['examples_total']} examples are longer than "
                        f"train.max_length={max_length} tokens (or have an empty completion); "
                        f"raise train.max_length")
    if data_stats["examples_dropped_too_long"]:
        print(f"dropped {data_stats['examples_dropped_too_long']} of {data_stats['examples_total']} examples "
              f"longer than max_length={max_length} tokens", file=sys.stderr)
    return examples, data_stats


def _run_info(trainer, result, wall: float, cfg, model_cfg, settings, digest, resume_from, start_step,
              data_stats) -> dict[str, Any]:
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    tokens_seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    tokens_before = 0
    if resume_from:
        prev = json.loads((resume_from / "trainer_state.json").read_text())
        tokens_before = int(prev.get("num_input_tokens_seen", 0) or 0)
    steps_this_run = state.global_step - start_step
    return {
        "run_config": cfg,
        "config_hash": digest,
        "model": {k: portable_path(model_cfg.get(k)) for k in ("path", "revision", "load_in_4bit")},
        "device": settings.device,
        "precision": "bf16" if settings.bf16 else "fp32",
        "quantization": "nf4" if settings.load_in_4bit else None,
        "steps": state.global_step,
        "epochs_completed": round(float(state.epoch or 0), 4),
        "chosen_checkpoint": f"final (step {state.global_step})",
        "resumed_from": resume_from.name if resume_from else None,
        **data_stats,
        "final_loss": losses[-1] if losses else None,
        "train_loss_mean": float(result.training_loss) if result.training_loss is not None else None,
        "wall_time_s": round(wall, 2),
        "tokens_seen": tokens_seen,
        "tokens_per_s": round((tokens_seen - tokens_before) / wall, 2) if wall > 0 else None,
        "steps_this_run": steps_this_run,
        "seconds_per_step": round(wall / steps_this_run, 3) if steps_this_run > 0 else None,
    }


def _write_outputs(trainer, info: dict, out_dir: Path, ckpt_dir: Path, metrics_dir: Path, *,
                   live_summary: bool) -> None:
    adapter_dir = out_dir / "adapter"
    # no absolute path of the checkout in the adapter (its config and peft's model card)
    for peft_cfg in getattr(trainer.model, "peft_config", {}).values():
        peft_cfg.base_model_name_or_path = portable_path(peft_cfg.base_model_name_or_path)
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else None
    if base is not None and getattr(base, "name_or_path", None):
        base.name_or_path = portable_path(base.name_or_path)
        base.config._name_or_path = portable_path(base.config._name_or_path)
    with atomic_dir(adapter_dir) as tmp:
        trainer.model.save_pretrained(str(tmp))
        write_json(tmp / "training_info.json", info)
    # checkpoints exist to resume an interrupted run; a finished run starts afresh next time
    shutil.rmtree(ckpt_dir, ignore_errors=True)

    summary = {}
    metrics_file = metrics_dir / "metrics.json"
    if live_summary and metrics_file.is_file():   # this run's DVCLive summary (latest logged values)
        try:
            summary = json.loads(metrics_file.read_text())
        except ValueError:
            summary = {}
    summary.update({k: info[k] for k in ("final_loss", "train_loss_mean", "steps", "epochs_completed",
                                          "examples_used", "examples_dropped_too_long",
                                          "examples_dropped_empty_completion", "wall_time_s",
                                          "tokens_seen", "tokens_per_s", "seconds_per_step", "resumed_from")})
    if "cudagraph_skips" in info:      # train.torch_compile: regional_graphs on CUDA
        summary["cudagraph_skips"] = info["cudagraph_skips"]
    write_json(metrics_file, summary)
