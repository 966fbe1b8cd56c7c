"""Statistics: exact McNemar, bootstrap intervals, paired differences, pairing by id."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

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
