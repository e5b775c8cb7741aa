"""The ablation's report: ``report.md`` with the per-method table, the paper's numbers beside ours, a
plain-words reading generated from the numbers, and the plots it links (``search.png``,
``k_sensitivity.png``, ``methods.png``, ``spectra.png``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from fora_core import FISHER_METHODS

from ..evaluation.adapter_report import normalised_spectrum
from ..evaluation.stats import (
    bootstrap_ci,
    mean_sd,
    paired_difference_ci,
    paired_seed_difference,
    seed_averaged,
)
from ..runtime import atomic

ORDER = ("lora", "fg-lora", "stiefel-lora", "fora")
PAPER = {  # the FoRA paper (seeds/000), as restated in GUIDE.md section 1
    "effective_rank_ratio": {"lora": 0.71, "fora": 0.88},
    "general_perplexity": {"lora": 10.52, "fora": 7.65},
    "throughput_ratio_fora_vs_lora": 15210 / 10442,
}


def _methods(summary: dict) -> list[str]:
    present = {r["method"] for r in summary["seeds"]}
    return [m for m in ORDER if m in present] + sorted(present - set(ORDER))


def method_table(summary: dict) -> dict[str, dict[str, Any]]:
    """Per method: setting, parameters, validation loss, accuracy with CIs, perplexities, KL, rank, speed."""
    scores = summary["seed_scores"]
    rows: dict[str, dict[str, Any]] = {}
    items: dict[str, dict] = {}
    for m in _methods(summary):
        trials = [r for r in summary["seeds"] if r["method"] == m]
        tuned = [scores[r["trial_id"]]["tuned"] for r in trials]
        row: dict[str, Any] = {**summary["best"][m], "seeds": len(trials),
                               "trainable_parameters": scores[trials[0]["trial_id"]].get("trainable_parameters")}
        row["val_loss"] = mean_sd([r["val_loss"] for r in trials])
        items[m] = seed_averaged([{t: v["items"] for t, v in tu["tasks"].items()} for tu in tuned])
        row["acc"] = bootstrap_ci(items[m])
        row["acc_seeds"] = [tu["acc_avg"] for tu in tuned]
        for key in ("perplexity", "general_perplexity", "kl_drift", "effective_rank_ratio"):
            vals = [tu[key] for tu in tuned if key in tu]
            row[key] = mean_sd(vals) if vals else None
        tps = [r["tokens_per_s"] for r in trials if r.get("tokens_per_s")]
        row["tokens_per_s"] = mean_sd(tps) if tps else None
        rows[m] = row
    base_items = {t: v["items"] for t, v in summary["base"]["tasks"].items()}
    base_c = seed_averaged([base_items])
    ref = "lora" if "lora" in rows else None
    for m, row in rows.items():
        row["acc_vs_base"] = paired_difference_ci(items[m], base_c)
        if ref and m != ref:
            row["acc_vs_lora"] = paired_difference_ci(items[m], items[ref])
    return rows


def k_curves(summary: dict) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {K: {"val_loss", "general_perplexity"}}} for the Fisher methods, first seed only."""
    first = summary["config"]["ablation"]["seeds"][0]
    out: dict[str, dict[int, dict[str, float]]] = {}
    pool = [(r, summary["seed_scores"]) for r in summary["seeds"] if r.get("seed") == first] + \
           [(r, summary["k_scores"]) for r in summary["k_curves"]]
    for r, scores in pool:
        if r["method"] not in FISHER_METHODS or r.get("val_loss") is None:
            continue
        tuned = scores.get(r["trial_id"], {}).get("tuned", {})
        out.setdefault(r["method"], {})[int(r["K"])] = {"val_loss": r["val_loss"],
                                                         "general_perplexity": tuned.get("general_perplexity")}
    return {m: dict(sorted(v.items())) for m, v in out.items()}


def _pm(v: tuple[float, float] | None, fmt: str = "{:.3f}") -> str:
    if v is None:
        return "n/a"
    return fmt.format(v[0]) + (" ± " + fmt.format(v[1]) if v[1] else "")


def _ci(v: tuple[float, float, float], fmt: str = "{:.3f}", signed: bool = False) -> str:
    f = fmt.replace("{:", "{:+") if signed else fmt
    return f"{f.format(v[0])} [{fmt.format(v[1])}, {fmt.format(v[2])}]"


def _seed_losses(summary: dict, method: str) -> dict[int, float]:
    """{seed: final validation loss} of a method's seed runs."""
    return {r["seed"]: r["val_loss"] for r in summary["seeds"]
            if r["method"] == method and r.get("val_loss") is not None}


def reading(summary: dict, table: dict[str, dict], curves: dict) -> list[str]:
    """Plain-words statements, each computed from the numbers (what reproduces, what does not)."""
    out = []
    n_seeds = max(r["seeds"] for r in table.values())
    by_loss = sorted(table, key=lambda m: table[m]["val_loss"][0])
    out.append(f"In-domain validation loss ranks the methods {' < '.join(by_loss)} (mean of {n_seeds} seeds, "
               "lower is better).")
    for m, ref, what in (("fora", "lora", "the paper's claim is 'better at about half'"),
                         ("fora", "fg-lora", "same layers: the Stiefel constraint is the only difference"),
                         ("stiefel-lora", "lora", "all layers: the Stiefel constraint is the only difference")):
        if m not in table or ref not in table:
            continue
        mean, low, high, n = paired_seed_difference(_seed_losses(summary, m), _seed_losses(summary, ref))
        if n > 1:
            verdict = ("not distinguishable from zero" if low <= 0 <= high else
                       f"{m} {'better' if mean < 0 else 'worse'} (the interval excludes zero)")
            interval = f" [{low:+.4f}, {high:+.4f}], 95% t-interval over {n} paired seeds: {verdict}"
        else:
            interval = " (one seed: no interval)"
        ratio = (table[m]["trainable_parameters"] or 0) / max(1, table[ref]["trainable_parameters"] or 1)
        out.append(f"{m} minus {ref}, validation loss: {mean:+.4f}{interval}; {ratio:.2f}x {ref}'s trainable "
                   f"parameters ({what}).")
    d = table.get("fora", {}).get("acc_vs_lora")
    if d:
        sig = "not distinguishable from zero" if d[1] <= 0 <= d[2] else ("FoRA ahead" if d[0] > 0 else "FoRA behind")
        out.append(f"Seven-task accuracy, FoRA minus LoRA (paired over the same items): {_ci(d, signed=True)}: "
                   f"{sig}.")
    er = {m: table[m]["effective_rank_ratio"][0] for m in table if table[m]["effective_rank_ratio"]}
    if "fora" in er and "lora" in er:
        holds = er["fora"] > er["lora"]
        out.append(f"Effective rank of the updates: FoRA {er['fora']:.2f} r vs LoRA {er['lora']:.2f} r (paper: "
                   f"0.88 vs 0.71): the ordering {'reproduces' if holds else 'does not reproduce'}.")
    gp = {m: table[m]["general_perplexity"][0] for m in table if table[m]["general_perplexity"]}
    base_gp = _base_general_perplexity(summary)
    if "fora" in gp and "lora" in gp:
        holds = gp["fora"] < gp["lora"]
        base = f" (base {base_gp:.2f})" if base_gp else ""
        out.append(f"Forgetting, general-text perplexity after tuning: FoRA {gp['fora']:.2f} vs LoRA {gp['lora']:.2f}"
                   f"{base} (paper, WikiText-2: 7.65 vs 10.52): FoRA forgetting less "
                   f"{'reproduces' if holds else 'does not reproduce'}.")
    for m, per_k in curves.items():
        if len(per_k) >= 2:
            vals = [v["val_loss"] for v in per_k.values()]
            out.append(f"K sensitivity of {m}: validation loss spans {max(vals) - min(vals):.4f} over K = "
                       f"{', '.join(map(str, per_k))} (best at K = {min(per_k, key=lambda k: per_k[k]['val_loss'])}).")
    out += grid_edges(summary)
    tps = {m: table[m]["tokens_per_s"][0] for m in table if table[m]["tokens_per_s"]}
    if "fora" in tps and "lora" in tps:
        out.append(f"Training throughput FoRA / LoRA-all: {tps['fora'] / tps['lora']:.2f}x on this machine's CPU "
                   f"(paper, GPU: {PAPER['throughput_ratio_fora_vs_lora']:.2f}x).")
    return out


def grid_edges(summary: dict) -> list[str]:
    """A warning for every method whose best learning rate sits on the edge of its searched grid (the optimum
    may lie beyond it, and the comparison then favours the methods whose optimum was inside)."""
    grids = {"lr": summary["config"]["ablation"]["lr"], "stiefel_lr": summary["config"]["ablation"]["stiefel_lr"]}
    out = []
    for m, best in summary["best"].items():
        for key, grid in grids.items():
            if key == "stiefel_lr" and m not in ("fora", "stiefel-lora"):
                continue
            if len(grid) > 1 and best[key] in (min(grid), max(grid)):
                side = "largest" if best[key] == max(grid) else "smallest"
                out.append(f"Caveat: {m}'s best {key} ({best[key]:.3g}) is the {side} value searched; its optimum "
                           f"may lie beyond the grid (widen ablation.{key}).")
    return out


def _base_general_perplexity(summary: dict) -> float | None:
    for s in summary["seed_scores"].values():
        g = s.get("diagnostics", {}).get("general_text")
        if g:
            return g["base_perplexity"]
    return None


def markdown(summary: dict, table: dict[str, dict], curves: dict) -> str:
    cfg = summary["config"]
    sec = summary["seconds"]
    base = summary["base"]
    lines = [
        f"# Ablation: {', '.join(table)} on {cfg['model']}",
        "",
        f"Same data ({cfg['data']['source']}, {cfg['data']['max_train']} training rows), same step budget "
        f"({cfg['train']['max_steps']} steps of {cfg['train']['batch_size']} sequences), K = "
        f"{cfg['fora']['layer_budget']} of {summary['num_layers']} layers for the Fisher methods, rank "
        f"{cfg['fora']['rank']}, alpha {cfg['fora']['alpha']}. Every method had its own learning-rate search "
        f"(AdamW lr {cfg['ablation']['lr']}; Cayley-Adam lr {cfg['ablation']['stiefel_lr']} for the Stiefel "
        f"methods; {summary['trials']['search']} trials, each run to the end), then its best setting ran with "
        f"seeds {cfg['ablation']['seeds']}. Accuracy: the seven commonsense tasks, "
        f"{cfg['ablation']['eval_limit'] or cfg['eval']['limit']} items each, 95% bootstrap intervals over "
        "items (seed-averaged per item; differences paired on the same items).",
        "",
        f"Wall time: {sec['total'] / 60:.1f} min over {sec.get('invocations', 1)} invocation(s) (prepare "
        f"{sec['prepare']:.0f} s, search {sec['search'] / 60:.1f} min,"
        f" seeds {sec['seeds'] / 60:.1f} min, K curves {sec['k_curves'] / 60:.1f} min, scoring "
        f"{sec['scoring'] / 60:.1f} min).",
        "",
        "## Per method",
        "",
        "| method | params | lr | stiefel lr | val loss | acc (7 tasks) [95% CI] | vs base | vs LoRA | "
        "in-domain ppl | general ppl | KL drift | eff. rank / r | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, r in table.items():
        stiefel = f"{r['stiefel_lr']:.3g}" if m in ("fora", "stiefel-lora") else "-"
        vs_lora = _ci(r["acc_vs_lora"], signed=True) if "acc_vs_lora" in r else "-"
        lines.append(
            f"| {m} | {r['trainable_parameters'] or 0:,} | {r['lr']:.3g} | {stiefel} | {_pm(r['val_loss'], '{:.4f}')} | "
            f"{_ci(r['acc'])} | {_ci(r['acc_vs_base'], signed=True)} | {vs_lora} | {_pm(r['perplexity'], '{:.2f}')} | "
            f"{_pm(r['general_perplexity'], '{:.2f}')} | {_pm(r['kl_drift'], '{:.4f}')} | "
            f"{_pm(r['effective_rank_ratio'], '{:.2f}')} | {_pm(r['tokens_per_s'], '{:.0f}')} |")
    base_gp = _base_general_perplexity(summary)
    lines += ["", f"Base model: accuracy {base['acc_avg']:.3f}, in-domain perplexity {base.get('perplexity', 0):.2f}"
              + (f", general-text perplexity {base_gp:.2f}" if base_gp else "") + ".",
              "", "![methods](methods.png)", "", "## Beside the paper", "",
              "| measure | paper (LLaMA-class models, GPU) | here |", "|---|---|---|"]
    er = {m: table[m]["effective_rank_ratio"][0] for m in table if table[m]["effective_rank_ratio"]}
    gp = {m: table[m]["general_perplexity"][0] for m in table if table[m]["general_perplexity"]}
    tps = {m: table[m]["tokens_per_s"][0] for m in table if table[m]["tokens_per_s"]}
    if er:
        lines.append("| effective rank / r, LoRA vs FoRA (Table 6) | 0.71 vs 0.88 | "
                     f"{er.get('lora', float('nan')):.2f} vs {er.get('fora', float('nan')):.2f} |")
    if gp:
        lines.append("| general-text perplexity after tuning, LoRA-all vs FoRA (Table 11, WikiText-2) | 10.52 vs 7.65 | "
                     f"{gp.get('lora', float('nan')):.2f} vs {gp.get('fora', float('nan')):.2f} |")
    if "fora" in tps and "lora" in tps:
        lines.append(f"| training throughput FoRA K=L/2 / LoRA-all (Table 9) | {PAPER['throughput_ratio_fora_vs_lora']:.2f}x"
                     f" | {tps['fora'] / tps['lora']:.2f}x (CPU, 1 thread per trial) |")
    if curves:
        desc = "; ".join(f"{m}: " + ", ".join(f"K={k} {v['val_loss']:.4f}" for k, v in c.items()) for m, c in curves.items())
        lines.append(f"| K sensitivity (Figure 2) | FoRA flat in K, FG-LoRA degrades | val loss {desc} |")
    lines += ["", "## Reading", ""] + [f"- {s}" for s in reading(summary, table, curves)]
    lines += ["", "## Learning-rate search", "", "![search](search.png)", "",
              "| method | lr | stiefel lr | final val loss | Stiefel factor moved, ‖X − X0‖ / ‖X0‖ |",
              "|---|---|---|---|---|"]
    drift = summary.get("stiefel_drift", {})
    for r in sorted(summary["search"], key=lambda r: (r["method"], r["lr"], r["stiefel_lr"])):
        mark = " **best**" if all(r[k] == summary["best"][r["method"]][k] for k in ("lr", "stiefel_lr")) else ""
        val = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None and r["status"] != "diverged" else r["status"]
        stiefel = f"{r['stiefel_lr']:.3g}" if r["method"] in ("fora", "stiefel-lora") else "-"
        moved = f"{drift[r['trial_id']]:.3g}" if r["trial_id"] in drift else "-"
        lines.append(f"| {r['method']} | {r['lr']:.3g} | {stiefel} | {val}{mark} | {moved} |")
    gone = summary.get("diverged") or []
    if gone:
        lines += ["", "Diverged (stopped on a non-finite loss; left out of every table and test, no model): "
                  + "; ".join(f"{d['method']} K={d['K']} lr={d['lr']:.3g} at step {d.get('steps')}" for d in gone)]
    lines += ["", "## K sensitivity (tuned learning rates)", "", "![k](k_sensitivity.png)", "",
              "## Adapter spectra", "", "![spectra](spectra.png)", "",
              f"Re-run: `{summary.get('command', 'fora ablate CONFIG')}`; an interrupted run resumes where it "
              "stopped.", ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_search(summary: dict, path: Path) -> Path:
    plt = _pyplot()
    methods = _methods(summary)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        rows = [r for r in summary["search"] if r["method"] == m and r.get("val_loss") is not None]
        for slr in sorted({r["stiefel_lr"] for r in rows}):
            pts = sorted((r["lr"], r["val_loss"]) for r in rows if r["stiefel_lr"] == slr)
            label = f"stiefel lr {slr:.2g}" if m in ("fora", "stiefel-lora") else None
            ax.plot(*zip(*pts, strict=True), "o-", label=label)
        ax.set_xscale("log")
        ax.set_title(m)
        ax.set_xlabel("AdamW lr")
        if m in ("fora", "stiefel-lora"):
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("final validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_k(curves: dict, num_layers: int, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for m, per_k in curves.items():
        ks = list(per_k)
        axes[0].plot(ks, [v["val_loss"] for v in per_k.values()], "o-", label=m)
        gp = [(k, v["general_perplexity"]) for k, v in per_k.items() if v["general_perplexity"]]
        if gp:
            axes[1].plot(*zip(*gp, strict=True), "o-", label=m)
    axes[0].set_ylabel("final validation loss")
    axes[1].set_ylabel("general-text perplexity (forgetting)")
    for ax in axes:
        ax.set_xlabel(f"layer budget K (of {num_layers})")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_methods(summary: dict, table: dict, path: Path) -> Path:
    plt = _pyplot()
    methods = list(table)
    x = range(len(methods))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for i, m in enumerate(methods):
        vals = [r["val_loss"] for r in summary["seeds"] if r["method"] == m]
        axes[0].scatter([i] * len(vals), vals, color="tab:blue", alpha=0.6)
        acc, lo, hi = table[m]["acc"]
        axes[1].errorbar([i], [acc], yerr=[[acc - lo], [hi - acc]], fmt="o", capsize=4, color="tab:green")
        gp = table[m]["general_perplexity"]
        if gp:
            axes[2].errorbar([i], [gp[0]], yerr=[gp[1]], fmt="o", capsize=4, color="tab:red")
    axes[1].axhline(summary["base"]["acc_avg"], ls="--", color="grey", label="base")
    base_gp = _base_general_perplexity(summary)
    if base_gp:
        axes[2].axhline(base_gp, ls="--", color="grey", label="base")
    for ax, title in zip(axes, ("validation loss (each seed)", "7-task accuracy, 95% CI",
                                "general-text perplexity"), strict=True):
        ax.set_xticks(list(x), methods)
        ax.set_title(title, fontsize=10)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_spectra(summary: dict, root: Path, path: Path) -> Path:
    """Mean normalised singular spectrum of the updates per method (first seed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    first = summary["config"]["ablation"]["seeds"][0]
    for r in summary["seeds"]:
        if r.get("seed") != first:
            continue
        f = root / "scores" / r["trial_id"] / "adapter_diagnostics.json"
        if not f.exists():
            continue
        spectra = json.loads(f.read_text())
        curves = [normalised_spectrum(a["singular_values"]) for a in spectra["adapters"]]
        mean = [statistics.fmean(v) for v in zip(*curves, strict=True)]
        ax.plot(range(1, len(mean) + 1), mean, label=f"{r['method']} (eff. rank {spectra['effective_rank_ratio']:.2f} r)")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("mean s_i / s_1 over adapters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(summary: dict, root: Path) -> list[Path]:
    """``report.md``, ``report.json`` (the table) and the four plots in ``root``; returns their paths."""
    table = method_table(summary)
    curves = k_curves(summary)
    outputs = [plot_search(summary, root / "search.png"), plot_k(curves, summary["num_layers"], root / "k_sensitivity.png"),
               plot_methods(summary, table, root / "methods.png"), plot_spectra(summary, root, root / "spectra.png")]
    atomic.write_text(root / "report.md", markdown(summary, table, curves))
    atomic.write_text(root / "report.json", json.dumps({"methods": table, "k_curves": curves}, indent=1))
    return [root / "report.md", root / "report.json", *outputs]
