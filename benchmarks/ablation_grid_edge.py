"""Did the ablation's grid cut a method short? For every method whose best lr (or Stiefel lr) sits on the
largest value searched, run the next value up (the grid's last ratio once more), once per seed, on the
ablation's own data and Fisher report, and compare with the chosen setting seed by seed:

    d_s = val_loss(next value, seed s) - val_loss(chosen, seed s),   95% t-interval over the seeds

d < 0 with an interval below zero means the optimum lies beyond the grid and the method was under-tuned.

Run after ``fora ablate CONFIG`` finished, alone on the machine (trials go through Ray Tune like the
ablation's):

    python benchmarks/ablation_grid_edge.py configs/ablation.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def edge_arms(summary: dict) -> list[dict]:
    """The next grid value up for every (method, key) whose best sits on the grid's largest value."""
    grids = {"lr": summary["config"]["ablation"]["lr"], "stiefel_lr": summary["config"]["ablation"]["stiefel_lr"]}
    arms = []
    for method, best in summary["best"].items():
        for key, grid in grids.items():
            if key == "stiefel_lr" and method not in ("fora", "stiefel-lora"):
                continue
            g = sorted(grid)
            if len(g) > 1 and best[key] == g[-1]:
                arms.append({**best, key: g[-1] * g[-1] / g[-2], "edge": key})
    return arms


def main() -> int:
    from pipelines.ablation.stats import paired_seed_difference
    from pipelines.run_config import load_run_config
    from pipelines.sweep import tune_trials

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    run = load_run_config(args.config)
    root = run.out.resolve() / "ablation"
    summary = json.loads((root / "ablation_summary.json").read_text())
    seeds = summary["config"]["ablation"]["seeds"]
    arms = [{k: v for k, v in a.items() if k != "edge"} | {"seed": s} for a in edge_arms(summary) for s in seeds]
    if not arms:
        print("no method's best setting sits on the edge of its grid")
        return 0
    print(f"{len(arms)} trials: " + ", ".join(f"{a['method']} lr={a['lr']:.3g} stiefel_lr={a['stiefel_lr']:.3g} "
                                               f"seed={a['seed']}" for a in arms))
    result = tune_trials(run, root / "data", root / "calibration", root / "grid_edge", summary["parent_run_id"],
                         arms=arms)
    chosen = {(r["method"], r["seed"]): r["val_loss"] for r in summary["seeds"]}
    rows = []
    print("\n| method | chosen lr / stiefel lr | next value up | val loss, chosen (mean) | next (mean) | "
          "next - chosen [95% t-interval over seeds] |\n|---|---|---|---|---|---|")
    for edge in edge_arms(summary):
        m = edge["method"]
        best = summary["best"][m]
        nxt = {r["seed"]: r["val_loss"] for r in result["results"] if r["method"] == m
               and r["lr"] == edge["lr"] and r["stiefel_lr"] == edge["stiefel_lr"] and r.get("val_loss") is not None}
        ref = {s: chosen[(m, s)] for s in seeds if (m, s) in chosen}
        mean, low, high, n = paired_seed_difference(nxt, ref)
        rows.append({"method": m, "edge": edge["edge"], "next": edge[edge["edge"]], "diff": mean, "low": low,
                     "high": high, "seeds": n})
        print(f"| {m} | {best['lr']:.3g} / {best['stiefel_lr']:.3g} | {edge['edge']} = {edge[edge['edge']]:.3g} | "
              f"{sum(ref.values()) / len(ref):.4f} | {sum(nxt.values()) / len(nxt):.4f} | "
              f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] |")
    (root / "grid_edge" / "grid_edge.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
