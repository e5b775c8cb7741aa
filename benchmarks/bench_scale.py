"""Packing and activation checkpointing on the default (SmolLM2-135M, the built-in commonsense data), CPU or GPU.

    python benchmarks/bench_scale.py [--rows 256] [--steps 6] [--batch 8] [--length 256]

* packing: real (non-padding) tokens per second of FoRA training steps on padded batches of ``--batch`` rows
  vs packed sequences of ``--length`` tokens holding the same number of real tokens per step; the baseline is
  the padded run, timed in alternating steps in this run;
* checkpointing: peak memory of a training step (CUDA allocator peak, or process RSS on CPU, each in a fresh
  process) and step time, with and without ``train.gradient_checkpointing``, at ``--batch`` x ``--length``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import load_default

from fora_core import ForaConfig, apply_fora, create_fora_optimizer
from fora_core.memory import PeakMemory, enable_activation_checkpointing
from pipelines.config.run_config import DataConfig
from pipelines.data.jsonl import read_jsonl
from pipelines.data.packing import pack_rows
from pipelines.steps.data_prep import prepare_data
from pipelines.training.batches import make_batch, real_tokens


def trainer(device: str, checkpointing: bool = False):
    model, tok = load_default(device=device)
    if checkpointing:
        enable_activation_checkpointing(model)
    fora = ForaConfig(method="fora", rank=32, dropout=0.05, layer_budget=0.5)
    peft = apply_fora(model, list(range(0, model.config.num_hidden_layers, 2)), fora)
    peft.train()
    return peft, create_fora_optimizer(peft, fora), tok


def step(peft, opt, rows, pad_id, device) -> float:
    batch = {k: v.to(device) for k, v in make_batch(rows, pad_id).items()}
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    peft(**batch, use_cache=False).loss.backward()
    opt.step()
    opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def packing(args, device: str) -> dict:
    peft, opt, tok = trainer(device)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_data(DataConfig(max_train=args.rows, max_length=args.length), tok, Path(tmp))
        rows = read_jsonl(Path(tmp) / "train.jsonl")
    packed = pack_rows(rows, args.length)
    per_row = statistics.mean(len(r["input_ids"]) for r in rows)
    fill = sum(len(p["input_ids"]) for p in packed) / (len(packed) * args.length)
    # a padded batch of --batch rows, and the packed sequences holding as many real tokens
    n_packed = max(1, round(args.batch * per_row / (fill * args.length)))
    speed: dict[str, list[float]] = {"padded": [], "packed": []}
    step(peft, opt, rows[: args.batch], tok.pad_token_id, device)  # warm-up
    for i in range(args.steps):
        chunk = rows[i * args.batch:(i + 1) * args.batch]
        speed["padded"].append(real_tokens(chunk) / step(peft, opt, chunk, tok.pad_token_id, device))
        chunk = packed[i * n_packed:(i + 1) * n_packed]
        speed["packed"].append(real_tokens(chunk) / step(peft, opt, chunk, tok.pad_token_id, device))
    padded_width = statistics.mean(max(len(r["input_ids"]) for r in rows[i * args.batch:(i + 1) * args.batch])
                                   for i in range(args.steps))
    return {"rows": len(rows), "mean_row_tokens": per_row, "packed_sequences": len(packed), "packed_fill": fill,
            "padding_share_padded": 1 - per_row / padded_width,
            "padded_tokens_per_s": statistics.median(speed["padded"]),
            "packed_tokens_per_s": statistics.median(speed["packed"])}


def memory_probe(args, device: str, checkpointing: bool) -> dict:
    peft, opt, tok = trainer(device, checkpointing)
    ids = torch.randint(0, len(tok), (args.batch, args.length))
    rows = [{"input_ids": r.tolist(), "labels": r.tolist()} for r in ids]
    step(peft, opt, rows, tok.pad_token_id, device)  # optimizer state allocated
    with PeakMemory(device) as peak:
        seconds = [step(peft, opt, rows, tok.pad_token_id, device) for _ in range(2)]
    return {"peak_bytes": peak.peak_bytes, "kind": peak.kind, "step_s": min(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--probe", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:  # one memory measurement in this fresh process
        print(json.dumps(memory_probe(args, args.device, args.probe == "checkpointed")))
        return
    p = packing(args, args.device)
    print(f"packing ({p['rows']} rows of {p['mean_row_tokens']:.0f} tokens on average; padded batches are "
          f"{p['padding_share_padded']:.0%} padding; {p['packed_sequences']} packed sequences "
          f"{p['packed_fill']:.0%} full): {p['packed_tokens_per_s']:.0f} vs {p['padded_tokens_per_s']:.0f} real "
          f"tokens/s = {p['packed_tokens_per_s'] / p['padded_tokens_per_s']:.2f}x the padded baseline")
    probes = {}
    for kind in ("plain", "checkpointed"):
        out = subprocess.run([sys.executable, __file__, "--probe", kind, "--batch", str(args.batch), "--length",
                              str(args.length), "--device", args.device], capture_output=True, text=True, check=True)
        probes[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    a, b = probes["plain"], probes["checkpointed"]
    print(f"checkpointing at {args.batch} x {args.length} ({a['kind']} peak): {b['peak_bytes'] / 2**20:.0f} vs "
          f"{a['peak_bytes'] / 2**20:.0f} MiB = {b['peak_bytes'] / a['peak_bytes']:.2f}x the memory, step "
          f"{b['step_s']:.2f} vs {a['step_s']:.2f} s = {b['step_s'] / a['step_s']:.2f}x the time")


if __name__ == "__main__":
    main()
