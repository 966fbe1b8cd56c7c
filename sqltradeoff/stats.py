"""Uncertainty for accuracies measured on a fixed set of questions.

- `accuracy_ci`: bootstrap confidence interval of an accuracy (mean of 0/1 outcomes) over questions
  (`scipy.stats.bootstrap`; Wilson score interval via `scipy.stats.binomtest` when the sample is
  degenerate — all right or all wrong — where a bootstrap interval collapses to a point).
- `paired_difference_ci`: paired bootstrap confidence interval of `mean(b) - mean(a)` for two
  models scored on the same questions (questions resampled once, used for both models).
- `mcnemar_exact`: exact McNemar test (two-sided binomial test on the discordant pairs,
  `scipy.stats.binomtest`), with the mid-p variant.
- `pair_by_id`: aligns two per-question result lists by question id and refuses to pair
  lists that do not cover the same questions.
- `mcnemar_mde`: the smallest paired difference a comparison could detect with the given power
  at the given confidence, from its observed discordance: the exact power of the exact McNemar
  test (`mcnemar_power`), or Connor's (1987) normal-approximation formula (`mcnemar_sample_size`).

All functions take plain sequences of 0/1 (or bools) and are deterministic for a given seed.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from .errors import UserError

from .config import CI_METHODS  # noqa: E402,F401 (one definition: the report section checks it)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int
    confidence: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class McNemar:
    b: int            # a right, b wrong (questions "broken" going from a to b)
    c: int            # a wrong, b right (questions "fixed")
    n: int            # questions compared
    pvalue: float     # exact two-sided binomial test on b of b + c at p = 0.5
    pvalue_midp: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _binary(values: Sequence[Any], what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise UserError(f"{what}: expected a flat list of 0/1 outcomes")
    if arr.size == 0:
        raise UserError(f"{what}: no outcomes (empty sample)")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isin(arr, (0, 1))):
        bad = [v for v in np.asarray(values, dtype=object).tolist() if v not in (0, 1)][:3]
        raise UserError(f"{what}: outcomes must be 0 or 1, got {bad}")
    return arr.astype(np.int8)


def _check(confidence: float, n_resamples: int, method: str) -> str:
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if int(n_resamples) < 100:
        raise UserError(f"bootstrap_samples must be at least 100, got {n_resamples!r}")
    m = str(method).lower()
    if m not in CI_METHODS:
        raise UserError(f"unknown confidence-interval method {method!r}; use one of {', '.join(CI_METHODS)}")
    return m


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff(a, b, axis=-1):
    return np.mean(b, axis=axis) - np.mean(a, axis=axis)


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (scipy's implementation)."""
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _bootstrap(data: tuple[np.ndarray, ...], statistic, *, paired: bool, confidence: float,
               n_resamples: int, seed: int, method: str) -> tuple[float, float]:
    n = len(data[0])
    batch = max(1, min(int(n_resamples), 20_000_000 // max(n, 1)))  # bound memory on large n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap(data, statistic, n_resamples=int(n_resamples), batch=batch,
                            vectorized=True, paired=paired, confidence_level=confidence,
                            method="BCa" if method == "bca" else method,
                            rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def accuracy_ci(outcomes: Sequence[Any], *, confidence: float = 0.95, n_resamples: int = 10_000,
                seed: int = 0, method: str = "percentile") -> Interval:
    """Accuracy of 0/1 outcomes with a confidence interval over questions.

    `method`: percentile / bca / basic bootstrap (scipy.stats.bootstrap), or wilson. When every
    outcome is the same, a bootstrap interval is a single point (no resample can differ), so
    the Wilson interval is used instead and the method says so.
    """
    m = _check(confidence, n_resamples, method)
    x = _binary(outcomes, "accuracy_ci")
    n, k = int(x.size), int(x.sum())
    est = k / n
    if m == "wilson" or k in (0, n):
        low, high = wilson_ci(k, n, confidence)
        used = "wilson" if m == "wilson" else f"wilson (all {'right' if k else 'wrong'}: bootstrap degenerate)"
    else:
        low, high = _bootstrap((x.astype(float),), _mean, paired=False, confidence=confidence,
                               n_resamples=n_resamples, seed=seed, method=m)
        used = f"bootstrap-{m}"
    return Interval(est, low, high, n, confidence, used)


def paired_difference_ci(a: Sequence[Any], b: Sequence[Any], *, confidence: float = 0.95,
                         n_resamples: int = 10_000, seed: int = 0,
                         method: str = "percentile") -> Interval:
    """Paired bootstrap interval of accuracy(b) - accuracy(a) on the same questions, in order.

    Questions are resampled with replacement and both models are scored on the same resample,
    so the interval accounts for the correlation between the two models' outcomes.
    If the two models agree on every question, the difference is exactly 0 in every resample
    and the interval is [0, 0] (reported as such). `method` wilson is not defined for a
    difference: percentile is used.
    """
    m = _check(confidence, n_resamples, method)
    xa = _binary(a, "paired_difference_ci (first)")
    xb = _binary(b, "paired_difference_ci (second)")
    if xa.size != xb.size:
        raise UserError(f"paired_difference_ci: samples differ in length ({xa.size} vs {xb.size}); "
                        f"pair them by question id first")
    n = int(xa.size)
    est = (int(xb.sum()) - int(xa.sum())) / n
    if m == "wilson":
        m = "percentile"
    if np.array_equal(xa, xb):
        return Interval(est, 0.0, 0.0, n, confidence, "exact (identical outcomes)")
    d = (xb.astype(float) - xa.astype(float))
    if np.all(d == d[0]):  # every question moved the same way: no sampling variation left
        return Interval(est, est, est, n, confidence, "exact (constant difference)")
    low, high = _bootstrap((xa.astype(float), xb.astype(float)), _diff, paired=True,
                           confidence=confidence, n_resamples=n_resamples, seed=seed, method=m)
    return Interval(est, low, high, n, confidence, f"paired-bootstrap-{m}")


def mcnemar_exact(a: Sequence[Any], b: Sequence[Any]) -> McNemar:
    """Exact McNemar test of two models on the same questions (in the same order).

    b = questions model a got right and model b wrong; c = the reverse. Under the null
    hypothesis of equal accuracy each discordant question goes either way with probability 1/2:
    p = two-sided `binomtest(b, b + c, 0.5)`. The mid-p value subtracts half the probability of
    the observed table (less conservative). With no discordant pairs, p = 1.
    """
    xa = _binary(a, "mcnemar_exact (first)")
    xb = _binary(b, "mcnemar_exact (second)")
    if xa.size != xb.size:
        raise UserError(f"mcnemar_exact: samples differ in length ({xa.size} vs {xb.size}); "
                        f"pair them by question id first")
    b_ = int(np.sum((xa == 1) & (xb == 0)))
    c_ = int(np.sum((xa == 0) & (xb == 1)))
    return mcnemar_from_counts(b_, c_, n=int(xa.size))


def mcnemar_from_counts(b: int, c: int, n: int | None = None) -> McNemar:
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise UserError(f"mcnemar: discordant counts must be non-negative, got b={b}, c={c}")
    m = b + c
    if m == 0:
        return McNemar(b, c, n if n is not None else 0, 1.0, 1.0)
    p = float(sps.binomtest(b, m, 0.5, alternative="two-sided").pvalue)
    lo = min(b, c)
    midp = 2.0 * (float(sps.binom.cdf(lo, m, 0.5)) - 0.5 * float(sps.binom.pmf(lo, m, 0.5)))
    return McNemar(b, c, n if n is not None else m, p, min(1.0, midp))


def pair_by_id(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str = "a",
               name_b: str = "b") -> tuple[list[str], list[Any], list[Any]]:
    """Align two {question id: outcome} mappings. Raise `UserError` naming the ids only one has."""
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} id(s) of {name_a} missing from {name_b}: {_preview(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} id(s) of {name_b} missing from {name_a}: {_preview(only_b)}")
        raise UserError(f"cannot pair {name_a} with {name_b} by question id ("
                        + "; ".join(parts) + "); score both on the same questions")
    ids = sorted(a)
    return ids, [a[i] for i in ids], [b[i] for i in ids]


def _preview(ids: list[str], k: int = 5) -> str:
    shown = ", ".join(ids[:k])
    return shown + (f", ... ({len(ids) - k} more)" if len(ids) > k else "")


# --------------------------------------------------------------------------------------------
# power: the smallest detectable paired difference

@dataclass(frozen=True)
class Power:
    mde: float | None        # smallest |accuracy(b) - accuracy(a)| detectable; None: not even 100% (tiny n)
    discordant: float        # observed share of questions the two models disagree on, psi = (b + c) / n
    n: int
    confidence: float        # the test's level is alpha = 1 - confidence (two-sided)
    power: float
    one_way: bool = False    # the MDE exceeds the observed discordance: it assumes psi = MDE (all changes one way)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _z(confidence: float, power: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if not 0 < power < 1:
        raise UserError(f"power must be between 0 and 1 (exclusive), got {power!r}")
    return float(sps.norm.ppf(1 - (1 - confidence) / 2)), float(sps.norm.ppf(power))


def mcnemar_sample_size(delta: float, discordant: float, *, confidence: float = 0.95,
                        power: float = 0.8) -> float:
    """Questions needed to detect a paired difference `delta` with McNemar's test (Connor 1987).

    n = ( z_{1-alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta^2) )^2 / delta^2

    psi = p10 + p01, the probability that the two models disagree on a question (the discordant
    proportion), delta = p01 - p10 the difference in accuracy, alpha = 1 - confidence, two-sided.
    Source: R. J. Connor, "Sample size for testing differences in proportions for the
    paired-sample design", Biometrics 43(1):207-211, 1987, p. 209 (the formula of the usual
    McNemar power calculators). Requires 0 < |delta| <= psi <= 1. Not rounded up.
    """
    za, zb = _z(confidence, power)
    d, psi = abs(float(delta)), float(discordant)
    if not 0 < d <= psi <= 1:
        raise UserError(f"mcnemar_sample_size: need 0 < |delta| <= discordant <= 1, got delta={delta}, "
                        f"discordant={discordant}")
    return (za * np.sqrt(psi) + zb * np.sqrt(psi - d * d)) ** 2 / (d * d)


def mcnemar_power(delta: float, discordant: float, n: int, *, confidence: float = 0.95) -> float:
    """Power of the exact McNemar test (`mcnemar_exact`, rejecting at p < 1 - confidence) on n questions
    when the models disagree on a share `discordant` (psi) of them and differ by `delta` in accuracy.

    Exact, by enumeration: the discordant count m is Binomial(n, psi); given m, the gains c are
    Binomial(m, (psi + delta) / (2 psi)); the test rejects when min(c, m - c) <= k_m, the largest k
    with 2 * P(Binomial(m, 1/2) <= k) < alpha. Power = sum over m of P(m) * P(reject | m).
    """
    _z(confidence, 0.5)                                  # checks the confidence
    alpha = 1 - confidence
    psi, d, n = float(discordant), abs(float(delta)), int(n)
    if not 0 < psi <= 1 or d > psi or n < 1:
        raise UserError(f"mcnemar_power: need 0 < discordant <= 1, |delta| <= discordant, n >= 1; got "
                        f"delta={delta}, discordant={discordant}, n={n}")
    m = np.arange(n + 1)
    k = sps.binom.ppf(alpha / 2, m, 0.5) - 1            # candidate: one below the alpha/2 quantile
    k = np.where(2 * sps.binom.cdf(k, m, 0.5) >= alpha, k - 1, k)
    k = np.where(2 * sps.binom.cdf(k + 1, m, 0.5) < alpha, k + 1, k)
    q = (psi + d) / (2 * psi)
    reject = sps.binom.cdf(k, m, q) + sps.binom.sf(m - k - 1, m, q)
    return float(np.sum(sps.binom.pmf(m, n, psi) * np.where(k >= 0, reject, 0.0)))


def mcnemar_mde(b: int, c: int, n: int, *, confidence: float = 0.95, power: float = 0.8,
                method: str = "exact") -> Power:
    """The smallest paired difference n questions could detect, from the observed discordance.

    `b`, `c`: the discordant counts of a comparison (as in `McNemar`), `n`: questions compared;
    psi = (b + c) / n is taken as the true discordance. The minimum detectable difference (MDE) is
    the smallest |delta| at which a two-sided test at level 1 - confidence reaches `power`:
    - method `exact` (the report's): the power of the exact McNemar test itself (`mcnemar_power`);
    - method `connor`: Connor's normal-approximation formula (`mcnemar_sample_size`) solved for delta.
    Connor's figure is a little smaller than the exact one (the exact test is conservative: at
    Connor's delta its power is about 0.76-0.78 for n = 100-1000 in simulations).
    A difference cannot exceed the discordance it comes with (|delta| <= psi), so when no
    |delta| <= psi reaches the power (few questions changed, or none), the MDE is sought with
    psi = |delta|, every changed question moving the same way — the most favourable case, so the
    figure (`one_way` True) is the least difference the sample could have detected at all.
    The power increases with delta on both branches; the root is found by bisection (brentq).
    `mde` is None only when not even |delta| = 1 is detectable (n of 5 or fewer at 5%).
    """
    from scipy.optimize import brentq

    b, c, n = int(b), int(c), int(n)
    if n < 1 or b < 0 or c < 0 or b + c > n:
        raise UserError(f"mcnemar_mde: need 0 <= b + c <= n and n >= 1, got b={b}, c={c}, n={n}")
    if method not in ("exact", "connor"):
        raise UserError(f"mcnemar_mde: method must be exact or connor, got {method!r}")
    _z(confidence, power)
    psi = (b + c) / n

    def shortfall(d: float, disc: float) -> float:    # > 0: delta d too small to reach the power
        if method == "connor":
            return mcnemar_sample_size(d, disc, confidence=confidence, power=power) - n
        return power - mcnemar_power(d, disc, n, confidence=confidence)

    if psi > 0 and shortfall(psi, psi) <= 0:
        mde = float(brentq(lambda d: shortfall(d, psi), psi * 1e-9, psi, xtol=1e-10, rtol=1e-10))
        return Power(mde, psi, n, confidence, power)
    top = 1.0 - 1e-12                                  # psi = 1 would make Connor's variance 0
    if shortfall(top, top) > 0:
        return Power(None, psi, n, confidence, power, one_way=True)
    lo = max(psi, 1e-9)
    mde = float(brentq(lambda d: shortfall(d, d), lo, top, xtol=1e-10, rtol=1e-10))
    return Power(mde, psi, n, confidence, power, one_way=True)
