"""The memory plan against independent measures: parameter counts by hand, the bytes autograd really saves
(saved-tensor hooks) and the peak resident memory of real training steps on CPU at two model sizes; the
accelerator table; and the one-line refusal of a config that cannot fit what it asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig

from fora_core import ForaConfig, apply_fora
from fora_core.known_models import known_config
from fora_core.memory import SavedActivations
from fora_core.memory_plan import GIB, count_parameters, plan_memory
from pipelines import cli
from pipelines.config.accelerators import capacity, gpu_memory_bytes
from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import RunConfig
from pipelines.preflight.memory import check_memory

SIZES = [(256, 512, 4, 8, 4, 1000), (512, 1024, 6, 8, 2, 2000)]


def test_the_8b_count_equals_the_architecture_by_hand():
    cfg = known_config("meta-llama/Llama-3.1-8B")
    h, i, n_layers, v, kv = 4096, 14336, 32, 128256, 8 * 128
    by_hand = 2 * v * h + n_layers * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h
    fora = ForaConfig(method="fora", rank=32, layer_budget=0.5)
    counts = count_parameters(cfg, fora)
    assert counts.total == by_hand == 8_030_261_248
    assert counts.quantizable == n_layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    # FoRA on q, k, v, up, down of K = 16 layers: r (d_in + d_out) per module; B (d_out x r) under Cayley-Adam
    r = 32
    assert counts.trainable == 16 * r * ((h + h) + (h + kv) * 2 + (h + i) + (i + h))
    assert counts.stiefel == 16 * r * (h + kv + kv + i + h)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("dropout", [0.0, 0.05])
@pytest.mark.parametrize("size", SIZES, ids=["h256", "h512"])
def test_planned_activations_match_what_autograd_saves(size, dropout, dtype):
    h, i, n_layers, heads, kv, v = size
    cfg = LlamaConfig(vocab_size=v, hidden_size=h, intermediate_size=i, num_hidden_layers=n_layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=256,
                      tie_word_embeddings=False)
    fora = ForaConfig(method="fora", rank=8, dropout=dropout, layer_budget=1.0)
    torch.manual_seed(0)
    model = apply_fora(AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype)), list(range(n_layers)), fora)
    model.train()
    batch, length = 2, 128
    ids = torch.randint(0, v, (batch, length))
    with SavedActivations(model) as saved:
        _ = model(input_ids=ids, labels=ids, use_cache=False).loss
    plan = plan_memory(cfg, fora, dtype=dtype, batch_size=batch, seq_len=length)
    ratio = plan.activations_plain / saved.bytes
    assert 0.97 <= ratio <= 1.08, (ratio, plan.activations_plain, saved.bytes)


@pytest.mark.parametrize("checkpointing", [0, 1], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("size", [(512, 1408, 8, 8000), (768, 2048, 6, 12000)], ids=["h512", "h768"])
def test_the_plan_against_the_measured_peak_of_training_steps_on_cpu(size, checkpointing):
    """The plan counts live bytes; the CPU allocator keeps freed pages, so the resident peak runs higher:
    measured 1.0-1.3x the plan (the 75% CPU headroom of preflight/memory.py covers it)."""
    probe = Path(__file__).with_name("memory_probe.py")
    out = subprocess.run([sys.executable, str(probe), *map(str, size), str(checkpointing)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[1])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = got["plan"] / got["measured"]
    print(f"{size} checkpointing={checkpointing}: plan {got['plan'] / 2**20:.0f} MiB, measured "
          f"{got['measured'] / 2**20:.0f} MiB, ratio {ratio:.2f}")
    assert 0.65 <= ratio <= 1.1, got  # seen: 0.77-0.99


@pytest.mark.parametrize(("label", "gib"), [("NVIDIA-H100-80GB-HBM3", 80), ("NVIDIA-A100-SXM4-40GB", 40),
                                            ("nvidia-tesla-a100", 40), ("nvidia-l4", 24), ("NVIDIA-H200", 141),
                                            ("nvidia-a100-80gb", 80), ("Tesla-T4", 16)])
def test_gpu_product_labels_give_their_memory(label, gib):
    assert gpu_memory_bytes(label) == gib * GIB


def _run(**changes) -> RunConfig:
    cfg = yaml.safe_load(Path("configs/cluster-8b-gpu.yaml").read_text())
    for dotted, value in changes.items():
        node = cfg
        *path, last = dotted.split("__")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return RunConfig.from_dict(cfg)


def test_an_8b_run_that_cannot_fit_its_gpu_is_refused_in_one_line():
    model_cfg = known_config("meta-llama/Llama-3.1-8B")
    ok = check_memory(_run(), model_cfg)
    assert ok["fits"] and ok["capacity"] == 80 * GIB
    with pytest.raises(RunConfigError) as err:
        check_memory(_run(train__gradient_checkpointing=False), model_cfg)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit" in msg and "NVIDIA-H100-80GB-HBM3" in msg
    assert "train.gradient_checkpointing: true" in msg
    # a T4 (16 GiB) holds the 4-bit base with checkpointing at one sequence per worker, not the bf16 base
    t4 = {"node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}, "gpus": 1}
    with pytest.raises(RunConfigError, match="quantization: nf4"):
        check_memory(_run(resources__train=t4, train__batch_size=1), model_cfg)
    fits = check_memory(_run(resources__train=t4, train__batch_size=1, quantization="nf4"), model_cfg)
    assert fits["fits"] and fits["plan"].weights < 6 * GIB


def test_an_unknown_gpu_is_planned_but_not_refused_and_a_cpu_pod_limit_binds_only_in_a_pod():
    model_cfg = known_config("meta-llama/Llama-3.1-8B")
    unknown = check_memory(_run(resources__train={"gpus": 1}), model_cfg)
    assert unknown["capacity"] is None and "no GPU product label" in unknown["source"]
    cpu = _run(train__use_gpu=False, resources__train={"memory": "32G"})
    assert capacity(cpu.resources.train, gpu=False)[0] == 32e9
    with pytest.raises(RunConfigError, match=r"pod.s memory limit \(32G\)"):
        check_memory(cpu, model_cfg)
    assert check_memory(cpu, model_cfg, enforce_pod_memory=False)["fits"] is False


def test_fora_validate_prints_the_plan_and_compile_refuses_what_cannot_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["validate", "configs/cluster-8b-gpu.yaml"]) == 0
    err = capsys.readouterr().err
    assert "memory plan, one training worker" in err and "fits NVIDIA-H100-80GB-HBM3" in err
    assert "shapes from fora's table of known models" in err
    code = cli.main(["compile", "--config", "configs/cluster-8b-gpu.yaml", "--output-dir", str(tmp_path),
                     "--set", "train.gradient_checkpointing=false"])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit" in err and not list(tmp_path.glob("*.yaml"))
