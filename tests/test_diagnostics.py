"""Diagnostics from r x r cores against a full d x d SVD and a hand-computed KL."""

import torch
from tiny_models import VOCAB, tiny_model

from fora_core import (
    ForaConfig,
    adapter_diagnostics,
    apply_fora,
    entropy_effective_rank,
    lora_factors,
    text_drift,
    update_singular_values,
)


def test_singular_values_match_full_svd():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 90, generator=g), torch.randn(70, 6, generator=g)
    want = torch.linalg.svdvals((2.0 * b @ a).double())[:6]
    assert torch.allclose(update_singular_values(a, b, 2.0), want, rtol=1e-8)


def test_entropy_effective_rank_textbook_cases():
    assert abs(entropy_effective_rank(torch.ones(8)) - 8) < 1e-9
    assert entropy_effective_rank(torch.tensor([3.0, 0, 0])) == 1.0
    # p = (1/2, 1/4, 1/4): H = 1.5 ln 2, so exp(H) = 2^1.5
    assert abs(entropy_effective_rank(torch.tensor([2.0, 1.0, 1.0])) - 2**1.5) < 1e-9
    assert entropy_effective_rank(torch.zeros(4)) == 0.0


def test_adapter_diagnostics_and_the_base_vs_tuned_kl():
    model = apply_fora(tiny_model("llama"), [1], ForaConfig(rank=4, dropout=0.0, target_modules=["q"]))
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))
    assert text_drift(model, ids).mean_kl < 1e-10  # B = 0 at init: the tuned model is the base
    diag = adapter_diagnostics(model, scaling=16.0, constrained="B")
    assert diag[0].orthogonality_error < 1e-6 and diag[0].update_norm == 0.0
    with torch.no_grad():
        for _, a, _b in lora_factors(model):
            a.normal_(0, 0.5)
    diag = adapter_diagnostics(model, scaling=16.0, constrained="B")[0]
    _, a, b = lora_factors(model)[0]
    assert abs(diag.update_norm - torch.linalg.matrix_norm(16.0 * b @ a).item()) < 1e-3
    # Stiefel B: the singular values of BA are those of A (Lemma 1)
    assert torch.allclose(torch.tensor(diag.singular_values, dtype=torch.float64),
                          16.0 * torch.linalg.svdvals(a.detach().double()),
                          rtol=1e-6)
    base = tiny_model("llama")
    p = base(ids).logits.log_softmax(-1)
    model.eval()
    q = model(ids).logits.log_softmax(-1)
    # KL(p_base || p_tuned) at every position that predicts a next token (the last one predicts none)
    want = (p.exp() * (p - q)).sum(-1)[:, :-1].mean().item()
    assert want > 1e-6
    assert abs(text_drift(model, ids).mean_kl - want) < 1e-6


def test_text_drift_matches_separate_models_and_torch_losses():
    """NLL and KL of base vs tuned against two separate models (the base, and the adapter merged into a
    copy) scored with torch's own cross_entropy and kl_div, with padding masked out."""
    import copy

    import torch.nn.functional as F


    model = apply_fora(tiny_model("llama"), [0, 1], ForaConfig(rank=4, dropout=0.0, target_modules=["q", "v"]))
    with torch.no_grad():
        for _, a, _b in lora_factors(model):
            a.normal_(0, 0.5)
    ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row
    got = text_drift(model, ids, mask)

    base = tiny_model("llama").eval()
    merged = copy.deepcopy(model).merge_and_unload().eval()
    want_nll_b = want_nll_t = want_kl = 0.0
    n = 0
    for row in range(3):
        length = int(mask[row].sum())
        x = ids[row : row + 1, :length]
        lb = base(x).logits[0, :-1].float().log_softmax(-1)
        lt = merged(x).logits[0, :-1].float().log_softmax(-1)
        y = x[0, 1:]
        want_nll_b += F.cross_entropy(lb, y, reduction="sum").item()
        want_nll_t += F.cross_entropy(lt, y, reduction="sum").item()
        want_kl += F.kl_div(lt, lb, log_target=True, reduction="sum").item()  # KL(base || tuned)
        n += length - 1
    assert got.tokens == n == 8 + 5 + 8
    assert abs(got.nll_base - want_nll_b) < 1e-3 and abs(got.nll_tuned - want_nll_t) < 1e-3
    assert got.kl > 1e-4 and abs(got.kl - want_kl) < 1e-4
    assert got.nll_base != got.nll_tuned


def test_stiefel_factor_drift_is_zero_at_init_and_measures_a_known_rotation():
    """Rotating B by a Givens rotation of angle t in the plane of its first two columns moves it by
    ||B0 (R - I)||_F = ||R - I||_F = 2 sqrt(1 - cos t); relative to ||B0||_F = sqrt(r)."""
    import math

    from fora_core.diagnostics import stiefel_factor_drift

    model = apply_fora(tiny_model("llama"), [0, 1], ForaConfig(rank=4, dropout=0.0, target_modules=["q", "v"], seed=3))
    assert max(stiefel_factor_drift(model, "B", seed=3)) < 1e-7
    assert min(stiefel_factor_drift(model, "B", seed=4)) > 0.5  # another seed's init is elsewhere
    t = 0.3
    rot = torch.eye(4)
    rot[0, 0] = rot[1, 1] = math.cos(t)
    rot[0, 1], rot[1, 0] = -math.sin(t), math.sin(t)
    with torch.no_grad():
        _, _, b = lora_factors(model)[2]
        b.copy_(b @ rot)
    drift = stiefel_factor_drift(model, "B", seed=3)
    assert abs(drift[2] - 2 * math.sqrt(1 - math.cos(t)) / 2.0) < 1e-6
    assert max(drift[:2] + drift[3:]) < 1e-7
