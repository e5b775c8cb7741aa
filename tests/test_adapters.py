"""apply_fora, the optimizer factory, save/load with vanilla PEFT and merging, on tiny random models."""

import json

import pytest
import torch
from peft import PeftModel
from tiny_models import VOCAB, random_batches, tiny_model

from fora_core import (
    CayleyAdam,
    ForaConfig,
    ForaConfigError,
    apply_fora,
    create_fora_optimizer,
    fisher_scores,
    load_adapter,
    lora_factors,
    merge_adapter,
    orthogonality_error,
    save_adapter,
    select_layers,
)

IDS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(11))


def train_steps(model, opt, steps=3):
    model.train()
    for b in random_batches(steps, seed=5):
        opt.zero_grad()
        model(**b).loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "gpt2"])
@pytest.mark.parametrize("method", ["fora", "lora"])
def test_step_zero_outputs_equal_base(family, method):
    base = tiny_model(family)
    want = base(IDS).logits.detach().clone()
    model = apply_fora(base, [1, 3] if method == "fora" else None, ForaConfig(method=method, rank=4))
    model.eval()
    assert torch.allclose(model(IDS).logits, want, atol=1e-6)


def test_adapters_only_at_selected_layers_with_stiefel_init():
    model = apply_fora(tiny_model("llama"), [0, 2], ForaConfig(rank=4, target_modules=["q", "down"]))
    names = [n for n, _, _ in lora_factors(model)]
    assert len(names) == 4
    assert all(".layers.0." in n or ".layers.2." in n for n in names)
    for _, a, b in lora_factors(model):
        assert orthogonality_error(b.detach()) < 1e-6
        assert torch.count_nonzero(a) == 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable) and len(trainable) == 8


def test_factor_a_init_has_orthonormal_rows_and_zero_b():
    cfg = ForaConfig(rank=4, stiefel={"factor": "A"})
    model = apply_fora(tiny_model("llama"), [1], cfg)
    for _, a, b in lora_factors(model):
        assert orthogonality_error(a.detach().T) < 1e-6
        assert torch.count_nonzero(b) == 0


def test_optimizer_factory_splits_parameters_explicitly():
    model = apply_fora(tiny_model("llama"), [0, 1], ForaConfig(rank=4))
    opt = create_fora_optimizer(model, ForaConfig(rank=4), lr=1e-3, stiefel_lr=1e-2)
    bs = {id(b) for _, _, b in lora_factors(model)}
    assert {id(p) for p in opt.stiefel.param_groups[0]["params"]} == bs
    assert not bs & {id(p) for p in opt.adamw.param_groups[0]["params"]}
    assert isinstance(opt.stiefel, CayleyAdam)
    assert [g["kind"] for g in opt.param_groups] == ["adamw", "stiefel"]
    plain = create_fora_optimizer(apply_fora(tiny_model("llama"), None, ForaConfig(method="lora", rank=4)),
                                  ForaConfig(method="lora", rank=4))
    assert plain.stiefel is None


def test_training_keeps_b_orthonormal_and_scheduler_scales_both_lrs():
    cfg = ForaConfig(rank=4)
    model = apply_fora(tiny_model("llama"), [0, 3], cfg)
    opt = create_fora_optimizer(model, cfg, lr=1e-2, stiefel_lr=1e-1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    before = [b.detach().clone() for _, _, b in lora_factors(model)]
    train_steps(model, opt)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-3, 5e-2])
    for (_, a, b), b0 in zip(lora_factors(model), before, strict=True):
        assert orthogonality_error(b.detach()) < 1e-5
        assert not torch.allclose(b, b0)
        assert torch.count_nonzero(a) > 0


def test_save_reload_with_vanilla_peft_and_merge_give_same_logits(tmp_path):
    cfg = ForaConfig(rank=4, dropout=0.0)
    base = tiny_model("llama")
    w0 = [layer.self_attn.q_proj.weight.detach().clone() for layer in base.model.layers]
    report = fisher_scores(base, random_batches(2))
    layers = select_layers(report, 2)
    model = apply_fora(base, layers, cfg)
    train_steps(model, create_fora_optimizer(model, cfg, lr=1e-2, stiefel_lr=1e-1))
    tuned = model(IDS).logits.detach()
    save_adapter(model, tmp_path / "adapter", cfg, report, layers)

    fresh = PeftModel.from_pretrained(tiny_model("llama"), str(tmp_path / "adapter"))  # plain PEFT
    fresh.eval()
    assert torch.allclose(fresh(IDS).logits, tuned, atol=1e-5)
    assert json.loads((tmp_path / "adapter" / "fora_config.json").read_text())["layers"] == layers

    loaded, loaded_cfg, loaded_report = load_adapter(tiny_model("llama"), tmp_path / "adapter")
    assert loaded_cfg == cfg and loaded_report == report

    li = layers[0]
    layer = model.base_model.model.model.layers[li].self_attn.q_proj
    dw = (cfg.scaling * layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach()
    assert dw.abs().max() > 0
    merged = merge_adapter(loaded)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert torch.allclose(merged(IDS).logits, tuned, atol=1e-5)
    # W_after == W0 + s B A at an adapted layer
    assert torch.allclose(merged.model.layers[li].self_attn.q_proj.weight, w0[li] + dw, atol=1e-6)
    untouched = [i for i in range(4) if i not in layers][0]
    assert torch.equal(merged.model.layers[untouched].mlp.up_proj.weight,
                       tiny_model("llama").model.layers[untouched].mlp.up_proj.weight)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_modules=["nonexistent"]), "target module 'nonexistent' not found"),
        (dict(rank=200), "rank 200 exceeds"),
    ],
)
def test_bad_targets_and_ranks_are_clear_errors(kwargs, match):
    with pytest.raises(ForaConfigError, match=match):
        apply_fora(tiny_model("llama"), [0], ForaConfig(**kwargs))


def test_out_of_range_layer_and_missing_selection():
    with pytest.raises(ForaConfigError, match="out of range"):
        apply_fora(tiny_model("llama"), [7], ForaConfig(rank=4))
    with pytest.raises(ForaConfigError, match="needs the selected layers"):
        apply_fora(tiny_model("llama"), None, ForaConfig(rank=4))
