"""A few FoRA steps on the real SmolLM2-135M default lower the loss on ../shared/data text."""

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


@pytest.mark.integration
def test_fora_steps_lower_the_loss_on_smollm2():
    torch.manual_seed(0)
    records = json.loads(DATA.read_text())[:24]
    texts = [f"{r['instruction']}\n{r['output']}" for r in records]
    model, tok = ModelSource("smollm2-135m").load()
    assert model.config.num_hidden_layers == 30
    calib = make_batches(tok, texts[:8], batch_size=2, max_length=96)
    train = make_batches(tok, texts[8:16], batch_size=4, max_length=96)
    config = ForaConfig(rank=8, alpha=16, dropout=0.0, layer_budget=0.5, fisher={"num_batches": 4})
    report = fisher_scores(model, calib, num_batches=config.fisher.num_batches)
    layers = select_layers(report, config.layer_budget)
    assert len(layers) == 15
    model = apply_fora(model, layers, config)
    opt = create_fora_optimizer(model, config, lr=1e-3, stiefel_lr=1e-2)

    def mean_loss() -> float:
        model.eval()
        with torch.no_grad():
            return sum(model(**b).loss.item() for b in train) / len(train)

    before = mean_loss()
    model.train()
    for _ in range(3):
        for b in train:
            model(**b).loss.backward()
            opt.step()
            opt.zero_grad()
    after = mean_loss()
    assert after < before - 0.05, (before, after)
    assert max_orthogonality_error(model) < 1e-4
