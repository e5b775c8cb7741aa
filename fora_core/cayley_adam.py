"""Cayley-Adam: Adam on the Stiefel manifold St(n, p) = {X in R^{n x p} : X^T X = I_p}.

Reference: Jun Li, Li Fuxin, Sinisa Todorovic, "Efficient Riemannian Optimization on the Stiefel Manifold
via the Cayley Transform", ICLR 2020, Algorithm 2 (https://arxiv.org/abs/2002.01113). Used by FoRA for the
LoRA factor B (n = d_out, p = r). One step, for a parameter X (n, p) with Euclidean gradient G (n, p):

    m  <- beta1 m + (1 - beta1) G                           first moment, (n, p)
    v  <- beta2 v + (1 - beta2) ||G||_F^2                   second moment, one scalar per matrix
    rho = (1 - beta1^t) sqrt(v / (1 - beta2^t) + eps)       bias corrections
    M' = m - 1/2 X (X^T m)                                  (n, p)
    W  = (M' X^T - X M'^T) / rho                            skew-symmetric (n, n), rank <= 2p: NEVER formed
    a  = min(lr, 2 q / (||W||_F + eps))                     step clipped so the fixed point converges
    m  <- rho W X                                           momentum projected onto the tangent space
    X  <- (I + a/2 W)^-1 (I - a/2 W) X                      Cayley transform: X^T X = I exactly

W is kept factored as W = U V^T with U = [M'/rho, X], V = [X, -M'/rho] (both (n, 2p)). One Gram matrix
U^T U (2p x 2p) gives V^T X, V^T U and ||W||_F^2 = tr((U^T U)(V^T V)), and every iterate of either solver
has the form Y = X + U C with C (2p x p), so the solve runs on 2p x 2p matrices and the work in n is four
batched products, O(n p^2) in all. The Cayley transform is applied by either

* ``fixed-point`` (the paper): Y_0 = X - a W X, Y_{k+1} = X - a/2 W (X + Y_k), ``iterations`` times;
  it contracts by a/2 ||W|| <= q per iteration;
* ``exact``: Sherman-Morrison-Woodbury, X_new = X - a U (I_2p + a/2 V^T U)^-1 V^T X.

Every ``qr_period`` steps X is re-projected by a sign-fixed thin QR (X = QR, diag(R) >= 0 -> X = Q) to
remove floating-point drift. No weight decay is applied. Parameters of the same shape, dtype and device
are updated together as one batched (g, n, p) tensor: no Python loop per adapter on the hot path.

Set ``row_orthonormal=True`` on a parameter group whose matrices are (p, n) with orthonormal rows (LoRA's
A factor): the update then works on the transpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

SOLVERS = ("fixed-point", "exact")


def qr_retraction(x: torch.Tensor) -> torch.Tensor:
    """Sign-fixed thin QR: the Q of X = QR with diag(R) >= 0. x: (..., n, p) -> (..., n, p)."""
    q, r = torch.linalg.qr(x, mode="reduced")
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs.unsqueeze(-2)


def orthogonality_error(x: torch.Tensor) -> torch.Tensor:
    """||X^T X - I||_F for x: (..., n, p) -> (...)."""
    p = x.shape[-1]
    gram = x.mT @ x
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    return torch.linalg.matrix_norm(gram - eye)


class CayleyAdam(Optimizer):
    """Cayley-Adam for matrices with orthonormal columns (see the module docstring for the math).

    Args:
        params: parameters of shape (n, p), n >= p, each already on the manifold (X^T X = I), or groups.
        lr: the step-size cap l (the step actually taken is min(lr, 2q / ||W||)).
        betas: (beta1, beta2) for the first moment and the scalar second moment.
        eps: added inside the square root of the second moment and to ||W||.
        q: clipping constant of the step, 0 < q < 1 (the fixed point contracts by at most q).
        solver: 'fixed-point' or 'exact'.
        iterations: fixed-point iterations.
        qr_period: re-project by QR every this many steps (0 = never).
        row_orthonormal: the matrices are (p, n) with orthonormal rows; work on their transposes.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        q: float = 0.5,
        solver: str = "fixed-point",
        iterations: int = 5,
        qr_period: int = 200,
        row_orthonormal: bool = False,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"invalid value for 'lr': {lr} (allowed: > 0)")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid value for 'betas': {betas} (allowed: each in [0, 1))")
        if not 0 < q < 1:
            raise ValueError(f"invalid value for 'q': {q} (allowed: 0 < q < 1)")
        if solver not in SOLVERS:
            raise ValueError(f"invalid value for 'solver': {solver!r} (allowed: {', '.join(SOLVERS)})")
        if iterations < 1:
            raise ValueError(f"invalid value for 'iterations': {iterations} (allowed: >= 1)")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, q=q, solver=solver, iterations=iterations,
            qr_period=qr_period, row_orthonormal=row_orthonormal,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                n, k = (p.shape[1], p.shape[0]) if group["row_orthonormal"] else (p.shape[0], p.shape[1])
                if p.dim() != 2 or n < k:
                    raise ValueError(
                        f"CayleyAdam needs 2-D parameters with n >= p on the constrained side, got {tuple(p.shape)}"
                    )
        self._bucket_cache: dict[int, list[dict[str, Any]]] = {}

    # -- state layout: per-parameter state entries are views into one stacked tensor per bucket ---------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._bucket_cache = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._bucket_cache = {}

    def _buckets(self, gi: int, group: dict[str, Any]) -> list[dict[str, Any]]:
        cached = self._bucket_cache.get(gi)
        if cached is not None:
            return cached
        by_key: dict[tuple, list[torch.Tensor]] = {}
        for p in group["params"]:
            by_key.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
        buckets = []
        for (_, dtype, device), params in by_key.items():
            cdtype = torch.float64 if dtype == torch.float64 else torch.float32
            shape = params[0].shape
            mat_shape = (shape[1], shape[0]) if group["row_orthonormal"] else tuple(shape)
            m = torch.zeros((len(params), *mat_shape), dtype=cdtype, device=device)
            v = torch.zeros(len(params), dtype=cdtype, device=device)
            steps = torch.zeros(len(params), dtype=torch.float64)
            for i, p in enumerate(params):
                st = self.state[p]
                if "exp_avg" in st:  # restored from a checkpoint
                    m[i].copy_(st["exp_avg"])
                    v[i].copy_(st["exp_avg_sq"])
                    steps[i] = float(st["step"])
                st["exp_avg"], st["exp_avg_sq"], st["step"] = m[i], v[i], steps[i]
            buckets.append({"params": params, "exp_avg": m, "exp_avg_sq": v, "step": steps})
        self._bucket_cache[gi] = buckets
        return buckets

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            for bucket in self._buckets(gi, group):
                self._update_bucket(group, bucket)
        return loss

    def _update_bucket(self, group: dict[str, Any], bucket: dict[str, Any]) -> None:
        params: list[torch.Tensor] = bucket["params"]
        live = [i for i, p in enumerate(params) if p.grad is not None]
        if not live:
            return
        full = len(live) == len(params)
        sel = None if full else torch.tensor(live, device=bucket["exp_avg"].device)
        ps = params if full else [params[i] for i in live]
        m = bucket["exp_avg"] if full else bucket["exp_avg"].index_select(0, sel)
        v = bucket["exp_avg_sq"] if full else bucket["exp_avg_sq"].index_select(0, sel)
        cdtype = m.dtype
        rows = group["row_orthonormal"]

        x = torch.stack([p.mT if rows else p for p in ps]).to(cdtype)  # (g, n, p)
        g = torch.stack([p.grad.mT if rows else p.grad for p in ps]).to(cdtype)  # (g, n, p)
        bucket["step"][live] += 1
        t = float(bucket["step"][live[0]])
        beta1, beta2 = group["betas"]
        eps, lr, q = group["eps"], group["lr"], group["q"]

        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).add_(g.square().sum(dim=(1, 2)), alpha=1 - beta2)
        rho = (1 - beta1**t) * torch.sqrt(v / (1 - beta2**t) + eps)  # (g,)

        pdim = x.shape[2]
        mp = (m - 0.5 * (x @ (x.mT @ m))) / rho.view(-1, 1, 1)  # M'/rho, (g, n, p)
        u = torch.cat([mp, x], dim=2)  # U = [M'/rho, X], (g, n, 2p)
        gram = u.mT @ u  # [[A, B], [B^T, D]]: A = M'^T M', B = M'^T X, D = X^T X; (g, 2p, 2p)
        a_blk, b_blk, d_blk = gram[:, :pdim, :pdim], gram[:, :pdim, pdim:], gram[:, pdim:, pdim:]
        vtx = torch.cat([d_blk, -b_blk], dim=1)  # V^T X = [X^T X; -M'^T X], (g, 2p, p)
        vtu = torch.cat([torch.cat([b_blk.mT, d_blk], 2), torch.cat([-a_blk, -b_blk], 2)], 1)  # V^T U
        vtv = torch.cat([torch.cat([d_blk, -b_blk.mT], 2), torch.cat([-b_blk, a_blk], 2)], 1)  # V^T V
        w_norm = (gram * vtv).sum(dim=(1, 2)).clamp_min(0).sqrt()  # ||U V^T||_F = sqrt(tr(U^T U V^T V))
        a = torch.clamp(2 * q / (w_norm + eps), max=lr).view(-1, 1, 1)  # (g, 1, 1)

        # Every iterate is Y = X + U C with C (2p x p): the Cayley solve happens in 2p x 2p coordinates.
        if group["solver"] == "exact":
            eye = torch.eye(2 * pdim, dtype=cdtype, device=x.device)
            c = -a * torch.linalg.solve(eye + 0.5 * a * vtu, vtx)
        else:
            c = -a * vtx  # Y_0 = X - a W X
            for _ in range(group["iterations"]):
                c = -0.5 * a * (2 * vtx + vtu @ c)  # Y_{k+1} = X - a/2 W (X + Y_k)
        out = u @ torch.cat([vtx, c], dim=2)  # [W X | U C], (g, n, 2p)
        m.copy_(rho.view(-1, 1, 1) * out[:, :, :pdim])  # tangent-space momentum rho W X
        y = x + out[:, :, pdim:]
        period = group["qr_period"]
        if period and int(t) % period == 0:
            y = qr_retraction(y)

        if not full:
            bucket["exp_avg"].index_copy_(0, sel, m)
            bucket["exp_avg_sq"].index_copy_(0, sel, v)
        targets = [p.mT if rows else p for p in ps]
        torch._foreach_copy_(targets, list(y.to(ps[0].dtype).unbind(0)))
