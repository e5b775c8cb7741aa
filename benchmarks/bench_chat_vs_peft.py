"""The chat example's training, through the pipeline and through a plain PEFT + transformers loop, as a ratio.

Both sides train SmolLM2-135M-Instruct on the same prepared identity conversations (``configs/chat.yaml``'s data
settings: the same token rows, assistant turns only), with LoRA of the same rank, alpha and target modules at the
same Fisher-selected layers, the same batch size, learning rate and number of steps, in float32 on the CPU:

* pipeline: the train stage as ``fora run`` runs it (``stages.train``: a Ray Train worker, the FoRA optimizer,
  checkpoints), without its evaluation points (``eval_every`` past the end), and separately with the chat
  config's evaluation points (validation loss and general-text perplexity every ``eval_every`` steps);
* plain: ``AutoModelForCausalLM`` + ``peft.get_peft_model`` + ``torch.optim.AdamW``, the batches in the same order,
  no checkpoints.

Wall time includes loading the model on both sides. Run alone on the machine:

    python benchmarks/bench_chat_vs_peft.py [--steps 30] [--data ../shared/data/chat/identity_conversations.json]

Target (issue 36): pipeline train stage <= 1.3x the plain loop for the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pipelines.config.run_config import RunConfig  # noqa: E402
from pipelines.steps import stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chat" / "identity_conversations.json"


def plain_peft_loop(run: RunConfig, data_dir: Path, layers: list[int], steps: int) -> float:
    """Seconds for a plain PEFT LoRA loop over the same rows and batches (model load included)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from fora_core import ModelSource
    from pipelines.data.jsonl import read_jsonl
    from pipelines.training.batches import batch_indices, make_batch

    t0 = time.perf_counter()
    model, tokenizer = ModelSource(run.model).load()
    f = run.fora
    peft_model = get_peft_model(model, LoraConfig(r=f.rank, lora_alpha=f.alpha, lora_dropout=f.dropout,
                                                  target_modules=[t.split(".")[-1] for t in f.target_modules],
                                                  layers_to_transform=layers, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=run.train.lr)
    rows = read_jsonl(data_dir / "train.jsonl")
    peft_model.train()
    for step in range(steps):
        idx = batch_indices(step, run.train.batch_size, len(rows), run.data.seed)
        batch = make_batch([rows[i] for i in idx], tokenizer.pad_token_id)
        loss = peft_model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fora-bench-chat-"))
    cfg = yaml.safe_load((ROOT / "configs" / "chat.yaml").read_text())
    cfg.update(output_dir=str(root), name="bench-chat")
    cfg["data"]["source"] = args.data
    cfg["train"].update(max_steps=args.steps, checkpoint_every=args.steps)
    chat_eval_every = cfg["train"]["eval_every"]
    run = RunConfig.from_dict({**cfg, "train": {**cfg["train"], "eval_every": 10 * args.steps,
                                                "early_stopping_patience": 0}})
    stages.data_prep(run, root / "data")
    layers = stages.calibrate(run, root / "data", root / "calibration")["selected_layers"]
    figures = {}
    t0 = time.perf_counter()
    plain = plain_peft_loop(run, root / "data", layers, args.steps)
    figures["plain"] = plain
    for name, every in (("pipeline", 10 * args.steps), ("pipeline + evaluation points", chat_eval_every)):
        r = RunConfig.from_dict({**cfg, "name": f"bench-{every}",
                                 "train": {**cfg["train"], "eval_every": every, "early_stopping_patience": 0}})
        t0 = time.perf_counter()
        out = stages.train(r, root / "data", root / "calibration", root / f"train-{every}")
        figures[name] = time.perf_counter() - t0
        hist = json.loads((root / f"train-{every}" / "history.json").read_text())
        figures[f"{name}: steps"] = out["loop_seconds"]
        figures[f"{name}: evaluation points"] = sum(h.get("val_seconds", 0.0) for h in hist)
    print(f"\nSmolLM2-135M-Instruct, chat data {Path(args.data).name}, LoRA r={run.fora.rank} at {len(layers)} layers, "
          f"{args.steps} steps of batch {run.train.batch_size}, {os.cpu_count()} CPUs, float32")
    print("| | seconds | ratio to the plain loop |")
    print("|---|---|---|")
    print(f"| plain PEFT + transformers loop (model load + steps) | {plain:.1f} | 1.00 |")
    for name in ("pipeline", "pipeline + evaluation points"):
        print(f"| {name}: train stage (Ray start, model load, steps, checkpoints) | {figures[name]:.1f} | "
              f"{figures[name] / plain:.2f} |")
        print(f"| {name}: the steps alone | {figures[name + ': steps']:.1f} | "
              f"{figures[name + ': steps'] / plain:.2f} |")
    print(f"| evaluation points every {chat_eval_every} steps (validation + general text) | "
          f"{figures['pipeline + evaluation points: evaluation points']:.1f} | |")


if __name__ == "__main__":
    main()
