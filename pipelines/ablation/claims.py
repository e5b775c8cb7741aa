"""What the ablation may claim: every comparison the report's text makes, as a paired interval over seeds,
and the plain-words reading generated from those intervals (a tie is called a tie).

Every number is measured on the report split with the reported seeds (``runner.py``), never on the rows or
the seed that chose the setting. Per seed s and method m (all from ``seed_scores``):

    report_loss          ln(report-split perplexity): mean NLL per response token (nats), lower is better
    general_perplexity   perplexity on general text (forgetting), lower is better
    kl_drift             mean KL(base || tuned) per general-text token (forgetting), lower is better
    effective_rank_ratio entropy effective rank of s B A over r (the paper's Table 6), no better side

A comparison a - b is the paired t-interval of d_s = x_{a,s} - x_{b,s} (``paired_seed_difference``);
its verdict is "tie" when the interval holds 0, else which side is lower.
"""

from __future__ import annotations

import math
from typing import Any

from ..evaluation.stats import paired_seed_difference, seed_mean_ci

METRICS: dict[str, tuple[str, bool | None, str]] = {
    # key: (words, lower is better (None: neither), format)
    "report_loss": ("report-split loss", True, "{:.4f}"),
    "general_perplexity": ("general-text perplexity", True, "{:.2f}"),
    "kl_drift": ("KL drift", True, "{:.4f}"),
    "effective_rank_ratio": ("effective rank / r", None, "{:.3f}"),
}

COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("fora", "lora", "FoRA against LoRA on every layer, the paper's headline"),
    ("fg-lora", "lora", "selection: LoRA on the Fisher top-K layers only"),
    ("fg-lora-orth", "fg-lora", "the start: B orthonormal and A = 0, both factors still trained by AdamW"),
    ("fora", "fg-lora-orth", "the manifold: B trained by Cayley-Adam on the Stiefel manifold, from the same start"),
    ("fora", "fora-frozen-b", "training B on the manifold against leaving it at its start"),
    ("fora", "fg-lora", "start and manifold together, same layers"),
    ("stiefel-lora", "lora", "start and manifold on every layer"),
)

ORDER = ("lora", "fg-lora", "stiefel-lora", "fora", "fg-lora-orth", "fora-frozen-b")


def ordered_methods(summary: dict) -> list[str]:
    """The methods of the seeds phase, in the report's order (the others after, alphabetically)."""
    present = {r["method"] for r in summary["seeds"]}
    return [m for m in ORDER if m in present] + sorted(present - set(ORDER))


PAPER = {  # the FoRA paper (seeds/000), as restated in GUIDE.md section 1
    "effective_rank_ratio": {"lora": 0.71, "fora": 0.88},
    "general_perplexity": {"lora": 10.52, "fora": 7.65},
    "throughput_ratio_fora_vs_lora": 15210 / 10442,
}


def per_seed(summary: dict, method: str, key: str, phase: str = "seeds") -> dict[int, float]:
    """{seed: value} of a method's runs in a phase (``seeds``, or ``k_curves`` with the K filtered by the caller)."""
    scores = summary["seed_scores"] if phase == "seeds" else summary["k_scores"]
    out = {}
    for r in summary[phase]:
        if r["method"] != method or r["trial_id"] not in scores:
            continue
        v = metric_of(scores[r["trial_id"]].get("tuned", {}), key)
        if v is not None:
            out[int(r["seed"])] = v
    return out


METRIC_OF_KEY = {"general_perplexity": "general/perplexity", "kl_drift": "kl_drift",
                 "effective_rank_ratio": "effective_rank_ratio"}
"""The report's columns and the evaluate step's metric each is read from (``report_loss``: log of the report
split's perplexity)."""


def metric_of(tuned: dict, key: str) -> float | None:
    """A report column of one scored model (``steps/evaluate.py``'s block: its ``metrics``)."""
    metrics = tuned.get("metrics", {})
    if key == "report_loss":
        return math.log(metrics["heldout/perplexity"]) if metrics.get("heldout/perplexity") else None
    v = metrics.get(METRIC_OF_KEY[key])
    return float(v) if v is not None else None


def mean_interval(summary: dict, method: str, key: str) -> tuple[float, float, float, int] | None:
    values = list(per_seed(summary, method, key).values())
    return seed_mean_ci(values) if values else None


def verdict(a: str, b: str, low: float, high: float, n: int, key: str) -> str:
    """'a tie' when the interval holds 0 (or one seed), else which side is lower, and whether that is better."""
    if n < 2:
        return "one seed: no interval"
    if low <= 0 <= high:
        return "a tie (the interval includes 0)"
    lower = a if high < 0 else b
    better = METRICS[key][1]
    return f"{lower} lower" + (" (better)" if better else "")


def compare(summary: dict, a: str, b: str, key: str) -> dict[str, Any] | None:
    """The paired difference a - b of one metric over the seeds both ran, with its verdict."""
    xa, xb = per_seed(summary, a, key), per_seed(summary, b, key)
    if not set(xa) & set(xb):
        return None
    mean, low, high, n = paired_seed_difference(xa, xb)
    return {"a": a, "b": b, "metric": key, "mean": mean, "low": low, "high": high, "n": n,
            "verdict": verdict(a, b, low, high, n, key)}


def comparisons(summary: dict) -> list[dict[str, Any]]:
    """Every comparison of ``COMPARISONS`` whose two methods ran, for every metric."""
    out = []
    for a, b, meaning in COMPARISONS:
        for key in METRICS:
            c = compare(summary, a, b, key)
            if c is not None:
                out.append({**c, "meaning": meaning})
    return out


def _fmt(key: str, v: float, signed: bool = False) -> str:
    f = METRICS[key][2]
    return (f.replace("{:", "{:+") if signed else f).format(v)


def describe(c: dict) -> str:
    if c["n"] < 2:  # one seed: the value, and no interval pretending to be one
        return f"{_fmt(c['metric'], c['mean'], True)} ({c['verdict']})"
    return (f"{_fmt(c['metric'], c['mean'], True)} [{_fmt(c['metric'], c['low'], True)}, "
            f"{_fmt(c['metric'], c['high'], True)}]: {c['verdict']}")


def additivity(summary: dict, key: str = "report_loss") -> dict[str, Any] | None:
    """The interaction fora - fg-lora - stiefel-lora + lora per seed: negative when the two parts together gain
    more than the sum of their single gains (super-additive, the paper's claim), positive when less."""
    parts = {m: per_seed(summary, m, key) for m in ("fora", "fg-lora", "stiefel-lora", "lora")}
    seeds = set.intersection(*(set(v) for v in parts.values()))
    if not seeds:
        return None
    inter = {s: parts["fora"][s] - parts["fg-lora"][s] - parts["stiefel-lora"][s] + parts["lora"][s] for s in seeds}
    mean, low, high, n = paired_seed_difference(inter, {s: 0.0 for s in seeds})
    words = "one seed: no verdict" if n < 2 else "a tie with additive (the interval includes 0)" \
        if low <= 0 <= high else ("super-additive" if high < 0 else "sub-additive")
    return {"mean": mean, "low": low, "high": high, "n": n, "verdict": words}


def k_comparisons(summary: dict, method: str, key: str = "report_loss") -> list[dict[str, Any]]:
    """Each K of a method's curve against the K of the seeds phase, paired over the K-curve seeds."""
    base = next((r["K"] for r in summary["seeds"] if r["method"] == method), None)
    if base is None:
        return []
    ref = per_seed(summary, method, key)
    out = []
    for k in sorted({int(r["K"]) for r in summary["k_curves"] if r["method"] == method}):
        sub = {**summary, "k_curves": [r for r in summary["k_curves"] if r["method"] == method and int(r["K"]) == k]}
        xs = per_seed(sub, method, key, phase="k_curves")
        if set(xs) & set(ref):
            mean, low, high, n = paired_seed_difference(xs, ref)
            out.append({"K": k, "base_K": int(base), "mean": mean, "low": low, "high": high, "n": n,
                        "verdict": verdict(f"K={k}", f"K={base}", low, high, n, key)})
    return out


def reading(summary: dict, acc_fora_vs_lora: tuple[float, float, float] | None = None) -> list[str]:
    """The plain-words reading, one statement per line, each from an interval (module doc); the seven-task
    accuracy difference fora - lora (paired over items) when the report computed it."""
    split, seeds = summary["split"], summary["config"]["ablation"]["seeds"]
    out = [f"Each method's setting was chosen on {split['selection']} selection rows with seed "
           f"{summary['config']['ablation']['search_seed']} ({summary['search_budget']} search trials per method); "
           f"every number here is on {split['report']} other rows and seeds {seeds}. Differences are a - b with "
           "95% t-intervals over paired seeds; a difference whose interval includes 0 is called a tie."]
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for c in comparisons(summary):
        by_pair.setdefault((c["a"], c["b"]), []).append(c)
    for (a, b), cs in by_pair.items():
        parts = "; ".join(f"{METRICS[c['metric']][0]} {describe(c)}" for c in cs)
        out.append(f"{a} - {b} ({cs[0]['meaning']}): {parts}.")
    if acc_fora_vs_lora:
        d, lo, hi = acc_fora_vs_lora
        word = "a tie (the interval includes 0)" if lo <= 0 <= hi else ("fora ahead" if d > 0 else "fora behind")
        out.append(f"Seven-task accuracy, fora - lora, paired over the same items: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]: "
                   f"{word}.")
    out += mechanism(summary)
    add = additivity(summary)
    if add:
        interval = f" [{add['low']:+.4f}, {add['high']:+.4f}]" if add["n"] >= 2 else ""
        out.append(f"Additivity of the two parts on the report-split loss (fora - fg-lora - stiefel-lora + lora): "
                   f"{add['mean']:+.4f}{interval}: {add['verdict']} (paper: super-additive).")
    else:
        out.append("Additivity of selection and manifold (the paper: super-additive) is not measured here: it needs "
                   "stiefel-lora in ablation.methods.")
    for m in sorted({r["method"] for r in summary["k_curves"]}):
        ks = k_comparisons(summary, m)
        if ks:
            parts = "; ".join(f"K={k['K']} {k['mean']:+.4f} [{k['low']:+.4f}, {k['high']:+.4f}]: {k['verdict']}"
                              for k in ks)
            out.append(f"K sensitivity of {m}, report-split loss against K={ks[0]['base_K']} over {ks[0]['n']} "
                       f"seeds: {parts}.")
    return out


def mechanism(summary: dict) -> list[str]:
    """Which part of fora's difference from fg-lora comes from the start and which from the manifold, per metric."""
    out = []
    for key, (words, _, _) in METRICS.items():
        start = compare(summary, "fg-lora-orth", "fg-lora", key)
        manifold = compare(summary, "fora", "fg-lora-orth", key)
        frozen = compare(summary, "fora", "fora-frozen-b", key)
        if not (start and manifold):
            continue
        line = (f"Mechanism, {words}: the start accounts for {describe(start)}; the manifold for "
                f"{describe(manifold)}")
        if frozen:
            line += f"; training B at all (fora - fora-frozen-b) for {describe(frozen)}"
        out.append(line + ".")
    return out
