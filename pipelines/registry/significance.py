"""Is the challenger better than the champion on the same items? Two paired tests over per-item scores.

Both models are scored on the same n items, grouped (by task): a_i, b_i (challenger, champion). For a
lower-is-better metric (a loss) the scores are negated first, so "better" is always "larger" below and the
reported diff is the gain (champion's loss minus challenger's).

For 0/1 scores only the pairs where the two disagree carry information about which is better:

    n10 = #{a_i = 1, b_i = 0},   n01 = #{a_i = 0, b_i = 1},   diff = (n10 - n01) / n

**McNemar's exact test** (one-sided): under H0 (neither is better) each discordant pair is a fair coin, so
n10 ~ Binomial(n10 + n01, 1/2) and

    p = P(X >= n10) = sum_{k = n10}^{m} C(m, k) / 2^m,   m = n10 + n01.

**Paired bootstrap** of the macro average over tasks (items resampled within each task, the same draw for
both models): the lower one-sided (1 - alpha) bound of diff is the alpha quantile of the resampled
differences.

Promotion needs both a significant test (p < alpha, or the bootstrap's lower bound > margin) and an observed
gain of at least ``margin`` (in the metric's units: accuracy 0.01 = one point).

``test="auto"`` picks McNemar when every score is 0 or 1 and the bootstrap otherwise (a loss, ROUGE-L);
McNemar asked for continuous scores is an error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..config.register import PROMOTION_TESTS
from ..evaluation.stats import bootstrap_macro_means, macro_accuracy


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
    metric: str = "acc"
    higher_is_better: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def explain(self) -> str:
        stat = (f"McNemar p = {self.p_value:.3g}" if self.p_value is not None
                else f"bootstrap {100 * (1 - self.alpha):.0f}% lower bound {self.lower_bound:+.4f}")
        pairs = (f"{self.better} only-challenger vs {self.worse} only-champion" if self.p_value is not None else
                 f"{self.better} items better, {self.worse} worse")
        direction = "" if self.higher_is_better else ", lower is better"
        return (f"{self.metric}: challenger {self.challenger_acc:.4f} vs champion {self.champion_acc:.4f} on "
                f"{self.n_items} items (gain {self.diff:+.4f}{direction}; {pairs}; {stat}; margin {self.margin:g}, "
                f"alpha {self.alpha:g})")


def mcnemar_exact_p(better: int, worse: int) -> float:
    """One-sided exact p: P(X >= better), X ~ Binomial(better + worse, 1/2); 1.0 with no discordant pair."""
    m = better + worse
    if m == 0:
        return 1.0
    return math.fsum(math.comb(m, k) for k in range(better, m + 1)) / 2 ** m


def _arrays(items: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {t: np.asarray(v, dtype=float) for t, v in items.items()}


def paired_test(challenger: dict[str, list[float]], champion: dict[str, list[float]], *, test: str = "auto",
                margin: float = 0.0, alpha: float = 0.05, n_boot: int = 10000, seed: int = 0,
                higher_is_better: bool = True, metric: str = "acc") -> PairedResult:
    """Compare per-item scores {task: [score, ...]} of two models scored on the same items (same tasks, same
    item counts, same order); raises ValueError otherwise."""
    if test not in PROMOTION_TESTS:
        raise ValueError(f"unknown paired test {test!r} (allowed: {', '.join(PROMOTION_TESTS)})")
    if challenger.keys() != champion.keys() or any(len(challenger[t]) != len(champion[t]) for t in challenger):
        raise ValueError("a paired test needs both models scored on the same tasks and items")
    if not any(len(v) for v in challenger.values()):
        raise ValueError(f"no items scored for {metric}")
    a, b = _arrays(challenger), _arrays(champion)
    binary = all(np.isin(v, (0.0, 1.0)).all() for v in (*a.values(), *b.values()))
    if test == "auto":
        test = "mcnemar" if binary else "bootstrap"
    elif test == "mcnemar" and not binary:
        raise ValueError(f"McNemar's test needs 0/1 scores per item, and {metric} is continuous (promotion_test: "
                         "auto or bootstrap)")
    sign = 1.0 if higher_is_better else -1.0
    mean_a, mean_b = macro_accuracy(a), macro_accuracy(b)
    a = {t: sign * v for t, v in a.items()}
    b = {t: sign * v for t, v in b.items()}
    better = int(sum((a[t] > b[t]).sum() for t in a))
    worse = int(sum((a[t] < b[t]).sum() for t in a))
    diff = macro_accuracy(a) - macro_accuracy(b)
    p = low = None
    if test == "mcnemar":
        p = mcnemar_exact_p(better, worse)
        significant = p < alpha
    else:
        means = bootstrap_macro_means({t: a[t] - b[t] for t in a}, n_boot, seed)
        low = float(np.quantile(means, alpha))
        significant = low > margin
    return PairedResult(test=test, n_items=int(sum(len(v) for v in a.values())), challenger_acc=mean_a,
                        champion_acc=mean_b, diff=diff, better=better, worse=worse, p_value=p, lower_bound=low,
                        margin=margin, alpha=alpha, significant=bool(significant and diff >= margin), metric=metric,
                        higher_is_better=higher_is_better)
