"""Fisher calibration cost vs a training step, and its peak memory vs a plain forward + backward.

    python benchmarks/bench_fisher.py [--sequences 128] [--length 256] [--batch 8] [--device cpu]

Each memory measurement runs in its own subprocess (peak RSS on CPU is per process; CUDA uses the
allocator's peak). Printed as ratios against baselines measured in the same run:
  * time: Fisher seconds per sequence / FoRA training-step seconds per sequence (target <= 1);
  * memory: Fisher peak / peak of one forward + backward whose gradients are dropped (target <= 1.2),
    and, for reference, a forward + backward that keeps every gradient (the naive Fisher).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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

from fora_core.memory import PeakMemory, current_rss_bytes


def memory_probe(mode: str, args) -> dict:
    """Run one of: fisher | fwd_bwd_dropped | fwd_bwd_kept on one batch and return its peak memory."""
    model, tok = load_default(device=args.device)
    batch = batches_of(wikitext_sequences(tok, args.batch, args.length), args.batch, args.device)[0]
    model.eval()
    before = current_rss_bytes()
    layer_params = [p for layer in model.model.layers for p in layer.parameters()]
    with PeakMemory(args.device) as peak:
        if mode == "fisher":
            fisher_scores(model, [batch])
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in layer_params:
                p.requires_grad_(True)
            if mode == "fwd_bwd_dropped":
                for p in layer_params:
                    p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
            model(**batch).loss.backward()
            sync(args.device)
    return {"peak": peak.peak_bytes, "before": before, "kind": peak.kind,
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", type=int, default=128)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--probe", choices=["fisher", "fwd_bwd_dropped", "fwd_bwd_kept"])
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(memory_probe(args.probe, args)))
        return

    torch.manual_seed(0)
    model, tok = load_default(args.model, device=args.device)
    seqs = wikitext_sequences(tok, args.sequences, args.length)
    t0 = time.perf_counter()
    report = fisher_scores(model, batches_of(seqs, args.batch, args.device), progress=True)
    sync(args.device)
    fisher_s = time.perf_counter() - t0
    fisher_per_seq = fisher_s / args.sequences

    layers = select_layers(report, 0.5)
    peft_model, opt = build_trainable(model, "fora", layers)
    train_batch = batches_of(seqs[: args.train_batch], args.train_batch, args.device)[0]
    step_s = median(time_train_steps(peft_model, opt, train_batch, args.train_steps, 1, args.device))
    train_per_seq = step_s / args.train_batch

    mem = {}
    for mode in ("fwd_bwd_dropped", "fisher", "fwd_bwd_kept"):
        out = subprocess.run([sys.executable, __file__, "--probe", mode, "--batch", str(args.batch),
                              "--length", str(args.length), "--device", args.device],
                             capture_output=True, text=True, check=True)
        mem[mode] = json.loads(out.stdout.strip().splitlines()[-1])

    paper_run = 3 * 170_000  # sequence-steps in 3 epochs of Commonsense-170K
    share = args.sequences * fisher_per_seq / (paper_run * train_per_seq)
    gib = 2**30
    print(f"\nFisher calibration, {args.model}, N = {args.sequences} x {args.length} tokens, batch {args.batch}, "
          f"{args.device}")
    print(f"  Fisher: {fisher_s:.1f} s total, {fisher_per_seq:.3f} s/sequence")
    print(f"  FoRA training step (batch {args.train_batch}): {step_s:.2f} s, {train_per_seq:.3f} s/sequence")
    print(f"  ratio Fisher / training, per sequence: {fisher_per_seq / train_per_seq:.2f}x   (target <= 1)")
    print(f"  paper-scale share: {args.sequences} x {fisher_per_seq:.3f} s / ({paper_run} x {train_per_seq:.3f} s)"
          f" = {100 * share:.4f}% of training   (target < 1%)")
    base = mem["fwd_bwd_dropped"]
    kind = base["kind"]
    for mode in ("fisher", "fwd_bwd_kept"):
        m = mem[mode]
        print(f"  peak memory ({kind}) {mode}: {m['peak'] / gib:.2f} GiB vs fwd+bwd dropped "
              f"{base['peak'] / gib:.2f} GiB -> {m['peak'] / base['peak']:.3f}x; above the loaded model: "
              f"{(m['peak'] - m['before']) / gib:.2f} vs {(base['peak'] - base['before']) / gib:.2f} GiB "
              f"-> {(m['peak'] - m['before']) / max(1, base['peak'] - base['before']):.3f}x")
    print("  (memory target: Fisher peak <= 1.2x fwd+bwd with gradients dropped)")


if __name__ == "__main__":
    main()
