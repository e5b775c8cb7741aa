"""Should the built-in commonsense mix be rendered through the model's chat template when it has one?
Measured: the same records, steps, seed and evaluation, two arms:

  * plain (today's default): "question\\nanswer" text, loss on the answer;
  * chat: each record as a conversation [user: question, assistant: answer], rendered with SmolLM2's ChatML
    template (the chat data path), loss on the assistant turn.

Both tuned models are scored on the seven commonsense tasks with lm-eval as the evaluate step scores them
(no template: the question as context, the answer texts as choices), and again with lm-eval's
``apply_chat_template`` (the question asked through the template), so the table shows whether a gain is
the format or the knowledge. Printed: acc_avg per arm and scoring, with the difference chat - plain and
its paired 95% bootstrap interval over items.

    python benchmarks/bench_builtin_chat_template.py [--steps 30] [--limit 50] [--train 600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

from pipelines.config.run_config import RunConfig  # noqa: E402
from pipelines.data.sources import read_source  # noqa: E402
from pipelines.evaluation.stats import bootstrap_ci  # noqa: E402
from pipelines.steps import stages  # noqa: E402


def arm_config(root: Path, name: str, source: str, fmt: str, args) -> RunConfig:
    return RunConfig.from_dict({
        "name": name, "model": "smollm2-135m", "output_dir": str(root / name),
        "data": {"source": source, "format": fmt, "max_train": args.train, "max_validation": 50,
                 "calibration_size": 64, "max_length": 192, "per_task_limit": 400},
        "fora": {"rank": 32, "alpha": 64, "layer_budget": 0.5, "fisher": {"num_batches": 16, "batch_size": 4}},
        "train": {"max_steps": args.steps, "batch_size": 8, "lr": 6e-4, "warmup_steps": 10, "use_ray": False,
                  "checkpoint_every": 1000, "eval_every": 1000},
        "eval": {"limit": args.limit, "batch_size": 16, "diagnostics": False, "compare_base": name == "plain",
                 "heldout": {"source": ""}, "perplexity": False},
        "register": {"compare_champion": False}, "seed": 0})


def chat_items(model, tok, adapter: Path, run: RunConfig) -> dict[str, list[int]]:
    """Per-item acc of the tuned model with the question asked through the chat template."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel

    from pipelines.evaluation.lm_eval_suite import prepare_suite, task_manager

    with tempfile.TemporaryDirectory() as tmp:
        suite = prepare_suite(run.eval.tasks, run.eval.limit, Path(tmp))
        tuned = PeftModel.from_pretrained(model, str(adapter))
        out = simple_evaluate(model=HFLM(pretrained=tuned, tokenizer=tok, batch_size=16), tasks=list(suite.names),
                              task_manager=task_manager(suite), limit=run.eval.limit, log_samples=True,
                              bootstrap_iters=0, apply_chat_template=True)
        tuned.unload()
    return {suite.names[t]: [int(s["acc"]) for s in sorted(v, key=lambda s: s["doc_id"])]
            for t, v in out["samples"].items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--train", type=int, default=600)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-builtin-chat-"))
    plain_run = arm_config(root, "plain", "builtin:commonsense", "auto", args)
    examples, _ = read_source(plain_run.data)
    chat_file = root / "builtin_as_chat.jsonl"
    chat_file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": e.prompt},
                                                          {"role": "assistant", "content": e.response}]}) + "\n"
                                 for e in examples))
    chat_run = arm_config(root, "chat", str(chat_file), "chat", args)
    items: dict[str, dict[str, dict[str, list[int]]]] = {}
    from pipelines.runtime.models import model_source

    for run in (plain_run, chat_run):
        t0 = time.perf_counter()
        model, tok = model_source(run).load()
        out = run.out
        stages.data_prep(run, out / "data", tokenizer=tok)
        stages.calibrate(run, out / "data", out / "calibration", model=model, tokenizer=tok)
        stages.train(run, out / "data", out / "calibration", out / "train")
        results = stages.evaluate(run, out / "data", out / "train" / "adapter", out / "eval", model=model,
                                  tokenizer=tok)
        items[run.name] = {"raw": results["tuned"]["items"]["acc_avg"],
                           "chat": chat_items(model, tok, out / "train" / "adapter", run)}
        if "base" in results:
            items["base"] = {"raw": results["base"]["items"]["acc_avg"]}
        print(f"{run.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{args.steps} steps, {args.train} records, 7 tasks x {args.limit} items; acc_avg (macro over tasks)\n")
    print("| scoring | base | plain | chat | chat - plain [95% CI] |\n|---|---|---|---|---|")
    for scoring in ("raw", "chat"):
        p, c = items["plain"][scoring], items["chat"][scoring]
        mean = {k: float(np.mean([np.mean(v) for v in d.values()])) for k, d in (("plain", p), ("chat", c))}
        diff, low, high = bootstrap_ci({t: np.asarray(c[t], float) - np.asarray(p[t], float) for t in p}, n_boot=4000)
        base = items["base"]["raw"]
        base_acc = f"{np.mean([np.mean(v) for v in base.values()]):.3f}" if scoring == "raw" else "-"
        print(f"| {scoring} | {base_acc} | {mean['plain']:.3f} | {mean['chat']:.3f} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] |")
    print(f"\n(artifacts: {root})")


if __name__ == "__main__":
    main()
