"""Two costs of the user's evaluation, each against a baseline measured in the same run:

1. Generation throughput of the held-out check: SmolLM2-135M-Instruct answering held-out identity
   conversations (../shared/data/chat) greedily, ``--new-tokens`` each; tokens/s one by one (batch 1, the
   baseline) and batched (8, 16; left-padded, grouped by length). Ratio batched / one by one.
2. The evaluate step's wall time with the score cache: the ``make run`` evaluation (configs/default.yaml: seven
   commonsense tasks x ``--limit`` items, held-out loss, diagnostics) on a 2-step adapter, run twice against an
   empty cache. The first run scores the base model and the tuned one (the baseline: what every run did before
   the cache); the second finds the base model's scores in the cache. Ratio second / first.

    python benchmarks/bench_heldout_eval.py [--items 32] [--new-tokens 32] [--limit 100] [--skip-cache]
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

import torch  # noqa: E402

from pipelines.config.evaluation import HeldoutConfig  # noqa: E402
from pipelines.config.run_config import load_run_config  # noqa: E402
from pipelines.data.chat import conversation_of  # noqa: E402
from pipelines.data.sources import Example  # noqa: E402
from pipelines.evaluation.heldout import build_items, generate_answers  # noqa: E402
from pipelines.runtime.models import model_source  # noqa: E402

IDENTITY = ROOT.parent / "shared" / "data" / "chat" / "identity_conversations.json"


def generation(model, tok, n_items: int, new_tokens: int) -> None:
    records = json.loads(IDENTITY.read_text())
    examples = [Example("", "", messages=conversation_of(r, i, IDENTITY.name)) for i, r in enumerate(records, 1)]
    items, _ = build_items(examples, tok, HeldoutConfig(limit=n_items), max_length=512)
    prompts = [it.prompt_ids for it in items]
    rows = []
    for batch in (1, 8, 16):
        generate_answers(model, tok, prompts[:2], 2, batch)  # warm-up
        t0 = time.perf_counter()
        answers = generate_answers(model, tok, prompts, new_tokens, batch)
        seconds = time.perf_counter() - t0
        tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
        rows.append((batch, tokens, seconds))
    base = rows[0][1] / rows[0][2]
    print(f"\nGeneration, {len(prompts)} held-out items, up to {new_tokens} new tokens, {torch.get_num_threads()} threads")
    print("| batch | tokens | seconds | tokens/s | vs one by one |\n|---|---|---|---|---|")
    for batch, tokens, seconds in rows:
        print(f"| {batch} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | {tokens / seconds / base:.2f}x |")


def cache(limit: int) -> None:
    from pipelines.steps import stages

    root = Path(tempfile.mkdtemp(prefix="bench-eval-cache-"))
    run = load_run_config(ROOT / "configs" / "default.yaml", [
        f"output_dir={root}", "train.max_steps=2", "train.use_ray=false", f"eval.limit={limit}",
        f"eval.cache={root / 'cache'}", "register.compare_champion=false"])
    model, tok = model_source(run).load()
    stages.data_prep(run, root / "data", tokenizer=tok)
    stages.calibrate(run, root / "data", root / "calibration", model=model, tokenizer=tok)
    stages.train(run, root / "data", root / "calibration", root / "train")
    seconds = []
    for i in (1, 2):
        t0 = time.perf_counter()
        results = stages.evaluate(run, root / "data", root / "train" / "adapter", root / f"eval{i}", model=model,
                                  tokenizer=tok)
        seconds.append(time.perf_counter() - t0)
        print(f"evaluate run {i}: {seconds[-1]:.0f} s (base from the cache: {results['base']['from_cache']})",
              flush=True)
    print(f"\nEvaluate step, configs/default.yaml eval (7 tasks x {limit} items, held-out loss, diagnostics)")
    print("| run | seconds | vs first |\n|---|---|---|")
    print(f"| first (scores base and tuned) | {seconds[0]:.0f} | 1.00x |")
    print(f"| second (base from the cache) | {seconds[1]:.0f} | {seconds[1] / seconds[0]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--skip-cache", action="store_true")
    args = parser.parse_args()
    from pipelines.config.run_config import RunConfig

    model, tok = model_source(RunConfig()).load()
    model.eval()
    generation(model, tok, args.items, args.new_tokens)
    if not args.skip_cache:
        cache(args.limit)


if __name__ == "__main__":
    main()
