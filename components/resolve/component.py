"""KFP component for step 0 (never cached): open the pipeline run's MLflow run, fingerprint the data source
and the recipe, and decide whether this run needs to train at all.

Its inputs are the typed form's fields (``pipelines.config.form.FORMS``, the run and the sweep form together),
each its own typed input so that KFP passes lists and quotes intact. They are listed in one place, the form:
this module writes the component function's ``def`` from it (a plain function with one parameter per field,
compiled from generated source and registered with ``linecache`` so that KFP's ``inspect.getsource`` copies it
into the container's command like any other component). Its body hands every input to :func:`resolve_step`.
"""

from __future__ import annotations

import linecache
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output

from components import BASE_IMAGE
from pipelines.config.form import FORMS, FormField

FIXED = (("config_yaml", "str", "The run config as YAML (the compiling config by default)."),
         ("overrides", "str", "section.field=value items (one per line, or comma-separated); they win over the "
                      "form and config_yaml."),
         ("form_defaults", "dict", "The form's compiled defaults: a field left at its default keeps config_yaml's "
                                   "value."),
         ("form_name", "str", "Which form the pipeline shows: run or sweep."),
         ("pipeline_run", "str", "The KFP run's name (the MLflow run is named after it)."),
         ("scheduled", "bool", "True for a recurring run: register.skip_unchanged may skip training."))
RETURNS = 'NamedTuple("ResolveOutputs", Output=bool, mlflow_run_id=str, data_fingerprint=str, run_config=str)'


def form_fields() -> list[FormField]:
    """Every field of every form, once, in form order (a field both forms share is one input)."""
    seen: dict[str, FormField] = {}
    for fields in FORMS.values():
        for f in fields:
            seen.setdefault(f.name, f)
    return list(seen.values())


def component_source(fields: list[FormField]) -> str:
    """The component function's source: one typed keyword input per form field (integers default to 0 because the
    local runner cannot cast a null integer; the pipeline passes every field of its form, so no default is read)."""
    fixed = [f"{name}: {kind}" for name, kind, _ in FIXED] + ["decision: Output[Markdown]"]
    form = [f"{f.name}: {f.annotation.__name__} = {0 if f.annotation is int else None}" for f in fields]
    args = [f"        {name}: {text}" for name, _, text in FIXED]
    args += [f"        {f.name}: {f.help} (``{f.path}``)" for f in fields]
    return "\n".join([
        f"def resolve({', '.join(fixed + form)}) -> {RETURNS}:",
        '    """Reads the typed form and ``overrides`` into one validated config, which every later step takes.',
        "",
        "    Args:",
        *args,
        "",
        "    Returns:",
        "        decision: the decision as Markdown (the fingerprint, the form values applied, train or skip).",
        "        Output: whether to train (false: this data and recipe were trained and judged before, and "
        "register.skip_unchanged allows skipping; the local KFP runner resolves a dsl.If only on this name).",
        "        mlflow_run_id: the MLflow run every later step logs to.",
        "        data_fingerprint: the data source's fingerprint (data prep and calibration are cached on it).",
        "        run_config: the effective config as YAML.",
        '    """',
        "    from components.resolve.step import resolve_step",
        "",
        "    return resolve_step(dict(locals()), decision.path)",
        "",
    ])


def _define(source: str, filename: str = "<components/resolve: generated from pipelines.config.form>") -> Any:
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"NamedTuple": NamedTuple, "Output": Output, "Markdown": Markdown}
    # dont_inherit: this module's `from __future__ import annotations` would turn the types into strings
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 (our own generated source)
    return namespace["resolve"]


resolve = dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)(_define(component_source(form_fields())))
