"""A few steps of every method on the real SmolLM2-135M default lower the loss on ../shared/data text."""

import json
from pathlib import Path

import pytest
import torch

from fora_core import (
    ForaConfig,
    ModelSource,
    apply_fora,
    create_fora_optimizer,
    fisher_scores,
    make_batches,
    max_orthogonality_error,
    select_layers,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "commonsense" / "ARC-Easy" / "train.json"


@pytest.fixture(scope="module")
def smollm2_calibrated():
    """SmolLM2-135M, its tokenised texts, one Fisher pass with FILet's K-FAC hooks (shared by every method)."""
    from fora_core import KfacCollector, find_decoder_layers, fisher_energies
    from fora_core.architecture import module_names_for_layers
    from fora_core.filet import weight_out_in

    records = json.loads(DATA.read_text())[:16]
    texts = [f"{r['instruction']}\n{r['output']}" for r in records]
    model, tok = ModelSource("smollm2-135m").load()
    calib = make_batches(tok, texts[:4], batch_size=2, max_length=64)
    train = make_batches(tok, texts[4:12], batch_size=4, max_length=64)
    targets = ForaConfig().target_modules
    names = module_names_for_layers(model, list(range(find_decoder_layers(model).num_layers)), targets)
    with KfacCollector(model, names) as kfac:
        report = fisher_scores(model, calib, on_batch=kfac.begin_batch)
    energies = {n: fisher_energies(weight_out_in(model.get_submodule(n)), *f) for n, f in kfac.factors().items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the base, for tests that change it
    return model, state, train, report, energies


QUICK_METHODS = ["fora", "fg-filet", "fourier-fora"]  # FoRA and the seeds' two other methods in make test


@pytest.mark.integration
@pytest.mark.parametrize("method", QUICK_METHODS + [
    pytest.param(m, marks=pytest.mark.slow) for m in __import__("fora_core").METHODS
    if m not in QUICK_METHODS])
def test_every_method_lowers_the_loss_on_smollm2(method, smollm2_calibrated):
    """Step 0 equals the base model and three steps lower the loss on a batch, for every method on the real
    default (the rest of the methods run in make test-all)."""
    import copy

    base, state, train, report, energies = smollm2_calibrated
    base.load_state_dict(state)
    batch = train[0]
    with torch.no_grad():
        before_base = base(**batch).loss.item()
    model = copy.deepcopy(base)
    config = ForaConfig(method=method, rank=8, alpha=16, dropout=0.0, layer_budget=0.5,
                        fourier={"n_coefficients": 1024})
    layers = select_layers(report, config.num_layers_to_adapt(30)) if config.uses_fisher else None
    model = apply_fora(model, layers, config, filet_energies=energies)
    # one lr for all: Fourier-FoRA's step is matched to LoRA's (fourier.scale: lora-step)
    opt = create_fora_optimizer(model, config, lr=1e-3, stiefel_lr=1e-2)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**batch).loss.item()

    before = loss()
    assert before == pytest.approx(before_base, abs=2e-3)
    model.train()
    for _ in range(3):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    after = loss()
    assert after < before - 0.05, (method, before, after)
    if config.uses_fisher:
        assert len(layers) == 15 and model.config.num_hidden_layers == 30
    if config.uses_stiefel:
        assert max_orthogonality_error(model) < 1e-4
