"""The lm-eval part of the evaluate step: the tasks ``eval.tasks`` names, scored with ``lm_eval.simple_evaluate``
on a model object, every task's metrics and per-item scores kept for the paired promotion test, and a
fingerprint of the suite so two scores are only compared on the same items.

``eval.tasks`` entries are of three kinds:

* a built-in commonsense task (``boolq``, ...): written here as a local JSONL file and an lm-eval task YAML
  (``output_type: multiple_choice``; context = the question, choices = the answer texts; acc, acc_norm),
  offline;
* the user's own task YAML file or folder, local or ``s3://`` (lm-eval's ``include_path``; the tasks are
  the YAMLs' ``task:`` names);
* any task lm-eval knows by name (``arc_easy``, ``gsm8k``): its dataset comes from the hub or
  HF_DATASETS_CACHE; offline and uncached it fails in one line naming the task.

Only when a task is given by name does lm-eval index its ~15k built-in task files (about 10 s); our own
and the user's tasks load without them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config.errors import RunConfigError
from ..config.evaluation import BUILTIN_TASKS, TASK_AVERAGES, is_task_path
from ..data.commonsense import load_examples
from ..runtime import storage

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


@dataclass
class Suite:
    """The lm-eval tasks of one evaluation: what to run and under which names we report them."""

    names: dict[str, str] = field(default_factory=dict)
    """{lm-eval task or group name: our task name} (fora_boolq -> boolq; a user's task keeps its name)."""
    include_paths: list[str] = field(default_factory=list)
    needs_registry: bool = False
    """Some task is given by name: lm-eval's own task index is needed."""
    fingerprint_parts: list[bytes] = field(default_factory=list)

    def fingerprint(self, limit: int) -> str:
        """What makes two scorings comparable item by item: the task files (ours and the user's), the names,
        the limit and lm-eval's version (sha256, 16 hex digits)."""
        from importlib.metadata import version

        h = hashlib.sha256(f"{TASK_YAML}|{limit}|lm_eval {version('lm_eval')}".encode())
        for part in sorted(self.fingerprint_parts):
            h.update(part)
        return h.hexdigest()[:16]


class _AnyTagLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs, whose ``!function`` tags a plain safe loader refuses."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _yaml_task_names(path: Path) -> list[str]:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_AnyTagLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RunConfigError(f"eval.tasks: {path} is not a readable task YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        return []
    if isinstance(doc.get("task"), str):
        return [doc["task"]]
    return [doc["group"]] if isinstance(doc.get("group"), str) else []


def _local_files(doc_path: Path) -> list[bytes]:
    """The YAML's text and the bytes of local data files it names (``dataset_kwargs.data_files``)."""
    parts = [doc_path.read_bytes()]
    try:
        doc = yaml.load(doc_path.read_text(encoding="utf-8"), Loader=_AnyTagLoader) or {}
    except yaml.YAMLError:
        return parts
    files = ((doc.get("dataset_kwargs") or {}).get("data_files") if isinstance(doc, dict) else None) or {}
    values = files.values() if isinstance(files, dict) else files if isinstance(files, list) else [files]
    for v in values:
        for f in v if isinstance(v, list) else [v]:
            if isinstance(f, str) and Path(f).is_file():
                parts.append(Path(f).read_bytes())
    return parts


def refuse_task_code(yamls: list[Path]) -> None:
    """One line naming the first ``!function`` of the user's task YAMLs: lm-eval imports and runs that Python in
    the evaluate step's pod, with the pipeline's credentials (``eval.allow_task_code: false`` refuses it)."""
    for y in yamls:
        for number, line in enumerate(y.read_text(errors="replace").splitlines(), 1):
            if "!function" in line.split("#", 1)[0]:
                raise RunConfigError(f"eval.tasks: {y} line {number} runs Python ({line.strip()[:80]!r}) and "
                                     "eval.allow_task_code is false: drop the !function, or allow task code")


def _user_tasks(entry: str, folder: Path, suite: Suite, allow_code: bool = True) -> None:
    """Register the user's task YAML file or folder (local or s3://) in ``suite``."""
    if storage.is_uri(entry):
        local = folder / hashlib.sha256(entry.encode()).hexdigest()[:12]
        if entry.endswith((".yaml", ".yml")):
            storage.download_file(entry, local / entry.rsplit("/", 1)[-1])
        else:
            storage.download_dir(entry, local)
        path = local
    else:
        path = Path(entry).expanduser()
    if not path.exists():
        raise RunConfigError(f"eval.tasks: task YAML {entry!r} not found")
    yamls = [path] if path.is_file() else sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")])
    if not allow_code:
        refuse_task_code(yamls)
    names = [n for y in yamls for n in _yaml_task_names(y)]
    if not names:
        raise RunConfigError(f"eval.tasks: {entry!r} holds no lm-eval task YAML (a file with 'task: <name>')")
    suite.include_paths.append(str(path.parent if path.is_file() else path))
    for y in yamls:
        suite.fingerprint_parts.extend(_local_files(y))
    for n in names:
        suite.names[n] = n


def prepare_suite(tasks: list[str], limit: int, folder: str | Path, allow_code: bool = True) -> Suite:
    """Write the built-in tasks' files in ``folder``, fetch the user's task YAMLs, and name everything."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suite = Suite(include_paths=[str(folder / "builtin")])
    (folder / "builtin").mkdir(exist_ok=True)
    for task in tasks:
        if task in BUILTIN_TASKS:
            data = folder / "builtin" / f"{task}.jsonl"
            with data.open("w") as fh:
                for ex in load_examples(task, "validation", limit):
                    fh.write(json.dumps({"query": ex["query"], "choices": ex["choices"], "gold": ex["gold"]}) + "\n")
            (folder / "builtin" / f"fora_{task}.yaml").write_text(TASK_YAML.format(task=task, data=data.resolve()))
            suite.names[f"fora_{task}"] = task
            suite.fingerprint_parts.append(task.encode() + data.read_bytes())
        elif is_task_path(task):
            _user_tasks(task, folder / "user", suite, allow_code)
        else:
            suite.names[task] = task
            suite.needs_registry = True
            suite.fingerprint_parts.append(f"lm-eval task {task}".encode())
    return suite


def task_manager(suite: Suite):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=suite.include_paths, include_defaults=suite.needs_registry)


def check_tasks(suite: Suite, manager) -> None:
    """Load every task once, one at a time, so a missing task or dataset is one line naming it."""
    from lm_eval.tasks import get_task_dict

    for name in suite.names:
        if name not in manager.all_tasks:
            raise RunConfigError(f"eval.tasks: lm-eval has no task {name!r} (a built-in name: "
                                 f"{', '.join(BUILTIN_TASKS)}; or a task YAML file; `lm-eval ls tasks` lists lm-eval's)")
        try:
            get_task_dict([name], manager)
        except Exception as err:  # lm-eval/datasets raise many kinds when a dataset cannot be fetched
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunConfigError(f"eval.tasks: lm-eval task {name!r} could not be loaded ({type(err).__name__}: "
                                 f"{first[:200]}); offline, a task needs its dataset in HF_DATASETS_CACHE or a task "
                                 "YAML over local files") from None


def lm_eval_scores(model, tokenizer, suite: Suite, manager, limit: int, batch_size: int) -> dict:
    """Every task's metrics, per-item scores and directions, from lm-eval on the in-memory model:

    {"metrics": {"<task>/<metric>": value}, "items": {"<task>/<metric>": {"<task>": [per item]}},
     "directions": {"<task>/<metric>": higher_is_better}, "tasks": {"<task>": {"<metric>": value}}}

    plus acc_avg / acc_norm_avg (macro means over the tasks that report acc / acc_norm, with their items)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=list(suite.names), task_manager=manager, limit=limit, log_samples=True,
                          bootstrap_iters=0)
    metrics: dict[str, float] = {}
    items: dict[str, dict[str, list[float]]] = {}
    directions: dict[str, bool] = {}
    tasks: dict[str, dict[str, float]] = {}
    for lm_name, samples in out["samples"].items():
        ours = suite.names.get(lm_name, lm_name)
        declared = out.get("higher_is_better", {}).get(lm_name, {})
        for key, value in out["results"].get(lm_name, {}).items():
            if "," not in key or key.split(",")[0].endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            name = f"{ours}/{metric}" + ("" if filt == "none" else f":{filt}")
            metrics[name] = float(value)
            tasks.setdefault(ours, {})[metric if filt == "none" else f"{metric}:{filt}"] = float(value)
            directions[name] = bool(declared.get(metric, True))
            per = sorted((s for s in samples if s.get("filter") == filt), key=lambda s: s["doc_id"])
            values = [s.get(metric) for s in per]
            if values and all(isinstance(v, (int, float, bool)) for v in values):
                items[name] = {ours: [float(v) for v in values]}
    for avg, leaf in TASK_AVERAGES.items():
        having = {t: items[f"{t}/{leaf}"][t] for t in tasks if f"{t}/{leaf}" in items}
        if having:
            metrics[avg] = sum(tasks[t][leaf] for t in having) / len(having)
            items[avg] = having
            directions[avg] = True
    return {"metrics": metrics, "items": items, "directions": directions, "tasks": tasks}
