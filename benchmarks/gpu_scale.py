"""GPU figures for bigger models: fora vs lora-all vs QFoRA on randomly initialised Llama-3.2-1B and Llama-3.1-8B
architectures in bf16 (configs from fora_core/known_models.py: no download, nothing carried to the device).

    python benchmarks/gpu_scale.py [--models 1b,8b] [--batch 4] [--length 2048] [--steps 6] [--drift-steps 1000]
    python benchmarks/gpu_scale.py --smoke      # the same code on a tiny Llama on CPU (a dry run, minutes)

For each model and arm (fora: K = L/2, Cayley-Adam on B; lora-all: every layer, AdamW; qfora: fora on an NF4
base) it prints, measured in this run:
  * tokens/s of full training steps (activation checkpointing on) and the ratio to lora-all;
  * peak GPU memory (torch.cuda.max_memory_allocated) against the memory plan's peak (fora validate);
  * the optimizer step's share of the step time, and Cayley-Adam's part of it;
then, on the smaller model, the bf16 orthogonality drift: max ||B^T B - I|| over --drift-steps FoRA steps with
autocast bf16, with the default QR re-projection every 200 steps and without any.
Writes everything as JSON to $OUT/gpu_scale.json when OUT is set.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fora_core import ForaConfig, apply_fora, create_fora_optimizer, max_orthogonality_error  # noqa: E402
from fora_core.known_models import known_config  # noqa: E402
from fora_core.memory import enable_activation_checkpointing  # noqa: E402
from fora_core.memory_plan import plan_memory  # noqa: E402

START = time.perf_counter()
MODELS = {"1b": "meta-llama/Llama-3.2-1B", "8b": "meta-llama/Llama-3.1-8B"}
ARMS = {"lora-all": ("lora", "none"), "fora": ("fora", "none"), "qfora": ("fora", "nf4")}


def tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def quantize_nf4_(model, device: str) -> None:
    """Replace the decoder's nn.Linear layers by bitsandbytes NF4 Linear4bit (what from_pretrained does with a
    BitsAndBytesConfig), quantizing the random weights in place: no checkpoint on disk needed."""
    import bitsandbytes as bnb

    for module in list(model.model.layers.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False,
                                      compute_dtype=torch.bfloat16, quant_type="nf4", quant_storage=torch.uint8)
                q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type="nf4",
                                             compress_statistics=True)
                setattr(module, child_name, q.to(device))
                del child


def build(config, arm: str, device: str, checkpointing: bool):
    from transformers import AutoModelForCausalLM

    method, quant = ARMS[arm]
    torch.manual_seed(0)
    with torch.device(device if quant == "none" else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if quant == "nf4":
        quantize_nf4_(model, device)
        model.to(device)
        try:
            model.is_loaded_in_4bit = True  # PEFT then wraps the layers with its bitsandbytes LoRA layer
        except AttributeError:
            pass
    if checkpointing:
        enable_activation_checkpointing(model)
    fora = ForaConfig(method=method, rank=32, alpha=64, dropout=0.05, layer_budget=0.5)
    n = config.num_hidden_layers
    layers = list(range(0, n, 2)) if fora.uses_fisher else None  # K = L/2, spread (calibration would pick them)
    peft = apply_fora(model, layers, fora)
    peft.train()
    return peft, create_fora_optimizer(peft, fora, lr=2e-4, stiefel_lr=0.1), fora


def time_arm(config, arm: str, args, device: str) -> dict:
    peft, opt, fora = build(config, arm, device, checkpointing=True)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.length), generator=gen).to(device)
    batch = {"input_ids": ids, "labels": ids}
    step_s, opt_s, stiefel_s = [], [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.steps + 1):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = peft(**batch, use_cache=False).loss
        loss.backward()
        sync(device)
        t1 = time.perf_counter()
        if opt.stiefel is not None:
            opt.stiefel.step()
            sync(device)
        t2 = time.perf_counter()
        if opt.adamw is not None:
            opt.adamw.step()
        sync(device)
        t3 = time.perf_counter()
        opt.zero_grad()
        if i:  # the first step warms the kernels and allocates the optimizer state
            step_s.append(t3 - t0)
            opt_s.append(t3 - t1)
            stiefel_s.append(t2 - t1)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    plan = plan_memory(config, fora, dtype="bfloat16", quantization=ARMS[arm][1], batch_size=args.batch,
                       seq_len=args.length, checkpointing=True, gpu=device == "cuda")
    mean = sum(step_s) / len(step_s)
    out = {"arm": arm, "tokens_per_s": args.batch * args.length / mean, "step_s": mean,
           "optimizer_share": sum(opt_s) / sum(step_s), "cayley_share": sum(stiefel_s) / sum(step_s),
           "peak_gib": peak / 2**30 if peak else None, "plan_gib": plan.total / 2**30,
           "trainable_m": sum(p.numel() for p in peft.parameters() if p.requires_grad) / 1e6}
    del peft, opt
    release(device)
    return out


def release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def drift(config, args, device: str) -> dict:
    """max ||B^T B - I||_F over FoRA steps under bf16 autocast, with and without the periodic QR."""
    found = {}
    for qr_period in (200, 0):
        peft, _, _ = build(config, "fora", device, checkpointing=True)
        fora = ForaConfig(method="fora", rank=32, alpha=64, dropout=0.05, layer_budget=0.5,
                          stiefel={"qr_period": qr_period})
        opt = create_fora_optimizer(peft, fora, lr=2e-4, stiefel_lr=0.1)
        gen = torch.Generator().manual_seed(1)
        worst, trace = 0.0, []
        for step in range(args.drift_steps):
            if time.perf_counter() - START > args.time_budget:
                trace.append((step, "stopped: --time-budget"))
                break
            ids = torch.randint(0, config.vocab_size, (1, min(args.length, 256)), generator=gen).to(device)
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                peft(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            opt.step()
            opt.zero_grad()
            if (step + 1) % max(1, args.drift_steps // 10) == 0:
                err = max_orthogonality_error(peft, "B")
                worst = max(worst, err)
                trace.append((step + 1, err))
        found[f"qr_every_{qr_period}" if qr_period else "no_qr"] = {"max": worst, "trace": trace}
        del peft, opt
        release(device)
    return found


def packing_check(device: str) -> float:
    """max |packed - alone| per-token loss of a few examples in one packed row (SDPA, float32) on ``device``."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from pipelines.data.packing import collate_packed, pack_rows

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config()).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in (37, 64, 21, 50):
        ids = torch.randint(1, 512, (n,), generator=gen).tolist()
        rows.append({"input_ids": ids, "labels": [-100] + ids[1:]})
    packed = pack_rows(rows, 256)
    batch = {k: v.to(device) for k, v in collate_packed(packed, 0).items()}
    worst = 0.0
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        for b, p in enumerate(packed):
            start = 0
            for n in p["doc_lengths"]:
                doc = torch.tensor([p["input_ids"][start:start + n]], device=device)
                alone = model(input_ids=doc, use_cache=False).logits[0]
                got = F.cross_entropy(logits[b, start:start + n - 1], doc[0, 1:], reduction="none")
                want = F.cross_entropy(alone[:-1], doc[0, 1:], reduction="none")
                worst = max(worst, float((got - want).abs().max()))
                start += n
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--drift-steps", type=int, default=1000)
    ap.add_argument("--time-budget", type=float, default=1e9, help="seconds: the drift loop stops after this")
    ap.add_argument("--smoke", action="store_true", help="a tiny Llama on CPU, few steps: checks the script runs")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.batch, args.length, args.steps, args.drift_steps = 2, 64, 2, 20
        configs = {"tiny": tiny_config()}
    else:
        configs = {k: known_config(MODELS[k]) for k in args.models.split(",")}
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; batch {args.batch} x "
          f"{args.length} tokens, checkpointing on, bf16", flush=True)
    results: dict = {"device": device, "batch": args.batch, "length": args.length, "models": {}}
    results["packing_max_abs_loss_diff"] = packing_check(device)
    print(f"packing on {device} (SDPA, float32): max |packed - alone| token loss {results['packing_max_abs_loss_diff']:.2e}",
          flush=True)
    for name, config in configs.items():
        rows = []
        for arm in ARMS:
            try:
                rows.append(time_arm(config, arm, args, device))
            except Exception as err:  # noqa: BLE001 - one arm's failure (OOM, a kernel) must not lose the others
                rows.append({"arm": arm, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"})
                release(device)
        base = next((r for r in rows if r["arm"] == "lora-all" and "error" not in r), None)
        for r in rows:
            if "error" in r:
                print(f"{name:5s} {r['arm']:9s} {r['error']}", flush=True)
                continue
            ratio = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
            peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] else "-"
            print(f"{name:5s} {r['arm']:9s} {r['tokens_per_s']:9.0f} tokens/s ({ratio:.2f}x lora-all)  peak {peak} "
                  f"GiB (plan {r['plan_gib']:.1f})  optimizer {r['optimizer_share']:.1%} of the step, Cayley-Adam "
                  f"{r['cayley_share']:.1%}  trainable {r['trainable_m']:.1f}M", flush=True)
        results["models"][name] = rows
    small = next(iter(configs.values()))
    try:
        results["drift"] = drift(small, args, device)
    except Exception as err:  # noqa: BLE001
        results["drift"] = {"error": {"max": float("nan"), "trace": [str(err).splitlines()[0][:160]]}}
    for key, d in results["drift"].items():
        print(f"bf16 orthogonality drift over {args.drift_steps} steps ({key}): max ||B^T B - I||_F = {d['max']:.2e}",
              flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
