"""Fisher scores against a brute-force reference: plain autograd, every gradient kept, HF's own loss."""

import json

import pytest
import torch
from tiny_models import random_batches, tiny_model

from fora_core import FisherReport, find_decoder_layers, fisher_scores


def brute_force_fisher(model, batches):
    """F_l = mean_n sum_{theta in block l} (dL_n/dtheta)^2 with L_n = HF's mean token CE (labels shifted inside)."""
    model.eval()
    layers = find_decoder_layers(model).layers
    totals = torch.zeros(len(layers), dtype=torch.float64)
    for b in batches:
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        params = [list(layer.parameters()) for layer in layers]
        flat = [p for ps in params for p in ps]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
        i = 0
        for li, ps in enumerate(params):
            for _ in ps:
                g = grads[i]
                if g is not None:
                    totals[li] += g.double().pow(2).sum()
                i += 1
    return (totals / len(batches)).tolist()


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "gpt2"])
def test_fisher_matches_brute_force(family):
    model = tiny_model(family)
    batches = random_batches(3)
    report = fisher_scores(model, batches)
    reference = brute_force_fisher(model, batches)
    assert len(report.scores) == 4
    for got, want in zip(report.scores, reference, strict=True):
        assert got == pytest.approx(want, rel=1e-5)
    assert report.ranking == sorted(range(4), key=lambda i: -reference[i])
    assert report.num_batches == 3
    assert report.tokens_seen == sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)


def test_fisher_restores_model_state_and_frees_grads():
    model = tiny_model("llama")
    model.train()
    model.lm_head.weight.requires_grad_(False)
    fisher_scores(model, random_batches(2))
    assert model.training
    assert not model.lm_head.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert model.model.embed_tokens.weight.requires_grad


def test_fisher_num_batches_limits_and_plain_tensor_batches():
    model = tiny_model("llama")
    batches = [b["input_ids"] for b in random_batches(5)]
    report = fisher_scores(model, iter(batches), num_batches=2)
    assert report.num_batches == 2
    ref = brute_force_fisher(model, [{"input_ids": t, "attention_mask": torch.ones_like(t), "labels": t}
                                     for t in batches[:2]])
    assert report.scores == pytest.approx(ref, rel=1e-5)


def test_true_fisher_differs_but_is_positive_and_seeded():
    model = tiny_model("llama")
    batches = random_batches(2)
    a = fisher_scores(model, batches, estimator="true", seed=1)
    b = fisher_scores(model, batches, estimator="true", seed=1)
    emp = fisher_scores(model, batches)
    assert a.scores == b.scores
    assert all(s > 0 for s in a.scores)
    assert a.scores != pytest.approx(emp.scores, rel=1e-3)


def test_report_json_round_trip(tmp_path):
    model = tiny_model("llama")
    report = fisher_scores(model, random_batches(1))
    path = report.save(tmp_path / "fisher.json")
    loaded = FisherReport.load(path)
    assert loaded == report
    assert json.loads(path.read_text())["ranking"] == report.ranking
    assert report.top(2) == sorted(report.ranking[:2])


def test_empty_calibration_is_a_clear_error():
    from fora_core import ForaConfigError

    with pytest.raises(ForaConfigError, match="no batches"):
        fisher_scores(tiny_model("llama"), [])
