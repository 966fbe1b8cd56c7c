"""Read `params.yaml` and answer the questions every stage asks of it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .config import Config, bad_value, build_config, size, _Bad
from .errors import UserError

DEFAULT_PARAMS = "params.yaml"


class Params(dict):
    """params.yaml as parsed (paths resolved), every value checked; `.config` is the typed
    configuration (`config.Config`) the stages read; `.as_written` the resolved path values as the
    file writes them (`{"data.mirror_dir": "../shared/data", ...}`), for what a stage records."""
    config: Config
    as_written: dict[str, str]


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> Params:
    """Read and check the parameters file once: a `Params` mapping whose `.config` is the typed
    `config.Config` (run overrides merged); any bad value is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: parameters file not found (run from the project root or pass --params)")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save the parameters file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    written = _resolve_paths(params, path.resolve().parent)
    out = Params(params)
    out.as_written = written
    out.config = build_config(params)
    return out


def experiment_origin(directory: Path) -> Path | None:
    """The repository a DVC queued experiment was started from, when `directory` is inside one.

    `dvc exp run --queue` / `dvc queue start` run each experiment in a temporary copy of the
    repository under `<repo>/.dvc/tmp/exps/`, without untracked files (mirrors, model caches).
    """
    parts = directory.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return None


def resolve_path(value: str | os.PathLike, base: Path) -> Path:
    """A path from params.yaml: relative paths are relative to the project root (`base`), or,
    inside a queued DVC experiment's temporary workspace, to the repository it came from
    when the path is not in the workspace itself."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return Path(os.path.normpath(p))
    here = base / p
    origin = experiment_origin(base)
    if origin is not None and not here.exists():
        here = origin / p
    return Path(os.path.normpath(here))


def _path_value(value: Any, key: str) -> str:
    """A path-valued param: a non-empty string (YAML may give a number, a list or a mapping)."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"params: {key} must be a path or name (a string), got {value!r}")
    return value


def _resolve_paths(params: dict[str, Any], base: Path) -> dict[str, str]:
    """Resolve the path params in place; returns the values it replaced, as written."""
    written: dict[str, str] = {}
    for name in ("data", "model", "runs"):
        if name in params and params[name] is not None and not isinstance(params[name], dict):
            raise UserError(f"params: `{name}` must be a mapping, got {params[name]!r}")
    data = params.get("data")
    if isinstance(data, dict) and data.get("mirror_dir") is not None:
        _path_value(data["mirror_dir"], "data.mirror_dir")
    model = params.get("model")
    if isinstance(model, dict):
        for key in ("path", "cache_dir"):
            if model.get(key) is not None:
                _path_value(model[key], f"model.{key}")
    if isinstance(data, dict) and data.get("mirror_dir"):
        written["data.mirror_dir"] = data["mirror_dir"]
        data["mirror_dir"] = str(resolve_path(data["mirror_dir"], base))
    model = params.get("model")
    if isinstance(model, dict):
        if model.get("cache_dir"):
            written["model.cache_dir"] = model["cache_dir"]
            model["cache_dir"] = str(resolve_path(model["cache_dir"], base))
        path = model.get("path")
        # A hub id (org/name) stays as it is unless a local path of that name exists.
        if path and (str(path).endswith(".gguf") or resolve_path(path, base).exists()):
            written["model.path"] = path
            model["path"] = str(resolve_path(path, base))
    return written


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise UserError(f"params: section `{name}` is missing or not a mapping")
    return value


def config_of(params: dict[str, Any]) -> Config:
    """The typed configuration of `params` (a `load_params` result, or a plain mapping: checked now)."""
    cfg = getattr(params, "config", None)
    return cfg if isinstance(cfg, Config) else build_config(params)


def run_config(params: dict[str, Any], run: str) -> dict[str, Any]:
    """The training configuration of one run as a dict: `train` updated with `runs.<run>`, checked,
    optional keys filled in (`config.Config.run` gives the `TrainConfig`)."""
    return config_of(params).run(run).as_dict()


def parse_n(value: Any, what: str) -> int | None:
    """A sample size: a positive int, or `all`/null for everything (returned as None)."""
    try:
        return size(value)
    except _Bad as exc:
        raise bad_value(what, exc.allowed, value) from None
