"""A KFP pipeline function whose signature is the typed form of ``pipelines/config/form.py``.

KFP builds the *Create run* form from the pipeline function's signature (names, types, defaults) and the help
under each field from its docstring's ``Args:`` section. Both are generated here from one list of
:class:`~pipelines.config.form.FormField`, so the form, the docs (``fora form``) and the resolve step that reads
the values back can never disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from kfp import dsl

from ..config.form import FormField


def typed_pipeline(name: str, description: str, fixed: list[tuple[str, type, Any, str]],
                   fields: tuple[FormField, ...], defaults: dict[str, Any],
                   body: Callable[[dict[str, Any]], None]):
    """``dsl.pipeline`` over a function with parameters ``fixed`` ((name, type, default, help), first) and then
    one per form field (default: the compiling config's value). ``body`` gets {parameter name: channel}."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
              for n, t, d, _ in fixed]
    params += [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[f.name],
                                 annotation=f.annotation) for f in fields]
    signature = inspect.Signature(params)

    def pipeline_func(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        body(dict(bound.arguments))

    pipeline_func.__signature__ = signature
    pipeline_func.__name__ = name.replace("-", "_")
    helps = [(n, h) for n, _, _, h in fixed] + [(f.name, f.help) for f in fields]
    pipeline_func.__doc__ = description + "\n\nArgs:\n" + "\n".join(f"    {n}: {h}" for n, h in helps) + "\n"
    return dsl.pipeline(name=name, description=description)(pipeline_func)


def form_values(params: dict[str, Any], fields: tuple[FormField, ...]) -> dict[str, Any]:
    """The form's parameters as the resolve step's keyword inputs (each its own typed input: KFP would write a
    list or a quote inside one dict input into its JSON unescaped)."""
    return {f.name: params[f.name] for f in fields}
