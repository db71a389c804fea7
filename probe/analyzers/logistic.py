"""Multinomial L2-regularised logistic regression in torch: scikit-learn's optimum, batched.

The objective is scikit-learn's `LogisticRegression` (lbfgs / newton solvers, 1.x):

    min_{W, b}  C * sum_i -ln softmax(W x_i + b)[y_i]  +  0.5 * ||W||_F^2

with W (K, d) over all K classes (the over-parametrised softmax; the penalty makes the optimum
unique, with sum_k W_k = 0) and b (K,) unpenalised. For K = 2 scikit-learn fits the binomial
model instead: one weight vector w = W_1 - W_0 with penalty 0.5 * ||w||^2. The K = 2 softmax
with the penalty doubled is the same problem (its optimum has W_1 = -W_0 = w / 2 and the same
probabilities), so that is what is solved; `coef` then holds (-w/2, w/2).

Like scikit-learn, the solver works on the per-row mean f = mean_i loss_i + ||W||^2 / (2 C n)
and stops when max |grad f| <= tol (scipy's `gtol`, which is what scikit-learn's `tol` means
for lbfgs), for the raw features.

Solver: truncated Newton (Newton-CG; Nocedal & Wright, Numerical Optimization, 2nd ed.,
Alg. 7.1) with exact Hessian-vector products, each about the cost of one gradient, an Armijo
backtracking line search, and conjugate gradients preconditioned by a Kronecker-factored
curvature A (x) G + I / (C n): A the K x K softmax curvature averaged over the rows at the
current iterate, G the covariance of the (centred) features (Martens & Grosse, K-FAC,
ICML 2015; with A = (I - 11^T/K) / 2 this is Boehning's bound, Ann. Inst. Stat. Math. 1992).
Both factors are diagonalised, so applying the preconditioner costs O(K d^2), nothing next to
a pass over n rows. Centring the features, with the intercept absorbing the mean, decouples b
from W in that curvature; the returned coefficients are for the features as given.

M independent problems are fitted at once along a leading member axis: the same rows with M
values of C (x (n, d), C (M,); one (n, d) x (d, M K) product per pass), or M data sets
(x (M, n, d), y (M, n)). Every member has its own CG scalars, step length and stopping test;
a member that has converged is frozen while the others go on. Why not torch.optim.LBFGS: one
line search would be shared by all members, and its first step() imports torch._dynamo
(14 s measured on a loaded 2-core machine), longer than most of these fits.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probe.devices import fit_threads
from probe.errors import InputTypeError, InputValueError

# Rows used to estimate the feature covariance G of the preconditioner: it only has to be
# close, and n d^2 flops on all 60,000 rows would cost as much as ten passes.
PRECONDITIONER_ROWS = 8192
MAX_CG_STEPS = 250  # per Newton iteration
ARMIJO = 1e-4
MIN_STEP = 2.0 ** -30


@dataclass(frozen=True)
class LogisticFit:
    """A fitted model, or M of them (shapes without the member axis when one problem was fitted).

    coef: (K, d) or (M, K, d); intercept: (K,) or (M, K); float64, for the features as given.
    C: (M,) the inverse penalties. n_iter: Newton iterations; n_hvp: Hessian-vector products
    (each about one pass over the rows, like a gradient); converged: max |grad f| <= tol for
    every member; grad_max: (M,) final max |grad f| per member.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    C: np.ndarray
    n_iter: int
    n_hvp: int
    converged: bool
    grad_max: np.ndarray

    def logits(self, x: Any) -> torch.Tensor:
        """(m, K) or (M, m, K) logits of rows x ((m, d), shared by all members, or (M, m, d))."""
        x = _as_tensor(x, self.coef.device)
        return torch.matmul(x, self.coef.transpose(-1, -2)) + self.intercept.unsqueeze(-2)

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities as a float64 numpy array, columns in class-code order."""
        return torch.softmax(self.logits(x), dim=-1).cpu().numpy()

    def log_proba(self, x: Any) -> np.ndarray:
        """ln p(class | x) as float64 numpy, without the underflow of ln(predict_proba)."""
        return torch.log_softmax(self.logits(x), dim=-1).cpu().numpy()


def check_device(device: Any, caller: str) -> torch.device:
    """None (the CPU), "cpu", "cuda[:i]", "auto" (the GPU when there is one) or a torch.device."""
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise InputTypeError(f"{caller}: device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}.")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputValueError(f"{caller}: device is {device!r}; use 'cpu', 'cuda', 'cuda:1' or 'auto'.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputValueError(f"{caller}: device is {device!r} but no CUDA device is available; use 'cpu' or 'auto'.")
    return resolved


@contextlib.contextmanager
def capped_torch_threads(device: torch.device) -> Iterator[None]:
    """On the CPU, at most `probe.devices.fit_threads()` torch threads (a lower setting is kept):
    the analyzers' rule for scikit-learn's BLAS threads, applied to torch's."""
    previous = torch.get_num_threads()
    wanted = min(previous, fit_threads()) if device.type == "cpu" else previous
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float64).contiguous()
    # C order: a Fortran or strided input must give bit-identical results to a C-ordered one.
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64), device=device)


class _Objective:
    """The M objectives f_m(W_m, b_m), their gradients and Hessian-vector products.

    Logits and per-row quantities are (M, n, K); with shared x they are views of (n, M, K)
    memory so that every pass is one matrix product.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, c_values: torch.Tensor, n_classes: int):
        self.shared = x.ndim == 2
        self.x = x
        # Hessian-vector products in float32: CG only needs the curvature roughly (it stops at a
        # relative residual >= 1e-3 or so), while the objective, the gradient and so the optimum
        # and the stopping test stay float64. Measured: same Newton and CG counts, 2-2.5x less time.
        self.x32 = x.to(torch.float32)
        self.n, self.d = x.shape[-2:]
        self.m, self.k = c_values.shape[0], n_classes
        onehot = torch.nn.functional.one_hot(y, n_classes).to(torch.float64)
        self.onehot = onehot.unsqueeze(0) if self.shared else onehot  # (1 or M, n, K)
        # K = 2: scikit-learn's binomial model, i.e. the softmax with the penalty doubled.
        self.alpha = (2.0 if n_classes == 2 else 1.0) / (c_values * self.n)  # (M,)
        self.mean = x.mean(dim=-2).expand(self.m, self.d)  # (M, d)

    def _forward(self, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        x = self.x if x is None else x
        if self.shared:
            out = (x @ w.reshape(-1, self.d).T).view(self.n, self.m, self.k).permute(1, 0, 2)
        else:
            out = torch.bmm(x, w.transpose(1, 2))
        return out + b[:, None, :]

    def _backward(self, r: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """sum_i r_i x_i^T per member: (M, K, d) from r (M, n, K)."""
        x = self.x if x is None else x
        if self.shared:
            return (r.permute(1, 0, 2).reshape(self.n, -1).T @ x).view(self.m, self.k, self.d)
        return torch.bmm(r.transpose(1, 2), x)

    def value_grad(self, w: torch.Tensor, b: torch.Tensor):
        """f (M,), grad_W (M, K, d), grad_b (M, K) and the probabilities (M, n, K)."""
        logp = torch.log_softmax(self._forward(w, b), dim=-1)
        f = -(self.onehot * logp).sum(dim=(1, 2)) / self.n + 0.5 * self.alpha * w.pow(2).sum(dim=(1, 2))
        p = logp.exp()
        r = (p - self.onehot) / self.n
        grad_w = self._backward(r) + self.alpha[:, None, None] * w
        return f, grad_w, r.sum(dim=1), p

    def hvp(self, p32: torch.Tensor, vw: torch.Tensor, vb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hessian of f at probabilities p32 (float32) times the direction (vw, vb) (float64 in and out)."""
        s = p32 * self._forward(vw.to(torch.float32), vb.to(torch.float32), self.x32)
        t = (s - p32 * s.sum(dim=-1, keepdim=True)) / self.n  # (diag p - p p^T) J v per row
        data_w = self._backward(t, self.x32).to(torch.float64)
        return data_w + self.alpha[:, None, None] * vw, t.sum(dim=1).to(torch.float64)


class _Preconditioner:
    """(A (x) G + alpha I)^-1 on W and A^-1 on the centred intercept, per member."""

    def __init__(self, objective: _Objective):
        x = objective.x
        step = max(1, objective.n // PRECONDITIONER_ROWS)
        sub = x[..., ::step, :]
        centred = sub - sub.mean(dim=-2, keepdim=True)
        lam, v = torch.linalg.eigh(centred.transpose(-1, -2) @ centred / sub.shape[-2])
        self.lam = lam.clamp_min(0.0).expand(objective.m, objective.d)  # (M, d)
        self.v = v.expand(objective.m, objective.d, objective.d)  # (M, d, d)
        self.objective = objective

    def update(self, p: torch.Tensor) -> None:
        """Re-estimate the class curvature A at the current probabilities (M, n, K)."""
        n = self.objective.n
        curvature = (torch.diag_embed(p.sum(dim=1)) - p.transpose(1, 2) @ p) / n  # (M, K, K)
        a, self.e = torch.linalg.eigh(curvature)
        a = a.clamp_min(0.0)
        self.w_scale = 1.0 / (a[:, :, None] * self.lam[:, None, :] + self.objective.alpha[:, None, None])
        # The all-ones class direction has a = 0: shifting every intercept by one constant changes
        # nothing, so no step goes that way (float32 round-off in H v would otherwise drift b there).
        self.b_scale = torch.where(a > 1e-9 * a.amax(dim=1, keepdim=True), 1.0 / a.clamp_min(1e-300), 0.0)

    def apply(self, gw: torch.Tensor, gb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.objective.mean
        centred = gw - gb[:, :, None] * mean[:, None, :]  # the W gradient at fixed centred intercept
        et = self.e.transpose(1, 2)
        zw = self.e @ ((et @ centred @ self.v) * self.w_scale) @ self.v.transpose(1, 2)
        zb = (self.e @ ((et @ gb[:, :, None]).squeeze(-1) * self.b_scale)[:, :, None]).squeeze(-1)
        return zw, zb - torch.einsum("mkd,md->mk", zw, mean)


def _dot(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return (a[0] * b[0]).sum(dim=(1, 2)) + (a[1] * b[1]).sum(dim=1)


def _newton_direction(objective, precond, p32, gw, gb, active, forcing):
    """Preconditioned CG on H s = -g per member, to relative residual `forcing` (M,)."""
    sw, sb = torch.zeros_like(gw), torch.zeros_like(gb)
    rw, rb = -gw, -gb
    target = forcing * _dot((gw, gb), (gw, gb)).sqrt()
    zw, zb = precond.apply(rw, rb)
    dw, db = zw, zb
    rz = _dot((rw, rb), (zw, zb))
    running = active.clone()
    steps = 0
    while bool(running.any()) and steps < MAX_CG_STEPS:
        hw, hb = objective.hvp(p32, dw, db)
        steps += 1
        curvature = _dot((dw, db), (hw, hb))
        running = running & (curvature > 0)
        step = torch.where(running, rz / torch.where(running, curvature, 1.0), 0.0)
        sw, sb = sw + step[:, None, None] * dw, sb + step[:, None] * db
        rw, rb = rw - step[:, None, None] * hw, rb - step[:, None] * hb
        running = running & (_dot((rw, rb), (rw, rb)).sqrt() > target)
        zw, zb = precond.apply(rw, rb)
        rz_new = _dot((rw, rb), (zw, zb))
        beta = torch.where(running, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        dw, db = zw + beta[:, None, None] * dw, zb + beta[:, None] * db
        rz = rz_new
    return sw, sb, steps


def fit_logistic(x: Any, y: Any, C: float | Any, *, n_classes: int | None = None,
                 init: tuple[Any, Any] | LogisticFit | None = None, tol: float = 1e-6, max_iter: int = 100,
                 device: str | torch.device | None = None) -> LogisticFit:
    """Fit scikit-learn's L2 multinomial logistic regression by preconditioned Newton-CG in float64.

    Args:
        x: (n, d) features shared by all members, or (M, n, d) one data set per member.
        y: (n,) or (M, n) integer class codes in [0, n_classes).
        C: inverse penalty, a float or (M,) values (with shared x, one member per value).
        n_classes: K (default: max code + 1).
        init: warm start, a previous LogisticFit or (coef, intercept) of shapes (K, d) and (K,),
            or (M, K, d) and (M, K), for the features as given. Default: zeros (as scikit-learn).
        tol: stop when max |grad| of the per-row mean objective <= tol (scikit-learn's tol).
        max_iter: Newton iterations. device: where to compute (default: x's device, else CPU).

    Returns:
        LogisticFit; its arrays have a member axis iff x is 3-D or C has more than one value.
    """
    dev = torch.device(device) if device is not None else (x.device if isinstance(x, torch.Tensor)
                                                           else torch.device("cpu"))
    x = _as_tensor(x, dev)
    y = (y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))).to(device=dev, dtype=torch.int64)
    c_values = np.atleast_1d(np.asarray(C, dtype=np.float64))
    batched = x.ndim == 3 or c_values.size > 1
    m = x.shape[0] if x.ndim == 3 else c_values.size
    if c_values.size == 1:
        c_values = np.repeat(c_values, m)
    if x.ndim not in (2, 3) or tuple(y.shape) != tuple(x.shape[:-1]) or c_values.size != m:
        raise ValueError(f"fit_logistic: x {tuple(x.shape)}, y {tuple(y.shape)} and C {c_values.shape} do not match; "
                         "x (n, d) with y (n,) and C scalar or (M,), or x (M, n, d) with y (M, n) are required.")
    k = int(n_classes) if n_classes is not None else int(y.max()) + 1
    objective = _Objective(x, y, torch.as_tensor(c_values, device=dev), k)
    precond = _Preconditioner(objective)

    if init is None:
        w = torch.zeros(m, k, objective.d, dtype=torch.float64, device=dev)
        b = torch.zeros(m, k, dtype=torch.float64, device=dev)
    else:
        w0, b0 = (init.coef, init.intercept) if isinstance(init, LogisticFit) else init
        w = _as_tensor(w0, dev).expand(m, k, objective.d).clone()
        b = _as_tensor(b0, dev).expand(m, k).clone()

    f, gw, gb, p = objective.value_grad(w, b)
    n_iter = n_hvp = 0
    while True:
        grad_max = torch.maximum(gw.abs().amax(dim=(1, 2)), gb.abs().amax(dim=1))
        active = grad_max > tol
        if not bool(active.any()) or n_iter >= max_iter:
            break
        n_iter += 1
        precond.update(p)
        forcing = _dot((gw, gb), (gw, gb)).sqrt().sqrt().clamp(max=0.5)  # superlinear (Eisenstat-Walker)
        sw, sb, steps = _newton_direction(objective, precond, p.to(torch.float32), gw, gb, active, forcing)
        n_hvp += steps
        w, b, f, gw, gb, p = _line_search(objective, w, b, f, gw, gb, p, sw, sb, active)

    if not batched:
        w, b = w[0], b[0]
    return LogisticFit(coef=w, intercept=b, C=c_values, n_iter=n_iter, n_hvp=n_hvp,
                       converged=not bool(active.any()), grad_max=grad_max.cpu().numpy())


def _line_search(objective, w, b, f, gw, gb, p, sw, sb, active):
    """Armijo backtracking from the full Newton step, per member; inactive members stay put."""
    slope = _dot((gw, gb), (sw, sb))
    t = torch.where(active, 1.0, 0.0).to(w.dtype)
    while True:
        w_new, b_new = w + t[:, None, None] * sw, b + t[:, None] * sb
        f_new, gw_new, gb_new, p_new = objective.value_grad(w_new, b_new)
        bad = active & (f_new > f + ARMIJO * t * slope) & (t > MIN_STEP)
        if not bool(bad.any()):
            return w_new, b_new, f_new, gw_new, gb_new, p_new
        t = torch.where(bad, 0.5 * t, t)
