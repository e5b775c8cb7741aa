"""``fora compile``: the two KFP pipelines (main and sweep) to YAML, with the steps' resources from a run config and
their images from the overlay the cluster is applied with (``images.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config.errors import RunConfigError
from ..config.run_config import load_run_config

COMPILE_DIR = "build/kfp"


def _writable(folder: Path, what: str) -> Path:
    """``folder`` created (with its parents) now, or one line saying why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunConfigError(f"{what} {folder}: cannot create it ({err.strerror or err})") from None
    return folder


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile the KFP pipelines (main and sweep) to YAML")
    p.add_argument("--config", default=None,
                   help="take the steps' resources (CPU, memory, GPUs, node selector, tolerations, timeouts) "
                        "from this run config; default: configs/cluster.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of that config, e.g. --set resources.train.gpus=1")
    p.add_argument("--output-dir", default=COMPILE_DIR,
                   help=f"default: {COMPILE_DIR}; the checked-in pipelines/kubeflow/*.yaml are written only when "
                        "that folder is named")
    p.add_argument("--train-gpus", type=int, default=None, help="shortcut for --set resources.train.gpus=N")
    p.add_argument("--images-from", default=None, metavar="OVERLAY",
                   help="take the steps' images from this kustomize overlay's `images:` (the one place the cluster's "
                        "images are set), e.g. k8s/overlays/standalone; default: FORA_IMAGE / FORA_CUDA_IMAGE")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..preflight.checks import plan_report
    from .fora_pipeline import DEFAULT_CONFIG_PATH, PIPELINE_YAML, compile_pipeline
    from .fora_sweep_pipeline import SWEEP_PIPELINE_YAML, compile_sweep_pipeline
    from .images import choose, warning

    overrides = list(args.set)
    if args.train_gpus is not None:  # the older shortcut for --set resources.train.gpus=N (checked the same way)
        overrides += [f"resources.train.gpus={args.train_gpus}", f"resources.sweep.gpus={args.train_gpus}"]
    run = load_run_config(args.config or DEFAULT_CONFIG_PATH, overrides) if (args.config or overrides) else None
    if not args.output_dir.strip():
        raise RunConfigError(f"--output-dir {args.output_dir!r}: give a folder (default {COMPILE_DIR}; the checked-in "
                             f"files are refreshed only when their folder is named: --output-dir {PIPELINE_YAML.parent})")
    images = choose(args.images_from)
    folder = _writable(Path(args.output_dir), "--output-dir")
    if run is not None:
        print(plan_report(run), file=sys.stderr)
    for fn, default in ((compile_pipeline, PIPELINE_YAML), (compile_sweep_pipeline, SWEEP_PIPELINE_YAML)):
        path = fn(folder / default.name, run=run, images=images)
        print(f"wrote {path}")
    if folder.resolve() != PIPELINE_YAML.parent.resolve() and warning(images):
        print(warning(images), file=sys.stderr)
    return 0
