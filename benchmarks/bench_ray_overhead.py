"""Ray overhead of the train step: time from the step's start to its first training step, and tokens/s
inside Ray Train vs the same ``train_loop_per_worker`` run in-process without Ray, as ratios.

SmolLM2-135M, FoRA at the Fisher-selected half of the layers, the commonsense mix, float32, CPU.
Run alone on the machine (anything else running skews both sides):

    python benchmarks/bench_ray_overhead.py [--steps 12] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pipelines.config.run_config import RunConfig  # noqa: E402
from pipelines.steps import stages  # noqa: E402
from pipelines.steps.train import run_training  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fora-bench-ray-"))
    base = {"name": "bench", "model": "smollm2-135m", "output_dir": str(root),
            "data": {"max_train": 400, "max_validation": 8, "calibration_size": 16, "max_length": 192},
            "fora": {"rank": 32, "alpha": 64, "fisher": {"num_batches": 8, "batch_size": 2}},
            "train": {"max_steps": args.steps, "batch_size": args.batch_size, "eval_every": 10_000,
                      "checkpoint_every": 10_000, "warmup_steps": 0}}
    run = RunConfig.from_dict(base)
    stages.data_prep(run, root / "data")
    layers = stages.calibrate(run, root / "data", root / "calibration")["selected_layers"]
    figures = {}
    for use_ray in (False, True):
        cfg = RunConfig.from_dict({**base, "name": f"bench-{'ray' if use_ray else 'local'}",
                                   "train": {**base["train"], "use_ray": use_ray}})
        t0 = time.perf_counter()
        out = run_training(cfg, root / "data", layers, root / f"train-{use_ray}")
        wall = time.perf_counter() - t0
        hist = json.loads((root / f"train-{use_ray}" / "history.json").read_text())
        tps = [h["tokens_per_s"] for h in hist[1:]]  # the first step warms up allocators on both sides
        figures[use_ray] = {"first_step_s": out["first_step_s"], "tokens_per_s": statistics.median(tps),
                            "loop_s": out["loop_seconds"], "wall_s": wall}
    a, b = figures[False], figures[True]
    print(f"\nSmolLM2-135M, FoRA at {len(layers)} of 30 layers, {args.steps} steps of batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")
    print("| | no Ray (in-process) | Ray Train (1 worker) | ratio Ray / no Ray |")
    print("|---|---|---|---|")
    print(f"| stage start -> first step | {a['first_step_s']:.1f} s | {b['first_step_s']:.1f} s | "
          f"{b['first_step_s'] / a['first_step_s']:.2f}x |")
    print(f"| tokens/s (median of steps 2..) | {a['tokens_per_s']:.0f} | {b['tokens_per_s']:.0f} | "
          f"{b['tokens_per_s'] / a['tokens_per_s']:.3f} |")
    print(f"| training steps | {a['loop_s']:.1f} s | {b['loop_s']:.1f} s | {b['loop_s'] / a['loop_s']:.2f}x |")
    print(f"| stage wall time | {a['wall_s']:.1f} s | {b['wall_s']:.1f} s | {b['wall_s'] / a['wall_s']:.2f}x |")
    print(f"Ray's fixed cost: {b['wall_s'] - b['loop_s'] - (a['wall_s'] - a['loop_s']):.1f} s per train stage")


if __name__ == "__main__":
    main()
