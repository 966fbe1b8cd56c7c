"""Report summary: summary.json, the DVC metrics of the report stage.

Every number rounded to 6 places: settings, Spider EX and MMLU accuracy per model with CIs,
each run's changes vs base (paired CI, McNemar p, minimum detectable difference) flat under
`runs.<run>` (`ex_gain_*`, `mmlu_change_*`, `mmlu_debiased_change_*`), with its adapter-scale
points under `runs.<run>.scales`.
"""
from __future__ import annotations

from typing import Any

from .analysis import _r
from .inputs import ALPHA, CHANCE, REFERENCE, Inputs


def build_summary(inp: Inputs, sp: dict, mm: dict, fr: dict | None = None) -> dict:
    from .. import frontier
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

