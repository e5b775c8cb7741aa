"""What a run config names, checked before any work starts: the model's architecture and the data source.

The schema (``config/run_config.py``) knows types and ranges; it cannot know that ``fora.target_modules: [qkv]``
does not exist in a Llama block, that ``fora.layer_budget: 40`` exceeds a 30-layer model, that
``data.max_length`` is beyond the model's positions, or that ``data.source`` names a file that is not there.
Those used to surface minutes later, inside a Ray worker, retried ``train.max_failures`` times. Here they
are found from the model's ``config.json`` alone: the model is built on PyTorch's ``meta`` device (shapes,
no storage, no weights read; well under a second for an 8B architecture), and its decoder blocks and linear
layers are looked up exactly as training will (``fora_core.architecture``).

Called by ``fora validate``, by the resolve step (the first step of ``fora run`` and of the KFP pipeline),
and at the start of ``fora sweep`` and ``fora ablate``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fora_core import ForaConfigError, ModelLoadError, ModelSource
from fora_core.architecture import find_decoder_layers, resolve_target_modules
from fora_core.config import resolve_layer_budget

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig, needs_filet
from ..runtime import storage


def model_config(spec: str, dtype: str = "float32"):
    """The ``transformers`` config of ``run.model`` without its weights (an s3:// model: its config.json only)."""
    from transformers import AutoConfig

    if storage.is_uri(spec):
        with tempfile.TemporaryDirectory(prefix="fora-preflight-") as tmp:
            Path(tmp, "config.json").write_text(storage.read_text(storage.join(spec, "config.json")))
            return AutoConfig.from_pretrained(tmp)
    try:
        return ModelSource(spec, dtype=dtype).load_config()
    except ModelLoadError:
        from fora_core.known_models import known_config

        known = known_config(spec)  # a gated hub id on a machine without the hub: its published shapes
        if known is None:
            raise
        known.fora_from_table = True
        return known


def model_skeleton(config):
    """The architecture on the meta device: module names and shapes, no parameter storage."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _max_positions(config) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_model(run: RunConfig, enforce_pod_memory: bool = True) -> dict[str, Any]:
    """Target modules, K (and the sweep's integer Ks) and ``data.max_length`` against the model's architecture.
    Returns {"architecture", "layers", "K", "targets", "max_positions"}."""
    config = model_config(run.model, run.dtype)
    skeleton = model_skeleton(config)
    try:
        layout = find_decoder_layers(skeleton)
    except ForaConfigError as err:
        raise RunConfigError(f"model {run.model!r}: {err}") from None
    num_layers = layout.num_layers
    try:
        targets = resolve_target_modules(skeleton, run.fora.target_modules)
    except ForaConfigError as err:
        raise RunConfigError(f"invalid value for 'fora.target_modules' (model {run.model!r}): {err}") from None
    block = layout.layers[0]
    smallest = min(min(m.in_features, m.out_features) for name, m in block.named_modules()
                   if name in targets and hasattr(m, "in_features"))
    if run.fora.rank > smallest:  # B (d_out x r) cannot have r orthonormal columns, and r > d adds nothing
        raise RunConfigError(f"invalid value for 'fora.rank': {run.fora.rank} (allowed: 1..{smallest}, the "
                             f"smallest dimension of the target modules of {run.model!r})")
    try:
        k = run.fora.num_layers_to_adapt(num_layers)
    except ForaConfigError:
        raise RunConfigError(f"invalid value for 'fora.layer_budget': {run.fora.layer_budget!r} (allowed: 1.."
                             f"{num_layers} layers ({run.model} has {num_layers}) or a fraction in (0, 1])") from None
    for budget in run.sweep.layer_budgets:
        if isinstance(budget, int) and budget > num_layers:
            raise RunConfigError(f"invalid value for 'sweep.layer_budgets': {budget} (allowed: 1..{num_layers} "
                                 f"layers ({run.model} has {num_layers}) or fractions in (0, 1])")
        resolve_layer_budget(budget, num_layers)
    positions = _max_positions(config)
    if positions is not None and run.data.max_length > positions:
        raise RunConfigError(f"invalid value for 'data.max_length': {run.data.max_length} (allowed: at most "
                             f"{positions}, the positions of {run.model!r})")
    from .memory import check_memory

    summary = {"architecture": type(skeleton).__name__, "layers": num_layers, "K": k, "targets": targets,
               "max_positions": positions, "from_table": getattr(config, "fora_from_table", False),
               "memory": check_memory(run, config, enforce_pod_memory)}
    if needs_filet(run):  # FILet's K-FAC factors: (d_in^2 + d_out^2) float32 per target module, every layer
        per_block = sum(m.in_features ** 2 + m.out_features ** 2 for name, m in block.named_modules()
                        if name in targets and hasattr(m, "in_features"))
        summary["kfac_bytes"] = 4 * per_block * num_layers
    return summary


def check_data(run: RunConfig, remote: bool = True) -> str:
    """The data source exists and ``data.format`` applies to it; returns its kind (builtin, file, folder, s3,
    hub). ``remote``: also ask S3 for the object (a HEAD request)."""
    from ..data.sources import source_kind

    kind = source_kind(run.data)
    if run.data.chat_template:
        from ..data.chat import read_chat_template

        read_chat_template(run.data.chat_template)  # a missing template file: one line, before any work
    if kind == "s3" and remote:
        storage.etag(run.data.source)  # a missing object or bucket: one line naming the endpoint and bucket
    return kind


def check_eval_inputs(run: RunConfig, remote: bool = True) -> None:
    """The held-out file and the user's task YAMLs the ``eval`` section names exist (else one line naming the
    field), so a typo is found before data prep and training, not after."""
    from pathlib import Path as _Path

    from ..config.evaluation import BUILTIN_TASKS, is_task_path

    named = [("eval.heldout.source", run.eval.heldout.source)] if run.eval.heldout.source not in ("", "validation") \
        else []
    named += [("eval.tasks", t) for t in run.eval.tasks if t not in BUILTIN_TASKS and is_task_path(t)]
    for field, location in named:
        if storage.is_uri(location):
            if remote and not (storage.exists(location) or storage.list_keys(location)):
                raise RunConfigError(f"invalid value for '{field}': {location!r} (no such object or prefix)")
        elif not _Path(location).expanduser().exists():
            raise RunConfigError(f"invalid value for '{field}': {location!r} (file not found)")


def preflight(run: RunConfig, remote: bool = True, enforce_pod_memory: bool = True) -> dict[str, Any]:
    """Every check that needs more than the schema; raises a one-line user error (RunConfigError, DataError,
    ModelLoadError, StorageError) at the first problem. Returns what was checked (printed by ``fora validate``).
    ``enforce_pod_memory``: refuse a CPU run whose memory plan exceeds ``resources.train.memory`` (a pipeline
    pod; not a laptop's ``fora run``)."""
    summary = check_model(run, enforce_pod_memory)
    summary["data"] = check_data(run, remote)
    check_eval_inputs(run, remote)
    return summary


def describe(run: RunConfig, summary: dict[str, Any]) -> str:
    """One line for a person: what the config was checked against."""
    return (f"checked against {run.model} ({summary['architecture']}, {summary['layers']} layers"
            + (", shapes from fora's table of known models: the hub was not reachable" if summary.get("from_table")
               else "")
            + (f", {summary['max_positions']} positions" if summary["max_positions"] else "")
            + f"): {run.fora.method} at K={summary['K']}, targets {', '.join(summary['targets'])}; data source: "
            f"{summary['data']}"
            + (f"; FILet's K-FAC factors need {summary['kfac_bytes'] / 2**30:.2f} GiB during calibration"
               if "kfac_bytes" in summary else ""))


def plan_report(run: RunConfig) -> str:
    """The memory plan of a config being compiled (refusing one that cannot fit its GPU or pod); a model whose
    config cannot be read here gets a line saying so, not an error (the pipeline's first step checks it again)."""
    from .memory import check_memory
    from .memory import describe as describe_memory

    try:
        model_cfg = model_config(run.model, run.dtype)
    except ModelLoadError as err:
        return f"memory plan: not made ({err})"
    return describe_memory(check_memory(run, model_cfg))


__all__ = ["check_data", "check_eval_inputs", "check_model", "describe", "model_config", "model_skeleton", "plan_report",
           "preflight"]
