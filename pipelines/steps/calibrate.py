"""Step 2, Fisher calibration: score every decoder layer on the calibration split, select the top K, and
draw the per-layer Fisher profile with the selected layers highlighted.

Outputs in ``out_dir``: ``fisher_report.json`` (scores, ranking, N, tokens, seconds, peak memory, plus
``selected_layers``) and ``fisher_profile.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from fora_core import FisherReport, ForaConfig, fisher_scores, select_layers
from fora_core.fisher import IGNORE_INDEX

from .data_prep import read_jsonl

log = logging.getLogger("fora")


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token rows to the longest: input_ids, attention_mask, labels (B, T)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def mean_response_loss(model, rows: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """Mean token cross-entropy over the unmasked (response) tokens of ``rows``; the caller sets eval mode."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = {k: v.to(device) for k, v in collate(rows[i : i + batch_size], pad_id).items()}
        n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += model(**b).loss.item() * n
        count += n
    return total / max(1, count)


def plot_fisher_profile(report: FisherReport, selected: list[int], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    colors = ["#d95f02" if i in selected else "#9e9e9e" for i in range(report.num_layers)]
    ax.bar(range(report.num_layers), report.scores, color=colors)
    ax.set_yscale("log")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("Fisher score F_l (log)")
    ax.set_title(title or f"Fisher layer profile: {len(selected)} of {report.num_layers} layers selected (orange)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def run_calibration(model, tokenizer, data_dir: str | Path, fora: ForaConfig, out_dir: str | Path,
                    device: str = "cpu", progress: bool = False) -> dict:
    """Fisher pass on ``calibration.jsonl``; returns {"report": FisherReport, "selected_layers": [...]}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(Path(data_dir) / "calibration.jsonl")
    bs = fora.fisher.batch_size
    batches = [collate(rows[i : i + bs], tokenizer.pad_token_id) for i in range(0, len(rows), bs)]
    if len(batches) < fora.fisher.num_batches:  # the data had fewer rows than data.calibration_size
        log.warning("Fisher pass: %d batches of %d, not fora.fisher.num_batches=%d: the calibration split has "
                    "only %d records", len(batches), bs, fora.fisher.num_batches, len(rows))
    report = fisher_scores(model.to(device), batches, num_batches=fora.fisher.num_batches,
                           estimator=fora.fisher.estimator, seed=fora.seed, progress=progress)
    k = fora.num_layers_to_adapt(report.num_layers)
    selected = select_layers(report, k) if fora.uses_fisher else list(range(report.num_layers))
    report.save(out / "fisher_report.json")
    data = json.loads((out / "fisher_report.json").read_text())
    data["selected_layers"] = selected
    (out / "fisher_report.json").write_text(json.dumps(data, indent=2))
    plot_fisher_profile(report, selected, out / "fisher_profile.png")
    return {"report": report, "selected_layers": selected}


def load_selection(calib_dir: str | Path) -> tuple[FisherReport, list[int]]:
    """The Fisher report and selected layers from a calibration folder (or its s3:// copy)."""
    from .. import storage

    data = storage.read_json(storage.join(str(calib_dir), "fisher_report.json"))
    selected = data.pop("selected_layers")
    return FisherReport(**data), selected
