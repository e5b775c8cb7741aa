"""``eval_table.md``: every metric of the evaluate step, base / tuned / champion side by side, and the tuned
model's diagnostics, for a person reading the run (the KFP UI's Markdown view, ``fora run``'s output)."""

from __future__ import annotations

from ..config.evaluation import TASK_AVERAGES
from ..config.register import DEFAULT_METRIC
from ..evaluation.metrics import DIAGNOSTIC_METRICS


def _order(name: str) -> tuple[int, str]:
    if name in TASK_AVERAGES:
        return (0, name)
    if name in DIAGNOSTIC_METRICS:
        return (4, name)
    if name.startswith("heldout/"):
        return (2, name)
    if name.startswith("general/"):
        return (3, name)
    return (1, name)


def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if "perplexity" in name else f"{value:.3f}"


def _item_count(items) -> str:
    """How many items a metric was scored on: a scorer that applies to some held-out items only (``contains``
    where the reference states the fact) says so here."""
    if items is None:
        return "-"
    if isinstance(items, dict):
        return str(sum(len(v) for v in items.values()))
    return str(len(items))


def results_table(results: dict) -> str:
    """One row per metric (the average first, the tasks' accuracies, the held-out metrics, general text), with
    the number of items it was scored on."""
    cols = [c for c in ("base", "tuned", "champion") if c in results]
    if not cols:
        return "(nothing scored)\n"
    directions = results.get("directions", {})
    names = sorted({m for c in cols for m in results[c].get("metrics", {})
                    if not m.endswith(("/acc_norm", "acc_norm_avg"))}, key=_order)
    header = [f"champion v{results['champion']['version']}" if c == "champion" else c for c in cols]
    delta = "base" in cols and "tuned" in cols
    lines = ["| metric | items | " + " | ".join(header) + (" | tuned - base |" if delta else " |"),
             "|---|---|" + "---|" * (len(cols) + delta)]
    scored_items = results[cols[-1] if "tuned" not in cols else "tuned"].get("items", {})
    for name in names:
        values = [results[c].get("metrics", {}).get(name) for c in cols]
        cells = [_fmt(v, name) for v in values]
        if delta:
            b, t = results["base"]["metrics"].get(name), results["tuned"]["metrics"].get(name)
            arrow = "" if directions.get(name, True) else " (lower is better)"
            cells.append("-" if b is None or t is None else f"{t - b:+.3f}{arrow}")
        label = "**average acc**" if name == DEFAULT_METRIC else name
        lines.append(f"| {label} | {_item_count(scored_items.get(name))} | " + " | ".join(cells) + " |")
    diag = results.get("diagnostics")
    if diag:
        extra = []
        if "general_text" in diag:
            g = diag["general_text"]
            extra.append(f"- general-text perplexity on {g['tokens']} tokens of {g['source']}: base "
                         f"{g['base_perplexity']:.2f}, tuned {g['tuned_perplexity']:.2f}; KL drift from the base "
                         f"{g['kl_drift']:.3g} nats/token")
        a = diag["adapters"]
        if "effective_rank_ratio" in a:
            types = ", ".join(f"{t} {v['effective_rank_ratio']:.2f}" for t, v in a["by_type"].items())
            extra.append(f"- effective rank of the updates: {a['effective_rank_ratio']:.2f} r on average "
                         f"(r = {a['rank']}; {types})")
        if "stiefel_factor_drift" in a:
            extra.append(f"- the Stiefel factor moved {a['stiefel_factor_drift']:.3g} of its norm from its init "
                         "(||X - X0|| / ||X0||, mean over adapters)")
        lines += [""] + extra
    champ = results.get("champion")
    if champ:
        lines += ["", f"- the registry's champion (version {champ['version']}) on the same items "
                  f"({champ.get('source', 'scored in this run')}); the register step tests the difference"]
    return "\n".join(lines) + "\n"
