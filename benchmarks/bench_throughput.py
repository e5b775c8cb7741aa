"""Training throughput: FoRA at K = L/2 vs LoRA on all layers (tokens/s, same run, same batch).

    python benchmarks/bench_throughput.py [--steps 4] [--batch 4] [--length 256] [--device cpu] [--bf16]

The paper saw 1.46x on an H200 (15,210 vs 10,442 tokens/s, Table 9). The two models are timed in
alternating steps so that machine-load drift affects both alike.
"""

from __future__ import annotations

import argparse

import torch
from common import (
    batches_of,
    build_trainable,
    fisher_scores,
    load_default,
    median,
    select_layers,
    time_train_steps,
    wikitext_sequences,
)

from fora_core import count_trainable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    args = ap.parse_args()
    torch.manual_seed(0)
    autocast = torch.bfloat16 if args.bf16 else None

    model, tok = load_default(args.model, device=args.device)
    seqs = wikitext_sequences(tok, 8 + args.batch, args.length)
    layers = select_layers(fisher_scores(model, batches_of(seqs[:8], 4, args.device)), 0.5)
    batch = batches_of(seqs[8:], args.batch, args.device)[0]
    runs = {"lora": build_trainable(model, "lora", None)}
    fresh, _ = load_default(args.model, device=args.device)
    runs["fora"] = build_trainable(fresh, "fora", layers)
    times: dict[str, list[float]] = {m: [] for m in runs}
    for m in runs:
        time_train_steps(*runs[m], batch, 0, 1, args.device, autocast)
    for _ in range(args.steps):
        for m in runs:
            times[m] += time_train_steps(*runs[m], batch, 1, 0, args.device, autocast)
    tokens = args.batch * args.length
    tps = {m: tokens / median(t) for m, t in times.items()}
    print(f"\nThroughput, {args.model}, batch {args.batch} x {args.length}, {args.device}"
          f"{', bf16 autocast' if args.bf16 else ', float32'}, median of {args.steps} steps")
    for m in runs:
        print(f"  {m:5s}: {count_trainable(runs[m][0]) / 1e6:.2f}M trainable, {median(times[m]):.2f} s/step, "
              f"{tps[m]:.0f} tokens/s")
    print(f"  FoRA (K = {len(layers)}) / LoRA-all tokens/s: {tps['fora'] / tps['lora']:.2f}x   (paper: 1.46x on GPU)")


if __name__ == "__main__":
    main()
