"""QFoRA: FoRA adapters in full precision on a bitsandbytes 4-bit NF4 (or 8-bit) base, the Stiefel
constraint intact, and the adapter merged into the full-precision base as a QLoRA adapter is. bitsandbytes
0.50 runs its 4- and 8-bit kernels on CPU, so this is the real quantized path, not a stand-in."""

from __future__ import annotations

import pytest
import torch
from pipeline_fixtures import tiny_model_dir, write_records
from safetensors.torch import load_file

from fora_core import ForaConfig, ModelSource, apply_fora, create_fora_optimizer, lora_factors
from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import RunConfig
from pipelines.steps.data_prep import prepare_data
from pipelines.steps.register import merge_to_folder
from pipelines.steps.train import run_training

bnb = pytest.importorskip("bitsandbytes")  # a pinned dependency: present wherever `make test` installed it


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # every quantized weight's input width a multiple of bitsandbytes' 4-bit block of 64 (its CPU kernel's
    # layout needs it; every real model's widths are)
    return tiny_model_dir(tmp_path_factory.mktemp("model"), intermediate=128)


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_fora_trains_on_a_quantized_base_with_b_on_the_stiefel_manifold(model_dir, kind):
    model, tok = ModelSource(str(model_dir)).load("cpu", quantization=kind)
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q, bnb.nn.Linear4bit if kind == "nf4" else bnb.nn.Linear8bitLt)
    fora = ForaConfig(method="fora", rank=4, alpha=8, dropout=0.0, layer_budget=2)
    peft = apply_fora(model, [1, 3], fora)
    opt = create_fora_optimizer(peft, fora, lr=1e-2, stiefel_lr=0.3)
    ids = tok(["the answer is four", "two plus two is four"], return_tensors="pt", padding=True)
    batch = {**ids, "labels": ids["input_ids"].masked_fill(ids["attention_mask"] == 0, -100)}
    with torch.no_grad():
        before = model(**ids, use_cache=False).logits
    losses = []
    for _ in range(8):
        loss = peft(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    for _, a, b in lora_factors(peft):
        assert a.dtype == b.dtype == torch.float32 and a.requires_grad and b.requires_grad
        eye = torch.eye(b.shape[1])
        assert torch.linalg.matrix_norm(b.T @ b - eye) < 1e-5  # B^T B = I_r after every Cayley step
    with torch.no_grad(), peft.disable_adapter():  # the quantized base is never written
        torch.testing.assert_close(peft(**ids, use_cache=False).logits, before, rtol=0, atol=0)


def test_a_qfora_run_merges_into_the_full_precision_base(tmp_path, model_dir):
    """W = W0 + (alpha/r) B A with W0 the float32 base (checked against the saved factors), and the merged
    model's outputs differ from the quantized training model's only by the quantization of the base."""
    records = write_records(tmp_path / "records.json", 40)
    cfg = {"name": "qfora", "model": str(model_dir), "output_dir": str(tmp_path / "out"), "quantization": "nf4",
           "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8},
           "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
           "train": {"max_steps": 4, "batch_size": 4, "use_ray": False, "eval_every": 4, "lr": 1e-2}}
    run = RunConfig.from_dict(cfg)
    src = ModelSource(run.model)
    _, tok = src.load()
    prepare_data(run.data, tok, tmp_path / "data")
    out = run_training(run, tmp_path / "data", [1, 3], tmp_path / "train")
    merged_dir = merge_to_folder(src, out["adapter_dir"], tmp_path / "merged")

    base, _ = src.load()
    merged = load_file(str(merged_dir / "model.safetensors"))
    factors = load_file(f"{out['adapter_dir']}/adapter_model.safetensors")
    scale = 8 / 4
    checked = 0
    for key, a in factors.items():
        if ".lora_A." not in key:
            continue
        b = factors[key.replace("lora_A", "lora_B")]
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        w0 = base.get_submodule(module).weight.detach()
        torch.testing.assert_close(merged[f"{module}.weight"], w0 + scale * b @ a, rtol=0, atol=1e-6)
        assert float((b @ a).abs().max()) > 1e-4  # the adapter moved
        checked += 1
    assert checked == 2 * 5  # two layers x q, k, v, up, down

    # the quantized model with the adapter vs the float32 merge: the gap is the base's quantization gap
    from fora_core import load_adapter

    qbase, _ = src.load(quantization="nf4")
    qpeft, _, _ = load_adapter(qbase, out["adapter_dir"])
    merged_model, _ = ModelSource(str(merged_dir)).load()
    ids = tok(["What is 3 plus 3?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gap_trained = (qpeft(input_ids=ids).logits - merged_model(input_ids=ids).logits).abs().max()
        gap_base = (src.load(quantization="nf4")[0](input_ids=ids).logits - base(input_ids=ids).logits).abs().max()
    assert gap_base > 0  # the base really was quantized
    assert gap_trained <= 2 * gap_base + 1e-4, (float(gap_trained), float(gap_base))


def test_quantization_is_refused_for_methods_that_rewrite_the_base():
    with pytest.raises(RunConfigError, match=r"invalid value for 'quantization': 'nf4'.*pissa"):
        RunConfig.from_dict({"quantization": "nf4", "fora": {"method": "pissa"}})
    with pytest.raises(RunConfigError, match=r"'quantization'.*allowed: none, nf4, fp4, int8"):
        RunConfig.from_dict({"quantization": "q4"})
