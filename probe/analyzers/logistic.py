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

Solver: a trust-region Newton method (Newton-CG with Steihaug's truncated conjugate gradients;
Nocedal & Wright, Numerical Optimization, 2nd ed., Alg. 4.1 and 7.2; the method of liblinear's
TRON, Lin, Weng & Keerthi, JMLR 2008) with exact Hessian-vector products, each about the cost
of one gradient. CG is preconditioned by a Kronecker-factored curvature A (x) G + I / (C n):
A the K x K softmax curvature averaged over the rows at the current iterate, G the covariance
of the (centred) features over all rows (Martens & Grosse, K-FAC, ICML 2015; with A =
(I - 11^T/K) / 2 this is Boehning's bound, Ann. Inst. Stat. Math. 1992), and the trust region
is a ball in that metric. Both factors are diagonalised, so the preconditioner costs O(K d^2)
per use, nothing next to a pass over n rows. Centring the features, with the intercept
absorbing the mean, decouples b from W in that curvature; the returned coefficients are for
the features as given. A line search instead of the trust region took 1.7x more products on
the hardest problems measured (weak penalties), where full Newton steps overshoot.

Near the optimum the averaged A fits rows whose predictions differ badly (50-120 CG steps a
Newton step): past SWITCH_CG steps the Hessian's per-class blocks take over
(`probe.analyzers._curvature.ClassBlocks`). At 60,000 x 392, C 0.01, one core: 419 -> 80
products, 17.5 -> 7.9 s cold; 216 -> 33, 9.1 -> 3.8 s from the last evaluation's weights; raw
pixels at C 1: unconverged at 100 iterations -> 60. Forming them (K Gram matrices of n x (d + 1))
is the costliest step of a fit: a symmetric rank-k update on the CPU, without the rows whose
curvature is negligible next to the penalty's.

M independent problems are fitted at once along a leading member axis: the same rows with M
values of C (x (n, d), C (M,); one (n, d) x (d, M K) product per pass), or M data sets
(x (M, n, d), y (M, n)). Every member has its own CG scalars, trust radius and stopping test;
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

from probe.analyzers._curvature import ClassBlocks, Kronecker
from probe.devices import fit_threads
from probe.errors import InputTypeError, InputValueError

MAX_CG_STEPS = 250  # per Newton iteration
# CG stops at relative residual max(0.1, sqrt|g|) <= 0.5: the superlinear sqrt|g| (Eisenstat &
# Walker) alone spent most products on the last Newton steps (60,000 Fashion-MNIST rows, C 0.01:
# 612 products; 547 with a floor of 0.02, 427 with 0.1, 437 with 0.2, 529 with 0.3).
FORCING_FLOOR = 0.1
ACCEPT = 1e-4  # least ratio of actual to predicted decrease for a step to be taken
SWITCH_CG = 10  # CG steps in one Newton iteration beyond which the class blocks are formed
# Re-formed after the work they cost (K Gram matrices: ~55 products at 60,000 x 392; a gradient ~3).
REFORM_COST, GRADIENT_COST = 55, 3


@dataclass(frozen=True)
class LogisticFit:
    """A fitted model, or M of them (shapes without the member axis when one problem was fitted).

    coef: (K, d) or (M, K, d); intercept: (K,) or (M, K); float64, for the features as given.
    C: (M,) the inverse penalties. n_iter: Newton (trust-region) iterations, rejected steps
    included; n_hvp: Hessian-vector products
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


def _dot(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return (a[0] * b[0]).sum(dim=(1, 2)) + (a[1] * b[1]).sum(dim=1)


def _steihaug(objective, precond, p32, gw, gb, active, forcing, radius):
    """Preconditioned CG on H s = -g per member, stopped at relative residual `forcing` (M,) or on
    the trust-region boundary ||s||_P = radius (Steihaug 1983; Nocedal & Wright, Alg. 7.2).

    Returns the step (sw, sb), its predicted decrease -(g^T s + s^T H s / 2), whether it stopped
    on the boundary, and the number of Hessian-vector products.
    """
    sw, sb = torch.zeros_like(gw), torch.zeros_like(gb)
    rw, rb = gw.clone(), gb.clone()  # residual g + H s
    target = forcing * _dot((gw, gb), (gw, gb)).sqrt()
    yw, yb = precond.apply(rw, rb)
    dw, db = -yw, -yb
    ry = _dot((rw, rb), (yw, yb))
    running, boundary = active.clone(), torch.zeros_like(active)
    steps = 0
    while bool(running.any()) and steps < MAX_CG_STEPS:
        hw, hb = objective.hvp(p32, dw, db)
        steps += 1
        dhd = _dot((dw, db), (hw, hb))
        alpha = ry / torch.where(dhd > 0, dhd, 1.0)
        trial = (sw + alpha[:, None, None] * dw, sb + alpha[:, None] * db)
        outside = running & ((dhd <= 0) | (precond.inner(trial, trial) >= radius**2))
        step = torch.where(running, alpha, 0.0)
        if bool(outside.any()):  # tau >= 0 with ||s + tau d||_P = radius
            ss, sd, dd = precond.inner((sw, sb), (sw, sb)), precond.inner((sw, sb), (dw, db)), precond.inner((dw, db), (dw, db))
            tau = (-sd + (sd**2 + dd * (radius**2 - ss)).clamp_min(0.0).sqrt()) / dd.clamp_min(1e-300)
            step = torch.where(outside, tau, step)
        sw, sb = sw + step[:, None, None] * dw, sb + step[:, None] * db
        rw, rb = rw + step[:, None, None] * hw, rb + step[:, None] * hb
        boundary = boundary | outside
        running = running & ~outside & (_dot((rw, rb), (rw, rb)).sqrt() > target)
        yw, yb = precond.apply(rw, rb)
        ry_new = _dot((rw, rb), (yw, yb))
        beta = torch.where(running, ry_new / torch.where(ry > 0, ry, 1.0), 0.0)
        dw, db = -yw + beta[:, None, None] * dw, -yb + beta[:, None] * db
        ry = ry_new
    predicted = -0.5 * (_dot((gw, gb), (sw, sb)) + _dot((sw, sb), (rw, rb)))  # H s = r - g
    return sw, sb, predicted, boundary, steps


def fit_logistic(x: Any, y: Any, C: float | Any, *, n_classes: int | None = None,
                 init: tuple[Any, Any] | LogisticFit | None = None, tol: float = 1e-6, max_iter: int = 100,
                 device: str | torch.device | None = None) -> LogisticFit:
    """Fit scikit-learn's L2 multinomial logistic regression by trust-region Newton-CG in float64.

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
    kronecker = precond = Kronecker(objective)
    blocks, since_blocks = ClassBlocks(objective), 0

    if init is None:
        w = torch.zeros(m, k, objective.d, dtype=torch.float64, device=dev)
        b = torch.zeros(m, k, dtype=torch.float64, device=dev)
    else:
        w0, b0 = (init.coef, init.intercept) if isinstance(init, LogisticFit) else init
        w = _as_tensor(w0, dev).expand(m, k, objective.d).clone()
        b = _as_tensor(b0, dev).expand(m, k).clone()

    f, gw, gb, p = objective.value_grad(w, b)
    precond.update(p)
    radius = _dot((gw, gb), precond.apply(gw, gb)).sqrt()  # the preconditioned gradient step's length
    n_iter = n_hvp = 0
    while True:
        grad_max = torch.maximum(gw.abs().amax(dim=(1, 2)), gb.abs().amax(dim=1))
        active = grad_max > tol
        if not bool(active.any()) or n_iter >= max_iter:
            break
        n_iter += 1
        forcing = _dot((gw, gb), (gw, gb)).sqrt().sqrt().clamp(min=FORCING_FLOOR, max=0.5)
        sw, sb, predicted, boundary, steps = _steihaug(objective, precond, p.to(torch.float32), gw, gb, active,
                                                       forcing, radius)
        n_hvp += steps
        f_new, gw_new, gb_new, p_new = objective.value_grad(w + sw, b + sb)
        actual = f - f_new
        rho = actual / predicted.clamp_min(1e-300)
        # At round-off level the decrease ratio is noise: there a step counts when it lowers the
        # gradient, the stopping criterion (computed to full precision).
        tiny = predicted <= 1e-13 * f.abs()
        grad_max_new = torch.maximum(gw_new.abs().amax(dim=(1, 2)), gb_new.abs().amax(dim=1))
        accept = active & ((rho > ACCEPT) | (tiny & (grad_max_new < grad_max)))
        length = precond.inner((sw, sb), (sw, sb)).sqrt()
        radius = torch.where(active & (rho < 0.25) & ~tiny, 0.25 * length,
                             torch.where(active & (rho > 0.75) & boundary, 2.0 * radius, radius))
        w = torch.where(accept[:, None, None], w + sw, w)
        b = torch.where(accept[:, None], b + sb, b)
        f = torch.where(accept, f_new, f)
        gw = torch.where(accept[:, None, None], gw_new, gw)
        gb = torch.where(accept[:, None], gb_new, gb)
        p = torch.where(accept[:, None, None], p_new, p)
        since_blocks += steps + GRADIENT_COST
        stale = steps > SWITCH_CG if precond is kronecker else since_blocks > REFORM_COST
        if stale and blocks.update(p):
            precond, since_blocks = blocks, 0
        elif precond is kronecker:
            kronecker.update(p)

    if not batched:
        w, b = w[0], b[0]
    return LogisticFit(coef=w, intercept=b, C=c_values, n_iter=n_iter, n_hvp=n_hvp,
                       converged=not bool(active.any()), grad_max=grad_max.cpu().numpy())
