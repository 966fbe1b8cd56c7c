"""Statistics: exact McNemar, bootstrap intervals, paired differences, pairing by id."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqltradeoff import stats  # noqa: E402
from sqltradeoff.errors import UserError  # noqa: E402


def test_mcnemar_hand_computed():
    # b=10, c=2: p = 2 * sum_{k<=2} C(12, k) / 2^12 = 2 * (1 + 12 + 66) / 4096
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12
    m = stats.mcnemar_from_counts(10, 2)
    assert m.pvalue == pytest.approx(expected, rel=1e-12) and round(m.pvalue, 5) == 0.03857
    # mid-p: subtract half the probability of the observed table (both tails)
    assert m.pvalue_midp == pytest.approx(expected - math.comb(12, 2) / 2 ** 12, rel=1e-12)
    assert stats.mcnemar_from_counts(2, 10).pvalue == pytest.approx(expected, rel=1e-12)  # symmetric


def test_mcnemar_from_outcomes_counts_discordant_pairs():
    a = [1] * 10 + [0] * 2 + [1] * 30 + [0] * 58     # 10 a-only right, 2 b-only right
    b = [0] * 10 + [1] * 2 + [1] * 30 + [0] * 58
    m = stats.mcnemar_exact(a, b)
    assert (m.b, m.c, m.n) == (10, 2, 100)
    assert m.pvalue == pytest.approx(stats.mcnemar_from_counts(10, 2).pvalue)
    same = stats.mcnemar_exact(a, a)
    assert (same.b, same.c, same.pvalue) == (0, 0, 1.0)


def test_bootstrap_ci_coverage_near_nominal():
    rng = np.random.default_rng(12345)
    p, n, sims = 0.3, 100, 200
    hits = 0
    for i in range(sims):
        x = (rng.random(n) < p).astype(int)
        ci = stats.accuracy_ci(x, confidence=0.95, n_resamples=2000, seed=i)
        assert ci.low <= ci.estimate <= ci.high
        hits += ci.low <= p <= ci.high
    assert 0.90 <= hits / sims <= 0.99


def test_accuracy_ci_width_and_reproducibility():
    x = [1] * 21 + [0] * 79
    ci = stats.accuracy_ci(x, n_resamples=5000, seed=3)
    assert ci.estimate == 0.21 and ci.n == 100 and ci.method == "bootstrap-percentile"
    # binomial standard error sqrt(.21*.79/100) = 0.0407: a 95% interval spans about +-8 pp
    assert 0.12 <= ci.low <= 0.14 and 0.28 <= ci.high <= 0.30
    assert stats.accuracy_ci(x, n_resamples=5000, seed=3) == ci
    bca = stats.accuracy_ci(x, n_resamples=5000, seed=3, method="bca")
    assert bca.method == "bootstrap-bca" and bca.low < 0.21 < bca.high


def test_degenerate_sample_uses_wilson():
    ci = stats.accuracy_ci([0] * 100, n_resamples=1000)
    assert ci.estimate == 0.0 and ci.low == 0.0
    assert ci.high == pytest.approx(stats.wilson_ci(0, 100)[1]) and 0.03 < ci.high < 0.04
    assert ci.method.startswith("wilson")


def test_paired_difference_ci():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.4).astype(int)
    b = a.copy()
    flip = rng.choice(np.flatnonzero(a == 0), 30, replace=False)   # b fixes 30 questions a missed
    b[flip] = 1
    d = stats.paired_difference_ci(a, b, n_resamples=4000, seed=1)
    assert d.estimate == pytest.approx(30 / 200)
    assert 0 < d.low < 0.15 < d.high
    # pairing matters: the paired interval is narrower than one that ignores the correlation
    ia = stats.accuracy_ci(a, n_resamples=4000, seed=1)
    ib = stats.accuracy_ci(b, n_resamples=4000, seed=1)
    unpaired_half = 1.96 * math.sqrt(((ia.high - ia.low) / 3.92) ** 2 + ((ib.high - ib.low) / 3.92) ** 2)
    assert (d.high - d.low) / 2 < unpaired_half
    # 21 vs 22 with one lost and two gained: the interval covers 0
    x = [1] * 21 + [0] * 79
    y = [0] + [1] * 22 + [0] * 77
    d2 = stats.paired_difference_ci(x, y, n_resamples=4000, seed=1)
    assert d2.estimate == 0.01 and d2.low < 0 < d2.high
    same = stats.paired_difference_ci(x, x)
    assert (same.low, same.high) == (0.0, 0.0)


def test_pair_by_id_aligns_and_names_missing():
    ids, xa, xb = stats.pair_by_id({"q2": 1, "q1": 0}, {"q1": 1, "q2": 0}, "base", "run1")
    assert ids == ["q1", "q2"] and xa == [0, 1] and xb == [1, 0]
    with pytest.raises(UserError) as err:
        stats.pair_by_id({"q1": 1, "q2": 0}, {"q1": 1, "q3": 0}, "base.jsonl", "run1.jsonl")
    msg = str(err.value)
    assert "q2" in msg and "q3" in msg and "base.jsonl" in msg and "run1.jsonl" in msg


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="0 or 1"):
        stats.accuracy_ci([0, 1, 2])
    with pytest.raises(UserError, match="empty"):
        stats.accuracy_ci([])
    with pytest.raises(UserError, match="differ in length"):
        stats.mcnemar_exact([0, 1], [1])
    with pytest.raises(UserError, match="confidence"):
        stats.accuracy_ci([0, 1], confidence=95)
    with pytest.raises(UserError, match="method"):
        stats.accuracy_ci([0, 1], method="jackknife")


# --------------------------------------------------------------------------------------------
# power: the smallest detectable paired difference (Connor 1987)

def test_sample_size_matches_the_published_calculator_example():
    # Connor (1987) as used by the powerandsamplesize.com McNemar calculator: p01 = 0.45, p10 = 0.05,
    # alpha = 0.05 two-sided, power 0.8 -> psi = 0.5, delta = 0.4, n = 22.01 -> 23 pairs.
    n = stats.mcnemar_sample_size(0.4, 0.5, confidence=0.95, power=0.8)
    z, zb = 1.959963984540054, 0.8416212335729143
    assert n == pytest.approx(((z * math.sqrt(0.5) + zb * math.sqrt(0.5 - 0.16)) / 0.4) ** 2, rel=1e-12)
    assert math.ceil(n) == 23


def test_connor_mde_hand_computed():
    # n = 100, 20 discordant (psi = 0.2), 95% / 80%: solve 10 d = 1.96 sqrt(0.2) + 0.8416 sqrt(0.2 - d^2).
    # By hand (fixed-point iteration from d = 0.125): d = 0.12379, 0.123822, 0.1238193 -> 12.38 pp.
    p = stats.mcnemar_mde(12, 8, 100, confidence=0.95, power=0.8, method="connor")
    assert p.discordant == 0.2 and p.n == 100
    assert p.mde == pytest.approx(0.1238193, abs=2e-7)
    # the answer puts Connor's n back at 100
    assert stats.mcnemar_sample_size(p.mde, 0.2) == pytest.approx(100, rel=1e-9)
    # without the delta^2 term it would be (1.96 + 0.8416) sqrt(0.2 / 100) = 0.1253: the term matters
    assert p.mde < 0.1252


def test_exact_mde_hand_computed():
    # n = 6 questions, all discordant (psi = 1): the exact test at 5% rejects only 6-0 or 0-6
    # (2 / 2^6 = 0.031; 5-1 gives 14 / 64 = 0.22), so power = q^6 + (1 - q)^6 with q = (1 + d) / 2.
    # Power 0.8: q = 0.8^(1/6) = 0.963492 (the (1 - q)^6 term is 2e-9), d = 2q - 1 = 0.926985.
    d = 2 * 0.8 ** (1 / 6) - 1
    assert stats.mcnemar_power(d, 1.0, 6) == pytest.approx(0.8, abs=1e-8)
    assert stats.mcnemar_power(0.5, 1.0, 6) == pytest.approx(0.75 ** 6 + 0.25 ** 6, rel=1e-12)
    p = stats.mcnemar_mde(3, 3, 6)
    assert p.mde == pytest.approx(0.926985, abs=1e-6) and p.discordant == 1.0
    # the exact test is conservative: its MDE is above Connor's normal approximation
    assert stats.mcnemar_mde(12, 8, 100).mde > stats.mcnemar_mde(12, 8, 100, method="connor").mde
    # more questions, smaller MDE; more confidence or power, larger
    base = stats.mcnemar_mde(12, 8, 100).mde
    assert stats.mcnemar_mde(48, 32, 400).mde < base
    assert stats.mcnemar_mde(12, 8, 100, confidence=0.99).mde > base
    assert stats.mcnemar_mde(12, 8, 100, power=0.9).mde > base


@pytest.mark.parametrize("n,k", [(100, 20), (400, 40)])
def test_exact_mde_gives_the_stated_power_by_simulation(n, k):
    """At the MDE, the report's exact McNemar test rejects at 5% in about 80% of simulated samples."""
    psi = k / n
    d = stats.mcnemar_mde(k // 2, k - k // 2, n).mde
    rng = np.random.default_rng(0)
    draws = rng.multinomial(n, [(psi + d) / 2, (psi - d) / 2, 1 - psi], size=20000)
    c, b = draws[:, 0], draws[:, 1]
    p = np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5))   # = mcnemar_from_counts
    for i in range(5):
        assert p[i] == pytest.approx(stats.mcnemar_from_counts(int(b[i]), int(c[i])).pvalue, rel=1e-9)
    assert np.mean(p < 0.05) == pytest.approx(0.80, abs=0.015)


def test_mde_with_too_little_discordance_assumes_one_way_changes():
    # 0 or 3 of 100 questions changed: no |delta| <= psi reaches 80% power, so the MDE is sought with
    # psi = delta (all changes one way). Then m ~ Binomial(100, d) changed questions, all gains, and the
    # exact test rejects iff m >= 6 (2 * 0.5^6 = 0.031; 2 * 0.5^5 = 0.0625): P(m >= 6) = 0.8.
    for b, c in [(0, 0), (2, 1)]:
        p = stats.mcnemar_mde(b, c, 100)
        assert p.one_way and p.mde > p.discordant
        assert sps.binom.sf(5, 100, p.mde) == pytest.approx(0.8, abs=1e-8)
        assert p.mde == pytest.approx(0.077911, abs=1e-6)
    assert not stats.mcnemar_mde(12, 8, 100).one_way
    # n = 6, nothing changed: only 6 of 6 one way is significant, so d^6 = 0.8
    assert stats.mcnemar_mde(0, 0, 6).mde == pytest.approx(0.8 ** (1 / 6), abs=1e-8)
    # n = 5: even 5 of 5 one way gives p = 0.0625; nothing is detectable
    assert stats.mcnemar_mde(0, 0, 5).mde is None
    with pytest.raises(UserError):
        stats.mcnemar_mde(60, 60, 100)
    with pytest.raises(UserError, match="power"):
        stats.mcnemar_mde(5, 5, 100, power=1.0)
