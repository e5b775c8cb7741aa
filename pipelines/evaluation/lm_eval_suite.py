"""The lm-eval suite the evaluate step scores: each commonsense task written as a local JSONL file and an
lm-eval task YAML (``output_type: multiple_choice``; context = the question, choices = the answer texts;
metrics acc and acc_norm), scored with ``lm_eval.simple_evaluate`` on a model object, per-item results
kept for the paired promotion test, and a fingerprint of the suite so two scores are only compared on
the same items.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..data.commonsense import load_examples

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


def lm_eval_scores(model, tokenizer, tasks: list[str], limit: int, task_dir: Path, batch_size: int,
                   items: bool = False) -> dict:
    """{task: {"acc": .., "acc_norm": ..}} from lm-eval on the in-memory model; with ``items`` also
    ``"items"``: each item's acc (0/1) in item order, for paired comparisons and bootstrap intervals."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(task_dir))
    out = simple_evaluate(model=lm, tasks=[f"fora_{t}" for t in tasks], task_manager=manager, limit=limit,
                          log_samples=items, bootstrap_iters=0)
    scores = {}
    for t in tasks:
        r = out["results"][f"fora_{t}"]
        scores[t] = {"acc": r["acc,none"], "acc_norm": r["acc_norm,none"]}
        if items:
            samples = sorted(out["samples"][f"fora_{t}"], key=lambda s: s["doc_id"])
            scores[t]["items"] = [int(s["acc"]) for s in samples]
            scores[t]["items_norm"] = [int(s["acc_norm"]) for s in samples]
    return scores


def suite_fingerprint(task_dir: Path, tasks: list[str], limit: int) -> str:
    """What makes two scorings comparable item by item: the tasks' item files, the task template, the
    limit and lm-eval's version (sha256, 16 hex digits). Equal fingerprints: the same items, scored the
    same way."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256(f"{TASK_YAML}|{limit}|lm_eval {version('lm_eval')}".encode())
    for t in sorted(tasks):
        h.update(t.encode())
        h.update((task_dir / f"{t}.jsonl").read_bytes())
    return h.hexdigest()[:16]


def per_item_scores(scores: dict) -> dict[str, dict[str, list[int]]]:
    """{"acc": {task: [0/1, ...]}, "acc_norm": {...}} from ``lm_eval_scores(..., items=True)``."""
    return {"acc": {t: v["items"] for t, v in scores.items()},
            "acc_norm": {t: v["items_norm"] for t, v in scores.items()}}


def summarise(scores: dict) -> dict:
    scores = {t: v for t, v in scores.items() if isinstance(v, dict) and "acc" in v}
    accs = [v["acc"] for v in scores.values()]
    norms = [v["acc_norm"] for v in scores.values()]
    return {"acc_avg": sum(accs) / len(accs), "acc_norm_avg": sum(norms) / len(norms)}
