"""The five pipeline stages as functions of (config, folders, MLflow run id).

One implementation, three callers: ``fora run`` chains them in one process (``local_run.py``), each KFP
component calls one of them inside its own container (``components/<step>/component.py``), and
``fora step <name>`` runs one from the shell. A stage reads its inputs from folders written by the
stage before it and writes its outputs to a folder; nothing is passed in memory, so a stage can run
on another machine, days later, from the artifacts alone:

    data_prep  -> data/         train.jsonl validation.jsonl calibration.jsonl data_card.{json,md}
    calibrate  -> calibration/  fisher_report.json fisher_profile.png
    train      -> train/        adapter/ (PEFT) history.json
    evaluate   -> eval/         eval_results.json eval_table.md
    register   -> merged/       a plain transformers model; logged and registered in MLflow

``run_id`` names the MLflow run a stage logs to (``None``: no tracking, except ``register``, which
needs a run and opens one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ..config.errors import RunConfigError
from ..config.resources import step_device
from ..config.run_config import RunConfig, needs_filet
from ..runtime import storage
from ..runtime.models import model_source
from ..runtime.tracking import check_server

log = logging.getLogger("fora")

STAGES = ("data_prep", "calibrate", "train", "evaluate", "register")


def _flat_params(run: RunConfig) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(value)[:500]
    walk("", run.to_dict())
    return out


def start_tracking(run: RunConfig, run_name: str | None = None) -> str:
    """Create (or reuse) the experiment, open a run with every config field as a param; return its id."""
    import mlflow

    check_server(run.tracking_uri)
    mlflow.set_tracking_uri(run.tracking_uri)
    if run.tracking_uri.startswith("sqlite:") and mlflow.get_experiment_by_name(run.register.experiment) is None:
        mlflow.create_experiment(run.register.experiment,
                                 artifact_location=(run.out.resolve() / "mlartifacts").as_uri())
    mlflow.set_experiment(run.register.experiment)
    with mlflow.start_run(run_name=run_name or run.name) as active:
        mlflow.log_params(_flat_params(run))
        return active.info.run_id


@contextlib.contextmanager
def tracked(run: RunConfig, run_id: str | None) -> Iterator[bool]:
    """Make ``run_id`` the active MLflow run for the block (re-opening it if needed); yields whether on."""
    if run_id is None:
        yield False
        return
    import mlflow

    mlflow.set_tracking_uri(run.tracking_uri)
    active = mlflow.active_run()
    if active is None:
        check_server(run.tracking_uri)
    if active is not None and active.info.run_id == run_id:
        yield True
        return
    with mlflow.start_run(run_id=run_id):
        yield True


class StepInputError(RunConfigError):
    """A step's input (a folder or URI the user or the pipeline named) is missing: names it and its maker."""


def require_inputs(step: str, *inputs: tuple[str | Path | None, str, str]) -> None:
    """Each (folder or URI, file it must hold, the step that writes it) exists, else one line: which input,
    where it was looked for and what writes it. Run before any work, so a missing input is the user's
    mistake in one line and a file missing later is a real fault (a traceback)."""
    for location, name, maker in inputs:
        if location is None:
            continue
        path = storage.join(str(location), name) if storage.is_uri(str(location)) else Path(location) / name
        found = storage.exists(str(path)) if storage.is_uri(str(path)) else Path(path).is_file()
        if not found:
            raise StepInputError(f"{step}: no {name} in {location} (written by {maker}; run it first, or point "
                                 f"the option at its output)")


def _load(run: RunConfig, step: str, model=None, tokenizer=None):
    """The base model on the step's device (``resources.<step>.gpus`` > 0: cuda)."""
    device = step_device(run.resources.of(step), step)
    if model is None or tokenizer is None:
        model, tokenizer = model_source(run).load(device)
    return model.to(device), tokenizer


def resolve(run: RunConfig, run_name: str | None = None, scheduled: bool = False) -> dict:
    """The cheap, never-cached first step: open this pipeline run's MLflow run, fingerprint the data source
    and the recipe, and decide whether training can be skipped (``registry/retrain.py``).

    Returns {"run_id", "source_fingerprint", "recipe_fingerprint", "skip", "reason"}."""
    from ..data.fingerprint import recipe_fingerprint, source_fingerprint
    from ..preflight.checks import describe, preflight
    from ..preflight.memory import describe as describe_memory
    from ..registry.retrain import skip_decision
    from ..runtime.reachability import check_services

    # the fingerprint asks S3 for the object; the pod memory limit binds inside a Kubernetes pod only
    checked = preflight(run, remote=False, enforce_pod_memory="KUBERNETES_SERVICE_HOST" in os.environ)
    log.info("%s", describe(run, checked))
    log.info("%s", describe_memory(checked["memory"]))
    log.info("services: %s", ", ".join(f"{k} {v}" for k, v in check_services(run).items()))
    source = source_fingerprint(run.data)
    recipe = recipe_fingerprint(run, source)
    run.out.mkdir(parents=True, exist_ok=True)  # only now: a failure above leaves no folder and no MLflow run
    run_id = start_tracking(run, run_name)
    skip, reason = skip_decision(run.tracking_uri, run.register.model_name, recipe, run.register.skip_unchanged,
                                 scheduled)
    with tracked(run, run_id):
        import mlflow

        mlflow.set_tags({"data_fingerprint": source, "recipe_fingerprint": recipe, "scheduled": str(scheduled),
                         "retrain": "skipped" if skip else "trained", "retrain_reason": reason})
    log.info("data source %s: fingerprint %s; %s", run.data.source, source, reason)
    return {"run_id": run_id, "source_fingerprint": source, "recipe_fingerprint": recipe, "skip": skip,
            "reason": reason}


def data_prep(run: RunConfig, data_dir: str | Path, run_id: str | None = None, tokenizer=None,
              progress: bool = False, source_fingerprint: str | None = None) -> dict:
    """Read ``run.data.source``, write the tokenized splits and the data card; returns the card.
    ``source_fingerprint``: the source's identity as the resolve step saw it (computed here if None)."""
    from ..data.fingerprint import source_fingerprint as fingerprint_of
    from .data_prep import data_card_markdown, prepare_data

    if tokenizer is None:
        tokenizer = model_source(run).load_tokenizer()
    with storage.local_output(data_dir) as out:
        card = prepare_data(run.data, tokenizer, out, progress=progress)
        card["source_fingerprint"] = source_fingerprint or fingerprint_of(run.data)
        (out / "data_card.json").write_text(json.dumps(card, indent=2))
        (out / "data_card.md").write_text(data_card_markdown(card))
        with tracked(run, run_id) as on:
            if on:
                _log_data_card(out, card)
    return card


def _log_data_card(data: Path, card: dict) -> None:
    import mlflow

    mlflow.log_artifact(str(data / "data_card.json"), "data")
    mlflow.log_artifact(str(data / "data_card.md"), "data")
    mlflow.log_metrics({f"data/{k}": float(v) for k, v in card["counts"].items()})
    mlflow.set_tag("data_hash", card["content_hash"])


def _log_calibration(calib_dir: Path, selected_layers: list[int]) -> None:
    import mlflow

    mlflow.log_artifacts(str(calib_dir), "calibration")
    mlflow.log_param("selected_layers", json.dumps(selected_layers))


def log_inputs(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, run_id: str | None) -> None:
    """Log the data card and the Fisher report to ``run_id``: what the cached KFP steps (data prep,
    calibration) cannot do themselves, since a cached output must not name one pipeline run's MLflow run."""
    from ..training.calibration_artifacts import load_selection

    with tracked(run, run_id) as on, storage.local_input(data_dir) as data, \
            storage.local_input(calib_dir) as calib:
        if on:
            _log_data_card(data, json.loads((data / "data_card.json").read_text()))
            _log_calibration(calib, load_selection(calib)[1])


def calibrate(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, run_id: str | None = None,
              model=None, tokenizer=None, progress: bool = False) -> dict:
    """Fisher scores on the calibration split; writes the report and the profile plot. The same weights, data and
    ``fora`` settings as an earlier run: its files from the cache (``training/calibration_cache.py``)."""
    from ..training import calibration_cache
    from .calibrate import calibration_of, run_calibration

    require_inputs("calibrate", (data_dir, "calibration.jsonl", "data-prep"))
    model, tokenizer = _load(run, "calibrate", model, tokenizer)
    with storage.local_input(data_dir) as data, storage.local_output(calib_dir) as out:
        Path(out).mkdir(parents=True, exist_ok=True)
        cache = calibration_cache.location(run.eval.cache, run.storage.uri)
        entry = calibration_cache.key(model, json.loads((data / "data_card.json").read_text())["content_hash"],
                                      run.to_dict()["fora"], needs_filet(run)) if cache else ""
        if calibration_cache.restore(cache, entry, Path(out)):
            calib = calibration_of(Path(out))
            log.info("calibrate: the Fisher scores of this model, data and fora settings from the cache (%s)", cache)
        else:
            calib = run_calibration(model, tokenizer, data, run.fora, out, device=str(model.device),
                                    progress=progress, filet=needs_filet(run))
            calibration_cache.store(cache, entry, Path(out))
        log.info("selected %d of %d layers: %s", len(calib["selected_layers"]), calib["report"].num_layers,
                 calib["selected_layers"])
        with tracked(run, run_id) as on:
            if on:
                _log_calibration(out, calib["selected_layers"])
    return calib


def train(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, train_dir: str | Path,
          run_id: str | None = None, progress: bool = False, run_key: str | None = None,
          data_uri: str | None = None, calib_uri: str | None = None) -> dict:
    """FoRA fine-tune at the calibrated layers: a Ray job on the cluster when ``ray.address``/RAY_ADDRESS is
    a Jobs API (``runtime/ray_jobs.py``), else Ray Train here (or in-process when ``train.use_ray`` is off).

    ``run_key`` names the pipeline run (its checkpoint namespace; a retry with the same key resumes).
    ``data_uri``/``calib_uri``: the inputs' artifact URIs, used by a Ray job when they are s3://."""
    from ..runtime.ray_runtime import jobs_api_address

    require_inputs("train", (data_dir, "data_card.json", "data-prep"), (calib_dir, "fisher_report.json", "calibrate"))
    address = jobs_api_address(run)
    if address:
        from ..runtime.ray_jobs import train_on_cluster

        return train_on_cluster(run, address, data_dir, calib_dir, train_dir, run_id, run_key, data_uri, calib_uri)
    from ..training.calibration_artifacts import load_selection
    from .train import run_training

    _, layers = load_selection(calib_dir)
    trained = run_training(run, data_dir, layers, train_dir, mlflow_run_id=run_id, progress=progress,
                           run_key=run_key, calib_dir=calib_dir)
    log.info("train: the adapter of %s", trained["choice"])
    with tracked(run, run_id) as on, storage.local_input(train_dir) as out:
        if on:
            _log_training(out, trained)
    return trained


def _log_training(out: Path, trained: dict) -> None:
    """The loss (and forgetting) curve and the checkpoint choice to the MLflow run, under ``train/``."""
    import mlflow

    from ..training.checkpoint_choice import CHOICE_FILE

    for name in ("loss_curve.png", f"adapter/{CHOICE_FILE}"):
        if (out / name).exists():
            mlflow.log_artifact(str(out / name), "train")
    mlflow.set_tag("fora.chosen_step", str(trained["chosen_step"]))


def evaluate(run: RunConfig, data_dir: str | Path, adapter_dir: str | Path | None, eval_dir: str | Path,
             run_id: str | None = None, model=None, tokenizer=None) -> dict:
    """Base, tuned and (``register.compare_champion``) the registry's champion on the same lm-eval items and
    held-out items, with per-item scores for the register step's paired test (``steps/evaluate.py``)."""
    import tempfile

    from ..evaluation.score_cache import cache_location
    from .evaluate import run_evaluation
    from .evaluation_log import log_evaluation

    require_inputs("evaluate", (data_dir, "validation.jsonl", "data-prep"),
                   (adapter_dir, "adapter_config.json", "train"))
    if not storage.is_uri(str(eval_dir)):
        os.environ.setdefault("HF_HOME", str(Path(eval_dir).resolve().parent / ".hf-home"))
    model, tokenizer = _load(run, "evaluate", model, tokenizer)
    with storage.local_input(data_dir) as data, storage.local_input(adapter_dir) as adapter, \
            storage.local_output(eval_dir) as out, tempfile.TemporaryDirectory(prefix="fora-champion-") as tmp:
        champion = None
        if run.register.compare_champion and adapter is not None:
            from ..registry.champion import champion_for_eval

            check_server(run.tracking_uri)
            champion, why = champion_for_eval(run.tracking_uri, run.register.model_name, run.model, tmp)
            log.info("evaluate: %s%s", why, " (scored on the same items)" if champion else "")
        e = run.eval
        template = None
        if run.data.chat_template:
            from ..data.chat import read_chat_template

            template = read_chat_template(run.data.chat_template)
        results = run_evaluation(model, tokenizer, adapter, data, e, out, max_length=run.data.max_length,
                                 chat_template=template, system_prompt=run.data.system_prompt,
                                 compare_base=e.compare_base or bool(run.register.guards), champion=champion,
                                 cache=cache_location(e.cache, run.storage.uri))
        with tracked(run, run_id) as on:
            if on:
                log_evaluation(results, out)
    return results


def register(run: RunConfig, data_dir: str | Path, calib_dir: str | Path, adapter_dir: str | Path,
             eval_dir: str | Path, merged_dir: str | Path, run_id: str | None = None,
             extra_tags: dict[str, str] | None = None, layers: list[int] | None = None) -> dict:
    """Merge the adapter into fresh base weights, log model + adapter, register a version with tags and
    move the ``champion`` alias only if the paired test over the evaluation's items says it beats the
    champion (``registry/promotion.py``). Layers and method
    come from the adapter's ``fora_config.json`` (a sweep's best trial has its own), else the calibration."""
    from ..registry.promotion import Policy
    from ..training.calibration_artifacts import load_selection
    from .register import (
        adapter_package,
        challenger_of,
        merge_to_folder,
        register_model,
        write_prompt_format_for,
    )

    require_inputs("register", (data_dir, "data_card.json", "data-prep"), (adapter_dir, "adapter_config.json", "train"),
                   (eval_dir, "eval_results.json", "evaluate"), (eval_dir, "item_scores.json", "evaluate"))
    check_server(run.tracking_uri)  # before anything: nothing is half-registered when the server is down
    with storage.local_input(adapter_dir) as adapter, storage.local_output(merged_dir) as merged_out:
        meta_file = adapter / "fora_config.json"  # what the adapter was trained with (save_adapter)
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if layers is None:
            layers = meta.get("layers") or load_selection(calib_dir)[1]
        method = meta.get("fora", {}).get("method", run.fora.method)
        card = storage.read_json(storage.join(str(data_dir), "data_card.json"))
        results = storage.read_json(storage.join(str(eval_dir), "eval_results.json"))
        per_item = storage.read_json(storage.join(str(eval_dir), "item_scores.json"))
        challenger, metric, value = challenger_of(run, results, per_item, card,
                                                  by=(extra_tags or {}).get("pipeline_run", run.name))
        r = run.register
        policy = Policy(test=r.promotion_test, margin=r.margin, alpha=r.alpha, approval=r.approval)
        artifact = r.artifact
        if challenger.broken_guards and artifact != "adapter":
            # it can never become the champion: keep its adapter (megabytes), not a merged copy of the model
            artifact = "adapter"
            log.info("register: the model breaks %s, so it is registered as its adapter only (register.artifact "
                     "'%s' applies to versions that can be promoted)", "; ".join(challenger.broken_guards), r.artifact)
        if artifact == "adapter":  # megabytes: the adapter and the name of the base it needs
            model_dir = adapter_package(run, adapter, merged_out)
        else:
            model_dir = merge_to_folder(model_source(run), adapter, merged_out,
                                        device=step_device(run.resources.register, "register"))
        package = adapter_package(run, adapter, Path(merged_out).parent / "adapter-package") \
            if artifact == "both" else None
        for folder in (model_dir, package):  # a chat-tuned model answers a prompt as a user turn
            if folder is not None:
                write_prompt_format_for(run, card, folder)
        from ..data.fingerprint import recipe_fingerprint

        source = card.get("source_fingerprint", card["content_hash"])
        tags = {"method": method, "K": str(len(layers)), "selected_layers": json.dumps(layers),
                "data_hash": card["content_hash"], "data_fingerprint": source,
                "recipe_fingerprint": recipe_fingerprint(run, source), "base_model": run.model,
                "data_source": run.data.source, "eval_suite": per_item["suite"], "artifact": artifact,
                "register_metric": metric, metric: f"{value:.6f}", **(extra_tags or {})}
        from ..registry.model_card import model_card
        from ..training.checkpoint_choice import CHOICE_FILE

        choice = json.loads((adapter / CHOICE_FILE).read_text()) if (adapter / CHOICE_FILE).exists() else None
        if choice:
            tags.update(chosen_step=str(choice["chosen_step"]), checkpoint_choice=choice["reason"][:4000])

        (Path(model_dir) / "README.md").write_text(model_card(
            model_name=r.model_name, tags={**tags, "promotion_test": r.promotion_test}, results=results,
            per_item=per_item, metric=metric, artifact=artifact,
            fora=meta.get("fora", {}) or run.to_dict()["fora"], chat="chat" in card, choice=choice))
        if run_id is None:
            run_id = start_tracking(run)
        return register_model(run_id=run_id, tracking_uri=run.tracking_uri, model_name=r.model_name,
                              merged_dir=model_dir, adapter_dir=adapter, tags=tags, challenger=challenger,
                              policy=policy, metric=metric, value=value,
                              adapter_package_dir=package)
