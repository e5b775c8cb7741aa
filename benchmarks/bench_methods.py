"""Every method of ``fora_core/methods.py`` on the SmolLM2 default, against LoRA measured in the same run.

    python benchmarks/bench_methods.py [--steps 3] [--batch 4] [--length 128] [--device cpu] [--methods a,b]

Per method (each in a fresh process, so peak memory is its own): trainable parameters, median seconds of a
full training step (forward, backward, optimizer step) and peak memory (CUDA allocator peak, or process RSS on
CPU), each as a ratio to LoRA. Then FILet's calibration cost: the Fisher pass alone vs the same pass with
the K-FAC hooks plus the energies, on the same batches (its share of the Fisher pass it rides on).

Settings are the default config's: rank 32, alpha 64, targets q, k, v, up, down, K = L/2 for the Fisher
methods, Fourier n = 4096 coefficients per matrix; WikiText-2 windows as data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from common import batches_of, load_default, median, sync, time_train_steps, wikitext_sequences

from fora_core import (
    METHODS,
    ForaConfig,
    KfacCollector,
    apply_fora,
    count_trainable,
    create_fora_optimizer,
    find_decoder_layers,
    fisher_energies,
    fisher_scores,
    select_layers,
)
from fora_core.architecture import module_names_for_layers
from fora_core.filet import weight_out_in
from fora_core.memory import PeakMemory


def calibration(model, batches, config: ForaConfig, kfac: bool):
    names = module_names_for_layers(model, list(range(find_decoder_layers(model).num_layers)), config.target_modules)
    t0 = time.perf_counter()
    if not kfac:
        report = fisher_scores(model, batches)
        return report, None, time.perf_counter() - t0
    with KfacCollector(model, names) as collector:
        report = fisher_scores(model, batches, on_batch=collector.begin_batch)
    energies = {n: fisher_energies(weight_out_in(model.get_submodule(n)), *f) for n, f in collector.factors().items()}
    return report, energies, time.perf_counter() - t0


def one_method(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, tok = load_default(device=args.device, dtype="bfloat16" if args.device != "cpu" else "float32")
    seqs = wikitext_sequences(tok, 2 * args.batch + 8, args.length)
    train = batches_of(seqs[: args.batch], args.batch, args.device)[0]
    calib = batches_of(seqs[args.batch : args.batch + 8], 2, args.device)
    config = ForaConfig(method=args.one, rank=32, alpha=64, dropout=0.0, layer_budget=0.5)
    report, energies, _ = calibration(model, calib, config, kfac=config.spec.init == "filet")
    layers = select_layers(report, config.num_layers_to_adapt(report.num_layers)) if config.uses_fisher else None
    t0 = time.perf_counter()
    model = apply_fora(model, layers, config, filet_energies=energies)
    init_s = time.perf_counter() - t0
    opt = create_fora_optimizer(model, config, lr=2e-4, stiefel_lr=0.3)
    if args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    with PeakMemory(args.device) as peak:
        times = time_train_steps(model, opt, train, args.steps, 1, args.device,
                                 torch.bfloat16 if args.device != "cpu" else None)
    sync(args.device)
    return {"method": args.one, "params": count_trainable(model), "step_s": median(times), "init_s": init_s,
            "peak_bytes": peak.peak_bytes, "memory_kind": peak.kind}


def calibration_share(args) -> dict:
    torch.set_num_threads(args.threads)
    model, tok = load_default(device=args.device, dtype="bfloat16" if args.device != "cpu" else "float32")
    batches = batches_of(wikitext_sequences(tok, 16, args.length), 2, args.device)
    config = ForaConfig()
    alone, with_kfac = [], []
    for _ in range(2):  # alternate, take the faster of each
        alone.append(calibration(model, batches, config, kfac=False)[2])
        with_kfac.append(calibration(model, batches, config, kfac=True)[2])
    return {"fisher_alone_s": min(alone), "fisher_with_filet_s": min(with_kfac)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--calibration", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_method(args)))
        return
    if args.calibration:
        print(json.dumps(calibration_share(args)))
        return
    base = [sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch), "--length",
            str(args.length), "--device", args.device, "--threads", str(args.threads)]
    methods = ["lora"] + [m for m in args.methods.split(",") if m != "lora"]
    rows = []
    for m in methods:
        out = subprocess.run([*base, "--one", m], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  measured {m}", file=sys.stderr, flush=True)
    lora = rows[0]
    print(f"SmolLM2-135M, rank 32, q k v up down, batch {args.batch} x {args.length} tokens, {args.device}, "
          f"{args.threads} threads; memory = {lora['memory_kind']}")
    print("| method | trainable params | vs LoRA | step s | vs LoRA | peak MB | vs LoRA | init s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['params']:,} | {r['params'] / lora['params']:.2f}x | {r['step_s']:.3f} | "
              f"{r['step_s'] / lora['step_s']:.2f}x | {r['peak_bytes'] / 2**20:.0f} | "
              f"{r['peak_bytes'] / lora['peak_bytes']:.2f}x | {r['init_s']:.2f} |")
    cal = json.loads(subprocess.run([*base, "--calibration"], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    extra = cal["fisher_with_filet_s"] - cal["fisher_alone_s"]
    print(f"\nFILet calibration (8 batches of 2 x {args.length}): Fisher pass alone {cal['fisher_alone_s']:.2f} s, "
          f"with K-FAC hooks + energies {cal['fisher_with_filet_s']:.2f} s: FILet adds {extra:.2f} s, "
          f"{extra / cal['fisher_alone_s']:.0%} of the Fisher pass it shares")


if __name__ == "__main__":
    main()
