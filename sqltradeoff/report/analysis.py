"""Report analysis: accuracies with bootstrap CIs, paired comparisons with the base model.

Spider (execution accuracy, by hardness, outcome kinds) and MMLU (accuracy, by subject, answer
letters and their bias) per model; every run compared with its base on the same questions: paired
bootstrap CI of the difference, exact McNemar test and the minimum detectable difference at
`report.power` (all from `sqltradeoff.stats`). MMLU is analysed under the method every model was
scored with and, where the rows carry it (`mmlu.also_debiased`), under the debiased method too.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from .. import stats
from ..answers import LETTERS
from ..errors import UserError
from .inputs import (ALPHA, CHANCE, DEBIASED, ERROR_ORDER, HARDNESS_ORDER, MMLU_BASE, REFERENCE, Inputs, Settings,
                     _letter, _stage, error_kind)


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

