"""The model card every registered version carries (``README.md`` in the registered folder, the Hugging Face
convention): what it was tuned from and on, how, how well (with intervals), and how to load it.

The promotion decision is made after the version exists (under the registry lock); the card gives the
comparison with the champion measured in the same run, and points at the version's ``champion_decision``
tag for the final word (``fora registry show CONFIG VERSION``).
"""

from __future__ import annotations

import json

import numpy as np

from ..evaluation.stats import bootstrap_ci
from .significance import paired_test


def _ci(items: dict[str, list[float]]) -> tuple[float, float, float]:
    return bootstrap_ci({t: np.asarray(v, dtype=float) for t, v in items.items()}, n_boot=2000)


def model_card(*, model_name: str, tags: dict[str, str], results: dict, per_item: dict, metric: str,
               artifact: str, fora: dict, chat: bool = False, choice: dict | None = None) -> str:
    """Markdown: base model, data (source, fingerprint, content hash), method and layers, every metric of the
    evaluation (the promotion metric with a 95% bootstrap interval over items), the measured champion
    comparison, which training step the adapter is and why (``choice``: ``checkpoint_choice.json``), and the
    loading snippet."""
    tuned = results["tuned"]
    base = results.get("base", {}).get("metrics", {})
    value, low, high = _ci(per_item["tuned"]["items"][metric])
    directions = per_item.get("directions", {})
    lines = [f"# {model_name}", "",
             f"Fine-tuned from `{tags['base_model']}` with **{tags['method']}** (fora-pipelines) at K = {tags['K']} "
             f"decoder layers {tags['selected_layers']}, rank {fora.get('rank')}, alpha {fora.get('alpha')}.", "",
             "## Data", "",
             f"- source: `{tags['data_source']}`", f"- fingerprint: `{tags['data_fingerprint']}`",
             f"- prepared data's content hash: `{tags['data_hash']}`", "",
             "## Evaluation", "",
             f"Eval suite `{per_item['suite']}` (the tasks' items, the held-out items and their scorers, the limits, "
             "lm-eval's version); the interval is a 95% percentile bootstrap over items, resampled within each task.",
             "", "| metric | tuned | base |", "|---|---|---|",
             f"| **{metric}** (promotion; {'higher' if directions.get(metric, True) else 'lower'} is better) | "
             f"{value:.4f} [{low:.4f}, {high:.4f}] | {base.get(metric, float('nan')):.4f} |"]
    for name, v in sorted(tuned.get("metrics", {}).items()):
        if name != metric:
            lines.append(f"| {name} | {v:.4f} | {base.get(name, float('nan')):.4f} |")
    lines += _checkpoint_lines(choice)
    lines += ["", "## Promotion", ""]
    champ = per_item.get("champion")
    if champ and metric in champ.get("items", {}):
        r = paired_test(per_item["tuned"]["items"][metric], champ["items"][metric],
                        test=tags.get("promotion_test", "auto"), higher_is_better=directions.get(metric, True),
                        metric=metric)
        lines.append(f"Measured in the same run against champion version {champ['version']}: {r.explain()}.")
    else:
        lines.append("No champion was measured in this run.")
    lines += ["The decision (and, if the champion changed meanwhile, what it was compared with) is the version's "
              "`champion_decision` tag: `fora registry show CONFIG VERSION`.", "", "## Load it", "", "```python",
              "import mlflow", "", f'model = mlflow.pyfunc.load_model("models:/{model_name}@champion")',
              ('model.predict(["Who are you?"], params={"max_new_tokens": 48})  # a user turn, through the chat template'
               if chat else
               'model.predict(["Question: Why is the sky blue?\\nAnswer:"], params={"max_new_tokens": 32})'), "```", ""]
    if artifact == "adapter":
        lines += [f"This version holds only the PEFT adapter and `fora_base.json` (`{tags['base_model']}`): loading "
                  "fetches the base model and merges the adapter. `peft.PeftModel.from_pretrained(base, folder)` works "
                  "on the folder too.", ""]
    else:
        lines += ["This version is a plain merged transformers model: `AutoModelForCausalLM.from_pretrained(folder)` "
                  "loads it, as does a server that reads Hugging Face model folders (vLLM, TGI; not run here).", ""]
    lines += ["## Tags", "", "```json", json.dumps(tags, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _checkpoint_lines(choice: dict | None) -> list[str]:
    """Which step the adapter is, why, and every evaluation point of the training run."""
    if not choice:
        return []
    lines = ["", "## Checkpoint", "", f"The adapter of {choice['reason']}.", "",
             "| step | validation loss | general-text perplexity | guards measured in training |", "|---|---|---|---|"]
    for p in choice["points"]:
        ppl = f"{p['general_perplexity']:.2f}" if "general_perplexity" in p else "-"
        mark = " **(chosen)**" if p["step"] == choice["chosen_step"] else ""
        lines.append(f"| {p['step']}{mark} | {p['val_loss']:.4f} | {ppl} | {'; '.join(p['broken']) or 'hold'} |")
    base = choice.get("base", {})
    if base:
        lines.append(f"| base | {base.get('heldout/loss', float('nan')):.4f} | "
                     f"{base.get('general/perplexity', float('nan')):.2f} | |")
    return lines
