"""The ``fora`` command line.

    fora run CONFIG [--set section.field=value ...]   the five steps in this process (Ray Train inside)
    fora validate CONFIG                              check a config and print it resolved
    fora ui CONFIG                                    how to open the MLflow UI on this run's tracking store

A user mistake (bad config value, malformed data row, unknown model) ends with one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from fora_core import ForaConfigError, ModelLoadError

from .run_config import load_run_config
from .steps.data_prep import DataError

USER_ERRORS = (ForaConfigError, ModelLoadError, DataError, FileNotFoundError)


def _cmd_run(args) -> int:
    from .local_run import run_pipeline

    run = load_run_config(args.config, args.set)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    summary = run_pipeline(run, progress=not args.quiet)
    table = (run.out / "eval" / "eval_table.md").read_text()
    t = summary["timings"]
    total = sum(t.values())
    print("\n" + table)
    print("Wall time by step: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) +
          f"; total {total:.0f} s (Fisher {100 * t['fisher'] / total:.1f}%)")
    reg = summary["registration"]
    print(f"Registered '{run.register.model_name}' version {reg['version']}"
          f"{' as champion' if reg['champion'] else ' (champion unchanged)'}.")
    print(f"Artifacts: {summary['output_dir']}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {summary['tracking_uri']}")
    return 0


def _cmd_validate(args) -> int:
    run = load_run_config(args.config, args.set)
    print(json.dumps(run.to_dict(), indent=2))
    return 0


def _cmd_ui(args) -> int:
    run = load_run_config(args.config, args.set)
    print(f"mlflow ui --backend-store-uri {run.tracking_uri} --port 5000")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fora", description="FoRA fine-tuning pipelines")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, helptext in (("run", _cmd_run, "run the whole pipeline locally"),
                               ("validate", _cmd_validate, "validate a config"),
                               ("ui", _cmd_ui, "print the MLflow UI command")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.max_steps=10")
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.fn(args)
    except USER_ERRORS as err:
        print(f"fora: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
