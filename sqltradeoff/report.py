"""The report stage: summary.json (DVC metrics), report.md and plots.

Everything is recomputed from the per-question files (data/scores, data/mmlu), so every number
comes with its uncertainty: bootstrap intervals over questions for accuracies, paired bootstrap
intervals and exact McNemar tests for the difference between a run and the base model on the
same questions. Conclusions are phrased from those numbers only.

MMLU: every model must have been scored with the same method and shot count (else `UserError`);
that method (`mmlu.method`, lm-evaluation-harness `loglik` by default) gives the primary numbers
and the forgetting comparison. Where the rows also carry `debiased_pred`/`debiased_correct`
(`mmlu.also_debiased`), MMLU is analysed a second time under the debiased method (summary
`mmlu_debiased`, runs' `mmlu_debiased_*`), and the report shows each model's predicted answer
letters against the gold ones and the bias figure under both methods.

All inputs are read and checked before anything is written: a missing or malformed input
raises `UserError` (naming the file and the stage that produces it) and leaves the previous
outputs untouched.
"""
from __future__ import annotations

import csv
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable

from . import stats
from .answers import LETTERS
from .errors import UserError
from .io import atomic_write_bytes, atomic_write_text, iter_jsonl, read_json, write_json
from .params import section

SPIDER_BASES = ("base_zeroshot", "base_fewshot")
REFERENCE = "base_zeroshot"          # what every run is compared with on Spider
MMLU_BASE = "base"
HARDNESS_ORDER = ("easy", "medium", "hard", "extra")
ERROR_ORDER = ("syntax_error", "unknown_table", "unknown_column", "wrong_result", "empty_result",
               "timeout", "forbidden", "other_error")
CHANCE = 0.25
ALPHA = 0.05


# --------------------------------------------------------------------------------------------
# inputs

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
    rep = section(params, "report")
    try:
        s = Settings(bootstrap_samples=int(rep.get("bootstrap_samples", 10000)),
                     confidence=float(rep.get("confidence", 0.95)),
                     seed=int(rep.get("seed", 0)),
                     examples_per_error=int(rep.get("examples_per_error", 2)),
                     ci_method=str(rep.get("ci_method", "percentile")).lower(),
                     power=float(rep.get("power", 0.8)))
    except (TypeError, ValueError) as exc:
        raise UserError(f"params: report section has a value of the wrong type ({exc})") from None
    stats._check(s.confidence, s.bootstrap_samples, s.ci_method)
    if s.examples_per_error < 0:
        raise UserError("params: report.examples_per_error must be >= 0")
    if not 0 < s.power < 1:
        raise UserError(f"params: report.power must be between 0 and 1 (exclusive), got {s.power!r}")
    return s


def runs_from_params(params: dict) -> dict[str, dict]:
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
    mmlu_params = params.get("mmlu") if isinstance(params.get("mmlu"), dict) else {}
    from .frontier import load_scaled
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


# --------------------------------------------------------------------------------------------
# analysis

def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


def _rel(new: float, old: float) -> float | None:
    return None if old == 0 else 100.0 * (new - old) / old


def _ci(outcomes: list[int], s: Settings) -> stats.Interval:
    return stats.accuracy_ci(outcomes, confidence=s.confidence, n_resamples=s.bootstrap_samples,
                             seed=s.seed, method=s.ci_method)


def compare(a: dict[str, int], b: dict[str, int], name_a: str, name_b: str, s: Settings, mde: bool = True) -> dict:
    """b versus a on the same question ids: difference in pp with paired CI, exact McNemar and (`mde`)
    the smallest difference the comparison could detect with power `s.power` (`stats.mcnemar_mde`)."""
    ids, xa, xb = stats.pair_by_id(a, b, name_a, name_b)
    d = stats.paired_difference_ci(xa, xb, confidence=s.confidence, n_resamples=s.bootstrap_samples,
                                   seed=s.seed, method=s.ci_method)
    m = stats.mcnemar_exact(xa, xb)
    acc_a, acc_b = sum(xa) / len(ids), sum(xb) / len(ids)
    return {
        "base": acc_a, "new": acc_b,
        "change_pp": 100.0 * (sum(xb) - sum(xa)) / len(ids),
        "change_rel_pct": _rel(acc_b, acc_a),
        "ci_low_pp": 100.0 * d.low, "ci_high_pp": 100.0 * d.high, "ci_method": d.method,
        "mcnemar_p": m.pvalue, "mcnemar_midp": m.pvalue_midp,
        "fixed": m.c, "broken": m.b, "n": len(ids),
        "significant": bool(m.pvalue < ALPHA),
        **(_mde(m, len(ids), s) if mde else {}),
    }


def _mde(m: stats.McNemar, n: int, s: Settings) -> dict:
    p = stats.mcnemar_mde(m.b, m.c, n, confidence=s.confidence, power=s.power)
    return {"mde_pp": None if p.mde is None else 100.0 * p.mde, "mde_one_way": p.one_way,
            "discordant": p.discordant, "mde_power": s.power, "mde_alpha": 1 - s.confidence}


def _ordered(keys: Iterable[str], order: tuple[str, ...]) -> list[str]:
    keys = set(keys)
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def analyse_spider(inp: Inputs) -> dict:
    s = inp.settings
    models: dict[str, dict] = {}
    levels: set[str] = set()
    kinds: set[str] = set()
    for name in inp.spider_models:
        rows = inp.scores[name]
        ex = [r["exec_match"] for r in rows.values()]
        ci = _ci(ex, s)
        by_h: dict[str, list[int]] = {}
        for r in rows.values():
            by_h.setdefault(str(r.get("hardness") or "unknown"), []).append(r["exec_match"])
        levels |= set(by_h)
        errs = Counter()
        for r in rows.values():
            if r["exec_match"] == 1:
                errs["correct"] += 1
            else:
                errs[error_kind(r["error"]) or "unlabelled"] += 1
        kinds |= set(errs) - {"correct"}
        models[name] = {
            "ex": ci.estimate, "ex_ci_low": ci.low, "ex_ci_high": ci.high, "ci_method": ci.method,
            "exact_match": sum(r["exact_match"] for r in rows.values()) / len(rows),
            "n": len(rows), "n_correct": sum(ex),
            "by_hardness": {h: _hardness_cell(v, s) for h, v in by_h.items()},
            "errors": dict(errs),
        }
        meta = inp.spider_meta.get(name)
        if meta is None:
            inp.warnings.append(f"metrics/spider/{name}.json not found: execution accuracy not cross-checked")
        elif isinstance(meta, dict) and isinstance(meta.get("execution_accuracy"), (int, float)):
            if abs(float(meta["execution_accuracy"]) - ci.estimate) > 1e-6 or meta.get("n", len(rows)) != len(rows):
                inp.warnings.append(
                    f"metrics/spider/{name}.json says execution_accuracy={meta['execution_accuracy']} "
                    f"(n={meta.get('n')}) but data/scores/{name}.jsonl gives {ci.estimate:.6f} (n={len(rows)}): "
                    f"one of them is stale; this report uses the per-question scores")
    outcomes = {m: {i: r["exec_match"] for i, r in inp.scores[m].items()} for m in inp.spider_models}
    comps = {m: compare(outcomes[REFERENCE], outcomes[m], f"data/scores/{REFERENCE}.jsonl",
                        f"data/scores/{m}.jsonl", s)
             for m in inp.spider_models if m != REFERENCE}
    return {"models": models, "compare": comps,
            "levels": _ordered(levels, HARDNESS_ORDER), "kinds": _ordered(kinds, ERROR_ORDER + ("unlabelled",))}


def _hardness_cell(v: list[int], s: Settings) -> dict:
    ci = _ci(v, s)
    return {"ex": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": len(v), "n_correct": sum(v)}


def _letter(x: Any) -> str:
    return str(x).strip().upper() if x is not None and str(x).strip().upper() in LETTERS else "none"


DEBIASED = "debiased"


def _bias(pred: Counter, gold: Counter, n: int) -> float:
    """Largest |predicted-letter frequency - gold frequency| over A-D (as in sqltradeoff.mmlu.summarize)."""
    return max(abs(pred.get(x, 0) - gold.get(x, 0)) / n for x in LETTERS)


def _chance(ci: stats.Interval) -> str:
    return ("below chance" if ci.high < CHANCE else
            "consistent with chance" if ci.low <= CHANCE else "above chance")


def _meta_count_agrees(meta: dict, n_correct: int, n: int) -> bool:
    """metrics/mmlu/<name>.json against the rows: n_correct if given, else accuracy (rounded to 4 places there)."""
    if isinstance(meta.get("n_correct"), int) and not isinstance(meta.get("n_correct"), bool):
        return meta["n_correct"] == n_correct and meta.get("n", n) == n
    acc = meta.get("accuracy")
    if not isinstance(acc, (int, float)) or isinstance(acc, bool):
        return True
    return abs(float(acc) - n_correct / n) <= 5e-5 and meta.get("n", n) == n


def _analyse_mmlu_method(inp: Inputs, method: str, k_shot: Any, names: list[str], pred_key: str,
                         correct_key: str) -> dict:
    """Accuracies with CIs, letter distributions and bias per model; run vs base comparisons.

    One method: the outcome of each question is `row[correct_key]`, its answer `row[pred_key]`.
    """
    s = inp.settings
    models: dict[str, dict] = {}
    subjects: set[str] = set()
    for name in names:
        rows = inp.mmlu[name]
        outcomes = [r[correct_key] for r in rows.values()]
        ci = _ci(outcomes, s)
        by_s: dict[str, list[int]] = {}
        for r in rows.values():
            by_s.setdefault(str(r["subject"]), []).append(r[correct_key])
        subjects |= set(by_s)
        pred = Counter(_letter(r[pred_key]) for r in rows.values())
        gold = Counter(_letter(r["answer"]) for r in rows.values())
        top, top_n = max(sorted(pred.items()), key=lambda kv: kv[1])
        models[name] = {
            "accuracy": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "ci_method": ci.method,
            "n": len(rows), "n_correct": sum(outcomes),
            "by_subject": {sub: _subject_cell(v, s) for sub, v in by_s.items()},
            "pred_distribution": {k: pred.get(k, 0) for k in (*LETTERS, "none") if k in LETTERS or pred.get(k)},
            "gold_distribution": {k: gold.get(k, 0) for k in LETTERS},
            "bias": _bias(pred, gold, len(rows)),
            "top_pred_letter": top, "top_pred_share": top_n / len(rows),
            "gold_share_of_top": gold.get(top, 0) / len(rows),
            "chance": _chance(ci),
            "method": method, "k_shot": k_shot,
        }
        meta = inp.mmlu_meta[name]
        if method != meta.get("method"):
            meta = meta.get(DEBIASED) if isinstance(meta.get(DEBIASED), dict) else {}
        if not _meta_count_agrees(meta, sum(outcomes), len(rows)):
            where = "" if meta is inp.mmlu_meta[name] else f" (`{DEBIASED}` part)"
            inp.warnings.append(f"metrics/mmlu/{name}.json{where} says accuracy={meta.get('accuracy')} "
                                f"(n_correct={meta.get('n_correct')}) but data/mmlu/{name}.jsonl gives "
                                f"{ci.estimate:.6f} ({sum(outcomes)}/{len(rows)}) under {method}: one is stale; "
                                f"this report uses the per-question rows")
    correct = {m: {i: r[correct_key] for i, r in inp.mmlu[m].items()} for m in names}
    comps, subj_comps = {}, {}
    for run in names:
        if run == MMLU_BASE:
            continue
        comps[run] = compare(correct[MMLU_BASE], correct[run], f"data/mmlu/{MMLU_BASE}.jsonl",
                             f"data/mmlu/{run}.jsonl", s)
        subj_comps[run] = {}
        for sub in subjects:
            keep = {i for i, r in inp.mmlu[MMLU_BASE].items() if str(r["subject"]) == sub}
            subj_comps[run][sub] = compare({i: correct[MMLU_BASE][i] for i in keep},
                                           {i: correct[run][i] for i in keep},
                                           f"base/{sub}", f"{run}/{sub}", s, mde=False)
    return {"models": models, "compare": comps, "subject_compare": subj_comps,
            "subjects": sorted(subjects), "method": method, "k_shot": k_shot}


def analyse_mmlu(inp: Inputs) -> dict:
    """MMLU under the method every model was scored with (the primary numbers, used for forgetting)
    and, where the rows carry `debiased_correct` (`mmlu.also_debiased`), a second time under the
    debiased method (`result["debiased"]`, None when the base model has no debiased outcomes).

    Models scored with different methods or shot counts cannot be compared: UserError.
    """
    kinds = {name: (inp.mmlu_meta[name].get("method", "unknown"), inp.mmlu_meta[name].get("k_shot"))
             for name in inp.mmlu_models}
    method, k_shot = kinds[MMLU_BASE]
    odd = [name for name, mk in kinds.items() if mk != (method, k_shot)]
    if odd:
        raise UserError(
            "MMLU was scored with different methods across models ("
            + ", ".join(f"{n}: {m}/{k}-shot" for n, (m, k) in kinds.items())
            + f"): a run's change vs base would mix methods. Rerun "
            + ", ".join(f"`dvc repro {_stage('mmlu', n)}`" for n in odd)
            + " with the same params.yaml `mmlu` as the base model")
    want = inp.mmlu_params.get("method")
    if want is not None and want != method:
        inp.warnings.append(f"params.yaml mmlu.method is {want!r} but data/mmlu/ was scored with {method!r}: "
                            f"the MMLU files are stale; this report uses {method!r} (rerun the mmlu stages)")
    want_k = inp.mmlu_params.get("k_shot")
    if want_k is not None and want_k != k_shot:
        inp.warnings.append(f"params.yaml mmlu.k_shot is {want_k!r} but data/mmlu/ was scored {k_shot}-shot: "
                            f"the MMLU files are stale")
    mm = _analyse_mmlu_method(inp, method, k_shot, inp.mmlu_models, "pred", "correct")
    mm["debiased"] = None
    if method == DEBIASED:
        return mm
    has = [n for n in inp.mmlu_models if all("debiased_correct" in r for r in inp.mmlu[n].values())]
    if MMLU_BASE not in has:
        if has:
            inp.warnings.append(f"data/mmlu/{MMLU_BASE}.jsonl has no debiased outcomes (mmlu.also_debiased) but "
                                f"{', '.join(has)} do: no debiased comparison; rerun `dvc repro mmlu_base`")
        return mm
    for n in inp.mmlu_models:
        if n not in has:
            inp.warnings.append(f"data/mmlu/{n}.jsonl has no debiased outcomes (scored without "
                                f"mmlu.also_debiased): {n} is compared under {method} only; rerun "
                                f"`dvc repro {_stage('mmlu', n)}`")
    mm["debiased"] = _analyse_mmlu_method(inp, DEBIASED, k_shot, has, "debiased_pred", "debiased_correct")
    return mm


def _subject_cell(v: list[int], s: Settings) -> dict:
    ci = _ci(v, s)
    return {"accuracy": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": len(v)}


# --------------------------------------------------------------------------------------------
# summary.json

def build_summary(inp: Inputs, sp: dict, mm: dict, fr: dict | None = None) -> dict:
    from . import frontier
    fr = fr if fr is not None else frontier.analyse(inp, sp, mm)
    s = inp.settings
    out: dict[str, Any] = {"settings": {
        "bootstrap_samples": s.bootstrap_samples, "confidence": s.confidence, "seed": s.seed,
        "ci_method": s.ci_method, "alpha": ALPHA, "spider_reference": REFERENCE,
        "power": s.power, "mde_method": "exact McNemar power at the observed discordance",
        "adapter_scales": fr["scales"]}}
    out["spider"] = {}
    for name, m in sp["models"].items():
        out["spider"][name] = {
            "ex": _r(m["ex"]), "ex_ci_low": _r(m["ex_ci_low"]), "ex_ci_high": _r(m["ex_ci_high"]),
            "exact_match": _r(m["exact_match"]), "n": m["n"], "n_correct": m["n_correct"],
            "by_hardness": {h: {"ex": _r(c["ex"]), "n": c["n"]} for h, c in m["by_hardness"].items()},
            "errors": m["errors"],
        }
    deb = mm["debiased"]
    out["settings"]["mmlu_comparison_method"] = mm["method"]
    out["mmlu"] = _mmlu_summary(mm)
    if deb is not None:
        out["mmlu_debiased"] = _mmlu_summary(deb)
    fs = sp["compare"]["base_fewshot"]
    out["fewshot_vs_zeroshot"] = _cmp_flat("ex", fs)
    out["runs"] = {}
    for run in inp.runs:
        e, q = sp["compare"][run], mm["compare"][run]
        flat = {**_cmp_flat("ex", e), **_cmp_flat("mmlu", q)}
        flat["mmlu_by_subject"] = _subject_changes(mm["subject_compare"][run])
        if deb is not None and run in deb["compare"]:
            flat.update(_cmp_flat("mmlu_debiased", deb["compare"][run]))
            flat["mmlu_debiased_by_subject"] = _subject_changes(deb["subject_compare"][run])
        if run in inp.train:
            t = inp.train[run]
            flat["train_final_loss"] = _r(t["loss"][-1])
            flat["train_last_step"] = t["steps"][-1]
        flat["scales"] = frontier.summary_points(fr, run)
        out["runs"][run] = flat
    return out


def _mmlu_summary(mm: dict) -> dict:
    out: dict[str, Any] = {"method": mm["method"], "k_shot": mm["k_shot"], "chance": CHANCE}
    for name, m in mm["models"].items():
        out[name] = {
            "accuracy": _r(m["accuracy"]), "ci_low": _r(m["ci_low"]), "ci_high": _r(m["ci_high"]),
            "n": m["n"], "n_correct": m["n_correct"], "chance": m["chance"],
            "top_pred_letter": m["top_pred_letter"], "top_pred_share": _r(m["top_pred_share"]),
            "pred_distribution": m["pred_distribution"], "gold_distribution": m["gold_distribution"],
            "bias": _r(m["bias"]),
            "by_subject": {sub: {k: _r(v) if k != "n" else v for k, v in c.items()}
                           for sub, c in sorted(m["by_subject"].items())},
        }
    return out


def _subject_changes(comps: dict[str, dict]) -> dict:
    return {sub: {"change_pp": _r(c["change_pp"]), "change_rel_pct": _r(c["change_rel_pct"]),
                  "ci_low_pp": _r(c["ci_low_pp"]), "ci_high_pp": _r(c["ci_high_pp"]),
                  "mcnemar_p": c["mcnemar_p"]}
            for sub, c in sorted(comps.items())}


def _cmp_flat(prefix: str, c: dict) -> dict:
    what = "gain" if prefix == "ex" else "change"
    return {
        f"{prefix}_{what}_pp": _r(c["change_pp"]),
        f"{prefix}_{what}_rel_pct": _r(c["change_rel_pct"]),
        f"{prefix}_{what}_ci_low_pp": _r(c["ci_low_pp"]),
        f"{prefix}_{what}_ci_high_pp": _r(c["ci_high_pp"]),
        f"{prefix}_mcnemar_p": c["mcnemar_p"],
        f"{prefix}_mcnemar_midp": c["mcnemar_midp"],
        f"{prefix}_fixed": c["fixed"], f"{prefix}_broken": c["broken"],
        f"{prefix}_significant": c["significant"],
        **({f"{prefix}_mde_pp": _r(c["mde_pp"]), f"{prefix}_mde_one_way": c["mde_one_way"]} if "mde_pp" in c else {}),
    }


# --------------------------------------------------------------------------------------------
# report.md

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci_pct(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _pp(x: float) -> str:
    return f"{x:+.1f} pp"


def _relf(x: float | None) -> str:
    return "n/a (base 0%)" if x is None else f"{x:+.1f}%"


def _p(p: float) -> str:
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _verdict(c: dict) -> str:
    if c["significant"]:
        return f"significant at 5% (exact McNemar p = {_p(c['mcnemar_p'])})"
    return f"not significant at 5% (exact McNemar p = {_p(c['mcnemar_p'])})"


def _diff_sentence(label: str, c: dict, cl: str, base: str) -> str:
    return (f"{label} {_pct(c['new'])} vs {_pct(c['base'])} ({base}): {_pp(c['change_pp'])} "
            f"({_relf(c['change_rel_pct'])} relative; paired {cl} CI {c['ci_low_pp']:+.1f} to "
            f"{c['ci_high_pp']:+.1f} pp; {c['fixed']} {'question' if c['fixed'] == 1 else 'questions'} gained, "
            f"{c['broken']} lost of {c['n']}): "
            f"{_verdict(c)}{_power_words(c)}.")


MDE_NOTE = ("Detectable: the smallest difference the comparison detects with the stated power (exact McNemar, "
            "at the observed share of questions that changed); * where fewer questions changed than that, "
            "assuming every changed question moves the same way (the least difference detectable at all).")


def _mde_cell(c: dict) -> str:
    if c["mde_pp"] is None:
        return "none"
    return f"±{c['mde_pp']:.1f} pp" + ("*" if c["mde_one_way"] else "")


def _power_words(c: dict) -> str:
    """What the comparison could have detected (`compare(..., mde=True)`); empty without it."""
    if "mde_pp" not in c:
        return ""
    level = f"{100 * c['mde_power']:g}% power at the {100 * c['mde_alpha']:g}% level"
    k = c["fixed"] + c["broken"]
    if c["mde_pp"] is None:
        return f"; {c['n']} questions are too few to detect any difference with {level}"
    if not c["mde_one_way"]:
        return (f"; at its discordance ({k} of {c['n']} questions changed) the sample detects a difference "
                f"of ±{c['mde_pp']:.1f} pp or more with {level}")
    return (f"; only {k} of {c['n']} questions changed, so the sample could detect nothing smaller than "
            f"±{c['mde_pp']:.1f} pp with {level}, and that only if every changed question moved the same way")


def _run_desc(overrides: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "train defaults"


def _chance_words(m: dict, cl: str) -> str:
    """`is consistent with chance (25%)` and what that means, for one model under one method."""
    if m["chance"] == "consistent with chance":
        return (f"is consistent with chance (25%): 25% lies inside its {cl} CI, so this accuracy cannot be "
                f"told apart from guessing")
    return f"is {m['chance']} (25%)"


def _acc_ci(m: dict) -> str:
    return f"{_pct(m['accuracy'])} {_ci_pct(m['ci_low'], m['ci_high'])}"


def conclusions(inp: Inputs, sp: dict, mm: dict) -> list[str]:
    cl = inp.settings.cl
    deb = mm["debiased"]
    mdesc = f"MMLU ({mm['method']}, {mm['k_shot']}-shot)"
    lines = []
    for run, ov in inp.runs.items():
        e, q = sp["compare"][run], mm["compare"][run]
        line = (f"- **{run}** ({_run_desc(ov)}): "
                + _diff_sentence("Spider execution accuracy", e, cl, "base zero-shot") + " "
                + _diff_sentence(mdesc, q, cl, "base"))
        if deb is not None and run in deb["compare"]:
            line += " " + _diff_sentence(f"MMLU ({DEBIASED}, {deb['k_shot']}-shot)", deb["compare"][run], cl, "base")
        elif deb is not None:
            line += f" MMLU ({DEBIASED}): not available for {run} (no debiased outcomes in its rows)."
        lines.append(line)
    if deb is not None:
        lines.append(f"- Forgetting is measured with `{mm['method']}` for every model (lm-evaluation-harness "
                     f"compatible when `loglik`); the `{DEBIASED}` figures (same questions, the 4 cyclic orders of "
                     f"the options averaged per option content) are shown beside it because a run can gain or "
                     f"lose `{mm['method']}` accuracy just by changing its favourite answer letter.")
    else:
        lines.append(f"- Forgetting is measured with `{mm['method']}` ({mm['k_shot']}-shot) for every model.")
    fs = sp["compare"]["base_fewshot"]
    lines.append("- **base few-shot** vs base zero-shot: " + _diff_sentence("execution accuracy", fs, cl, "zero-shot"))
    for name, m in mm["models"].items():
        note = (f"- MMLU of **{name}** ({mm['method']}): {_pct(m['accuracy'])} ({cl} CI "
                f"{_ci_pct(m['ci_low'], m['ci_high'])}, n={m['n']}) {_chance_words(m, cl)}")
        if m["chance"] == "below chance":
            note += "; a score below chance points at answer extraction, not at the model"
        note += (f". It answers {m['top_pred_letter']} for {_pct(m['top_pred_share'])} of questions "
                 f"(gold answer is {m['top_pred_letter']} for {_pct(m['gold_share_of_top'])}).")
        d = deb["models"].get(name) if deb is not None else None
        if d is not None:
            note += f" Under the {DEBIASED} method: {_pct(d['accuracy'])} ({cl} CI {_ci_pct(d['ci_low'], d['ci_high'])}), which {_chance_words(d, cl)}."
        lines.append(note)
    if len(inp.runs) > 1:
        lines.append(f"- p-values are per comparison, not corrected for the {len(inp.runs)} runs compared "
                     f"(Bonferroni threshold {ALPHA / len(inp.runs):.3g}).")
    return lines


def _examples(inp: Inputs, name: str, sp: dict) -> list[str]:
    k = inp.settings.examples_per_error
    rows = inp.scores[name]
    by_kind: dict[str, list[str]] = {}
    for i, r in rows.items():
        if r["exec_match"] == 0:
            by_kind.setdefault(error_kind(r["error"]) or "unlabelled", []).append(i)
    out = [f"### {name}", ""]
    if not by_kind:
        return out + ["No failing questions.", ""]
    for kind in _ordered(by_kind, ERROR_ORDER + ("unlabelled",)):
        ids = sorted(by_kind[kind])
        pick = sorted(random.Random(f"{inp.settings.seed}/{name}/{kind}").sample(ids, min(k, len(ids))))
        out += [f"**{kind}** ({len(ids)} question(s); {len(pick)} shown)", ""]
        for i in pick:
            p, r = inp.predictions[name][i], rows[i]
            pred = (p.get("pred_sql") or "").strip()
            out += [f"- `{i}` ({p.get('db_id', '?')}, {r.get('hardness') or 'unknown'}): {_cell(p.get('question', ''))}",
                    f"  - error: {_cell(r['error'] or 'none recorded')}",
                    "  - gold:", _fence(p.get("gold_sql", "")),
                    "  - prediction:" + ("" if pred else " (no SQL extracted; raw output below)"),
                    _fence(pred or str(p.get("raw_output", ""))[:500])]
        out.append("")
    return out


def _fence(text: str) -> str:
    body = str(text).replace("```", "'''").strip() or "(empty)"
    return "    ```sql\n" + "\n".join("    " + ln for ln in body.splitlines()) + "\n    ```"


def _mmlu_table(inp: Inputs, mm: dict) -> list[str]:
    runs = [r for r in inp.runs if r in mm["models"]]
    header = ["subject", "base"]
    for run in runs:
        header += [run, f"{run} change", f"{run} relative"]
    rows = []
    for sub in [*mm["subjects"], "overall"]:
        def cell(name):
            m = mm["models"][name]
            c = m if sub == "overall" else m["by_subject"].get(sub)
            if c is None:
                return "—"
            return f"{_pct(c['accuracy'])} {_ci_pct(c['ci_low'], c['ci_high'])} (n={c['n']})"
        row = [sub, cell(MMLU_BASE)]
        for run in runs:
            c = mm["compare"][run] if sub == "overall" else mm["subject_compare"][run].get(sub)
            row += [cell(run),
                    "—" if c is None else f"{_pp(c['change_pp'])} [{c['ci_low_pp']:+.1f}, {c['ci_high_pp']:+.1f}], p={_p(c['mcnemar_p'])}",
                    "—" if c is None else _relf(c["change_rel_pct"])]
        rows.append(row)
    return _table(header, rows)


def _letter_bias_section(inp: Inputs, mm: dict) -> list[str]:
    """Per model and method: accuracy, predicted letters vs gold, the bias figure, a one-line reading."""
    cl = inp.settings.cl
    methods = [mm] + ([mm["debiased"]] if mm["debiased"] is not None else [])
    L = ["## MMLU answer-letter bias", "",
         "How often each model predicts each answer letter, against how often each letter is the gold "
         "answer. Bias = the largest |predicted-letter share − gold share| over A–D (0 = the predicted "
         "letters follow the gold distribution; a model that always answers the same letter scores about 0.75).",
         ""]
    rows = []
    for name in inp.mmlu_models:
        for mt in methods:
            m = mt["models"].get(name)
            if m is None:
                continue
            pd = m["pred_distribution"]
            rows.append([name, mt["method"], f"{_acc_ci(m)}", *(pd.get(x, 0) for x in LETTERS), pd.get("none", 0),
                         f"{m['top_pred_letter']} {_pct(m['top_pred_share'])}", f"{m['bias']:.3f}", m["chance"]])
    g = mm["models"][MMLU_BASE]["gold_distribution"]
    rows.append(["gold answers", "", "", *(g.get(x, 0) for x in LETTERS), 0, "", "", ""])
    L += _table(["model", "method", f"accuracy [{cl} CI]", *LETTERS, "no answer", "most predicted", "bias",
                 "vs chance (25%)"], rows)
    n = mm["models"][MMLU_BASE]["n"]
    for name in inp.mmlu_models:
        m = mm["models"][name]
        line = (f"- **{name}** answers {m['top_pred_letter']} to {_pct(m['top_pred_share'])} of questions "
                f"under `{mm['method']}` (gold: {_pct(m['gold_share_of_top'])}; bias {m['bias']:.3f}); "
                f"accuracy {_acc_ci(m)}")
        line += " — within the CI of chance" if m["chance"] == "consistent with chance" else f" ({m['chance']})"
        d = mm["debiased"]["models"].get(name) if mm["debiased"] is not None else None
        if d is not None:
            line += (f"; under the {DEBIASED} method accuracy is {_acc_ci(d)}"
                     + (" — within the CI of chance" if d["chance"] == "consistent with chance" else f" ({d['chance']})")
                     + f", its most predicted letter {d['top_pred_letter']} at {_pct(d['top_pred_share'])} "
                       f"(bias {d['bias']:.3f}).")
        elif mm["method"] != DEBIASED:
            line += f"; no {DEBIASED} outcomes (rerun with `mmlu.also_debiased: true`)."
        else:
            line += "."
        if m["pred_distribution"].get("none"):
            line += f" {m['pred_distribution']['none']} of {n} answers could not be parsed (counted wrong)."
        L.append(line)
    return L + [""]


def _spider_table(sp: dict, s: Settings) -> list[str]:
    """Table 2: EX per model, the change vs base zero-shot with its paired CI, McNemar p and MDE."""
    cl = s.cl
    rows = []
    for name, m in sp["models"].items():
        c = sp["compare"].get(name)
        rows.append([name, _pct(m["ex"]), _ci_pct(m["ex_ci_low"], m["ex_ci_high"]), _pct(m["exact_match"]),
                     f"{m['n_correct']}/{m['n']}",
                     "reference" if c is None else _pp(c["change_pp"]),
                     "" if c is None else _relf(c["change_rel_pct"]),
                     "" if c is None else f"[{c['ci_low_pp']:+.1f}, {c['ci_high_pp']:+.1f}]",
                     "" if c is None else f"{_p(c['mcnemar_p'])} ({c['fixed']}/{c['broken']})",
                     "" if c is None else _mde_cell(c)])
    return ["## Spider execution accuracy (Table 2)", "",
            *_table(["model", "EX", f"EX {cl} CI", "exact match", "correct", "EX vs base zero-shot",
                     "relative", f"paired {cl} CI (pp)", "McNemar p (gained/lost)",
                     f"detectable ({100 * s.power:g}% power)"], rows), MDE_NOTE, ""]


def render_markdown(inp: Inputs, sp: dict, mm: dict, fr: dict | None = None) -> str:
    from . import frontier
    fr = fr if fr is not None else frontier.analyse(inp, sp, mm)
    s = inp.settings
    cl = s.cl
    n = sp["models"][REFERENCE]["n"]
    L = ["# Text-to-SQL LoRA: what Spider gains and MMLU loses", "",
         f"Spider: {n} dev questions, execution accuracy (EX) with exact-string match beside it. "
         f"MMLU: {mm['models'][MMLU_BASE]['n']} questions ({', '.join(mm['subjects'])}), method "
         f"`{mm['method']}`, {mm['k_shot']}-shot"
         + (f" (run vs base comparisons; `{DEBIASED}` shown beside it)" if mm["debiased"] is not None else "")
         + f". Intervals: {cl} {s.ci_method} bootstrap over questions "
         f"({s.bootstrap_samples} resamples, seed {s.seed}); differences: paired bootstrap on the same "
         f"questions and the exact McNemar test (two-sided, discordant questions only). "
         f"pp = percentage points.", "",
         "## Conclusions", "", *conclusions(inp, sp, mm), "", *frontier.markdown(inp, fr, mm)]
    L += _spider_table(sp, s)
    # hardness
    L += ["## EX by Spider hardness", ""]
    levels = sp["levels"]
    counts = {h: sp["models"][REFERENCE]["by_hardness"].get(h, {}).get("n", 0) for h in levels}
    rows = []
    for name, m in sp["models"].items():
        cells = []
        for h in levels:
            c = m["by_hardness"].get(h)
            cells.append("—" if c is None else f"{_pct(c['ex'])} {_ci_pct(c['ci_low'], c['ci_high'])}")
        rows.append([name, *cells])
    L += _table(["model", *[f"{h} (n={counts[h]})" for h in levels]], rows)
    # errors
    L += ["## Outcome per question", "", "Counts of questions (share of all questions).", ""]
    kinds = sp["kinds"]
    rows = [[name, *(f"{m['errors'].get(k, 0)} ({_pct(m['errors'].get(k, 0) / m['n'])})"
                     for k in ["correct", *kinds])] for name, m in sp["models"].items()]
    L += _table(["model", "correct", *kinds], rows)
    # Table 3
    L += ["## MMLU (Table 3)", ""]
    if mm["debiased"] is not None:
        L += [f"Method `{mm['method']}` (used for the forgetting comparison):", ""]
    L += _mmlu_table(inp, mm)
    L += [f"Accuracy with {cl} CI; change vs base in pp with paired {cl} CI and exact McNemar p. "
          f"Chance is 25%.", ""]
    if mm["debiased"] is not None:
        L += [f"### MMLU under the {DEBIASED} method", "",
              "Same questions, each scored under the 4 cyclic orders of its options, log-probabilities "
              "averaged per option content (Zheng et al., ICLR 2024), which cancels a fixed preference "
              "for one answer letter.", ""]
        L += _mmlu_table(inp, mm["debiased"])
    L += _letter_bias_section(inp, mm)
    # training
    L += ["## Training loss", ""]
    if inp.train:
        rows = [[run, t["steps"][-1], f"{t['loss'][0]:.4f}", f"{t['loss'][-1]:.4f}", t["source"]]
                for run, t in inp.train.items()]
        L += _table(["run", "last step", "first logged loss", "last logged loss", "source"], rows)
    else:
        L += ["No training loss logs found.", ""]
    L += ["Plots: `plots/tradeoff.png`, `plots/ex_by_hardness.png`, `plots/mmlu_by_subject.png`, "
          "`plots/train_loss.png`.", ""]
    # examples
    L += ["## Failing examples", "",
          f"Up to {s.examples_per_error} per error kind (seeded choice), question, gold and prediction side by side.", ""]
    for name in inp.runs:
        L += _examples(inp, name, sp)
    if inp.warnings:
        L += ["## Checks and warnings", "", *(f"- {w}" for w in inp.warnings), ""]
    return "\n".join(L).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# plots

def _save(fig, path: Path) -> None:
    buf = BytesIO()
    fig.savefig(buf, dpi=130, bbox_inches="tight", format="png")
    atomic_write_bytes(path, buf.getvalue())


def plot_data(inp: Inputs, sp: dict, mm: dict, fr: dict | None = None) -> dict[str, list[dict]]:
    from . import frontier
    trade = frontier.plot_rows(fr if fr is not None else frontier.analyse(inp, sp, mm), mm)
    hard = [{"model": name, "hardness": h, "label": f"{h} / {name}", "ex_pct": _r(100 * c["ex"]),
             "ci_low_pct": _r(100 * c["ci_low"]), "ci_high_pct": _r(100 * c["ci_high"]), "n": c["n"]}
            for h in sp["levels"] for name, m in sp["models"].items()
            for c in [m["by_hardness"].get(h)] if c is not None]
    subj = []
    for sub in [*mm["subjects"], "overall"]:
        for name, m in mm["models"].items():
            c = m if sub == "overall" else m["by_subject"].get(sub)
            if c is not None:
                subj.append({"model": name, "subject": sub, "label": f"{sub} / {name}",
                             "accuracy_pct": _r(100 * c["accuracy"]), "n": c["n"]})
    steps = sorted({s for t in inp.train.values() for s in t["steps"]})
    loss = []
    for st in steps:
        row: dict[str, Any] = {"step": st}
        for run in inp.runs:   # every run a column (null where not logged) so a fixed `y` list always resolves
            d = dict(zip(inp.train[run]["steps"], inp.train[run]["loss"])) if run in inp.train else {}
            row[run] = _r(d.get(st))
        loss.append(row)
    return {"tradeoff": trade, "ex_by_hardness": hard, "mmlu_by_subject": subj, "train_loss": loss}


def _grouped_bars(ax, colors, series: list[tuple[str, list[tuple[float, float, float] | None]]]) -> None:
    """One bar group per x position, one bar per series, in %, with CI error bars and value labels.

    `series`: (label, cells) with one cell per group: (value, ci_low, ci_high) as fractions, or None.
    """
    width = 0.8 / len(series)
    for j, (label, cells) in enumerate(series):
        xs_, hs, lo, hi = [], [], [], []
        for i, cell in enumerate(cells):
            if cell is None:
                continue
            value, low, high = cell
            xs_.append(i + (j - (len(series) - 1) / 2) * width)
            hs.append(100 * value)
            lo.append(100 * (value - low))
            hi.append(100 * (high - value))
        bars = ax.bar(xs_, hs, width * 0.95, yerr=[lo, hi], capsize=3, label=label,
                      color=colors[j % len(colors)], error_kw={"lw": 1, "ecolor": "0.25"})
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2, color="0.2")


def render_plots(inp: Inputs, sp: dict, mm: dict, out: Path, fr: dict | None = None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import frontier

    cl = inp.settings.cl
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fr = fr if fr is not None else frontier.analyse(inp, sp, mm)
    written = [frontier.render_tradeoff(inp, fr, mm, sp["models"][REFERENCE]["n"], out)]

    # EX by hardness
    models = list(sp["models"])
    levels = sp["levels"]
    fig, ax = plt.subplots(figsize=(max(7.5, 1.9 * len(levels) + 0.6 * len(models)), 5))
    _grouped_bars(ax, colors, [
        (name, [(c["ex"], c["ci_low"], c["ci_high"]) if (c := sp["models"][name]["by_hardness"].get(h)) else None
                for h in levels])
        for name in models])
    counts = {h: sp["models"][REFERENCE]["by_hardness"].get(h, {}).get("n", 0) for h in levels}
    ax.set_xticks(range(len(levels)), [f"{h}\n(n={counts[h]})" for h in levels])
    ax.set_ylabel("Execution accuracy (%)")
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"Spider execution accuracy by hardness ({cl} bootstrap CIs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncol=min(4, len(models)))
    _save(fig, out / "ex_by_hardness.png")
    plt.close(fig)
    written.append(out / "ex_by_hardness.png")

    # MMLU by subject
    mmodels = list(mm["models"])
    subs = [*mm["subjects"], "overall"]
    fig, ax = plt.subplots(figsize=(max(7.5, 2.2 * len(subs)), 5))
    series = []
    for name in mmodels:
        m = mm["models"][name]
        cells = [m if sub == "overall" else m["by_subject"].get(sub) for sub in subs]
        series.append((name, [(c["accuracy"], c["ci_low"], c["ci_high"]) if c else None for c in cells]))
    _grouped_bars(ax, colors, series)
    ax.axhline(100 * CHANCE, color="crimson", ls="--", lw=1.2, label="chance (25%)")
    ax.set_xticks(range(len(subs)), [s.replace("_", " ").replace("high school ", "HS ") for s in subs])
    ax.set_ylabel("MMLU accuracy (%)")
    ax.set_ylim(0, 119)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"MMLU accuracy by subject ({mm['method']}, {mm['k_shot']}-shot; {cl} bootstrap CIs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncol=min(4, len(mmodels) + 1))
    _save(fig, out / "mmlu_by_subject.png")
    plt.close(fig)
    written.append(out / "mmlu_by_subject.png")

    # training loss
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if inp.train:
        for i, (run, t) in enumerate(inp.train.items()):
            ax.plot(t["steps"], t["loss"], marker="o" if len(t["steps"]) < 40 else None, ms=3,
                    label=f"{run} ({_run_desc(inp.runs[run])})", color=colors[list(inp.runs).index(run) % len(colors)])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "no training loss logs found\n(metrics/train/<run>/plots/metrics/**/loss.tsv)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    missing = [r for r in inp.runs if r not in inp.train]
    ax.set_title("Training loss per run" + (f" (no log: {', '.join(missing)})" if missing else ""))
    _save(fig, out / "train_loss.png")
    plt.close(fig)
    written.append(out / "train_loss.png")
    return written


# --------------------------------------------------------------------------------------------

def run_report(params: dict, out_dir: Path, paths: Paths = Paths()) -> dict:
    """Compute everything, then write summary.json, report.md, plots/*.png and plots/*.json."""
    from .frontier import analyse
    inp = load_inputs(params, paths)
    sp = analyse_spider(inp)
    mm = analyse_mmlu(inp)
    fr = analyse(inp, sp, mm)
    summary = build_summary(inp, sp, mm, fr)
    md = render_markdown(inp, sp, mm, fr)
    pdata = plot_data(inp, sp, mm, fr)
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    render_plots(inp, sp, mm, plots, fr)
    for name, rows in pdata.items():
        write_json(plots / f"{name}.json", rows)
    atomic_write_text(out_dir / "report.md", md)
    write_json(out_dir / "summary.json", summary)
    return {"summary": summary, "warnings": inp.warnings, "markdown": md}
