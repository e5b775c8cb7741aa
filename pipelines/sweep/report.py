"""A sweep's results: one row per trial, the result tables, the K-sensitivity plot and the curve overlay."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..runtime import atomic

COLUMNS = ("trial_id", "method", "K", "lr", "stiefel_lr", "seed", "status", "steps", "val_loss", "loss",
           "best_val_loss", "tokens_per_s", "train_seconds", "val_seconds", "wall_seconds",
           "checkpoint_path")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def collect_results(grid, max_steps: int) -> list[dict[str, Any]]:
    """Rows from a Tune ``ResultGrid``: config, how the trial ended (completed / stopped_early / diverged /
    failed / unfinished), last and best metrics, seconds inside training steps vs the trial's wall time, and the
    learning curve (``curve``: step, loss, val_loss where freshly measured)."""
    analysis = grid._experiment_analysis
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        df = frames.get(trial.trial_id)
        cfg = {**{k: trial.config[k] for k in ("lr", "stiefel_lr") if k in trial.config}, **trial.config["arm"]}
        row: dict[str, Any] = {"trial_id": trial.trial_id, "method": cfg["method"], "K": cfg["K"],
                               "lr": cfg["lr"], "stiefel_lr": cfg["stiefel_lr"], "seed": cfg.get("seed"),
                               "curve": []}
        if df is not None and len(df):
            last = df.iloc[-1]
            row.update(steps=int(last["step"]), loss=_num(last.get("loss")), val_loss=_num(last.get("val_loss")),
                       train_seconds=float(df["step_seconds"].sum()), wall_seconds=_num(last.get("time_total_s")),
                       val_seconds=float(df["val_seconds"].sum()) if "val_seconds" in df else 0.0,
                       tokens_per_s=_num(df["tokens_per_s"].median()) if "tokens_per_s" in df else None)
            if "val_loss" in df:
                row["best_val_loss"] = _num(df["val_loss"].min())
            if "checkpoint_path" in df:  # reported by Ray Train (multi-worker trials)
                paths = df["checkpoint_path"].dropna()
                row["checkpoint_path"] = str(paths.iloc[-1]) if len(paths) else None
            elif trial.checkpoint is not None:  # an in-process trial's last checkpoint, kept by Tune
                row["checkpoint_path"] = trial.checkpoint.path
            fresh = df["val_fresh"] if "val_fresh" in df else [True] * len(df)
            row["curve"] = [(int(s), _num(lo), _num(v) if f else None)
                            for s, lo, v, f in zip(df["step"], df["loss"], df.get("val_loss", [None] * len(df)),
                                                   fresh, strict=True)]
        steps = row.get("steps", 0)
        if df is not None and len(df) and "diverged" in df and _num(df.iloc[-1].get("diverged")):
            row["status"] = "diverged"  # stopped on a non-finite loss: its last checkpoint is not a model
            row["checkpoint_path"] = None
            row["problem"] = str(df.iloc[-1].get("problem"))
        elif trial.status == "ERROR":
            row["status"] = "failed"
        elif trial.status == "TERMINATED":
            row["status"] = "completed" if steps >= max_steps else "stopped_early"
        else:
            row["status"] = "unfinished"
        rows.append(row)
    return sorted(rows, key=lambda r: (r["method"], r["K"], r["lr"], r["stiefel_lr"], r["seed"] or 0))


def k_sensitivity(results: list[dict], metric: str = "val_loss") -> dict[str, dict[int, float]]:
    """{method: {K: best final metric over the lr settings}} from trials that ran to the end
    (trials stopped early are compared at an earlier step, so they are left out)."""
    table: dict[str, dict[int, float]] = {}
    for r in results:
        if r["status"] != "completed" or r.get(metric) is None:
            continue
        per = table.setdefault(r["method"], {})
        per[r["K"]] = min(per.get(r["K"], math.inf), r[metric])
    return {m: dict(sorted(v.items())) for m, v in table.items()}


def write_tables(results: list[dict], folder: Path) -> list[Path]:
    """``results.csv`` (every trial) and ``results.md`` (the same plus the K-sensitivity table)."""
    csv_path, md_path = folder / "results.csv", folder / "results.md"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(results)

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    shown = COLUMNS[:-1]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in shown) + " |" for r in results]
    ks = k_sensitivity(results)
    if ks:
        all_k = sorted({k for v in ks.values() for k in v})
        lines += ["", "K sensitivity (best final val_loss over learning rates, trials that ran to the end):", "",
                  "| method | " + " | ".join(f"K={k}" for k in all_k) + " |", "|---|" + "---|" * len(all_k)]
        lines += [f"| {m} | " + " | ".join(fmt(v.get(k)) for k in all_k) + " |" for m, v in ks.items()]
    atomic.write_text(md_path, "\n".join(lines) + "\n")
    return [csv_path, md_path]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_k_sensitivity(results: list[dict], path: Path, metric: str, num_layers: int) -> Path:
    """Final metric vs K, one line per method (the FoRA paper's Figure 2, for this model and data)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, per_k in k_sensitivity(results, metric).items():
        ax.plot(list(per_k), list(per_k.values()), "o-", label=method)
    stopped = [r for r in results if r["status"] == "stopped_early" and r.get(metric) is not None]
    if stopped:
        ax.scatter([r["K"] for r in stopped], [r[metric] for r in stopped], marker="x", c="grey",
                   label="stopped early (at an earlier step)")
    ax.set_xlabel(f"layer budget K (of {num_layers} layers)")
    ax.set_ylabel(f"final {metric}")
    ax.set_title("Sensitivity to the layer budget K")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curves(results: list[dict], path: Path) -> Path:
    """Validation loss (where measured) of every trial over steps, one line per trial."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        pts = [(s, v) for s, _, v in r["curve"] if v is not None]
        if pts:
            style = "-" if r["status"] == "completed" else ":"
            ax.plot(*zip(*pts, strict=True), style, marker=".",
                    label=f"{r['method']} K={r['K']} lr={r['lr']:.1g} ({r['status']})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title("Learning curves of the sweep's trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
