"""Sweep trials in the Tune trial's own process vs a Ray Train worker group per trial, as ratios.

The same tiny sweep (SmolLM2-135M, FoRA, 4 trials of a few steps, one at a time, no ASHA stopping) runs
twice in fresh Ray sessions: once as ``fora sweep`` runs single-worker trials now (in-process), once with
``FORA_TRIAL_WORKER_GROUP=1`` (the worker group every trial started before). Run it alone on the machine:

    python benchmarks/bench_sweep_trials.py [--steps 4] [--trials 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sweep_config(root: Path, steps: int, trials: int) -> Path:
    lrs = [2e-4 * (3 ** i) for i in range(trials)]
    cfg = {"name": "bench-sweep", "model": "smollm2-135m", "output_dir": str(root / "out"),
           "data": {"max_train": 64, "max_validation": 8, "calibration_size": 8, "max_length": 128,
                    "per_task_limit": 20},
           "fora": {"rank": 8, "alpha": 16, "fisher": {"num_batches": 4, "batch_size": 2}},
           "train": {"max_steps": steps, "batch_size": 4, "eval_every": steps, "checkpoint_every": steps,
                     "warmup_steps": 0, "cpus_per_worker": 1},
           "sweep": {"layer_budgets": [0.5], "lr": lrs, "stiefel_lr": [0.3], "max_trials": trials,
                     "scheduler": "fifo", "max_concurrent": 1, "register_best": False}}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def timed_sweep(root: Path, steps: int, trials: int, worker_group: bool) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "FORA_TRIAL_WORKER_GROUP": "1" if worker_group else "0"}
    config = sweep_config(root, steps, trials)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "sweep", str(config), "--quiet"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({'worker group' if worker_group else 'in-process'}):\n{proc.stderr[-3000:]}")
    summary = json.loads((root / "out" / "sweep" / "sweep_summary.json").read_text())
    return {"wall": wall, "tune": summary["seconds"]["tune"], "training": summary["seconds"]["trials_training"],
            "overhead": summary["seconds"]["overhead_share"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--trials", type=int, default=4)
    args = ap.parse_args()
    figures = {}
    for worker_group in (True, False):
        root = Path(tempfile.mkdtemp(prefix="fora-bench-sweep-"))
        figures[worker_group] = timed_sweep(root, args.steps, args.trials, worker_group)
    a, b = figures[True], figures[False]
    print(f"\nSmolLM2-135M, FoRA, {args.trials} trials of {args.steps} steps, one at a time, {os.cpu_count()} CPUs")
    print("| | worker group per trial (before) | in the trial's process (now) | ratio now / before |")
    print("|---|---|---|---|")
    print(f"| Tune wall time | {a['tune']:.1f} s | {b['tune']:.1f} s | {b['tune'] / a['tune']:.2f}x |")
    print(f"| per trial | {a['tune'] / args.trials:.1f} s | {b['tune'] / args.trials:.1f} s | |")
    print(f"| inside training steps | {a['training']:.1f} s | {b['training']:.1f} s | "
          f"{b['training'] / a['training']:.2f}x |")
    print(f"| overhead share of trial time | {100 * a['overhead']:.0f}% | {100 * b['overhead']:.0f}% | |")
    print(f"| fora sweep wall time | {a['wall']:.1f} s | {b['wall']:.1f} s | {b['wall'] / a['wall']:.2f}x |")


if __name__ == "__main__":
    main()
