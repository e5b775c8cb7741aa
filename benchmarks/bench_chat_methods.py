"""Methods on the user's job: which one learns the identity with the least forgetting, measured at every
evaluation step over several seeds.

SmolLM2-135M-Instruct on ``../shared/data/chat/identity_conversations.json`` with ``configs/chat.yaml``'s data,
rank, alpha, batch and learning rates; each method trains for the same steps (in-process, float32, CPU), and at
every ``--every`` steps its checkpoint is measured on (a seed s sets ``seed``, ``fora.seed`` and ``data.seed``: dropout,
the adapters' initialisation, the train/validation split and the batch order):

* identity rate: greedy answers (chat template, 24 new tokens) to the 16 questions phrased unlike anything in the
  data (``tests/test_chat_pipeline.NOVEL``), the share that names Vicuna or LMSYS;
* forgetting: general-text perplexity (2,048 tokens of WikiText-2, the evaluate step's measure) relative to the
  base model's, and the KL drift from the base (nats/token), from the training run's own evaluation points.

Methods: lora at all 30 layers, fg-lora and fora at the Fisher-selected 15 (chat.yaml's layer budget). Intervals
are 95% percentile bootstraps over (seed, question) pairs for the identity rate and the min..max over seeds for the
perplexity. Writes ``docs/chat_methods/results.json`` and ``docs/chat_methods/curves.png``; prints the table.

    python benchmarks/bench_chat_methods.py [--seeds 0 1 2] [--steps 40] [--every 10]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.config.run_config import RunConfig  # noqa: E402
from pipelines.steps import stages  # noqa: E402
from pipelines.steps.train import run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chat" / "identity_conversations.json"
OUT = ROOT / "docs" / "chat_methods"
METHODS = {"lora": 1.0, "fg-lora": 0.5, "fora": 0.5}  # method -> layer budget


def identity_rates(run: RunConfig, checkpoints: dict[int, Path], questions: list[str]) -> dict[int, list[int]]:
    """Per checkpoint step: 1/0 per question, whether the greedy answer names Vicuna or LMSYS."""
    import torch

    from fora_core import ModelSource, load_adapter
    from pipelines.evaluation.heldout import generate_answers

    base, tok = ModelSource(run.model).load()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True, add_generation_prompt=True,
                                       return_dict=False) for q in questions]
    out = {}
    for step, folder in sorted(checkpoints.items()):
        model, _, _ = load_adapter(copy.deepcopy(base), folder)
        with torch.no_grad():
            answers = generate_answers(model.eval(), tok, prompts, 24, batch_size=16)
        out[step] = [int("vicuna" in a.lower() or "lmsys" in a.lower()) for a in answers]
    return out


def checkpoint_folders(run: RunConfig) -> dict[int, Path]:
    found = {}
    for meta in Path(run.checkpoint_dir).rglob("fora_checkpoint.json"):
        found[json.loads(meta.read_text())["step"]] = meta.parent / "adapter"
    return found


def bootstrap(values: list[int], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    means = v[rng.integers(0, len(v), size=(draws, len(v)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    from test_chat_pipeline import NOVEL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--set", nargs="*", default=[], help="extra section.field=value for every run (e.g. train.lr=3e-4)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fora-bench-chat-methods-"))
    cfg = yaml.safe_load((ROOT / "configs" / "chat.yaml").read_text())
    cfg["data"]["source"] = str(DATA)
    cfg["train"].update(max_steps=args.steps, eval_every=args.every, checkpoint_every=args.every, use_ray=False,
                        choose_checkpoint="last", early_stopping_patience=0)
    for item in args.set:
        key, value = item.split("=", 1)
        section, field = key.split(".", 1)
        cfg.setdefault(section, {})[field] = yaml.safe_load(value)
    questions = [q for q, _ in NOVEL]
    rows = []
    for method in args.methods:
        layer_budget = METHODS[method]
        for seed in args.seeds:
            name = f"{method}-s{seed}"
            c = copy.deepcopy(cfg)
            c.update(name=name, output_dir=str(root / name), seed=seed)  # dropout masks
            c["fora"].update(method=method, layer_budget=layer_budget, seed=seed)  # the adapters' init
            c["data"]["seed"] = seed  # the split (so the validation rows) and the batch order
            run = RunConfig.from_dict(c)
            stages.data_prep(run, root / name / "data")
            layers = stages.calibrate(run, root / name / "data", root / name / "calibration")["selected_layers"]
            t0 = time.perf_counter()
            run_training(run, root / name / "data", layers, root / name / "train")
            seconds = time.perf_counter() - t0
            history = json.loads((root / name / "train" / "history.json").read_text())
            rates = identity_rates(run, checkpoint_folders(run), questions)
            for h in history:
                if "general_perplexity" in h and h["step"] in rates:
                    rows.append({"method": method, "seed": seed, "step": h["step"], "K": len(layers),
                                 "identity": rates[h["step"]], "val_loss": h["val_loss"],
                                 "ppl_change": h["general_perplexity"] / h["base_general_perplexity"] - 1,
                                 "kl_drift": h["kl_drift"], "train_seconds": seconds})
            print(f"{name}: {[(r['step'], sum(r['identity']), round(100 * r['ppl_change'], 1)) for r in rows if r['method'] == method and r['seed'] == seed]}",
                  flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"seeds": args.seeds, "steps": args.steps, "every": args.every, "overrides": args.set,
            "questions": len(questions), "lr": cfg["train"]["lr"], "stiefel_lr": cfg["train"]["stiefel_lr"],
            "rank": cfg["fora"]["rank"], "cpus": os.cpu_count()}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(table(rows))
    plot(rows, OUT / "curves.png")


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for step in sorted({r["step"] for r in rows if r["method"] == method}):
            at = [r for r in rows if r["method"] == method and r["step"] == step]
            items = [v for r in at for v in r["identity"]]
            ppl = [100 * r["ppl_change"] for r in at]
            out.append({"method": method, "K": at[0]["K"], "step": step, "identity": sum(items) / len(items),
                        "ci": bootstrap(items), "ppl": sum(ppl) / len(ppl), "ppl_range": (min(ppl), max(ppl)),
                        "kl": sum(r["kl_drift"] for r in at) / len(at), "seeds": len(at)})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| method | K | step | identity rate [95% CI] | general-text perplexity vs base (min..max) | KL drift |",
             "|---|---|---|---|---|---|"]
    for s in summarise(rows):
        lines.append(f"| {s['method']} | {s['K']} | {s['step']} | {s['identity']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}] | "
                     f"{s['ppl']:+.1f}% ({s['ppl_range'][0]:+.1f}..{s['ppl_range'][1]:+.1f}) | {s['kl']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        s = [x for x in summarise(rows) if x["method"] == method]
        ax.errorbar([x["ppl"] for x in s], [x["identity"] for x in s],
                    yerr=[[x["identity"] - x["ci"][0] for x in s], [x["ci"][1] - x["identity"] for x in s]],
                    fmt="o-", color=f"C{i}", label=method, capsize=3)
        for x in s:
            ax.annotate(str(x["step"]), (x["ppl"], x["identity"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    ax.axvline(10, color="grey", ls="--", lw=1, label="+10% perplexity")
    ax.set_xlabel("general-text perplexity vs base (%)  [forgetting]")
    ax.set_ylabel("identity rate (16 new questions)")
    ax.set_title("learning the job vs forgetting, by step (labels)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
