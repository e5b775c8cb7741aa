"""What the train step leaves behind: the final adapter, the loss history, its plot and a summary, in a
folder or under an s3:// URI."""

from __future__ import annotations

import json
from pathlib import Path

from ..config.run_config import RunConfig
from ..runtime import storage

ADAPTER_DIR = "adapter"


def write_outputs(run: RunConfig, final: Path, out_dir: str | Path, scratch: Path, ns, found: dict | None) -> dict:
    """adapter/, history.json, loss_curve.png and train_summary.json into ``out_dir`` (folder or URI)."""
    remote = storage.is_uri(str(out_dir))
    out = scratch / "out" if remote else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage.copy_to(final / ADAPTER_DIR, out / ADAPTER_DIR)
    history = json.loads((final / "history.json").read_text())
    (out / "history.json").write_text(json.dumps(history))
    if history:
        plot_history(history, out / "loss_curve.png", f"{run.fora.method}: {run.name}")
    summary = {"checkpoints": ns.path, "namespace_state": ns.state,
               "resumed_from_step": found["step"] if found else 0, "steps": len(history)}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    if remote:
        storage.upload_dir(out, str(out_dir))
    adapter = storage.join(str(out_dir), ADAPTER_DIR) if remote else str(out / ADAPTER_DIR)
    return {**summary, "adapter_dir": adapter, "history": history}


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss per step and validation loss where measured, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss", lw=1)
    val = [h for h in history if "val_loss" in h]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title or "FoRA training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
