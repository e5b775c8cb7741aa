"""The typed parameters of the Kubeflow UI's *Create run* form: what users change most, each a config field.

A pipeline run's config is, in order of precedence (later wins):

1. ``config_yaml``: the whole run config (the compiling config by default);
2. the typed form parameters (``model``, ``method``, ``max_steps``, ...) **whose value differs from the
   compiled default**: a field left as the form shows it keeps ``config_yaml``'s value, so a config sent by
   ``fora submit`` or pasted into ``config_yaml`` is never overwritten by untouched form defaults;
3. ``overrides``: ``section.field=value`` items, for everything else and for scripted runs.

KFP hands a dict of pipeline parameters to a component with every value as text (``'60.0'`` for an integer on the
local runner, ``'[0.25, 0.5]'`` for a list), so each value is read back by its field's kind here; a value that
does not read, or that the config rejects, fails the pipeline's first step in one line naming the form
parameter and the config field (``pipeline parameter 'max_steps' (train.max_steps): ...``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import RunConfigError
from .overrides import ConfigLoader, apply_overrides
from .run_config import RunConfig, parse_run_config

KINDS = {"str": str, "int": int, "float": float, "bool": bool, "list": list}


@dataclass(frozen=True)
class FormField:
    """One typed pipeline parameter: its name in the form, the config field it sets (dotted path), the
    parameter's kind (str, int, float, bool, list; ``budget``: a float that is a whole number of layers when > 1;
    ``space``: a sweep's grid as a list, shown empty when the config holds a random space) and the help text the
    Kubeflow UI shows under it."""

    name: str
    path: str
    kind: str
    help: str

    @property
    def annotation(self) -> type:
        return {"budget": float, "space": list}.get(self.kind) or KINDS[self.kind]


COMMON = (
    FormField("model", "model", "str",
              "Base model: smollm2-135m (built in), a Hugging Face model id (e.g. Qwen/Qwen2.5-0.5B), or a folder "
              "or s3:// URI holding a transformers model."),
    FormField("data_source", "data.source", "str",
              "Training data: builtin:commonsense, a JSON/JSONL file or s3:// URI, or a Hugging Face dataset id."),
    FormField("data_format", "data.format", "str",
              "auto (by suffix and record keys), jsonl, alpaca, llm-adapters, hf, builtin, or chat (messages or "
              "ShareGPT conversations, rendered with the model's chat template, loss on the assistant turns)."),
    FormField("max_steps", "train.max_steps", "int", "Optimizer steps of the fine-tune."),
)
REGISTER = (
    FormField("register_metric", "register.metric", "str",
              "What a new version must beat the champion on, item by item: acc_avg, <task>/acc, heldout/loss, "
              "heldout/<scorer> (exact, contains, regex, json, rougeL, chrf)."),
    FormField("approval", "register.approval", "str",
              "auto: a winning version becomes the champion; manual: it becomes the challenger and a person "
              "promotes it (fora registry promote)."),
    FormField("registered_model_name", "register.model_name", "str",
              "Name in the MLflow model registry (1-64 letters, digits, '.', '_' or '-')."),
)
RUN_FORM = COMMON + (
    FormField("method", "fora.method", "str",
              "fora (Fisher-selected layers, Stiefel B), lora, fg-lora, stiefel-lora, dora, pissa, ... "
              "(docs/methods.md)."),
    FormField("layer_budget", "fora.layer_budget", "budget",
              "K, the decoder layers that get adapters: a fraction in (0, 1] of the layers (0.5 = half), or a whole "
              "number of layers above 1 (8 = eight layers)."),
    FormField("rank", "fora.rank", "int", "LoRA rank r of every adapter."),
    FormField("lr", "train.lr", "float", "AdamW learning rate (factor A; every factor of the non-Stiefel methods)."),
    FormField("stiefel_lr", "train.stiefel_lr", "float",
              "Cayley-Adam learning rate of the orthonormal factor B (about its step length; fora, stiefel-lora)."),
    FormField("eval_tasks", "eval.tasks", "list",
              "lm-eval tasks scored on base and tuned model, a JSON list ([] = none: score only held-out data)."),
    FormField("heldout_metrics", "eval.heldout.metrics", "list",
              "Scorers of the model's greedy answers on held-out data, a JSON list: exact, contains, regex, json, "
              "rougeL, chrf ([] = response loss only)."),
) + REGISTER
SWEEP_FORM = COMMON + (
    FormField("sweep_methods", "sweep.methods", "list", "Methods the sweep tries, a JSON list (e.g. [\"fora\"])."),
    FormField("sweep_layer_budgets", "sweep.layer_budgets", "list",
              "K values tried, a JSON list of fractions in (0, 1] or whole numbers of layers (e.g. [0.25, 0.5])."),
    FormField("sweep_lr", "sweep.lr", "space",
              "AdamW learning rates tried (a grid), a JSON list (e.g. [2e-4, 6e-4]); a random space "
              "({loguniform: [low, high]}) goes in config_yaml or overrides."),
    FormField("sweep_stiefel_lr", "sweep.stiefel_lr", "space",
              "Cayley-Adam learning rates tried (a grid), a JSON list (e.g. [0.15, 0.3])."),
    FormField("num_samples", "sweep.num_samples", "int", "Trials per grid point."),
    FormField("max_trials", "sweep.max_trials", "int", "The sweep refuses to start with more trials than this."),
) + REGISTER
FORMS = {"run": RUN_FORM, "sweep": SWEEP_FORM}


def field_value(run: RunConfig, path: str) -> Any:
    node: Any = run.to_dict()
    for part in path.split("."):
        node = node[part]
    return node


def form_defaults(run: RunConfig, fields: tuple[FormField, ...]) -> dict[str, Any]:
    """Each form parameter's default: the compiling config's value, as the parameter's kind."""
    out = {}
    for f in fields:
        value = field_value(run, f.path)
        if f.kind == "space":  # {grid: [...]} as its list; a random space is not a list: [] leaves it as it is
            value = value.get("grid", [])
        out[f.name] = float(value) if f.kind == "budget" else value
    return out


def read_value(f: FormField, value: Any) -> Any:
    """A form value (typed, or KFP's text of it) as the config wants it; RunConfigError naming the parameter."""
    def bad(allowed: str) -> RunConfigError:
        return RunConfigError(f"pipeline parameter '{f.name}' ({f.path}): {value!r} is not {allowed}")

    if f.kind == "str":
        return value if isinstance(value, str) else str(value)
    if f.kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "false"):
            return str(value).strip().lower() == "true"
        raise bad("true or false")
    if f.kind in ("list", "space"):
        if isinstance(value, str):
            try:
                value = yaml.load(value, Loader=ConfigLoader) if value.strip() else []
            except yaml.YAMLError:
                raise bad("a JSON list") from None
        if not isinstance(value, list):
            raise bad("a JSON list in square brackets, e.g. [\"boolq\", \"piqa\"] or [0.25, 0.5]")
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad("a number") from None
    if not math.isfinite(number):
        raise bad("a finite number")
    if f.kind == "int" or (f.kind == "budget" and number > 1):
        if number != int(number):
            raise bad("a whole number" + (" (K above 1 counts layers)" if f.kind == "budget" else ""))
        return int(number)
    return number


def changed_fields(form: dict[str, Any], defaults: dict[str, Any], fields: tuple[FormField, ...]
                   ) -> dict[str, Any]:
    """{config path: value} of the form parameters whose value differs from the compiled default."""
    by_name = {f.name: f for f in fields}
    unknown = sorted(set(form) - set(by_name))
    if unknown:
        raise RunConfigError(f"unknown pipeline parameter(s) {', '.join(unknown)} (allowed: {', '.join(by_name)})")
    changed = {}
    for name, raw in form.items():
        f = by_name[name]
        value = read_value(f, raw)
        default = read_value(f, defaults[name]) if name in defaults else None
        if value != default:
            changed[f.path] = value
    return changed


def form_items(changed: dict[str, Any]) -> list[str]:
    """{config path: value} as ``section.field=value`` override items (JSON values: JSON is YAML)."""
    return [f"{path}={json.dumps(value)}" for path, value in changed.items()]


def resolve_form(config_yaml: str, overrides: list[str], form: dict[str, Any], defaults: dict[str, Any],
                 fields: tuple[FormField, ...]) -> tuple[RunConfig, str, dict[str, Any]]:
    """The run config of ``config_yaml`` < changed form parameters < ``overrides``, validated. Returns (the
    config, its text as one line of JSON for the later steps, {config path: value} the form changed)."""
    changed = changed_fields(form, defaults, fields)
    items = form_items(changed) + list(overrides)
    try:
        run = parse_run_config(config_yaml, items, where="config_yaml")
    except RunConfigError as err:
        named = [f for f in fields if f.path in changed and f"'{f.path}'" in str(err)]
        if named:
            raise RunConfigError(f"pipeline parameter '{named[0].name}': {err}") from None
        raise
    data = yaml.load(config_yaml, Loader=ConfigLoader)
    apply_overrides(data, items)
    return run, json.dumps(data, default=str), changed



def parse_params(items: list[str], fields: tuple[FormField, ...]) -> dict[str, Any]:
    """``--param name=value`` items (``fora run --kfp``, ``fora submit``) as the typed values KFP takes."""
    by_name = {f.name: f for f in fields}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in by_name:
            raise RunConfigError(f"--param {item!r}: give NAME=VALUE with NAME one of {', '.join(by_name)}")
        f = by_name[name]
        value = read_value(f, text.strip())
        out[name] = float(value) if f.kind == "budget" else value
    return out
