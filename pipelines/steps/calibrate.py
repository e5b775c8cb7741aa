"""Step 2, Fisher calibration: score every decoder layer on the calibration split, select the top K, and
draw the per-layer Fisher profile with the selected layers highlighted.

Outputs in ``out_dir``: ``fisher_report.json`` (scores, ranking, N, tokens, seconds, peak memory, plus
``selected_layers``) and ``fisher_profile.png``. For FILet methods the same pass also collects the K-FAC
factors of every target module of every layer (``fora_core/filet.py``) and writes their candidate energies,
(d_in,) per module, to ``filet_energies.safetensors`` (the factors themselves are dropped: a few hundred KB
instead of (d_in^2 + d_out^2) floats per module); ``fisher_report.json`` gets ``filet`` with its cost.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from fora_core import FisherReport, ForaConfig, KfacCollector, fisher_energies, fisher_scores, select_layers
from fora_core.architecture import module_names_for_layers
from fora_core.filet import weight_out_in

from ..data.jsonl import read_jsonl
from ..data.tokens import collate
from ..training.calibration_artifacts import (
    FILET_FILE,
    PROFILE_FILE,
    REPORT_FILE,
    load_selection,
    save_selection,
)

log = logging.getLogger("fora")


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
                    device: str = "cpu", progress: bool = False, filet: bool = False) -> dict:
    """Fisher pass on ``calibration.jsonl`` (with FILet's K-FAC hooks when ``filet``); returns
    {"report": FisherReport, "selected_layers": [...], "filet": {...} or None}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(Path(data_dir) / "calibration.jsonl")
    bs = fora.fisher.batch_size
    batches = [collate(rows[i : i + bs], tokenizer.pad_token_id) for i in range(0, len(rows), bs)]
    if len(batches) < fora.fisher.num_batches:  # the data had fewer rows than data.calibration_size
        log.warning("Fisher pass: %d batches of %d, not fora.fisher.num_batches=%d: the calibration split has "
                    "only %d records", len(batches), bs, fora.fisher.num_batches, len(rows))
    model = model.to(device)
    kfac = None
    if filet:
        from fora_core import find_decoder_layers

        names = module_names_for_layers(model, list(range(find_decoder_layers(model).num_layers)), fora.target_modules)
        kfac = KfacCollector(model, names)
    with kfac if kfac is not None else contextlib.nullcontext():
        report = fisher_scores(model, batches, num_batches=fora.fisher.num_batches, estimator=fora.fisher.estimator,
                               seed=fora.seed, progress=progress, on_batch=kfac.begin_batch if kfac else None)
    filet_info = _write_filet_energies(model, kfac, out / FILET_FILE, report.seconds) if kfac is not None else None
    k = fora.num_layers_to_adapt(report.num_layers)
    selected = select_layers(report, k) if fora.uses_fisher else list(range(report.num_layers))
    save_selection(out, report, selected, filet_info)
    plot_fisher_profile(report, selected, out / PROFILE_FILE)
    return {"report": report, "selected_layers": selected, "filet": filet_info}


def calibration_of(out: Path) -> dict:
    """What :func:`run_calibration` returns, read back from its files (a cached calibration)."""
    report, selected = load_selection(out)
    filet = json.loads((out / REPORT_FILE).read_text()).get("filet")
    return {"report": report, "selected_layers": selected, "filet": filet}


def _write_filet_energies(model, kfac: KfacCollector, path: Path, pass_seconds: float) -> dict:
    """Energies (d_in,) per module from the collected factors; returns the cost figures for the report."""
    import time

    from safetensors.torch import save_file

    t0 = time.perf_counter()
    factors = kfac.factors()
    factor_bytes = sum(sx.numel() * sx.element_size() + sy.numel() * sy.element_size() for sx, sy in factors.values())
    energies = {name: fisher_energies(weight_out_in(model.get_submodule(name)), sx, sy).float().cpu().contiguous()
                for name, (sx, sy) in factors.items()}
    del factors, kfac.sum_x, kfac.sum_y
    save_file(energies, str(path))
    seconds = time.perf_counter() - t0
    log.info("FILet: Fisher energies of %d modules in %.1f s (K-FAC factors held during the pass: %.0f MB)",
             len(energies), seconds, factor_bytes / 2**20)
    return {"modules": len(energies), "energy_seconds": seconds, "pass_seconds_with_hooks": pass_seconds,
            "kfac_factor_bytes": factor_bytes}
