"""Confidence intervals for accuracies measured on the same items by several methods and seeds.

Accuracy of a method = the macro average over tasks of the per-task mean, with each item's correctness
first averaged over the method's seeds:

    acc = (1/T) sum_t (1/n_t) sum_{i in t} c_i,      c_i = (1/S) sum_s correct_{s,i}  in [0, 1]

The 95% interval is a percentile bootstrap over items, resampled within each task (stratified), so it
reflects which items happened to be drawn. A difference between two methods is bootstrapped **paired**:
the same resampled items for both, which removes the item difficulty shared by the two.
"""

from __future__ import annotations

import numpy as np


def seed_averaged(items_per_seed: list[dict[str, list[int]]]) -> dict[str, np.ndarray]:
    """{task: c (n_t,)} from one {task: [0/1 per item]} per seed (all seeds scored on the same items)."""
    tasks = items_per_seed[0].keys()
    out = {}
    for t in tasks:
        rows = [np.asarray(s[t], dtype=float) for s in items_per_seed]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"task {t}: the seeds were scored on different numbers of items")
        out[t] = np.mean(rows, axis=0)
    return out


def macro_accuracy(c: dict[str, np.ndarray]) -> float:
    """(1/T) sum_t mean(c_t): the average over tasks of the per-task mean."""
    return float(np.mean([v.mean() for v in c.values()]))


def bootstrap_macro_means(c: dict[str, np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """(B,) macro averages of B = ``n_boot`` stratified bootstrap draws: for each task t (in order) the item indices
    (B, n_t) are drawn with replacement from one ``default_rng(seed)``, and draw b's value is
    (1/T) sum_t mean_i c_t[idx_t[b, i]]. The one bootstrap of the project: the intervals below and the
    registry's promotion test (``registry/significance.py``) resample with it."""
    rng = np.random.default_rng(seed)
    idx = {t: rng.integers(0, len(v), size=(n_boot, len(v))) for t, v in c.items()}
    return np.mean([c[t][idx[t]].mean(axis=1) for t in c], axis=0)


def bootstrap_ci(c: dict[str, np.ndarray], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(accuracy, low, high): percentile bootstrap, items resampled within each task."""
    means = bootstrap_macro_means(c, n_boot, seed)
    alpha = (1 - level) / 2
    return macro_accuracy(c), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_difference_ci(a: dict[str, np.ndarray], b: dict[str, np.ndarray], n_boot: int = 2000,
                         level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(acc_a - acc_b, low, high) with the same resampled items for both methods."""
    if a.keys() != b.keys() or any(len(a[t]) != len(b[t]) for t in a):
        raise ValueError("a paired comparison needs both methods scored on the same items")
    diff = {t: a[t] - b[t] for t in a}
    means = bootstrap_macro_means(diff, n_boot, seed)
    alpha = (1 - level) / 2
    return macro_accuracy(diff), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired_seed_difference(a: dict[int, float], b: dict[int, float], level: float = 0.95
                           ) -> tuple[float, float, float, int]:
    """Mean of a_s - b_s over the seeds both have, with its Student-t interval; (mean, low, high, n).

    Runs with the same seed share the data order (and the random init where shapes agree), so the per-seed
    difference d_s removes the seed's shared luck:

        mean = (1/n) sum_s d_s,   half-width = t_{(1+level)/2, n-1} * sd(d) / sqrt(n)

    With n = 1 the interval is (mean, mean): no spread can be estimated from one pair.
    """
    from scipy.stats import t as student_t

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common between the two methods")
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    mean = float(d.mean())
    if len(d) == 1:
        return mean, mean, mean, 1
    half = float(student_t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half, len(d)


def seed_mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean over seeds with its Student-t interval, (mean, low, high, n): mean +- t_{(1+level)/2, n-1} sd / sqrt(n);
    with n = 1 the interval is (mean, mean)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean, len(x)
    half = float(student_t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half, len(x)
