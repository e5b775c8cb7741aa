"""What the train step leaves behind: the chosen adapter (``checkpoint_choice.py``: the last step's, or the best
evaluation point's that held the guards) with ``checkpoint_choice.json`` in it, the loss history, its plot and a
summary, in a folder or under an s3:// URI."""

from __future__ import annotations

import json
from pathlib import Path

from ..config.run_config import RunConfig
from ..runtime import storage

ADAPTER_DIR = "adapter"
LAST_ADAPTER_DIR = "adapter-last"
"""The last step's adapter, beside ``adapter/`` when the choice kept an earlier one."""


def write_outputs(run: RunConfig, final: Path, out_dir: str | Path, scratch: Path, ns, found: dict | None) -> dict:
    """adapter/ (the chosen one, with checkpoint_choice.json), adapter-last/ (when that is another step's),
    history.json, loss_curve.png and train_summary.json into ``out_dir`` (folder or URI)."""
    from .checkpoint_choice import BEST_ADAPTER_DIR, CHOICE_FILE

    remote = storage.is_uri(str(out_dir))
    out = scratch / "out" if remote else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    choice = json.loads((final / CHOICE_FILE).read_text()) if (final / CHOICE_FILE).exists() else None
    earlier = bool(choice) and choice["chosen_step"] != choice["last_step"] and (final / BEST_ADAPTER_DIR).is_dir()
    storage.copy_to(final / (BEST_ADAPTER_DIR if earlier else ADAPTER_DIR), out / ADAPTER_DIR)
    if earlier:
        storage.copy_to(final / ADAPTER_DIR, out / LAST_ADAPTER_DIR)
    if choice:
        (out / ADAPTER_DIR / CHOICE_FILE).write_text(json.dumps(choice, indent=2))
    history = json.loads((final / "history.json").read_text())
    (out / "history.json").write_text(json.dumps(history))
    if history:
        plot_history(history, out / "loss_curve.png", f"{run.fora.method}: {run.name}", choice)
    summary = {"checkpoints": ns.path, "namespace_state": ns.state,
               "resumed_from_step": found["step"] if found else 0, "steps": len(history),
               "chosen_step": choice["chosen_step"] if choice else len(history),
               "choice": choice["reason"] if choice else "the last step"}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    if remote:
        storage.upload_dir(out, str(out_dir))
    adapter = storage.join(str(out_dir), ADAPTER_DIR) if remote else str(out / ADAPTER_DIR)
    return {**summary, "adapter_dir": adapter, "history": history}


def plot_history(history: list[dict], path: str | Path, title: str = "", choice: dict | None = None) -> Path:
    """Training loss per step and validation loss where measured; where the general-text perplexity was measured,
    a second panel with it, the base's and the guard's bound, and the chosen step marked on both. One PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    general = [h for h in history if "general_perplexity" in h]
    fig, axes = plt.subplots(1, 2 if general else 1, figsize=(12 if general else 7, 3.5), squeeze=False)
    ax = axes[0][0]
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss", lw=1)
    val = [h for h in history if "val_loss" in h]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title or "FoRA training")
    if general:
        gx = axes[0][1]
        gx.plot([h["step"] for h in general], [h["general_perplexity"] for h in general], "o-", color="C3",
                label="general-text perplexity")
        base = general[0]["base_general_perplexity"]
        gx.axhline(base, color="grey", lw=1, label="base model")
        for bound in _guard_bounds(choice, base):
            gx.axhline(bound, color="C3", ls="--", lw=1, label="guard bound")
        gx.set_xlabel("step")
        gx.set_ylabel("perplexity (general text)")
        gx.set_title("forgetting")
    if choice:
        for row in axes:
            for a in row:
                a.axvline(choice["chosen_step"], color="C2", ls=":", label=f"chosen: step {choice['chosen_step']}")
    for row in axes:
        for a in row:
            a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _guard_bounds(choice: dict | None, base: float) -> list[float]:
    """The perplexity bounds of the guards the choice applied (base + slack)."""
    if not choice:
        return []
    from ..config.register import Guard
    from ..registry.guards import slack

    return [base + slack(Guard(**g), base) for g in choice.get("guard_specs", []) if g["metric"] == "general/perplexity"]
