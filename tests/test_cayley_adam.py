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


def reference_adamg_trajectory(x_rows, grads, lr, beta1=0.9, beta2=0.99, eps=1e-8):
    """The public reference code's Cayley-Adam (JunLi-Galios/Optimization-on-Stiefel-Manifold-via-Cayley-
    Transform, stiefel_optimizer.py, AdamG with stiefel=True), transcribed step by step in float64: p x n
    matrices with orthonormal rows, an explicit n x n W, the step clipped by the matrix 1-norm of W, the
    fixed point started from the raw first moment, 5 iterations. (Its random QR re-projection, 1 step in
    101, is left out: both sides run without re-projection.)"""
    x = x_rows.double().clone()  # (p, n)
    p, n = x.shape
    m = torch.zeros(n, p, dtype=torch.float64)
    v = torch.zeros(1, dtype=torch.float64)
    b1_power, b2_power = beta1, beta2
    out = []
    for g_rows in grads:
        g = g_rows.double()  # (p, n)
        mnew = beta1 * m + (1 - beta1) * g.t()  # (n, p)
        vnew = beta2 * v + (1 - beta2) * torch.norm(g) ** 2
        mnew_hat, vnew_hat = mnew / (1 - b1_power), vnew / (1 - b2_power)
        mx = mnew_hat @ x  # (n, n)
        xmx = x @ mx
        xxmx = x.t() @ xmx
        w_hat = mx - 0.5 * xxmx
        w = (w_hat - w_hat.t()) / (vnew_hat + eps).sqrt()
        t = 0.5 * 2 / (w.abs().sum(dim=0).max() + eps)
        alpha = min(float(t), lr)
        xt = x.t()  # Cayley_loop(X = x^T, W, tan_vec = mnew, t = -alpha)
        y = xt - alpha * mnew
        for _ in range(5):
            y = xt - alpha * (w @ (0.5 * (xt + y)))
        x = y.t()
        m = (w @ xt) * (vnew_hat + eps).sqrt() * (1 - b1_power)
        v = vnew
        b1_power *= beta1
        b2_power *= beta2
        out.append(x.clone())
    return out


@pytest.mark.parametrize("solver", ["fixed-point", "exact"])
def test_trajectory_matches_the_public_reference_implementation(solver):
    """30 steps on a (6, 50) row-orthonormal matrix with random gradients. Where the step is not clipped
    (lr below 1/||W||_1 and 2q/||W||_F) the two differ only in the fixed point's start, whose effect after 5
    iterations is (a ||W|| / 2)^5 relative: the trajectories agree to 1e-9."""
    g = torch.Generator().manual_seed(11)
    x0 = stiefel(50, 6, seed=12, dtype=torch.float64).detach().T.contiguous()  # (6, 50)
    grads = [torch.randn(6, 50, generator=g, dtype=torch.float64) * (1 + 5 * k % 7) for k in range(30)]
    want = reference_adamg_trajectory(x0, grads, lr=0.02)
    x = torch.nn.Parameter(x0.clone())
    opt = CayleyAdam([x], lr=0.02, betas=(0.9, 0.99), solver=solver, iterations=5, qr_period=0,
                     row_orthonormal=True)
    for k, gr in enumerate(grads):
        x.grad = gr.clone()
        opt.step()
        assert torch.allclose(x.detach(), want[k], atol=1e-9), (k, (x.detach() - want[k]).abs().max())
    assert (want[-1] - x0).norm() > 0.1  # the trajectory went somewhere


def test_step_length_is_lr_whatever_the_gradient_scale_unlike_adamw():
    """Why the Stiefel lr is not AdamW's lr: Cayley-Adam divides the whole matrix's first moment by one
    scalar sqrt(v), so the first step moves X by a W X with ||W X||_F <= 2 (W's two halves each have norm
    <= ||g||/||g||): ||dX||_F is about lr, for any gradient scale and any n x p. AdamW's first step moves
    every element by lr (m_hat / sqrt(v_hat) = sign(g)), so ||dX||_F = lr sqrt(n p): for a 576 x 32 LoRA B,
    136x further than Cayley-Adam at the same lr."""
    n, p, lr = 576, 32, 1e-3
    grad = torch.randn(n, p, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    moves = []
    for scale in (1e-4, 1.0, 1e4):
        x = stiefel(n, p, seed=14, dtype=torch.float64)
        x0 = x.detach().clone()
        opt = CayleyAdam([x], lr=lr, solver="exact", qr_period=0)
        x.grad = grad * scale
        opt.step()
        moves.append(float((x.detach() - x0).norm()))
    assert max(moves) / min(moves) < 1 + 1e-4  # scale-free (eps inside the square root aside)
    assert 0.3 * lr < moves[0] <= 2 * lr * (1 + 1e-6)
    y = torch.nn.Parameter(stiefel(n, p, seed=14, dtype=torch.float64).detach().clone())
    y0 = y.detach().clone()
    adamw = torch.optim.AdamW([y], lr=lr, weight_decay=0.0)
    y.grad = grad.clone()
    adamw.step()
    adam_move = float((y.detach() - y0).norm())
    assert adam_move == pytest.approx(lr * (n * p) ** 0.5, rel=1e-3)
    assert adam_move / moves[0] > 50
