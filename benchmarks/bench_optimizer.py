"""Optimizer overhead of FoRA's Cayley-Adam.

    python benchmarks/bench_optimizer.py [--steps 4] [--batch 4] [--length 256] [--device cpu]

1. Full training step on the SmolLM2 default, same Fisher-selected layers (K = L/2): FoRA (Cayley-Adam on
   B, AdamW on A) vs fg-lora (AdamW on both). Target: FoRA at most 1.10x.
2. Optimizer step alone at LLaMA-3.1-8B adapter shapes (r = 32, 16 layers x q, k, v, up, down = 80
   adapters): Cayley-Adam on the 80 B's + AdamW on the 80 A's vs AdamW on all 160 factors.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import (
    batches_of,
    build_trainable,
    fisher_scores,
    load_default,
    median,
    select_layers,
    sync,
    time_train_steps,
    wikitext_sequences,
)

from fora_core import CayleyAdam
from fora_core.cayley_adam import qr_retraction

LLAMA8B_SHAPES = [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 14336), (14336, 4096)]  # (d_in, d_out)


def optimizer_step_ms(device: str, repeats: int, solver: str) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    a_list, b_list = [], []
    for _ in range(16):
        for d_in, d_out in LLAMA8B_SHAPES:
            a_list.append(torch.nn.Parameter(0.01 * torch.randn(32, d_in, generator=gen).to(device)))
            b_list.append(torch.nn.Parameter(qr_retraction(torch.randn(d_out, 32, generator=gen)).to(device)))
    for p in a_list + b_list:
        p.grad = 0.01 * torch.randn(p.shape, generator=gen).to(device)
    fora = [torch.optim.AdamW(a_list, lr=1e-4, foreach=True), CayleyAdam(b_list, lr=1e-3, solver=solver)]
    base = [torch.optim.AdamW(a_list + b_list, lr=1e-4, foreach=True)]

    def timed(opts) -> float:
        times = []
        for i in range(repeats + 2):
            sync(device)
            t0 = time.perf_counter()
            for o in opts:
                o.step()
            sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return 1000 * median(times)

    return timed(fora), timed(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--skip-model", action="store_true", help="only the LLaMA-8B optimizer-step part")
    args = ap.parse_args()
    torch.manual_seed(0)

    if not args.skip_model:
        model, tok = load_default(args.model, device=args.device)
        seqs = wikitext_sequences(tok, 8 + args.batch, args.length)
        layers = select_layers(fisher_scores(model, batches_of(seqs[:8], 4, args.device)), 0.5)
        batch = batches_of(seqs[8:], args.batch, args.device)[0]
        results = {}
        # interleave the two methods so drift in machine load hits both alike
        pairs = {}
        for method in ("fg-lora", "fora"):
            fresh, _ = load_default(args.model, device=args.device)
            pairs[method] = build_trainable(fresh, method, layers)
        for method in ("fg-lora", "fora"):
            time_train_steps(*pairs[method], batch, 0, 1, args.device)
        for method in ("fg-lora", "fora"):
            results[method] = []
        for _ in range(args.steps):
            for method in ("fg-lora", "fora"):
                results[method] += time_train_steps(*pairs[method], batch, 1, 0, args.device)
        fg, fo = median(results["fg-lora"]), median(results["fora"])
        print(f"\nFull training step, {args.model}, K = {len(layers)} Fisher layers, batch {args.batch} x "
              f"{args.length}, {args.device}, median of {args.steps}")
        print(f"  fg-lora (AdamW on A and B): {fg:.3f} s/step")
        print(f"  fora (Cayley-Adam on B):    {fo:.3f} s/step -> {fo / fg:.3f}x   (target <= 1.10x)")

    print(f"\nOptimizer step alone, LLaMA-3.1-8B shapes, r = 32, 80 adapters, {args.device}")
    for solver in ("fixed-point", "exact"):
        fora_ms, adamw_ms = optimizer_step_ms(args.device, args.repeats, solver)
        print(f"  Cayley-Adam({solver}) on B + AdamW on A: {fora_ms:.1f} ms vs AdamW on all: {adamw_ms:.1f} ms "
              f"-> {fora_ms / adamw_ms:.2f}x")


if __name__ == "__main__":
    main()
