"""FILet: Fisher-guided LoRA initialisation (the FILet paper, "Learning in the Fisher Subspace: A Guided
Initialization for LoRA Fine-Tuning", arXiv:2605.01046, Section 3.3 and Algorithm 1 of its Appendix A.2).

At a linear layer Y = W X with W0: (m, n) = (d_out, d_in), K-FAC approximates the weight Fisher as
S_W ~ S_X kron S_Y with

    S_X = E[x x^T]   (n, n)   second moment of the layer's inputs,
    S_Y = E[g g^T]   (m, m)   second moment of the loss gradient at the layer's outputs, g = dL/dY.

Both are collected by hooks during the Fisher calibration pass (``KfacCollector``; the same batches and the
same backward passes as the layer scores). Per mini-batch the outer products are averaged over its real
(unpadded) tokens (Algorithm 1's "/ dim(X)"), then averaged over the T batches.

A rank-one direction Z = u v^T has Fisher energy vec(Z)^T (S_X kron S_Y) vec(Z) = (v^T S_X v)(u^T S_Y u)
(Eq. 14). Candidates come from surrogate bases of W0 (Eq. 15):

    V_hat = normalize(W0^T W0)   (n, n),   U_hat = normalize(W0 V_hat)   (m, n)   (columns to unit norm),

so candidate i has energy E_i = (V_hat^T S_X V_hat)_ii (U_hat^T S_Y U_hat)_ii (Eq. 16). The r lowest-energy
candidates I are kept (Eq. 17) and

    A = sqrt(E_I) V_hat[:, I]^T   (r, n),     B = U_hat[:, I] sqrt(E_I)   (m, r)          (Eq. 18)
    W_res = W0 - s B A                                                                     (Eq. 19)

with s the adapter's scale (alpha / r in PEFT; the paper's Eq. 19 writes alpha, its Table 5 defines the scale
as alpha / r: we use the scale the forward pass applies, so the model is unchanged at step 0).

Choices where the text is open: padding tokens are left out of both moments; energies are computed in
float32 (float64 for float64 weights); ties between equal energies keep the lower index. ``fora-filet`` orthonormalises B for Cayley-Adam
without changing the product: B A = Q (R A) with B = Q R (thin QR), so B0 = Q, A0 = R A.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

EPS = 1e-12


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The module's weight as (d_out, d_in): nn.Linear as is, GPT-2's Conv1D (d_in, d_out) transposed."""
    weight = module.weight
    return weight.T if type(module).__name__ == "Conv1D" else weight


class KfacCollector:
    """Forward hooks that accumulate S_X and S_Y for named linear modules during any forward + backward.

        with KfacCollector(model, names) as kfac:
            fisher_scores(model, batches, on_batch=kfac.begin_batch)
        s_x, s_y = kfac.factors()["model.layers.3.mlp.up_proj"]

    Memory: (n^2 + m^2) float32 numbers per module, for every module named.
    """

    def __init__(self, model: nn.Module, module_names: Iterable[str]) -> None:
        self.modules = {name: model.get_submodule(name) for name in module_names}
        self.sum_x: dict[str, torch.Tensor] = {}
        self.sum_y: dict[str, torch.Tensor] = {}
        self.batches_x: dict[str, int] = {}
        self.batches_y: dict[str, int] = {}
        self._mask: torch.Tensor | None = None
        self._handles: list = []
        self._last_x: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, its x^T x / N)

    def begin_batch(self, attention_mask: torch.Tensor | None) -> None:
        """Tell the hooks which tokens of the next forward are real: (B, T) with 1 for a token, or None."""
        self._mask = attention_mask.bool() if attention_mask is not None else None
        self._last_x = None

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (N, d) float32, padded positions dropped."""
        if self._mask is not None and t.dim() == 3 and t.shape[:2] == self._mask.shape:
            t = t[self._mask.to(t.device)]
        return t.reshape(-1, t.shape[-1]).float()

    def _hook(self, name: str):
        def forward_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            raw = inputs[0]
            if self._last_x is not None and self._last_x[0] is raw:  # q, k, v (gate, up) share one input
                add = self._last_x[1]
            else:
                x = self._tokens(raw.detach())
                add = x.T @ x / max(1, x.shape[0])
                self._last_x = (raw, add)
            self.sum_x[name] = self.sum_x[name] + add if name in self.sum_x else add
            self.batches_x[name] = self.batches_x.get(name, 0) + 1
            if output.requires_grad:
                tokens = self._tokens

                def grad_hook(g: torch.Tensor) -> None:
                    flat = tokens(g.detach())
                    add_y = flat.T @ flat / max(1, flat.shape[0])
                    self.sum_y[name] = self.sum_y[name] + add_y if name in self.sum_y else add_y
                    self.batches_y[name] = self.batches_y.get(name, 0) + 1

                output.register_hook(grad_hook)

        return forward_hook

    def __enter__(self) -> KfacCollector:
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        self._last_x = None
        for h in self._handles:
            h.remove()
        self._handles = []

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{name: (S_X (n, n), S_Y (m, m))}, each averaged over the batches it saw."""
        out = {}
        for name in self.modules:
            if name not in self.sum_x or name not in self.sum_y:
                raise RuntimeError(f"no K-FAC statistics for '{name}': it saw no forward with a backward")
            out[name] = (self.sum_x[name] / self.batches_x[name], self.sum_y[name] / self.batches_y[name])
        return out


def _normalize_columns(m: torch.Tensor) -> torch.Tensor:
    return m / m.norm(dim=0, keepdim=True).clamp_min(EPS)


def _work_dtype(w0: torch.Tensor) -> torch.dtype:
    """float64 for a float64 weight (the tests' references), else float32 (half the time of float64)."""
    return torch.float64 if w0.dtype == torch.float64 else torch.float32


def surrogate_bases(w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_hat (m, n), V_hat (n, n)) of Eq. 15 for W0 (m, n), in float32 (float64 for a float64 W0)."""
    w = w0.detach().to(_work_dtype(w0))
    v_hat = _normalize_columns(w.T @ w)
    return _normalize_columns(w @ v_hat), v_hat


def fisher_energies(w0: torch.Tensor, s_x: torch.Tensor, s_y: torch.Tensor) -> torch.Tensor:
    """E (n,) of Eq. 16: E_i = (v_i^T S_X v_i)(u_i^T S_Y u_i) for the surrogate columns of W0 (m, n)."""
    u_hat, v_hat = surrogate_bases(w0)
    s_x, s_y = s_x.to(v_hat), s_y.to(u_hat)
    p_x = ((s_x @ v_hat) * v_hat).sum(0)  # diag(V^T S_X V) without the (n, n) product
    p_y = ((s_y @ u_hat) * u_hat).sum(0)
    return p_x * p_y


def lowest_energy(energies: torch.Tensor, r: int) -> torch.Tensor:
    """Indices of the r lowest energies, ascending by energy (ties: lower index first). Eq. 17."""
    order = sorted(range(energies.numel()), key=lambda i: (float(energies[i]), i))
    return torch.tensor(order[:r], dtype=torch.long)


def filet_factors(w0: torch.Tensor, energies: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (r, n), B (m, r)) of Eq. 18 in float64, from W0 (m, n) and its candidate energies (n,)."""
    n = w0.shape[1]
    if r > n:
        raise ValueError(f"FILet rank {r} exceeds the {n} candidate directions of a ({w0.shape[0]}, {n}) weight")
    index = lowest_energy(energies, r)
    w = w0.detach().double()  # only r columns: float64 is cheap here
    v_sel = _normalize_columns((w.T @ w)[:, index])  # the selected columns of V_hat only
    u_sel = _normalize_columns(w @ v_sel)
    root = energies.double()[index].clamp_min(0).sqrt()
    return root[:, None] * v_sel.T, u_sel * root[None, :]


def orthonormalize_b(a: torch.Tensor, b: torch.Tensor, factor: str = "B") -> tuple[torch.Tensor, torch.Tensor]:
    """The same product B A with the constrained factor orthonormal: B = Q R -> (R A, Q) for factor B,
    A^T = Q R -> (Q^T, B R^T) for factor A. Signs fixed so diag(R) >= 0."""
    if factor == "B":
        q, rr = torch.linalg.qr(b)
        sign = torch.where(torch.diagonal(rr) < 0, -1.0, 1.0).to(q)
        q, rr = q * sign, rr * sign[:, None]
        return rr @ a, q
    q, rr = torch.linalg.qr(a.T)
    sign = torch.where(torch.diagonal(rr) < 0, -1.0, 1.0).to(q)
    q, rr = q * sign, rr * sign[:, None]
    return q.T, b @ rr.T
