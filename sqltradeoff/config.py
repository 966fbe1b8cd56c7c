"""The typed configuration: one frozen dataclass per params.yaml section, built and checked once.

`params.load_params` reads the YAML and calls `build_config`, which checks every value of every
section present (types, ranges, choices, unknown keys with the close known key suggested) and
merges each run's overrides (`runs.<run>`) over `train`. A bad value is one `UserError` line:
`params: <section>.<key> must be <what is allowed>, got <value>`. Stages then read typed values
(`cfg.predict.batch_size`, `cfg.run("run1").learning_rate`); library functions written for a
mapping get `as_mapping(section)` (the section as written, checked).

Numbers: a bool is never a number (`lora_r: true` is refused); floats must be finite; a numeric
string is read as the number it spells (PyYAML reads `1e-4` -- no dot -- as the string '1e-4').
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from .errors import UserError

CI_METHODS = ("percentile", "bca", "basic", "wilson")
SCHEMA_MODES = ("create_table", "none")
ATTENTION = ("sdpa", "eager", "torch_varlen", "flash_attention_2", "flash_attention_3", "flex_attention")
MMLU_SCORING = ("batched", "reference")
PREDICT_BACKENDS = ("reference", "prefix", "static", "graphs", "continuous")    # sqltradeoff/generation.py
CPU_LINEAR = ("onednn", "aten")                                      # sqltradeoff/onednn.py
DEFAULT_MMLU_SUBJECTS = ("high_school_computer_science", "philosophy", "high_school_macroeconomics")
REQUIRED = object()      # a key without a default
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


class _Bad(Exception):
    """A value outside what a key allows (`allowed` describes it)."""

    def __init__(self, allowed: str):
        super().__init__(allowed)
        self.allowed = allowed


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad_value(where: str, allowed: str, value: Any) -> UserError:
    return UserError(f"params: {where} must be {allowed}, got {_shown(value)}")


# ---------------------------------------------------------------- value checks (value -> checked value)

def _number(value: Any, allowed: str) -> int | float:
    if isinstance(value, str):        # `1e-4` (no dot) is a string to PyYAML
        try:
            value = float(value.strip())
        except ValueError:
            raise _Bad(allowed) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(allowed)
    return value


def number(low: float | None = None, high: float | None = None, *, low_open: bool = True,
           high_open: bool = True) -> Callable:
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    allowed = "a finite number" + (f" {lo}" if lo else "") + (" and" if lo and hi else "") + (f" {hi}" if hi else "")

    def check(value):
        v = _number(value, allowed)
        if low is not None and (v <= low if low_open else v < low):
            raise _Bad(allowed)
        if high is not None and (v >= high if high_open else v > high):
            raise _Bad(allowed)
        return v
    return check


def integer(minimum: int | None = None, *, also: tuple = (), allowed: str | None = None) -> Callable:
    allowed = allowed or ("an integer" if minimum is None else
                          "a positive integer" if minimum == 1 else f"an integer >= {minimum}")

    def check(value):
        v = value
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(allowed)
        if v in also:
            return v
        if minimum is not None and v < minimum:
            raise _Bad(allowed)
        return v
    return check


def boolean(value):
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def choice(*options: str, lower: bool = False) -> Callable:
    allowed = "one of " + ", ".join(options)

    def check(value):
        v = value.lower() if lower and isinstance(value, str) else value
        if not isinstance(v, str) or v not in options:
            raise _Bad(allowed)
        return value
    return check


def a_compile_level(value):
    if isinstance(value, bool) or value not in (0, 1, 2, 3):
        raise _Bad("0, 1, 2 or 3")
    return value


TORCH_COMPILE = ("regional", "regional_graphs")


def a_torch_compile(value):
    if isinstance(value, bool) or value in TORCH_COMPILE:
        return value
    raise _Bad("true, false, regional or regional_graphs")


def auto_or_boolean(value):
    if value == "auto" or isinstance(value, bool):
        return value
    raise _Bad("auto, true or false")


def nonempty(value):
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a non-empty string")
    return value


def a_path(value):
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a path or name (a string)")
    return value


def optional(check: Callable) -> Callable:
    def opt(value):
        if value is None:
            return None
        try:
            return check(value)
        except _Bad as exc:
            raise _Bad(exc.allowed + " or null") from None
    return opt


def sha256_hex(value):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise _Bad("a sha256 (64 hex digits) or null")
    return value


def size(value):
    """A sample size: a positive int (30, 30.0, "12") or `all`/null (None)."""
    allowed = "a positive integer or `all`"
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    # bools are ints to Python and 1.9 would truncate to 1: both are refused, not read as a size
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise _Bad(allowed)
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _Bad(allowed) from None
    if n <= 0:
        raise _Bad(allowed)
    return n


def subject_list(value):
    allowed = "`all` or a non-empty list of subject names"
    if isinstance(value, str) and value.strip().lower() == "all":
        return value
    if isinstance(value, list) and value and all(isinstance(x, str) and x.strip() for x in value):
        return tuple(value)
    raise _Bad(allowed)


def module_names(value):
    """`all-linear` or a non-empty list of module names (`q_proj`, `model.layers.0.mlp.up_proj`);
    whether they exist in the model is checked when the adapter is added."""
    allowed = "`all-linear` or a non-empty list of module names (e.g. [q_proj, v_proj])"
    if value == "all-linear":
        return value
    if not isinstance(value, list) or not value:
        raise _Bad(allowed)
    for name in value:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
            raise _Bad(allowed)
    return tuple(value)


def cpu_threads(value):
    if isinstance(value, str) and value.strip().lower() == "auto":
        return value
    return integer(1, allowed="`auto` or a positive integer")(value)


def scales(value):
    allowed = "a list of distinct numbers strictly between 0 and 1 (0 is the base model, 1 the run itself)"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Bad(allowed)
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1 \
                or float(v) in out:
            raise _Bad(allowed)
        out.append(float(v))
    return tuple(sorted(out))


# ---------------------------------------------------------------- sections

def _spec(check: Callable, default: Any = REQUIRED) -> Any:
    return field(default=None, metadata={"check": check, "default": default})


@dataclass(frozen=True, kw_only=True)
class Section:
    """Base of the section dataclasses; `written` is the section as params.yaml has it (checked,
    paths resolved), for the library functions that take a mapping and for manifests."""
    written: Mapping = field(default_factory=dict, repr=False, compare=False)
    NAME = ""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if "check" in f.metadata]

    @classmethod
    def check_value(cls, key: str, value: Any, where: str | None = None) -> Any:
        spec = next(f for f in fields(cls) if f.name == key)
        try:
            return spec.metadata["check"](value)
        except _Bad as exc:
            raise bad_value(where or f"{cls.NAME}.{key}", exc.allowed, value) from None

    @classmethod
    def check_keys(cls, raw: Mapping, where: str) -> None:
        known = cls.keys()
        for key in raw:
            if key not in known:
                raise UserError(f"params: {where}.{key} is not a known key{_did_you_mean(key, known)}; "
                                f"known keys of `{cls.NAME}`: {', '.join(known)}")

    @classmethod
    def build(cls, raw: Any, where: str | None = None):
        where = where or cls.NAME
        if not isinstance(raw, Mapping):
            raise UserError(f"params: `{where}` must be a mapping, got {_shown(raw)}")
        cls.check_keys(raw, where)
        values, missing = {}, []
        for f in fields(cls):
            if "check" not in f.metadata:
                continue
            if f.name in raw:
                values[f.name] = cls.check_value(f.name, raw[f.name], f"{where}.{f.name}")
            elif f.metadata["default"] is REQUIRED:
                missing.append(f.name)
            else:
                values[f.name] = f.metadata["default"]
        if missing:
            raise UserError(f"params: {where} is missing key(s) {', '.join(missing)}")
        obj = cls(written=dict(raw), **values)
        obj.check_together(where)
        return obj

    def check_together(self, where: str) -> None:
        """Checks across keys (after each key's own check)."""

    def as_dict(self) -> dict[str, Any]:
        """The checked values (defaults filled in), in field order; tuples as lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in
                ((k, getattr(self, k)) for k in self.keys())}


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6) \
        or [k for k in known if k.lower() == str(key).lower()]
    return f" (did you mean `{close[0]}`?)" if close else ""


@dataclass(frozen=True, kw_only=True)
class SpiderSourceConfig(Section):
    NAME = "data.spider"
    hub_id: str | None = _spec(optional(nonempty), None)
    hub_revision: str | None = _spec(optional(nonempty), None)
    archive_url: str | None = _spec(optional(nonempty), None)
    archive_sha256: str | None = _spec(optional(sha256_hex), None)


@dataclass(frozen=True, kw_only=True)
class MmluSourceConfig(SpiderSourceConfig):
    NAME = "data.mmlu"
    subjects: Any = _spec(optional(subject_list), None)


@dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    NAME = "data"
    source: str | None = _spec(optional(choice("mirror", "hub")), None)
    mirror_dir: str | None = _spec(optional(a_path), None)
    spider: SpiderSourceConfig | None = _spec(lambda v: SpiderSourceConfig.build(v) if v is not None else None, None)
    mmlu: MmluSourceConfig | None = _spec(lambda v: MmluSourceConfig.build(v) if v is not None else None, None)


@dataclass(frozen=True, kw_only=True)
class SampleConfig(Section):
    NAME = "sample"
    seed: int | None = _spec(optional(integer()), None)
    spider_dev_n: int | None = _spec(size, 100)          # None: every question
    spider_train_n: int | None = _spec(size, None)
    mmlu_per_subject: int | None = _spec(size, 50)
    mmlu_subjects: Any = _spec(subject_list, DEFAULT_MMLU_SUBJECTS)   # `all` or a tuple of names


@dataclass(frozen=True, kw_only=True)
class PromptConfig(Section):
    NAME = "prompt"
    schema: str = _spec(lambda v: "none" if v is None else choice(*SCHEMA_MODES)(v), "create_table")
    sample_rows: int = _spec(integer(0, allowed="a non-negative integer"), 0)
    few_shot: int = _spec(integer(0, allowed="a non-negative integer"), 3)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Section):
    NAME = "model"
    path: str | None = _spec(optional(a_path), None)
    revision: str | None = _spec(optional(nonempty), None)
    load_in_4bit: bool = _spec(boolean, False)
    cache_dir: str | None = _spec(optional(a_path), None)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Section):
    """One run's training settings (`train` updated with `runs.<run>`). Field order is the order of
    `training_info.json`'s `run_config` (the optional keys first, as before)."""
    NAME = "train"
    padding_free: bool = _spec(boolean, False)
    attention: str = _spec(choice(*ATTENTION), "sdpa")
    fp32_upcast: bool = _spec(boolean, True)
    use_liger_kernel: bool = _spec(boolean, False)
    torch_compile: bool | str = _spec(a_torch_compile, False)   # true: the whole model; regional: each block
    pad_to_multiple_of: int | None = _spec(optional(integer(1)), None)   # batch lengths rounded up (TRL's collator)
    cpu_linear: str = _spec(choice(*CPU_LINEAR), "aten")   # CPU fp32: frozen base layers through oneDNN (onednn.py)
    epochs: int | float = _spec(number(0))
    max_steps: int = _spec(integer(1, also=(-1,), allowed="-1 (train for `epochs`) or a positive integer"))
    max_length: int = _spec(integer(1))
    batch_size: int = _spec(integer(1))
    grad_accum: int = _spec(integer(1))
    learning_rate: float = _spec(number(0))
    lr_scheduler: str = _spec(nonempty)
    warmup_ratio: float = _spec(number(0, 1, low_open=False))
    lora_r: int = _spec(integer(1))
    lora_alpha: int | float = _spec(number(0))
    lora_dropout: float = _spec(number(0, 1, low_open=False))
    target_modules: Any = _spec(module_names)
    optim_cuda: str = _spec(nonempty)
    optim_cpu: str = _spec(nonempty)
    gradient_checkpointing: bool = _spec(boolean)
    save_steps: int = _spec(integer(1))
    save_total_limit: int = _spec(integer(1))
    seed: int = _spec(integer())

    def check_together(self, where: str) -> None:
        if self.attention == "torch_varlen" and not self.padding_free and self.batch_size > 1:
            raise UserError(f"params: {where}.attention 'torch_varlen' needs train.padding_free: true when "
                            f"train.batch_size > 1 (it takes no padded batches)")
        if self.torch_compile == "regional_graphs" and (self.padding_free or self.pad_to_multiple_of is None):
            raise UserError(f"params: {where}.torch_compile 'regional_graphs' records CUDA graphs per batch shape: "
                            f"it needs train.padding_free: false and train.pad_to_multiple_of set (e.g. 64)")
        if self.pad_to_multiple_of is not None and self.attention == "sdpa":
            # on an H100, bf16, real Qwen2.5-Coder-0.5B weights: NaN gradients from the 4th step on, with or without
            # compilation; eager attention, or sdpa without the extra padding, trained normally (BENCHMARKS.md)
            raise UserError(f"params: {where}.pad_to_multiple_of with train.attention 'sdpa' gave NaN gradients on a "
                            f"GPU (bf16): set train.attention: eager, or pad_to_multiple_of: null")


@dataclass(frozen=True, kw_only=True)
class PredictConfig(Section):
    NAME = "predict"
    batch_size: int = _spec(integer(1))
    max_new_tokens: int = _spec(integer(1))
    backend: str = _spec(choice(*PREDICT_BACKENDS), "reference")
    cuda_graphs: Any = _spec(auto_or_boolean, "auto")      # continuous: use_cuda_graph (auto: transformers decides)
    compile_level: int = _spec(a_compile_level, 0)   # continuous: default_compile_level
    cpu_linear: str = _spec(choice(*CPU_LINEAR), "aten")   # CPU fp32: onednn (packed weights) | aten (torch's GEMM)
    use_liger_kernel: bool = _spec(boolean, False)         # CUDA: liger-kernel's RMSNorm/RoPE/SwiGLU kernels


@dataclass(frozen=True, kw_only=True)
class MmluConfig(Section):
    NAME = "mmlu"
    method: str = _spec(choice("loglik", "debiased", "pride", "generate"), "loglik")
    also_debiased: bool = _spec(boolean, False)
    pride_fraction: float = _spec(number(0, 1, high_open=False), 0.25)
    k_shot: int = _spec(integer(0), 5)
    batch_size: int = _spec(integer(1), 8)
    scoring: str = _spec(choice(*MMLU_SCORING), "batched")
    batch_tokens: int | None = _spec(optional(integer(1)), None)
    max_new_tokens: int = _spec(integer(1), 8)
    cpu_linear: str = _spec(choice(*CPU_LINEAR), "aten")


@dataclass(frozen=True, kw_only=True)
class ReportConfig(Section):
    NAME = "report"
    bootstrap_samples: int = _spec(integer(100), 10000)
    ci_method: str = _spec(choice(*CI_METHODS, lower=True), "percentile")
    confidence: float = _spec(number(0, 1), 0.95)
    power: float = _spec(number(0, 1), 0.8)
    seed: int = _spec(integer(), 0)
    examples_per_error: int = _spec(integer(0), 2)


SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig, "sample": SampleConfig, "prompt": PromptConfig, "model": ModelConfig,
    "train": TrainConfig, "predict": PredictConfig, "mmlu": MmluConfig, "report": ReportConfig}
TOP_LEVEL = (*SECTIONS, "runs", "adapter_scales", "cpu_threads")


@dataclass(frozen=True)
class Config:
    """Every section of params.yaml, checked. A section absent from the file is None (`need`
    raises the one-line error a stage that reads it gives); `runs` holds each run's complete
    `TrainConfig` when `train` is present, `run_overrides` the overrides as written (checked)."""
    data: DataConfig | None = None
    sample: SampleConfig | None = None
    prompt: PromptConfig | None = None
    model: ModelConfig | None = None
    train: Mapping | None = None            # `train` as written (checked; complete per run in `runs`)
    predict: PredictConfig | None = None
    mmlu: MmluConfig | None = None
    report: ReportConfig | None = None
    runs: Mapping[str, TrainConfig] = field(default_factory=dict)
    run_overrides: Mapping[str, Mapping] = field(default_factory=dict)
    adapter_scales: tuple[float, ...] = ()
    cpu_threads: Any = "auto"                # `auto` or a positive int (env SQLTRADEOFF_CPU_THREADS overrides)

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise UserError(f"params: section `{name}` is missing or not a mapping")
        return value

    def run(self, name: str) -> TrainConfig:
        """The training configuration of run `name`: `train` updated with `runs.<name>`."""
        if name not in self.run_overrides:
            known = ", ".join(sorted(self.run_overrides)) or "none"
            raise UserError(f"params: unknown run `{name}` (runs defined: {known})")
        self.need("train")
        return self.runs[name]


def _check_train_values(raw: Mapping, where: str) -> dict:
    """`train` or a run's overrides, each value checked (completeness is checked per run)."""
    if not isinstance(raw, Mapping):
        raise UserError(f"params: {where} must be a mapping of `train` keys to values "
                        f"(e.g. `learning_rate: 2.0e-4`), got {_shown(raw)}")
    known = TrainConfig.keys()
    for key in raw:
        if key not in known:
            raise UserError(f"params: {where} sets unknown training key `{key}`{_did_you_mean(key, known)}; "
                            f"known keys are those of `train`: {', '.join(known)}")
    return {k: TrainConfig.check_value(k, v, f"{where}.{k}") for k, v in raw.items()}


def build_config(params: Mapping) -> Config:
    """Check every section of `params` (a parsed params.yaml, paths resolved); one UserError line
    for the first problem."""
    for key in params:
        if key not in TOP_LEVEL:
            raise UserError(f"params: `{key}` is not a known section{_did_you_mean(key, TOP_LEVEL)}; "
                            f"known: {', '.join(TOP_LEVEL)}")
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name == "train" or params.get(name) is None:
            continue
        built[name] = cls.build(params[name])
    runs = params.get("runs")
    if runs is not None and not isinstance(runs, Mapping):
        raise UserError(f"params: `runs` must be a mapping, got {_shown(runs)}")
    overrides = {}
    for run, raw in (runs or {}).items():
        if not isinstance(run, str) or not run.strip():
            raise UserError(f"params: run names must be non-empty strings, got {_shown(run)}")
        overrides[run] = _check_train_values(raw or {}, f"runs.{run}")
    train = params.get("train")
    run_cfgs = {}
    if train is not None:
        if not isinstance(train, Mapping):
            raise UserError(f"params: `train` must be a mapping, got {_shown(train)}")
        _check_train_values(train, "train")
        for run, over in overrides.items():
            merged = {**train, **(runs[run] or {})}
            run_cfgs[run] = TrainConfig.build(merged, "train")
    scl = params.get("adapter_scales")
    try:
        built["adapter_scales"] = scales(scl)
    except _Bad as exc:
        raise bad_value("adapter_scales", exc.allowed, scl) from None
    threads = params.get("cpu_threads", "auto")
    try:
        built["cpu_threads"] = cpu_threads(threads)
    except _Bad as exc:
        raise bad_value("cpu_threads", exc.allowed, threads) from None
    return Config(train=dict(train) if train is not None else None, runs=run_cfgs, run_overrides=overrides,
                  **built)


def as_mapping(cfg: Section | Mapping | None) -> dict:
    """A section for the library functions that take a mapping: the section as written (checked)."""
    if cfg is None:
        return {}
    if isinstance(cfg, Section):
        return dict(cfg.written)
    return dict(cfg)
