"""Fourier-FoRA (the LoRA Unleashed paper) against an explicit inverse DFT, the paper's parameter accounting and autograd."""

import cmath
import math

import pytest
import torch
from tiny_models import random_batches, tiny_model

from fora_core import ForaConfig, ForaConfigError, apply_fora, count_trainable
from fora_core.adapters import lora_layers
from fora_core.fourier import SpectralLinear


def _dft_basis(p: int) -> torch.Tensor:
    """E[a, j] = exp(i 2 pi a j / p), written out element by element."""
    return torch.tensor([[cmath.exp(2j * math.pi * a * j / p) for j in range(p)] for a in range(p)],
                        dtype=torch.complex128)


def test_materialised_matrix_is_the_explicit_inverse_dft_of_the_coefficients():
    layer = SpectralLinear(in_features=7, out_features=5, n=9, seed=3)
    with torch.no_grad():
        layer.coefficients.copy_(torch.randn(9, generator=torch.Generator().manual_seed(1)))
    spectrum = torch.zeros(5, 7, dtype=torch.complex128)
    for t in range(9):
        spectrum[int(layer.rows[t]), int(layer.cols[t])] = float(layer.coefficients.detach()[t])
    want = (_dft_basis(5) @ spectrum @ _dft_basis(7).T).real / (5 * 7)  # Eq. 3 with its 1/(r d2)
    assert torch.allclose(layer.weight.double(), want, atol=1e-6)
    x = torch.randn(4, 7)
    assert torch.allclose(layer(x), x @ want.float().T, atol=1e-5)
    assert len({(int(r), int(c)) for r, c in zip(layer.rows, layer.cols, strict=True)}) == 9  # distinct locations


def test_rank_is_not_capped_by_r_at_n_coefficients():
    layer = SpectralLinear(in_features=64, out_features=8, n=40, seed=0)
    with torch.no_grad():
        layer.coefficients.normal_()
    assert int(torch.linalg.matrix_rank(layer.weight.double())) == 8  # full rank 8 from 40 numbers (LoRA: 512)


@pytest.mark.parametrize("n", [20, 100000])
def test_trainable_parameters_follow_the_papers_budget(n):
    config = ForaConfig(method="fourier-fora", rank=4, target_modules=["q", "up"], fourier={"n_coefficients": n})
    model = apply_fora(tiny_model("llama"), None, config)
    want = 0
    for _, layer in lora_layers(model):
        d_in, d_out = layer.in_features, layer.out_features
        want += min(n, config.rank * d_in) + min(n, d_out * config.rank)
    assert count_trainable(model) == want
    if n == 20:
        assert want == 4 * 2 * 2 * 20  # 4 layers x 2 modules x (A, B) x n


def test_gradients_reach_the_coefficients_only():
    config = ForaConfig(method="fourier-fora", rank=4, fourier={"n_coefficients": 30})
    model = apply_fora(tiny_model("llama"), None, config)
    model.train()
    model(**random_batches(1)[0]).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and trainable
    assert all(n.endswith(".coefficients") for n in trainable)
    assert any(float(p.grad.abs().max()) > 0 for n, p in model.named_parameters() if n in with_grad)


def test_init_b_is_zero_and_a_has_the_kaiming_scale():
    config = ForaConfig(method="fourier-fora", rank=8, target_modules=["up"], fourier={"n_coefficients": 200})
    model = apply_fora(tiny_model("llama"), None, config)
    for _, layer in lora_layers(model):
        assert float(layer.lora_B["default"].weight.abs().max()) == 0.0
        a = layer.lora_A["default"].weight
        assert float(a.std()) == pytest.approx(1 / math.sqrt(3 * a.shape[1]), rel=1e-3)


def test_bad_fourier_settings_name_the_field():
    with pytest.raises(ForaConfigError, match="fourier.n_coefficients"):
        ForaConfig(method="fourier-fora", fourier={"n_coefficients": 0})
    with pytest.raises(ForaConfigError, match="fourier.init.*kaiming"):
        ForaConfig(method="fourier-fora", fourier={"init": "he"})
    with pytest.raises(ForaConfigError, match="fourier.spectral"):
        ForaConfig(method="fourier-fora", fourier={"spectral": 1})


def _first_adam_step_norm(param: torch.nn.Parameter, weight, grad_out: torch.Tensor, lr: float) -> float:
    """||M_1 - M_0||_F after one Adam step on the loss <M, G> (G fixed), M = weight()."""
    before = weight().detach().clone()
    opt = torch.optim.Adam([param], lr=lr)
    (weight() * grad_out).sum().backward()
    opt.step()
    return float((weight().detach() - before).norm())


@pytest.mark.parametrize("scale", ["lora-step", "plain-idft"])
def test_one_adam_step_moves_a_spectral_factor_as_the_textbook_formula_says(scale):
    """LoRA's first Adam step moves each of the p q entries by lr: ||dM|| = lr sqrt(p q). The paper's 1/(pq) map
    moves it by lr sqrt(n / (2 p q)) (Parseval, real part), i.e. p q sqrt(2 / n) times less (407x for SmolLM2's
    A at r = 32, d_in = 576, n = 4096); scale: lora-step multiplies the map by that factor."""
    from fora_core.fourier import step_matched_gain

    p, q, n, lr = 32, 576, 4096, 1e-3
    g = torch.randn(p, q, generator=torch.Generator().manual_seed(0))
    dense = torch.nn.Parameter(torch.zeros(p, q))
    lora = _first_adam_step_norm(dense, lambda: dense, g, lr)
    assert lora == pytest.approx(lr * math.sqrt(p * q), rel=1e-3)
    gain = step_matched_gain((p, q), n, scale)
    layer = SpectralLinear(q, p, n, seed=0, gain=gain)
    spectral = _first_adam_step_norm(layer.coefficients, lambda: layer.weight, g, lr)
    if scale == "plain-idft":
        assert gain == 1.0
        # the real part keeps about half of each atom's energy (all of it for the few self-conjugate ones)
        assert spectral == pytest.approx(lr * math.sqrt(n / (2 * p * q)), rel=0.2)
        assert lora / spectral == pytest.approx(p * q * math.sqrt(2 / n), rel=0.2)  # ~407
    else:
        assert lora / spectral == pytest.approx(1.0, rel=0.2)


def test_step_matched_scale_keeps_the_init_std_and_saves_what_it_computes():
    config = ForaConfig(method="fourier-fora", rank=8, target_modules=["up"], fourier={"n_coefficients": 200})
    model = apply_fora(tiny_model("llama"), None, config)
    for _, layer in lora_layers(model):
        a = layer.lora_A["default"]
        assert a.gain == pytest.approx(8 * a.in_features * math.sqrt(2 / 200))
        assert float(a.weight.std()) == pytest.approx(1 / math.sqrt(3 * a.in_features), rel=1e-3)
    # an adapter saved under the value's old name still loads
    assert ForaConfig(method="fourier-fora", fourier={"scale": "seed"}).fourier.scale == "plain-idft"
    with pytest.raises(ForaConfigError, match="fourier.scale.*lora-step, plain-idft"):
        ForaConfig(method="fourier-fora", fourier={"scale": "fast"})
