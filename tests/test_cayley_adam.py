"""CayleyAdam against independent references: eigendecomposition, an explicit n x n Cayley transform in
float64, the Woodbury-free fixed point, and per-parameter vs batched stepping."""

import copy

import pytest
import torch

from fora_core import CayleyAdam, orthogonality_error, qr_retraction


def stiefel(n, p, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(qr_retraction(torch.randn(n, p, generator=g, dtype=torch.float64)).to(dtype))


def reference_first_step(x, grad, lr, betas=(0.9, 0.99), eps=1e-8, q=0.5):
    """Li et al. (2020) Algorithm 2, first step, with the n x n matrix W formed explicitly, in float64."""
    x, grad = x.double(), grad.double()
    b1, b2 = betas
    m = (1 - b1) * grad
    v = (1 - b2) * grad.pow(2).sum()
    rho = (1 - b1) * torch.sqrt(v / (1 - b2) + eps)
    w_hat = m @ x.T - 0.5 * x @ (x.T @ m @ x.T)
    w = (w_hat - w_hat.T) / rho
    a = min(lr, 2 * q / (torch.linalg.matrix_norm(w).item() + eps))
    eye = torch.eye(x.shape[0], dtype=torch.float64)
    return torch.linalg.solve(eye + a / 2 * w, (eye - a / 2 * w) @ x)


@pytest.mark.parametrize("solver", ["exact", "fixed-point"])
def test_first_step_matches_explicit_cayley_transform(solver):
    x = stiefel(40, 6, dtype=torch.float64)
    grad = torch.randn(40, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = reference_first_step(x.detach(), grad, lr=0.3)
    opt = CayleyAdam([x], lr=0.3, solver=solver, iterations=60, qr_period=0)
    x.grad = grad.clone()
    opt.step()
    assert torch.allclose(x.detach(), want, atol=1e-10)
    assert not torch.allclose(x.detach(), stiefel(40, 6, dtype=torch.float64).detach(), atol=1e-3)


def test_two_solvers_agree_on_one_step():
    grad = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    results = []
    for solver in ("exact", "fixed-point"):
        x = stiefel(64, 8)
        opt = CayleyAdam([x], lr=0.01, solver=solver, iterations=5, qr_period=0)
        x.grad = grad.clone()
        opt.step()
        results.append(x.detach())
    assert (results[0] - results[1]).abs().max() < 1e-6


def test_orthogonality_after_1000_float32_steps_without_qr():
    torch.manual_seed(0)
    x = stiefel(256, 16)
    target = torch.randn(256, 16)
    opt = CayleyAdam([x], lr=0.05, qr_period=0)
    for _ in range(1000):
        opt.zero_grad()
        loss = (x - target).pow(2).sum() + 0.1 * torch.randn(()) * x.sum()
        loss.backward()
        opt.step()
    assert orthogonality_error(x.detach()) < 1e-5


@pytest.mark.parametrize("solver", ["fixed-point", "exact"])
def test_solves_pca_on_the_stiefel_manifold(solver):
    """max tr(X^T C X) over X^T X = I is the sum of the p largest eigenvalues of C (Ky Fan)."""
    g = torch.Generator().manual_seed(3)
    n, p = 60, 4
    basis = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    eig = torch.linspace(0.1, 1.0, n, dtype=torch.float64)
    eig[-p:] = torch.tensor([2.0, 2.5, 3.0, 4.0], dtype=torch.float64)
    c = (basis * eig) @ basis.T
    optimum = torch.linalg.eigvalsh(c)[-p:].sum().item()
    x = stiefel(n, p, seed=4, dtype=torch.float32)
    c32 = c.float()
    opt = CayleyAdam([x], lr=0.05, solver=solver)
    for _ in range(1500):
        opt.zero_grad()
        (-torch.trace(x.T @ c32 @ x)).backward()
        opt.step()
    value = torch.trace(x.detach().double().T @ c @ x.detach().double()).item()
    assert abs(value - optimum) / optimum < 1e-3


def test_batched_groups_equal_separate_optimizers():
    shapes = [(30, 4), (30, 4), (20, 4), (30, 4)]
    params = [stiefel(*s, seed=i) for i, s in enumerate(shapes)]
    solo = [copy.deepcopy(p) for p in params]
    batched = CayleyAdam(params, lr=0.1)
    separate = [CayleyAdam([p], lr=0.1) for p in solo]
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        grads = [torch.randn(*s, generator=g) for s in shapes]
        for p, s, gr in zip(params, solo, grads, strict=True):
            p.grad, s.grad = gr.clone(), gr.clone()
        batched.step()
        for o in separate:
            o.step()
    for p, s in zip(params, solo, strict=True):
        assert torch.allclose(p, s, atol=1e-6)


def test_params_without_grad_are_left_alone():
    a, b = stiefel(30, 4, 0), stiefel(30, 4, 1)
    b_before = b.detach().clone()
    opt = CayleyAdam([a, b], lr=0.1)
    a.grad = torch.randn(30, 4)
    opt.step()
    assert torch.equal(b.detach(), b_before)
    assert orthogonality_error(a.detach()) < 1e-5


def test_row_orthonormal_matches_transposed_column_problem():
    xt = stiefel(40, 5, seed=7)
    row = torch.nn.Parameter(xt.detach().T.clone())  # (5, 40), orthonormal rows
    grad = torch.randn(40, 5, generator=torch.Generator().manual_seed(8))
    col_opt = CayleyAdam([xt], lr=0.2)
    row_opt = CayleyAdam([row], lr=0.2, row_orthonormal=True)
    xt.grad, row.grad = grad.clone(), grad.T.clone()
    col_opt.step()
    row_opt.step()
    assert torch.allclose(row.detach().T, xt.detach(), atol=1e-6)


def test_state_dict_round_trip_resumes_identically():
    g = torch.Generator().manual_seed(9)
    grads = [torch.randn(30, 4, generator=g) for _ in range(6)]
    x = stiefel(30, 4)
    opt = CayleyAdam([x], lr=0.1)
    for gr in grads[:3]:
        x.grad = gr.clone()
        opt.step()
    saved_x, saved_state = x.detach().clone(), copy.deepcopy(opt.state_dict())
    for gr in grads[3:]:
        x.grad = gr.clone()
        opt.step()
    y = torch.nn.Parameter(saved_x)
    opt2 = CayleyAdam([y], lr=0.1)
    opt2.load_state_dict(saved_state)
    for gr in grads[3:]:
        y.grad = gr.clone()
        opt2.step()
    assert torch.allclose(x.detach(), y.detach(), atol=1e-7)


def test_never_forms_an_n_by_n_matrix():
    """n = 400,000: an n x n float32 matrix would need 640 GB, so a step only succeeds if W stays factored."""
    x = stiefel(400_000, 2)
    opt = CayleyAdam([x], lr=0.1, solver="exact")
    x.grad = torch.randn(400_000, 2)
    opt.step()
    opt2 = CayleyAdam([x], lr=0.1, solver="fixed-point")
    opt2.step()
    assert orthogonality_error(x.detach()) < 1e-5


def test_qr_retraction_is_sign_fixed_and_orthonormal():
    m = torch.randn(20, 5, dtype=torch.float64)
    q = qr_retraction(m)
    r = q.T @ m  # upper triangular with non-negative diagonal
    assert torch.allclose(q.T @ q, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert (torch.diagonal(r) >= 0).all()
    assert torch.allclose(torch.tril(r, -1), torch.zeros(5, 5, dtype=torch.float64), atol=1e-10)


def test_invalid_arguments_name_the_field():
    with pytest.raises(ValueError, match="solver"):
        CayleyAdam([stiefel(5, 2)], solver="newton")
    with pytest.raises(ValueError, match="n >= p"):
        CayleyAdam([torch.nn.Parameter(torch.zeros(2, 5))])
