"""FILet (its paper, arXiv:2605.01046) against independent references: numpy Kronecker products, hand-captured activations and
gradients, and a brute-force choice of the lowest-energy directions."""

import numpy as np
import pytest
import torch
from tiny_models import VOCAB, random_batches, tiny_model

from fora_core import ForaConfig, apply_fora, fisher_scores, lora_factors
from fora_core.architecture import module_names_for_layers
from fora_core.filet import KfacCollector, fisher_energies, orthonormalize_b, weight_out_in

IDS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))


def _numpy_bases(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gram = w.T @ w
    v = gram / np.linalg.norm(gram, axis=0, keepdims=True)
    u = w @ v
    return u / np.linalg.norm(u, axis=0, keepdims=True), v


def _spd(k: int, rng) -> np.ndarray:
    x = rng.standard_normal((k, 3 * k))
    return x @ x.T / (3 * k)


def test_energies_equal_the_kronecker_quadratic_form():
    rng = np.random.default_rng(0)
    m, n = 5, 4
    w = rng.standard_normal((m, n))
    s_x, s_y = _spd(n, rng), _spd(m, rng)
    got = fisher_energies(torch.tensor(w), torch.tensor(s_x), torch.tensor(s_y)).numpy()
    u, v = _numpy_bases(w)
    fisher = np.kron(s_x, s_y)  # S_X kron S_Y acts on column-major vec of an (m, n) matrix
    for i in range(n):
        z = np.outer(u[:, i], v[:, i])
        vec = z.flatten(order="F")
        assert got[i] == pytest.approx(vec @ fisher @ vec, rel=1e-10)


def _explicit_factors(model, name, batches):
    """S_X, S_Y from activations and output gradients captured by hand (retain_grad), real tokens only."""
    module = model.get_submodule(name)
    captured = {}
    original = module.forward

    def spy(x):
        y = original(x)
        y.retain_grad()
        captured["x"], captured["y"] = x.detach(), y
        return y

    module.forward = spy
    sx, sy = [], []
    try:
        for p in model.parameters():
            p.requires_grad_(True)
        for b in batches:
            model.zero_grad()
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            labels = torch.nn.functional.pad(b["labels"], (0, 1), value=-100)[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                     ignore_index=-100)
            loss.backward()
            keep = b["attention_mask"].bool()
            xs = captured["x"][keep].double()
            gs = captured["y"].grad[keep].double()
            sx.append(sum(torch.outer(t, t) for t in xs) / len(xs))
            sy.append(sum(torch.outer(t, t) for t in gs) / len(gs))
            # the captured g really is dL/dY: sum_t g_t x_t^T is the weight's gradient
            full_x, full_g = captured["x"].reshape(-1, xs.shape[1]).double(), captured["y"].grad.reshape(-1, gs.shape[1]).double()
            assert torch.allclose((full_g.T @ full_x).float(), module.weight.grad, atol=1e-6)
    finally:
        module.forward = original
    return sum(sx) / len(sx), sum(sy) / len(sy)


def test_kfac_factors_from_hooks_equal_explicit_per_token_sums():
    model = tiny_model("llama")
    names = ["model.layers.1.self_attn.q_proj", "model.layers.2.mlp.down_proj"]
    batches = random_batches(3)
    with KfacCollector(model, names) as kfac:
        fisher_scores(model, batches, on_batch=kfac.begin_batch)
    got = kfac.factors()
    for name in names:
        want_x, want_y = _explicit_factors(tiny_model("llama"), name, batches)
        assert torch.allclose(got[name][0].double(), want_x, rtol=1e-4, atol=1e-7)
        assert torch.allclose(got[name][1].double(), want_y, rtol=1e-4, atol=1e-5 * float(want_y.abs().max()))
        assert want_y.abs().max() > 0


def _energies(model, layers, config):
    names = module_names_for_layers(model, layers, config.target_modules)
    with KfacCollector(model, names) as kfac:
        fisher_scores(model, random_batches(2), on_batch=kfac.begin_batch)
    return {n: fisher_energies(weight_out_in(model.get_submodule(n)), *f) for n, f in kfac.factors().items()}, kfac


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_filet_init_picks_the_lowest_energy_directions_and_keeps_the_model(family):
    config = ForaConfig(method="filet", rank=3, target_modules=["q", "down"])
    base = tiny_model(family)
    want_logits = base(IDS).logits.detach()
    energies, kfac = _energies(base, list(range(4)), config)
    w0 = {n: weight_out_in(base.get_submodule(n)).detach().double().numpy().copy() for n in energies}
    model = apply_fora(base, None, config, filet_energies=energies)
    model.eval()
    assert torch.allclose(model(IDS).logits, want_logits, atol=1e-5)  # W_res + s B A = W0
    for name, a, b in lora_factors(model):
        key = name.removeprefix("base_model.model.")
        s_x, s_y = (f.double().numpy() for f in kfac.factors()[key])
        u, v = _numpy_bases(w0[key])
        brute = np.array([(v[:, i] @ s_x @ v[:, i]) * (u[:, i] @ s_y @ u[:, i]) for i in range(v.shape[1])])
        chosen = np.argsort(brute, kind="stable")[: config.rank]
        assert set(chosen) == set(np.argsort(brute)[: config.rank])
        root = np.sqrt(brute[chosen])
        np.testing.assert_allclose(a.detach().double().numpy(), root[:, None] * v[:, chosen].T, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(b.detach().double().numpy(), u[:, chosen] * root[None, :], rtol=1e-4, atol=1e-9)
        # and they are the lowest: every unchosen energy is at least the largest chosen one
        assert brute[np.setdiff1d(np.arange(len(brute)), chosen)].min() >= brute[chosen].max()


def test_fora_filet_orthonormalises_b_without_changing_the_product():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, generator=rng, dtype=torch.float64), torch.randn(6, 3, generator=rng, dtype=torch.float64)
    a2, q = orthonormalize_b(a, b, "B")
    assert torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q @ a2, b @ a, atol=1e-12)
    qa, b3 = orthonormalize_b(a, b, "A")
    assert torch.allclose(qa @ qa.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(b3 @ qa, b @ a, atol=1e-12)


def test_filet_without_energies_is_a_clear_error():
    from fora_core import ForaConfigError

    with pytest.raises(ForaConfigError, match="FILet energies"):
        apply_fora(tiny_model("llama"), None, ForaConfig(method="filet", rank=2))
