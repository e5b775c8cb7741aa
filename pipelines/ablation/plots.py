"""The ablation report's plots: the search (every trial), the K curves with their seed intervals, the methods
on the report split, and the mean singular spectrum of the updates."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..evaluation.adapter_report import normalised_spectrum
from .claims import ordered_methods, per_seed

STIEFEL = ("fora", "stiefel-lora")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_search(summary: dict, path: Path) -> Path:
    """Every search trial's final selection loss against its AdamW lr (one line per Stiefel lr), best circled."""
    plt = _pyplot()
    methods = ordered_methods(summary)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        rows = [r for r in summary["search"] if r["method"] == m and r.get("val_loss") is not None
                and r["status"] != "diverged"]
        for slr in sorted({r["stiefel_lr"] for r in rows}):
            pts = sorted((r["lr"], r["val_loss"]) for r in rows if r["stiefel_lr"] == slr)
            label = f"stiefel lr {slr:.2g}" if m in STIEFEL else None
            ax.plot(*zip(*pts, strict=True), "o-", label=label)
        best = summary["best"].get(m)
        if best:
            mine = [r for r in rows if r["lr"] == best["lr"] and r["stiefel_lr"] == best["stiefel_lr"]]
            if mine:
                ax.plot([mine[0]["lr"]], [mine[0]["val_loss"]], "o", ms=12, mfc="none", mec="black")
        ax.set_xscale("log")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("AdamW lr")
        if m in STIEFEL:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("final selection loss (search seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_k(summary: dict, path: Path) -> Path:
    """Report-split loss and general-text perplexity against K, mean over the K-curve seeds with t-intervals."""
    from ..evaluation.stats import seed_mean_ci

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    seeds = {int(r["seed"]) for r in summary["k_curves"]}
    for m in sorted({r["method"] for r in summary["k_curves"]}):
        for ax, key in zip(axes, ("report_loss", "general_perplexity"), strict=True):
            pts = []
            base_k = next(int(r["K"]) for r in summary["seeds"] if r["method"] == m)
            ks = sorted({int(r["K"]) for r in summary["k_curves"] if r["method"] == m} | {base_k})
            for k in ks:
                if k == base_k:
                    vals = [v for s, v in per_seed(summary, m, key).items() if s in seeds]
                else:
                    sub = {**summary, "k_curves": [r for r in summary["k_curves"]
                                                   if r["method"] == m and int(r["K"]) == k]}
                    vals = list(per_seed(sub, m, key, phase="k_curves").values())
                if vals:
                    mean, lo, hi, _ = seed_mean_ci(vals)
                    pts.append((k, mean, mean - lo, hi - mean))
            if pts:
                ks_, means, lo, hi = zip(*pts, strict=True)
                ax.errorbar(ks_, means, yerr=[lo, hi], fmt="o-", capsize=4, label=m)
    axes[0].set_ylabel("report-split loss")
    axes[1].set_ylabel("general-text perplexity (forgetting)")
    for ax in axes:
        ax.set_xlabel(f"layer budget K (of {summary['num_layers']})")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_methods(summary: dict, table: dict, path: Path) -> Path:
    """Per method: report-split loss per seed, KL drift and general-text perplexity (t-intervals over seeds)."""
    plt = _pyplot()
    methods = list(table)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, m in enumerate(methods):
        vals = list(per_seed(summary, m, "report_loss").values())
        axes[0].scatter([i] * len(vals), vals, color="tab:blue", alpha=0.7)
        kl = table[m]["kl_drift"]
        if kl:
            axes[1].errorbar([i], [kl[0]], yerr=[[kl[0] - kl[1]], [kl[2] - kl[0]]], fmt="o", capsize=4,
                             color="tab:green")
        gp = table[m]["general_perplexity"]
        if gp:
            axes[2].errorbar([i], [gp[0]], yerr=[[gp[0] - gp[1]], [gp[2] - gp[0]]], fmt="o", capsize=4,
                             color="tab:red")
    base_gp = base_general_perplexity(summary)
    if base_gp:
        axes[2].axhline(base_gp, ls="--", color="grey", label="base")
    for ax, title in zip(axes, ("report-split loss (each seed)", "KL drift from the base, 95% t-CI",
                                "general-text perplexity, 95% t-CI"), strict=True):
        ax.set_xticks(list(range(len(methods))), methods, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def base_general_perplexity(summary: dict) -> float | None:
    for s in summary["seed_scores"].values():
        g = s.get("diagnostics", {}).get("general_text")
        if g:
            return g["base_perplexity"]
    return None


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


