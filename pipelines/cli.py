"""The ``fora`` command line.

    fora run CONFIG [--kfp] [--set section.field=value ...]   the whole pipeline on this machine
    fora data-prep | calibrate | train | evaluate | register CONFIG   one step (folders under output_dir)
    fora sweep CONFIG                                         Ray Tune sweep of K and learning rates
    fora ablate CONFIG                                        lora / fg-lora / stiefel-lora / fora, tuned, seeds, report
    fora compile [--config CONFIG] [--output-dir DIR]         write both KFP pipeline YAMLs (default build/kfp/)
    fora submit CONFIG --host URL [--schedule CRON]           run (or schedule) it on a Kubeflow cluster
    fora validate CONFIG [--schema-only]                      check a config (and its model and data) and print it
    fora ui CONFIG                                            the MLflow UI command for this run
    fora registry list|history|show|promote|rollback CONFIG [VERSION]  the registry: versions, decisions, hand moves
    fora serve-manifest CONFIG [--version N | --alias A] [--apply]    the KServe InferenceService of a version

``fora run`` chains the five steps in this process by default (one MLflow run, Ray Train for training);
``--kfp`` runs them as the KFP components on the local KFP runner instead. A user mistake (bad config
value, malformed data row, unknown model, unreachable host) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from .cluster_model import command as cluster_command
from .config.errors import RunConfigError
from .config.form import RUN_FORM, changed_fields, form_defaults, form_items, parse_params, resolve_form
from .config.overrides import join_overrides
from .config.run_config import RunConfig, load_run_config
from .kubeflow import compile_command

"""Where ``fora compile`` writes by default (never over the checked-in YAML unless that folder is named)."""
STEP_DIRS = {"data": "data", "calibration": "calibration", "train": "train", "eval": "eval", "merged": "merged"}


def _config(args) -> RunConfig:
    from .runtime import storage

    return load_run_config(args.config, args.set, read_uri=storage.read_text)


def _creatable(folder: Path, what: str) -> Path:
    """``folder`` can be created (its nearest existing parent is a writable folder), else one line; nothing is
    created, so a check that fails later leaves no empty folder behind."""
    import tempfile

    parent = folder.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunConfigError(f"{what} {folder}: cannot create it ({parent} is not a folder)")
    try:  # a probe, removed at once (os.access says yes to root even where nothing can be made)
        os.rmdir(tempfile.mkdtemp(prefix=".fora-probe-", dir=parent))
    except OSError as err:
        raise RunConfigError(f"{what} {folder}: cannot create it ({err.strerror or err})") from None
    return folder


def _output_config(args) -> RunConfig:
    """The config of a command that writes under ``output_dir``: checked to be creatable before any work."""
    run = _config(args)
    _creatable(run.out, "output_dir")
    return run


def _print_summary(run: RunConfig, summary: dict) -> None:
    if summary.get("skipped"):
        print(f"Nothing trained: {summary['reason']}.")
        print(f"MLflow UI: mlflow ui --backend-store-uri {summary['tracking_uri']}")
        return
    print("\n" + (run.out / "eval" / "eval_table.md").read_text())
    t = summary["timings"]
    total = sum(t.values())
    print("Wall time by step: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) +
          f"; total {total:.0f} s (Fisher {100 * t['fisher'] / total:.1f}%)")
    reg = summary["registration"]
    print(f"Registered '{run.register.model_name}' version {reg['version']}: {reg['action']} ({reg['reason']}).")
    print(f"Artifacts: {summary['output_dir']}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {summary['tracking_uri']}")


def _cmd_run(args) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.kfp:
        from .kubeflow.local_runner import run_on_kfp_local

        load_run_config(args.config, args.set)  # a missing or invalid config: one line, before the runner starts
        result = run_on_kfp_local(Path(args.config).read_text(), join_overrides(args.set),
                                  params=parse_params(args.param, RUN_FORM))
        print(f"KFP outputs: {result['outputs_root']}")
        print(f"MLflow UI: mlflow ui --backend-store-uri {result['run'].tracking_uri}")
        return 0
    from .steps.local_run import run_pipeline

    # without KFP the typed parameters are plain config fields, applied before --set as in the pipeline
    args.set = form_items(changed_fields(parse_params(args.param, RUN_FORM), {}, RUN_FORM)) + args.set
    run = _output_config(args)
    _print_summary(run, run_pipeline(run, progress=not args.quiet))
    return 0


def _step_dirs(run: RunConfig, args) -> dict[str, str | Path]:
    """Step folders: under output_dir by default; --data/--calibration/--adapter/--out name others (folders or
    s3:// URIs: how a Ray job on another machine is told where its inputs and outputs are)."""
    d: dict[str, str | Path] = {k: run.out / v for k, v in STEP_DIRS.items()}
    d["adapter"] = d["train"] / "adapter"
    for key, value in (("data", args.data), ("calibration", args.calibration), ("adapter", args.adapter),
                       ("eval", args.eval)):
        if value:
            d[key] = value
    if args.out:
        d[{"data-prep": "data", "calibrate": "calibration", "train": "train", "evaluate": "eval",
           "register": "merged"}[args.step]] = args.out
    return d


def _cmd_step(args) -> int:
    from .runtime import storage
    from .steps import stages

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    run = _config(args)
    d = _step_dirs(run, args)
    written = d[{"data-prep": "data", "calibrate": "calibration", "train": "train", "evaluate": "eval",
                 "register": "merged"}[args.step]]
    if not storage.is_uri(str(written)):  # a Ray job writes to s3:// (--out), never to the submitter's output_dir
        _creatable(Path(written).parent, "output_dir" if not args.out else "--out")
    progress = not args.quiet
    if args.step == "data-prep":
        card = stages.data_prep(run, d["data"], args.mlflow_run_id, progress=progress)
        print(json.dumps(card["counts"]), f"-> {d['data']}")
    elif args.step == "calibrate":
        calib = stages.calibrate(run, d["data"], d["calibration"], args.mlflow_run_id, progress=progress)
        print(f"selected layers {calib['selected_layers']} -> {d['calibration']}")
    elif args.step == "train":
        trained = stages.train(run, d["data"], d["calibration"], d["train"], args.mlflow_run_id, progress=progress,
                               run_key=args.run_key)
        print(f"adapter -> {trained['adapter_dir']} ({trained['steps_run']} steps run here; checkpoints in "
              f"{trained['checkpoints']})")
    elif args.step == "evaluate":
        stages.evaluate(run, d["data"], d["adapter"], d["eval"], args.mlflow_run_id)
        table = storage.join(str(d["eval"]), "eval_table.md")
        print(storage.read_text(table) if storage.is_uri(table) else Path(table).read_text())
    else:
        reg = stages.register(run, d["data"], d["calibration"], d["adapter"], d["eval"], d["merged"],
                              args.mlflow_run_id)
        print(f"registered '{run.register.model_name}' version {reg['version']}"
              f"{' as champion' if reg['champion'] else ''}: {reg['action']} ({reg['reason']})")
    return 0


def _cmd_sweep(args) -> int:
    from .sweep.driver import run_sweep

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    run = _config(args)
    if args.data or args.calibration or args.out:  # trials only, on prepared inputs (what the KFP step runs)
        from .sweep.driver import sweep_trials

        if not (args.data and args.calibration and args.out and args.mlflow_run_id):
            raise RunConfigError("fora sweep with --data needs --calibration, --out and --mlflow-run-id too")
        # a Ray job on the cluster when one is configured; here (or inside that job) otherwise
        summary = sweep_trials(run, args.data, args.calibration, args.out, args.mlflow_run_id, args.run_key)
        print(f"{summary['finished_trials']}/{summary['planned_trials']} trials finished -> {args.out}")
        return 0 if summary["finished"] else 1
    _creatable(run.out, "output_dir")
    summary = run_sweep(run)
    sweep_dir = run.out.resolve() / "sweep"
    print("\n" + (sweep_dir / "results.md").read_text())
    sec = summary["seconds"]
    print(f"Fisher pass: {'computed' if summary['fisher_computed'] else 'reused'}; "
          f"{summary['finished_trials']}/{summary['planned_trials']} trials finished "
          f"({summary['stopped_early']} stopped early), {summary['concurrent']} at a time; "
          f"Tune {sec['tune']:.0f} s, total {sec['total']:.0f} s; trials spent {sec['trials_training']:.0f} s in "
          f"training steps and {sec['trials_validation']:.0f} s validating; outside both (Ray start-up, worker "
          f"groups, checkpoints): {100 * sec['overhead_share']:.0f}% of the trial slots' time")
    if summary["failed_trials"]:
        print(f"{summary['failed_trials']} trials failed; their errors are under {sweep_dir / 'tune'}. "
              "Fix the cause and run the same command again: finished trials are kept.")
        return 1
    if not summary["finished"]:
        print("The sweep did not finish: run the same command again to resume it.")
        return 1
    best = summary.get("best", {})
    if "registration" in best:
        reg = best["registration"]
        print(f"Best trial {best['trial_id']}: {best['method']} K={best['K']} lr={best['lr']:.2g} "
              f"stiefel_lr={best['stiefel_lr']:.2g}; registered '{run.register.model_name}' version "
              f"{reg['version']}{' as champion' if reg['champion'] else ' (champion unchanged)'}.")
        print("\n" + (sweep_dir / "best" / "eval" / "eval_table.md").read_text())
    print(f"Plots and tables: {sweep_dir}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {run.tracking_uri}")
    return 0


def _cmd_ablate(args) -> int:
    from .ablation.runner import plan, run_ablation

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    run = _config(args) if args.plan else _output_config(args)
    if args.plan:
        num_layers, counts = plan(run)
        print(f"{num_layers} layers; trials: {counts['search']} search, {counts['seeds']} seeds, "
              f"{counts['k_curves']} K curves ({sum(counts.values())} in all)")
        return 0
    command = " ".join(["fora ablate", shlex.quote(args.config)] + [f"--set {shlex.quote(o)}" for o in args.set or []])
    summary = run_ablation(run, command)
    root = run.out.resolve() / "ablation"
    print("\n" + (root / "report.md").read_text())
    sec = summary["seconds"]
    print(f"Ablation finished: {sec['total'] / 60:.1f} min of work over {sec['invocations']} invocation(s). "
          f"Report and plots: {root}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {run.tracking_uri}")
    return 0


def _cmd_submit(args) -> int:
    from .kubeflow.images import choose, warning
    from .kubeflow.submit import submit

    compiled = load_run_config(args.config, args.set)  # the compiled pipeline's typed defaults: these values
    params = parse_params(args.param, RUN_FORM)
    text = Path(args.config).read_text()
    resolve_form(text, args.set, params, form_defaults(compiled, RUN_FORM), RUN_FORM)  # validate before sending
    images = choose(args.images_from)
    print(submit(args.host, text, join_overrides(args.set), experiment=args.experiment, run_name=args.run_name,
                 schedule=args.schedule, namespace=args.namespace, service_account=args.service_account,
                 run=compiled, params=params, images=images, token_file=args.token_file))
    if warning(images):  # after the endpoint answered: a failure stays one line
        print(warning(images), file=sys.stderr)
    return 0


def _cmd_validate(args) -> int:
    run = _config(args)
    print(json.dumps(run.to_dict(), indent=2))
    if args.schema_only:
        print("fora: config valid (schema only: the model and the data source were not checked)", file=sys.stderr)
        return 0
    from .preflight.checks import describe, preflight
    from .preflight.memory import describe as describe_memory

    checked = preflight(run)
    print(f"fora: config valid; {describe(run, checked)}", file=sys.stderr)
    print(describe_memory(checked["memory"]), file=sys.stderr)
    return 0


def _cmd_registry(args) -> int:
    from .registry.commands import registry_command

    print(registry_command(_config(args), args.action, version=args.version, reason=args.reason, by=args.by,
                           alias=args.alias, to=args.to), end="")
    return 0


def _cmd_serve_manifest(args) -> int:
    from .serving.commands import serve_manifest_command

    return serve_manifest_command(_config(args), str(args.version) if args.version else args.alias,
                                  output=args.output, upload_base=args.upload_base, apply=args.apply)


def _cmd_ui(args) -> int:
    print(f"mlflow ui --backend-store-uri {_config(args).tracking_uri} --port 5000")
    return 0


def _submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--experiment", default="fora")
    p.add_argument("--run-name", default=None)
    p.add_argument("--namespace", default=None)
    p.add_argument("--schedule", default=None, metavar="CRON",
                   help="create a recurring run instead (6-field cron, e.g. '0 0 3 * * 1' = Mondays 03:00)")
    p.add_argument("--service-account", default=None,
                   help="the pipeline pods' ServiceAccount (k8s/ creates fora-pipeline); default: KFP's")
    p.add_argument("--images-from", default=None, metavar="OVERLAY",
                   help="the steps' images from this kustomize overlay's `images:` (as fora compile)")
    p.add_argument("--token-file", default=None, help="a bearer token for a multi-user KFP, e.g. from `kubectl -n NS "
                   "create token default-editor --audience pipelines.kubeflow.org`")


def _serve_manifest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, default=None, help="a version number (default: the --alias)")
    p.add_argument("--alias", default="champion", help="the alias to serve when no --version (default champion)")
    p.add_argument("--output", default=None, help="write the YAML here instead of stdout")
    p.add_argument("--upload-base", action="store_true",
                   help="adapter form with a built-in or local base: copy the base under storage.uri for the server")
    p.add_argument("--apply", action="store_true", help="also create or replace it through kubeconfig's cluster")


def _registry_parser(sub) -> None:
    p = sub.add_parser("registry", help="list versions, show the promotion history, promote or roll back by hand")
    p.add_argument("action", choices=("list", "history", "show", "promote", "rollback"))
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.set_defaults(fn=_cmd_registry)
    p.add_argument("version", nargs="?", type=int, default=None, help="the version (show, promote)")
    p.add_argument("--reason", default="", help="why (required for promote and rollback; recorded)")
    p.add_argument("--by", default="", help="who (default: $USER)")
    p.add_argument("--alias", default="champion", help="the alias to move (promote; default champion)")
    p.add_argument("--to", type=int, default=None, help="rollback: this version (default: the one it replaced)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fora", description="FoRA fine-tuning pipelines")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, fn, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.max_steps=10")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(fn=fn)
        return p

    def with_params(p: argparse.ArgumentParser) -> None:
        p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a typed pipeline parameter as the Kubeflow UI form sets it (fora run --kfp, fora submit), "
                       f"e.g. --param max_steps=100; names: {', '.join(f.name for f in RUN_FORM)}")

    def with_locations(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        for name, helptext in (("--data", "the prepared data (folder or s3:// URI)"),
                               ("--calibration", "the Fisher report's folder (or s3:// URI)"),
                               ("--adapter", "the adapter to evaluate or register"),
                               ("--eval", "the evaluation results to register"),
                               ("--out", "where this step writes (folder or s3:// URI)")):
            p.add_argument(name, default=None, help=helptext + "; default: under output_dir")
        p.add_argument("--mlflow-run-id", default=None, help="log to this MLflow run")
        p.add_argument("--run-key", default=None,
                       help="the pipeline run this belongs to (its checkpoint namespace; a retry resumes)")
        return p

    p = with_config("run", _cmd_run, "run the whole pipeline on this machine")
    p.add_argument("--kfp", action="store_true", help="run the KFP components on the local KFP runner")
    with_params(p)
    for step, helptext in (("data-prep", "step 1: tokenized splits + data card"),
                           ("calibrate", "step 2: Fisher layer scores and selection"),
                           ("train", "step 3: FoRA fine-tune (Ray Train)"),
                           ("evaluate", "step 4: lm-eval, base vs tuned"),
                           ("register", "step 5: merge, log and register in MLflow")):
        with_locations(with_config(step, _cmd_step, helptext)).set_defaults(step=step)
    with_config("validate", _cmd_validate, "validate a config against its model's architecture and its data "
                "source, and print it resolved").add_argument(
        "--schema-only", action="store_true",
        help="check types and ranges only (no model config or data source lookup: for a machine without access)")
    with_config("ui", _cmd_ui, "print the MLflow UI command")
    p = with_config("submit", _cmd_submit, "submit the pipeline to a Kubeflow Pipelines endpoint")
    _submit_arguments(p)
    with_params(p)
    with_locations(with_config("sweep", _cmd_sweep, "Ray Tune sweep of K, learning rates and method (resumable)"))
    with_config("ablate", _cmd_ablate, "the four-way ablation with tuned learning rates and seeds, and its report"
                ).add_argument("--plan", action="store_true", help="check the config and print the trial counts only")
    p = with_config("serve-manifest", _cmd_serve_manifest,
                    "the KServe InferenceService of a registered version (YAML on stdout: | kubectl apply -f -)")
    _serve_manifest_arguments(p)
    _registry_parser(sub)
    cluster_command.add_parser(sub)
    compile_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .runtime import interruption

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        with interruption.one_line_command("fora"):  # user errors: exit 2; a failed Ray job: 1; SIGTERM: 143
            return args.fn(args)
    except SystemExit as done:
        return int(done.code or 0)


if __name__ == "__main__":
    sys.exit(main())
