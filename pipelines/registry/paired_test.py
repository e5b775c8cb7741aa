"""Is the challenger better than the champion on the same items? Two paired tests over per-item 0/1 scores.

Both models are scored on the same n items: a_i, b_i in {0, 1} (challenger, champion). Only the pairs
where they disagree carry information about which is better:

    n10 = #{a_i = 1, b_i = 0},   n01 = #{a_i = 0, b_i = 1},   diff = (n10 - n01) / n

**McNemar's exact test** (one-sided): under H0 (neither is better) each discordant pair is a fair coin, so
n10 ~ Binomial(n10 + n01, 1/2) and

    p = P(X >= n10) = sum_{k = n10}^{m} C(m, k) / 2^m,   m = n10 + n01.

**Paired bootstrap** of the macro average over tasks (items resampled within each task, the same draw for
both models): the lower one-sided (1 - alpha) bound of diff is the alpha quantile of the resampled
differences.

Promotion needs both a significant test (p < alpha, or the bootstrap's lower bound > margin) and an observed
gain of at least ``margin`` (accuracy points as a fraction: 0.01 = one point).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TESTS = ("mcnemar", "bootstrap")


@dataclass
class PairedResult:
    test: str
    n_items: int
    challenger_acc: float
    champion_acc: float
    diff: float
    """challenger - champion (macro average over tasks)."""
    better: int
    """n10: items only the challenger gets right."""
    worse: int
    """n01: items only the champion gets right."""
    p_value: float | None
    """McNemar's one-sided exact p (None for the bootstrap)."""
    lower_bound: float | None
    """The bootstrap's one-sided lower bound of diff (None for McNemar)."""
    margin: float
    alpha: float
    significant: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def explain(self) -> str:
        stat = (f"McNemar p = {self.p_value:.3g}" if self.p_value is not None
                else f"bootstrap {100 * (1 - self.alpha):.0f}% lower bound {self.lower_bound:+.4f}")
        return (f"challenger {self.challenger_acc:.4f} vs champion {self.champion_acc:.4f} on {self.n_items} items "
                f"(diff {self.diff:+.4f}; {self.better} only-challenger vs {self.worse} only-champion; {stat}; "
                f"margin {self.margin:g}, alpha {self.alpha:g})")


def mcnemar_exact_p(better: int, worse: int) -> float:
    """One-sided exact p: P(X >= better), X ~ Binomial(better + worse, 1/2); 1.0 with no discordant pair."""
    m = better + worse
    if m == 0:
        return 1.0
    return math.fsum(math.comb(m, k) for k in range(better, m + 1)) / 2 ** m


def _arrays(items: dict[str, list[int]]) -> dict[str, np.ndarray]:
    return {t: np.asarray(v, dtype=float) for t, v in items.items()}


def _macro(items: dict[str, np.ndarray]) -> float:
    return float(np.mean([v.mean() for v in items.values()]))


def paired_test(challenger: dict[str, list[int]], champion: dict[str, list[int]], *, test: str = "bootstrap",
                margin: float = 0.0, alpha: float = 0.05, n_boot: int = 10000, seed: int = 0) -> PairedResult:
    """Compare per-item scores {task: [0/1, ...]} of two models scored on the same items (same tasks, same
    item counts, same order); raises ValueError otherwise."""
    if test not in TESTS:
        raise ValueError(f"unknown paired test {test!r} (allowed: {', '.join(TESTS)})")
    if challenger.keys() != champion.keys() or any(len(challenger[t]) != len(champion[t]) for t in challenger):
        raise ValueError("a paired test needs both models scored on the same tasks and items")
    a, b = _arrays(challenger), _arrays(champion)
    better = int(sum(((a[t] == 1) & (b[t] == 0)).sum() for t in a))
    worse = int(sum(((a[t] == 0) & (b[t] == 1)).sum() for t in a))
    diff = _macro(a) - _macro(b)
    p = low = None
    if test == "mcnemar":
        p = mcnemar_exact_p(better, worse)
        significant = p < alpha
    else:
        rng = np.random.default_rng(seed)
        d = {t: a[t] - b[t] for t in a}
        means = np.mean([d[t][rng.integers(0, len(d[t]), size=(n_boot, len(d[t])))].mean(axis=1) for t in d],
                        axis=0)
        low = float(np.quantile(means, alpha))
        significant = low > margin
    return PairedResult(test=test, n_items=int(sum(len(v) for v in a.values())), challenger_acc=_macro(a),
                        champion_acc=_macro(b), diff=diff, better=better, worse=worse, p_value=p, lower_bound=low,
                        margin=margin, alpha=alpha, significant=bool(significant and diff >= margin))
