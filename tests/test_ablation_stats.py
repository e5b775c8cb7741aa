"""The ablation's intervals against textbook formulas: the bootstrap CI of a proportion against the normal
(Wald) interval, the paired CI of a difference against the standard error of the mean difference, the per-seed paired
t-interval against the textbook formula and scipy's paired t-test, and
seed averaging against a hand computation."""

import numpy as np
import pytest

from pipelines.evaluation.stats import (
    bootstrap_ci,
    macro_accuracy,
    mean_sd,
    paired_difference_ci,
    paired_seed_difference,
    seed_averaged,
)


def test_bootstrap_ci_of_one_task_matches_the_wald_interval():
    rng = np.random.default_rng(0)
    c = {"t": (rng.random(2000) < 0.62).astype(float)}
    p = c["t"].mean()
    half = 1.96 * np.sqrt(p * (1 - p) / 2000)
    acc, lo, hi = bootstrap_ci(c, n_boot=4000)
    assert acc == pytest.approx(p)
    assert lo == pytest.approx(p - half, abs=0.15 * half) and hi == pytest.approx(p + half, abs=0.15 * half)


def test_macro_average_interval_combines_task_variances():
    """Var of (1/T) sum_t mean_t = (1/T^2) sum_t p_t (1 - p_t) / n_t for independent tasks."""
    rng = np.random.default_rng(1)
    c = {"a": (rng.random(800) < 0.3).astype(float), "b": (rng.random(400) < 0.8).astype(float)}
    se = np.sqrt(sum(v.mean() * (1 - v.mean()) / len(v) for v in c.values())) / 2
    acc, lo, hi = bootstrap_ci(c, n_boot=4000)
    assert acc == pytest.approx((c["a"].mean() + c["b"].mean()) / 2)
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.15)


def test_paired_difference_ci_matches_the_standard_error_of_mean_differences():
    rng = np.random.default_rng(2)
    shared = rng.random(1500) < 0.5  # item difficulty both methods see
    a = {"t": (shared | (rng.random(1500) < 0.10)).astype(float)}
    b = {"t": (shared & (rng.random(1500) < 0.95)).astype(float)}
    d = a["t"] - b["t"]
    se = d.std(ddof=1) / np.sqrt(len(d))
    diff, lo, hi = paired_difference_ci(a, b, n_boot=4000)
    assert diff == pytest.approx(d.mean())
    assert lo == pytest.approx(d.mean() - 1.96 * se, abs=0.2 * se)
    assert hi == pytest.approx(d.mean() + 1.96 * se, abs=0.2 * se)
    # pairing removes the shared difficulty: far narrower than two independent intervals combined
    _, alo, ahi = bootstrap_ci(a)
    _, blo, bhi = bootstrap_ci(b)
    assert (hi - lo) < 0.5 * np.hypot(ahi - alo, bhi - blo)


def test_seed_averaging_and_mismatched_items():
    c = seed_averaged([{"t": [1, 0, 1]}, {"t": [1, 1, 0]}])
    assert c["t"].tolist() == [1.0, 0.5, 0.5]
    assert macro_accuracy(c) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="different numbers of items"):
        seed_averaged([{"t": [1, 0]}, {"t": [1]}])
    with pytest.raises(ValueError, match="same items"):
        paired_difference_ci({"t": np.ones(3)}, {"t": np.ones(4)})
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
    assert mean_sd([5.0]) == (5.0, 0.0)


def test_paired_seed_difference_matches_the_textbook_t_interval():
    # three seeds: d = (-0.0128, -0.0113, -0.0098); t_{0.975, 2} = 4.302653 (printed t tables)
    a = {0: 2.8390, 1: 2.8092, 2: 2.8457, 7: 1.0}  # seed 7 has no partner and must be ignored
    b = {0: 2.8518, 1: 2.8205, 2: 2.8555, 9: 5.0}
    mean, low, high, n = paired_seed_difference(a, b)
    d = [-0.0128, -0.0113, -0.0098]
    sd = (sum((x - sum(d) / 3) ** 2 for x in d) / 2) ** 0.5
    assert n == 3
    assert abs(mean - sum(d) / 3) < 1e-12
    assert abs((high - low) / 2 - 4.302653 * sd / 3 ** 0.5) < 1e-6
    # a second implementation: scipy's paired t-test and its confidence interval
    from scipy.stats import ttest_rel

    ci = ttest_rel([a[s] for s in (0, 1, 2)], [b[s] for s in (0, 1, 2)]).confidence_interval(0.95)
    assert abs(low - ci.low) < 1e-12 and abs(high - ci.high) < 1e-12
    assert paired_seed_difference({0: 1.0}, {0: 0.25}) == (0.75, 0.75, 0.75, 1)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_seed_difference({0: 1.0}, {1: 1.0})
