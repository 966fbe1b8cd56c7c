"""Report text: report.md, every number with its uncertainty.

Conclusions are phrased from the analysis only (paired CI, exact McNemar p, what the sample could
detect); tables for Spider (overall, by hardness, outcome kinds), MMLU (by subject, under each
method), the answer-letter bias, training loss, and failing examples chosen with a seeded RNG.
The frontier table (adapter scales) comes from `sqltradeoff.frontier.markdown`.
"""
from __future__ import annotations

import random
from typing import Any

from ..answers import LETTERS
from .analysis import _ordered
from .inputs import ALPHA, DEBIASED, ERROR_ORDER, MMLU_BASE, REFERENCE, Inputs, Settings, error_kind


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


SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_SHORT = {"learning_rate": "lr", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}


def run_label(overrides: dict) -> str:
    """A run's overrides in a few words for a plot legend: `7 proj., lr 0.0002`, `r 32, alpha 64, lr 0.0002`."""
    parts = []
    for k, v in overrides.items():
        if k == "target_modules":
            mods = tuple(v)
            parts.append("7 proj." if set(mods) == set(SEVEN) else "/".join(m.removesuffix("_proj") for m in mods))
        elif k == "epochs":
            parts.append(f"{v:g} epoch" + ("" if v == 1 else "s"))
        else:
            parts.append(f"{_SHORT.get(k, k)} {v:g}" if isinstance(v, (int, float)) else f"{_SHORT.get(k, k)} {v}")
    return ", ".join(parts) or "train defaults"


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


def _intro(inp: Inputs, sp: dict, mm: dict) -> list[str]:
    """Title and the paragraph saying what was measured and how the intervals were computed."""
    s = inp.settings
    n = sp["models"][REFERENCE]["n"]
    return ["# Text-to-SQL LoRA: what Spider gains and MMLU loses", "",
            f"Spider: {n} dev questions, execution accuracy (EX) with exact-string match beside it. "
            f"MMLU: {mm['models'][MMLU_BASE]['n']} questions ({', '.join(mm['subjects'])}), method "
            f"`{mm['method']}`, {mm['k_shot']}-shot"
            + (f" (run vs base comparisons; `{DEBIASED}` shown beside it)" if mm["debiased"] is not None else "")
            + f". Intervals: {s.cl} {s.ci_method} bootstrap over questions "
            f"({s.bootstrap_samples} resamples, seed {s.seed}); differences: paired bootstrap on the same "
            f"questions and the exact McNemar test (two-sided, discordant questions only). "
            f"pp = percentage points.", ""]


def _hardness_table(sp: dict) -> list[str]:
    """EX with its CI per model and Spider hardness level."""
    levels = sp["levels"]
    counts = {h: sp["models"][REFERENCE]["by_hardness"].get(h, {}).get("n", 0) for h in levels}
    rows = []
    for name, m in sp["models"].items():
        cells = []
        for h in levels:
            c = m["by_hardness"].get(h)
            cells.append("—" if c is None else f"{_pct(c['ex'])} {_ci_pct(c['ci_low'], c['ci_high'])}")
        rows.append([name, *cells])
    return ["## EX by Spider hardness", "", *_table(["model", *[f"{h} (n={counts[h]})" for h in levels]], rows)]


def _outcome_table(sp: dict) -> list[str]:
    """Questions per outcome kind (correct, syntax_error, ...) per model."""
    kinds = sp["kinds"]
    rows = [[name, *(f"{m['errors'].get(k, 0)} ({_pct(m['errors'].get(k, 0) / m['n'])})"
                     for k in ["correct", *kinds])] for name, m in sp["models"].items()]
    return ["## Outcome per question", "", "Counts of questions (share of all questions).", "",
            *_table(["model", "correct", *kinds], rows)]


def _mmlu_section(inp: Inputs, mm: dict) -> list[str]:
    """Table 3 under the comparison method, the same under the debiased method when present."""
    cl = inp.settings.cl
    L = ["## MMLU (Table 3)", ""]
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
    return L


def _training_section(inp: Inputs) -> list[str]:
    L = ["## Training loss", ""]
    if inp.train:
        rows = [[run, t["steps"][-1], f"{t['loss'][0]:.4f}", f"{t['loss'][-1]:.4f}", t["source"]]
                for run, t in inp.train.items()]
        L += _table(["run", "last step", "first logged loss", "last logged loss", "source"], rows)
    else:
        L += ["No training loss logs found.", ""]
    return L + ["Plots: `plots/tradeoff.png`, `plots/ex_by_hardness.png`, `plots/mmlu_by_subject.png`, "
                "`plots/train_loss.png`.", ""]


def render_markdown(inp: Inputs, sp: dict, mm: dict, fr: dict | None = None) -> str:
    """report.md: conclusions, the frontier, Spider and MMLU tables, letter bias, training loss,
    failing examples and the warnings gathered while reading and analysing."""
    from .. import frontier
    fr = fr if fr is not None else frontier.analyse(inp, sp, mm)
    s = inp.settings
    L = [*_intro(inp, sp, mm),
         "## Conclusions", "", *conclusions(inp, sp, mm), "", *frontier.markdown(inp, fr, mm)]
    L += _spider_table(sp, s)
    L += _hardness_table(sp)
    L += _outcome_table(sp)
    L += _mmlu_section(inp, mm)
    L += _letter_bias_section(inp, mm)
    L += _training_section(inp)
    L += ["## Failing examples", "",
          f"Up to {s.examples_per_error} per error kind (seeded choice), question, gold and prediction side by side.", ""]
    for name in inp.runs:
        L += _examples(inp, name, sp)
    if inp.warnings:
        L += ["## Checks and warnings", "", *(f"- {w}" for w in inp.warnings), ""]
    return "\n".join(L).rstrip() + "\n"
