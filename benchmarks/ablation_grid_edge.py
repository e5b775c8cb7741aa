"""Did the ablation's grid cut a method short? For every method whose best lr (or Stiefel lr) sits on the
largest value searched, run the chosen setting and the next value up (the grid's last ratio once more) once
per seed, side by side in one Ray Tune run on the ablation's data and Fisher report, and compare seed by seed:

    d_s = val_loss(next value, seed s) - val_loss(chosen, seed s),   95% t-interval over the seeds

d < 0 with an interval below zero means the optimum lies beyond the grid and the method was under-tuned.

The chosen settings come from the ablation's summary (``<output_dir>/ablation/ablation_summary.json``) when
it is there, else from the committed report (``--report docs/ablation/report.json``); both settings run
again here, so the check needs nothing from the earlier run. Run it alone on the machine:

    python benchmarks/ablation_grid_edge.py configs/ablation.yaml --report docs/ablation/report.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def edge_arms(best: dict[str, dict], grids: dict[str, list[float]]) -> list[dict]:
    """The next grid value up for every (method, key) whose best sits on the grid's largest value."""
    arms = []
    for method, setting in best.items():
        for key, grid in grids.items():
            if key == "stiefel_lr" and method not in ("fora", "stiefel-lora"):
                continue
            g = sorted(grid)
            if len(g) > 1 and setting[key] == g[-1]:
                arms.append({**setting, key: g[-1] * g[-1] / g[-2], "edge": key})
    return arms


def chosen_settings(root: Path, report: Path | None) -> dict[str, dict]:
    summary = root / "ablation_summary.json"
    if summary.exists():
        return json.loads(summary.read_text())["best"]
    if report is None or not report.exists():
        raise SystemExit(f"no {summary} and no --report file: run `fora ablate CONFIG` first or pass "
                         "--report docs/ablation/report.json")
    methods = json.loads(report.read_text())["methods"]
    return {m: {k: v[k] for k in ("method", "K", "lr", "stiefel_lr")} for m, v in methods.items()}


def main() -> int:
    from pipelines.ablation.runner import phase_config
    from pipelines.config.run_config import load_run_config
    from pipelines.evaluation.stats import paired_seed_difference
    from pipelines.steps import stages
    from pipelines.sweep.driver import prepare_once
    from pipelines.sweep.tune_runner import tune_trials

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--report", type=Path, default=None, help="the committed report.json with the chosen settings")
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    run = load_run_config(args.config)
    root = run.out.resolve() / "ablation"
    out = root / "grid_edge"
    out.mkdir(parents=True, exist_ok=True)
    best = chosen_settings(root, args.report)
    if args.methods:
        best = {m: s for m, s in best.items() if m in args.methods}
    grids = {"lr": run.ablation.lr, "stiefel_lr": run.ablation.stiefel_lr}
    edges = edge_arms(best, grids)
    if not edges:
        print("no method's best setting sits on the edge of its grid")
        return 0
    seeds = run.ablation.seeds
    settings = [{k: v for k, v in a.items() if k != "edge"} for a in edges]
    settings += [best[m] for m in dict.fromkeys(e["method"] for e in edges)]
    arms = [{**s, "seed": seed} for s in settings for seed in seeds]
    print(f"{len(arms)} trials: " + ", ".join(f"{a['method']} lr={a['lr']:.3g} stiefel_lr={a['stiefel_lr']:.3g} "
                                               f"seed={a['seed']}" for a in arms), flush=True)
    state = out / "parent_run_id.txt"
    parent = state.read_text().strip() if state.exists() else stages.start_tracking(run, f"{run.name} grid edge")
    state.write_text(parent)
    prepare_once(run, out, parent)
    result = tune_trials(phase_config(run, len(arms)), out / "data", out / "calibration", out / "trials", parent,
                         arms=arms)

    def losses(setting: dict) -> dict[int, float]:
        return {r["seed"]: r["val_loss"] for r in result["results"] if r["method"] == setting["method"]
                and r["lr"] == setting["lr"] and r["stiefel_lr"] == setting["stiefel_lr"]
                and r.get("val_loss") is not None}

    rows = []
    print("\n| method | chosen lr / stiefel lr | next value up | val loss, chosen (mean) | next (mean) | "
          "next - chosen [95% t-interval over seeds] |\n|---|---|---|---|---|---|")
    for edge in edges:
        m = edge["method"]
        nxt, ref = losses(edge), losses(best[m])
        mean, low, high, n = paired_seed_difference(nxt, ref)
        rows.append({"method": m, "edge": edge["edge"], "chosen": best[m], "next": edge[edge["edge"]],
                     "chosen_val_loss": ref, "next_val_loss": nxt, "diff": mean, "low": low, "high": high,
                     "seeds": n})
        print(f"| {m} | {best[m]['lr']:.3g} / {best[m]['stiefel_lr']:.3g} | {edge['edge']} = "
              f"{edge[edge['edge']]:.3g} | {sum(ref.values()) / len(ref):.4f} | {sum(nxt.values()) / len(nxt):.4f} | "
              f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] |")
    (out / "grid_edge.json").write_text(json.dumps({"rows": rows, "seconds": result.get("seconds")}, indent=1,
                                                   default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
