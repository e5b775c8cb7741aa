"""The resolve component's body, in the image: the form and ``overrides`` into one validated config, the MLflow
run, the data fingerprint and the decision whether to train."""

from __future__ import annotations

from collections import namedtuple
from typing import Any


def resolve_step(given: dict[str, Any], decision_path: str):
    """``given``: the component's inputs by name (``component.py``); writes the decision to ``decision_path``."""
    from pipelines.config.form import FORMS, resolve_form
    from pipelines.config.overrides import split_overrides
    from pipelines.runtime.interruption import one_line_command
    from pipelines.steps import stages

    with one_line_command():
        fields = FORMS[given["form_name"]]
        form = {f.name: given[f.name] for f in fields}
        run, run_config, changed = resolve_form(given["config_yaml"], split_overrides(given["overrides"]), form,
                                                given["form_defaults"], fields)
        r = stages.resolve(run, run_name=f"{run.name} ({given['pipeline_run']})", scheduled=given["scheduled"])
    from_form = ", ".join(f"`{path}` = `{value}`" for path, value in changed.items()) or "none changed"
    with open(decision_path, "w") as f:
        f.write(f"Data source `{run.data.source}`: fingerprint `{r['source_fingerprint']}`.\n\n"
                f"Typed parameters applied over `config_yaml`: {from_form}.\n\n"
                f"**{'Skipped' if r['skip'] else 'Training'}**: {r['reason']}.\n")
    out = namedtuple("ResolveOutputs", ["Output", "mlflow_run_id", "data_fingerprint", "run_config"])
    return out(not r["skip"], r["run_id"], r["source_fingerprint"], run_config)
