"""What the trained adapters look like: effective rank of every update dW = (alpha/r) B A and the singular
spectrum by module type (the FoRA paper's Figure 3 for the model at hand).

The entropy effective rank (Roy and Vetterli 2007) of dW with singular values s_1 >= ... >= s_r is
exp(-sum_i p_i log p_i), p_i = s_i / sum_j s_j: r for a flat spectrum, 1 for a rank-one update. Its ratio
to r is the paper's Table 6 number (LoRA 0.71, FoRA 0.88).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from fora_core import adapter_diagnostics


def module_type(name: str) -> str:
    """'base_model.model.model.layers.3.self_attn.q_proj' -> 'q_proj'."""
    return name.rsplit(".", 1)[-1]


def layer_index(name: str) -> int | None:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p in ("layers", "h", "blocks") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def adapter_spectra(peft_model, scaling: float, rank: int, constrained: str | None) -> dict:
    """Per adapter (name, module type, layer, effective rank, update norm, singular values) and the summary:
    mean effective rank, its ratio to r, and the same per module type."""
    rows = []
    for d in adapter_diagnostics(peft_model, scaling, constrained):
        rows.append({"name": d.name, "type": module_type(d.name), "layer": layer_index(d.name),
                     "effective_rank": d.effective_rank, "update_norm": d.update_norm,
                     "orthogonality_error": d.orthogonality_error, "singular_values": d.singular_values})
    if not rows:
        return {"adapters": [], "rank": rank}
    by_type: dict[str, list[dict]] = {}
    for r in rows:
        by_type.setdefault(r["type"], []).append(r)
    mean_er = statistics.fmean(r["effective_rank"] for r in rows)
    return {
        "rank": rank,
        "adapters": rows,
        "effective_rank_mean": mean_er,
        "effective_rank_ratio": mean_er / rank,
        "by_type": {t: {"effective_rank_ratio": statistics.fmean(r["effective_rank"] for r in rs) / rank,
                        "update_norm_mean": statistics.fmean(r["update_norm"] for r in rs), "count": len(rs)}
                    for t, rs in by_type.items()},
    }


def normalised_spectrum(values: list[float]) -> list[float]:
    """s_i / s_1 (all zeros for a zero update)."""
    top = values[0] if values and values[0] > 0 else 0.0
    return [v / top if top else 0.0 for v in values]


def plot_spectra(spectra: dict, path: str | Path, title: str = "") -> Path:
    """One panel per module type: s_i / s_1 of every adapter's update (thin) and their mean (bold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted({r["type"] for r in spectra["adapters"]})
    fig, axes = plt.subplots(1, max(1, len(types)), figsize=(3.0 * max(1, len(types)), 3.0), sharey=True,
                             squeeze=False)
    for ax, t in zip(axes[0], types, strict=False):
        curves = [normalised_spectrum(r["singular_values"]) for r in spectra["adapters"] if r["type"] == t]
        for c in curves:
            ax.plot(range(1, len(c) + 1), c, color="tab:blue", alpha=0.25, lw=0.8)
        mean = [statistics.fmean(vals) for vals in zip(*curves, strict=True)]
        ax.plot(range(1, len(mean) + 1), mean, color="black", lw=2, label="mean")
        ratio = spectra["by_type"][t]["effective_rank_ratio"]
        ax.set_title(f"{t}  (eff. rank {ratio:.2f} r)", fontsize=9)
        ax.set_xlabel("singular value index i")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("s_i / s_1 of (alpha/r) B A")
    fig.suptitle(title or f"adapter update spectra (mean effective rank {spectra['effective_rank_ratio']:.2f} r)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_adapter_report(peft_model, scaling: float, rank: int, constrained: str | None, out_dir: str | Path,
                         title: str = "") -> dict:
    """``adapter_diagnostics.json`` and ``adapter_spectrum.png`` in ``out_dir``; returns the summary."""
    out = Path(out_dir)
    spectra = adapter_spectra(peft_model, scaling, rank, constrained)
    (out / "adapter_diagnostics.json").write_text(json.dumps(spectra, indent=1))
    if spectra["adapters"]:
        plot_spectra(spectra, out / "adapter_spectrum.png", title)
    return {k: v for k, v in spectra.items() if k != "adapters"}
