"""``register.guards``: metrics the tuned model must not make worse than the base model's beyond a tolerance.

For a guard (m, t, relative) with base value b and tuned value x, the allowed slack is s = t * |b| when
relative, else t; the guard holds when

    x >= b - s      (higher is better: accuracy, ROUGE-L, contains)
    x <= b + s      (lower is better: losses, perplexities)

A challenger that breaks a guard is kept out whatever its paired test says; the decision names the guard.
"""

from __future__ import annotations

from ..config.errors import RunConfigError
from ..config.register import Guard
from ..evaluation.metrics import higher_is_better


def slack(guard: Guard, base: float) -> float:
    """How far the tuned value may move the wrong way from ``base``: t, or t * |base| when relative."""
    return guard.tolerance * abs(base) if guard.relative else guard.tolerance


def broken_guards(guards: list[Guard], tuned: dict[str, float], base: dict[str, float] | None,
                  directions: dict[str, bool]) -> list[str]:
    """One clause per broken guard (empty: all hold). A guard on a metric the evaluation did not produce is a
    :class:`RunConfigError` naming it and what was produced."""
    if not guards:
        return []
    if base is None:
        raise RunConfigError("register.guards compare with the base model, but the evaluation has no base scores "
                             "(eval.compare_base is false)")
    broken = []
    for g in guards:
        if g.metric not in tuned or g.metric not in base:
            produced = ", ".join(sorted(set(tuned) & set(base)))
            raise RunConfigError(f"invalid value for 'register.guards' metric {g.metric!r}: the evaluation did not "
                                 f"produce it (produced: {produced})")
        b, x = base[g.metric], tuned[g.metric]
        allowed = slack(g, b)
        higher = higher_is_better(g.metric, declared=directions)
        ok = x >= b - allowed if higher else x <= b + allowed
        if not ok:
            bound = f">= {b - allowed:.4g}" if higher else f"<= {b + allowed:.4g}"
            broken.append(f"guard {g.metric}: tuned {x:.4g} vs base {b:.4g} (must be {bound}; {g.describe()})")
    return broken
