"""Report inputs: the per-question files and settings every number of the report comes from.

Reads data/scores, data/predictions and data/mmlu (one JSONL file per model), metrics/mmlu and
metrics/spider (the stage metrics, for method and cross-checks) and the DVCLive training logs
(metrics/train/<run>/); the settings come from the typed configuration (`config.ReportConfig`).
Everything is read and checked before anything is written: a missing or malformed input raises
`UserError` naming the file and the stage that produces it.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..answers import LETTERS
from ..errors import UserError
from ..io import iter_jsonl, read_json
from ..params import config_of

SPIDER_BASES = ("base_zeroshot", "base_fewshot")
REFERENCE = "base_zeroshot"          # what every run is compared with on Spider
MMLU_BASE = "base"
HARDNESS_ORDER = ("easy", "medium", "hard", "extra")
ERROR_ORDER = ("syntax_error", "unknown_table", "unknown_column", "wrong_result", "empty_result",
               "timeout", "forbidden", "other_error")
CHANCE = 0.25
ALPHA = 0.05
DEBIASED = "debiased"   # the MMLU method that cancels a fixed answer-letter preference


@dataclass
class Paths:
    scores: Path = Path("data/scores")
    predictions: Path = Path("data/predictions")
    mmlu_rows: Path = Path("data/mmlu")
    mmlu_metrics: Path = Path("metrics/mmlu")
    spider_metrics: Path = Path("metrics/spider")
    train: Path = Path("metrics/train")


@dataclass
class Settings:
    bootstrap_samples: int
    confidence: float
    seed: int
    examples_per_error: int
    ci_method: str = "percentile"
    power: float = 0.8              # for the minimum detectable difference of each comparison

    @property
    def cl(self) -> str:
        return f"{100 * self.confidence:g}%"


@dataclass
class Inputs:
    settings: Settings
    runs: dict[str, dict]                      # run -> its overrides of `train`
    scores: dict[str, dict[str, dict]]         # model -> id -> score row
    predictions: dict[str, dict[str, dict]]    # model -> id -> prediction row
    spider_meta: dict[str, dict | None]
    mmlu: dict[str, dict[str, dict]]           # model -> id -> mmlu row
    mmlu_meta: dict[str, dict]
    train: dict[str, dict]                     # run -> {"steps": [...], "loss": [...], "source": str}
    warnings: list[str] = field(default_factory=list)
    mmlu_params: dict = field(default_factory=dict)   # params.yaml `mmlu` (cross-check of the method)
    scaled: Any = None                                 # frontier.Scaled: the adapter-scale points

    @property
    def spider_models(self) -> list[str]:
        return [*SPIDER_BASES, *self.runs]

    @property
    def mmlu_models(self) -> list[str]:
        return [MMLU_BASE, *self.runs]


def _stage(kind: str, name: str) -> str:
    """The dvc.yaml stage that writes a file of `kind` for model `name`."""
    if "@" in name:       # an adapter-scale point <run>@<scale> (sqltradeoff.frontier)
        run, tag = name.split("@", 1)
        prefix = {"scores": "score", "predictions": "predict"}.get(kind, kind)
        return f"{prefix}_scaled@{run}-{tag}"
    if kind == "scores":
        return "score_base" if name in SPIDER_BASES else f"score@{name}"
    if kind == "predictions":
        return "predict_base" if name in SPIDER_BASES else f"predict@{name}"
    if kind == "mmlu":
        return "mmlu_base" if name == MMLU_BASE else f"mmlu@{name}"
    return f"train@{name}"


def _require(path: Path, kind: str, name: str) -> Path:
    if not path.is_file():
        stage = _stage(kind, name)
        raise UserError(f"{path}: not found; it is written by stage `{stage}` "
                        f"(run `dvc repro {stage}` first)")
    return path


def _bit(value: Any, path: Path, lineno: int, key: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise UserError(f"{path}:{lineno}: `{key}` must be 0 or 1, got {value!r}")


def _read_rows(path: Path, required: tuple[str, ...], bits: tuple[str, ...]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for lineno, row in enumerate(iter_jsonl(path, required), 1):
        rid = row["id"]
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
            raise UserError(f"{path}: row {lineno}: `id` must be a non-empty string, got {rid!r}")
        rid = str(rid)
        if rid in out:
            raise UserError(f"{path}: row {lineno}: duplicate id {rid!r}")
        for key in bits:
            row[key] = _bit(row[key], path, lineno, key)
        out[rid] = row
    if not out:
        raise UserError(f"{path}: no rows")
    return out


def error_kind(error: Any) -> str | None:
    """`"syntax_error: near FROM"` -> `"syntax_error"`; None for no error."""
    if error is None or (isinstance(error, str) and not error.strip()):
        return None
    text = str(error)
    return text.split(":", 1)[0].strip() or "other_error"


def settings_from_params(params: dict) -> Settings:
    """The `report` section of the typed configuration (`config.ReportConfig`, checked in
    `load_params`: bootstrap_samples >= 100, 0 < confidence < 1, ci_method one of config.CI_METHODS,
    0 < power < 1, examples_per_error >= 0, each failure a one-line UserError naming the key)."""
    rep = config_of(params).need("report")
    return Settings(bootstrap_samples=int(rep.bootstrap_samples), confidence=float(rep.confidence),
                    seed=int(rep.seed), examples_per_error=int(rep.examples_per_error),
                    ci_method=str(rep.ci_method).lower(), power=float(rep.power))


def runs_from_params(params: dict) -> dict[str, dict]:
    """params.yaml `runs`, each run's overrides as written (checked in `load_params`): report.md and
    the plot legends show them verbatim (`learning_rate=1e-4`, not the checked 0.0001)."""
    runs = params.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise UserError("params: `runs` is missing or empty; define at least one LoRA run")
    bad = [r for r in runs if r in (*SPIDER_BASES, MMLU_BASE)]
    if bad:
        raise UserError(f"params: run name(s) {', '.join(bad)} clash with the base model names")
    return {str(k): dict(v or {}) for k, v in runs.items()}


def _find_loss_file(run_dir: Path) -> Path | None:
    """The DVCLive training-loss series of a run: plots/metrics/**/loss.{tsv,csv}, preferring train/."""
    cands = [p for p in run_dir.glob("plots/metrics/**/*") if p.suffix in (".tsv", ".csv") and p.is_file()]
    loss = [p for p in cands if p.stem == "loss" and "eval" not in p.parts]
    loss.sort(key=lambda p: (0 if p.parent.name == "train" else 1, len(p.parts), str(p)))
    return loss[0] if loss else None


def read_train_loss(run_dir: Path, warnings: list[str]) -> dict | None:
    if not run_dir.is_dir():
        warnings.append(f"{run_dir}: no training log directory (stage `train@{run_dir.name}`); "
                        f"training loss not shown for this run")
        return None
    path = _find_loss_file(run_dir)
    if path is None:
        warnings.append(f"{run_dir}: no DVCLive loss series (plots/metrics/**/loss.tsv) found; "
                        f"training loss not shown for this run")
        return None
    steps, losses = [], []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        cols = reader.fieldnames or []
        ycol = "loss" if "loss" in cols else next((c for c in cols if c not in ("step", "timestamp")), None)
        if "step" not in cols or ycol is None:
            warnings.append(f"{path}: expected columns `step` and `loss`, found {cols}; skipped")
            return None
        for lineno, row in enumerate(reader, 2):
            try:
                s, v = int(float(row["step"])), float(row[ycol])
            except (TypeError, ValueError):
                warnings.append(f"{path}:{lineno}: unreadable row skipped")
                continue
            if math.isfinite(v):
                steps.append(s)
                losses.append(v)
    if not steps:
        warnings.append(f"{path}: no loss values; skipped")
        return None
    return {"steps": steps, "loss": losses, "source": str(path)}


def load_inputs(params: dict, paths: Paths = Paths()) -> Inputs:
    settings = settings_from_params(params)
    runs = runs_from_params(params)
    warnings: list[str] = []
    scores, preds, spider_meta = {}, {}, {}
    for name in [*SPIDER_BASES, *runs]:
        scores[name] = _read_rows(_require(paths.scores / f"{name}.jsonl", "scores", name),
                                  ("id", "exec_match", "error", "exact_match"),
                                  ("exec_match", "exact_match"))
        preds[name] = _read_rows(_require(paths.predictions / f"{name}.jsonl", "predictions", name),
                                 ("id", "question", "gold_sql", "pred_sql"), ())
        missing = sorted(set(scores[name]) - set(preds[name]))
        if missing:
            raise UserError(f"{paths.predictions / (name + '.jsonl')}: {len(missing)} scored question(s) "
                            f"have no prediction (e.g. {', '.join(missing[:3])}); the scores are stale: "
                            f"rerun stage `{_stage('scores', name)}`")
        mpath = paths.spider_metrics / f"{name}.json"
        spider_meta[name] = read_json(mpath) if mpath.is_file() else None
    mmlu, mmlu_meta = {}, {}
    for name in [MMLU_BASE, *runs]:
        rpath = _require(paths.mmlu_rows / f"{name}.jsonl", "mmlu", name)
        mmlu[name] = _read_rows(rpath, ("id", "subject", "answer", "pred", "correct"), ("correct",))
        _check_debiased_fields(mmlu[name], rpath, name)
        meta = read_json(_require(paths.mmlu_metrics / f"{name}.json", "mmlu", name))
        if not isinstance(meta, dict):
            raise UserError(f"{paths.mmlu_metrics / (name + '.json')}: expected a JSON object")
        mmlu_meta[name] = meta
    train = {}
    for run in runs:
        t = read_train_loss(paths.train / run, warnings)
        if t is not None:
            train[run] = t
    # as written, not `config.MmluConfig` with its defaults: the method and shot count are cross-checked
    # against the MMLU files only where params.yaml states them
    mmlu_params = params.get("mmlu") if isinstance(params.get("mmlu"), dict) else {}
    from ..frontier import load_scaled
    return Inputs(settings, runs, scores, preds, spider_meta, mmlu, mmlu_meta, train, warnings, mmlu_params,
                  load_scaled(params, runs, paths))


def _check_debiased_fields(rows: dict[str, dict], path: Path, name: str) -> None:
    """Rows scored with `mmlu.also_debiased` carry `debiased_pred`/`debiased_correct` on every row.

    All or none: a file where only some rows have them is malformed (a truncated or hand-merged
    file), and `debiased_correct` must be 0/1 and agree with `debiased_pred == answer`.
    """
    have = [i for i, r in rows.items() if "debiased_correct" in r]
    if not have:
        return
    if len(have) != len(rows):
        lack = [i for i, r in rows.items() if "debiased_correct" not in r]
        raise UserError(f"{path}: {len(have)} row(s) carry `debiased_correct` but {len(lack)} do not "
                        f"(e.g. {', '.join(lack[:3])}); the file is incomplete: rerun stage `{_stage('mmlu', name)}`")
    for lineno, (i, r) in enumerate(rows.items(), 1):
        r["debiased_correct"] = _bit(r["debiased_correct"], path, lineno, "debiased_correct")
        if "debiased_pred" not in r:
            raise UserError(f"{path}:{lineno}: row {i!r} has `debiased_correct` but no `debiased_pred`")
        if r["debiased_correct"] != int(_letter(r["debiased_pred"]) == _letter(r["answer"]) != "none"):
            raise UserError(f"{path}:{lineno}: row {i!r}: debiased_correct={r['debiased_correct']} disagrees with "
                            f"debiased_pred={r['debiased_pred']!r} and answer={r['answer']!r}")


def _letter(x: Any) -> str:
    return str(x).strip().upper() if x is not None and str(x).strip().upper() in LETTERS else "none"

