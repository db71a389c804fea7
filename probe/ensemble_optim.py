"""The objective and the optimiser of an ensemble step: every member's bound, loss and Adam update
computed at once on tensors with a leading member axis (M, ...).

`probe.ensemble` trains M (g1, g2, critic) members as one model; this module holds what makes
each member's update the one `train_pair` would make for it alone:

- `MemberObjective`: per-member estimator (InfoNCE for some members, NWJ for others) on the
  (M, K, K) score stack, and per-member loss, -I (maximise) or |I - t| (Tschannen et al.,
  ICLR 2020, Sec. 3.3, Fig. 4a/b);
- `member_grad_norms`, `clip_coefficients`: `torch.nn.utils.clip_grad_norm_` per member (global norm of that member's
  gradient, coefficient max_norm / (norm + 1e-6), capped at 1);
- `BatchedAdam`: `torch.optim.Adam`'s update (Kingma & Ba 2015, as torch implements it) with one
  learning rate per member and a mask of members that take this step; a masked member's
  parameters and moments stay bit-for-bit unchanged.

Nothing here reads a value back to the host: masks and `torch.where` replace Python branches.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import vmap

from probe import estimators as _est
from probe.errors import InputValueError

BatchedEstimator = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------- batched estimators
def _js_objective(scores: torch.Tensor) -> torch.Tensor:
    """f-GAN JS objective per member, (M, K, K) -> (M,): E_p[-softplus(-S)] - E_q[softplus(S)]."""
    k = scores.shape[-1]
    off = ~torch.eye(k, dtype=torch.bool, device=scores.device)
    return -F.softplus(-scores.diagonal(dim1=-2, dim2=-1)).mean(-1) - F.softplus(scores[:, off]).mean(-1)


def _with_js_gradient(value: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """`value` forward, the JS objective's gradient backward; where the JS objective is not
    finite, `value` itself (as `probe.estimators` does, per member, without a Python branch)."""
    objective = _js_objective(scores)
    return torch.where(torch.isfinite(objective), objective + (value - objective).detach(), value)


def _js(scores: torch.Tensor) -> torch.Tensor:
    return _with_js_gradient(vmap(_est.nwj)(scores), scores)


def _js_shifted(scores: torch.Tensor) -> torch.Tensor:
    value = 1.0 + scores.diagonal(dim1=-2, dim2=-1).mean(-1) - torch.exp(vmap(_est._off_diagonal_logmeanexp)(scores))
    return _with_js_gradient(value, scores)


def _smile(scores: torch.Tensor, tau: float = 5.0) -> torch.Tensor:
    tau = _est._check_scalar(tau, "smile", "tau", allow_inf=True)
    if not tau > 0:
        raise InputValueError(f"smile: tau is {tau}; a positive clipping threshold is required.")
    clipped = vmap(_est._off_diagonal_logmeanexp)(scores.clamp(-tau, tau))
    return _with_js_gradient(scores.diagonal(dim1=-2, dim2=-1).mean(-1) - clipped, scores)


# Estimators whose value and gradient differ (a data-dependent branch vmap cannot trace), written
# for a score stack. Every other estimator of `probe.estimators` runs per member under vmap.
_STRAIGHT_THROUGH = {"js": _js, "js_shifted": _js_shifted, "smile": _smile}


def batched_estimator(name: str, **options) -> BatchedEstimator:
    """The estimator `name` of `probe.estimators` on a (M, K, K) score stack, returning (M,) nats.

    Member m's value and gradient are those of `get_estimator(name)(scores[m], **options)`
    (tests/test_ensemble.py checks every registered estimator). An estimator that vmap cannot
    trace and that has no batched form here falls back, with a warning, to a loop over members.
    """
    single = _est.get_estimator(name)
    if name in _STRAIGHT_THROUGH:
        return functools.partial(_STRAIGHT_THROUGH[name], **options)
    fn = functools.partial(single, **options) if options else single
    batched = vmap(fn)
    state = {"vmap": True}

    def run(scores: torch.Tensor) -> torch.Tensor:
        if state["vmap"]:
            try:
                return batched(scores)
            except RuntimeError as err:  # data-dependent control flow
                state["vmap"] = False
                warnings.warn(f"ensemble: estimator '{name}' cannot run under vmap ({err}); looping over members "
                              "instead, which may read values back to the host every step.", stacklevel=2)
        return torch.stack([fn(s) for s in scores])

    return run


# --------------------------------------------------------------------------- objective
class MemberObjective:
    """Per-member bound and loss on a (M, K, K) score stack.

    `estimators[m]` names member m's bound; `targets[m]` is None (loss -I, maximise the bound)
    or t (loss |I - t|). Members sharing an estimator are evaluated together.
    """

    def __init__(self, estimators: Sequence[str], targets: Sequence[float | None],
                 options: dict[str, dict] | None, device: torch.device):
        options = options or {}
        names = list(dict.fromkeys(estimators))
        self.n_members = len(estimators)
        self._groups = [(batched_estimator(n, **options.get(n, {})),
                         torch.tensor([m for m, e in enumerate(estimators) if e == n], device=device))
                        for n in names]
        order = torch.cat([idx for _, idx in self._groups])
        self._inverse = torch.argsort(order)
        self._maximise = torch.tensor([t is None for t in targets], device=device)
        # 0 where maximising, so the unused |I - t| branch stays finite and passes no NaN back.
        self._targets = torch.tensor([0.0 if t is None else float(t) for t in targets], device=device)

    def bounds(self, scores: torch.Tensor) -> torch.Tensor:
        if len(self._groups) == 1:
            return self._groups[0][0](scores)
        parts = [fn(scores.index_select(0, idx)) for fn, idx in self._groups]
        return torch.cat(parts).index_select(0, self._inverse)

    def losses(self, bounds: torch.Tensor) -> torch.Tensor:
        targets = self._targets.to(bounds.dtype)
        return torch.where(self._maximise, -bounds, (bounds - targets).abs())


# ---------------------------------------------------------------------------- clipping
@torch.no_grad()
def member_grad_norms(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each member's global gradient norm, (M,), from per-parameter gradients (M, *shape): the
    norm of the per-tensor norms, as `torch.nn.utils.clip_grad_norm_` computes it."""
    per_tensor = [torch.linalg.vector_norm(g, dim=tuple(range(1, g.ndim))) if g.ndim > 1 else g.abs() for g in grads]
    return torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)


def clip_coefficients(norms: torch.Tensor, max_norms: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s factor per member, min(max_norm / (norm + 1e-6), 1); max_norm inf: no clipping."""
    return (max_norms / (norms + 1e-6)).clamp(max=1.0)


@torch.no_grad()
def clip_rows_(grads: torch.Tensor, max_norms: torch.Tensor) -> torch.Tensor:
    """Scale each row of `grads` (M, P) in place as `clip_grad_norm_` scales one member's
    gradients; `max_norms` (M,), inf for no clipping. Returns the rows' norms before clipping."""
    norms = torch.linalg.vector_norm(grads, dim=1)
    grads.mul_(clip_coefficients(norms, max_norms.to(grads.dtype))[:, None])
    return norms


# -------------------------------------------------------------------------------- Adam
class BatchedAdam:
    """Adam on the rows of one (M, P) parameter tensor, updated in place; one learning rate per row.

    The update of an active row is `torch.optim.Adam`'s (defaults: no weight decay, no amsgrad)
    op for op: m ← lerp(m, g, 1 - β1); v ← β2·v + (1 - β2)·g²; p ← p + (-lr/(1 - β1ᵗ)·m) /
    (√v / √(1 - β2ᵗ) + ε), bias corrections in float64 on the host. A row that is not active
    takes no step and keeps p, m and v bit for bit: its coefficients become (0, 1) and its ε
    inf, so its update is m / inf = 0 (its gradient must be 0, as the trainer passes it).
    Rows must not become active again once inactive: all active rows share the step count t.
    Every operation writes into the moments, the gradient (which `step` overwrites) or one work
    tensor made once: on the CPU a fresh (M, P) temporary costs more in page faults than its
    arithmetic.
    """

    def __init__(self, params: torch.Tensor, lrs: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = params
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(params), torch.zeros_like(params)
        self._set_lrs(lrs)
        self.step_count = 0
        # Made once: a tensor built from a Python number on the GPU every step is a host copy.
        self._one, self._inf = params.new_ones(()), params.new_full((), math.inf)

    def _set_lrs(self, lrs: torch.Tensor) -> None:
        values = lrs.tolist()
        self.lrs = lrs.to(device=self.params.device, dtype=torch.float64)
        # One learning rate for all rows: a scalar step size, as torch.optim.Adam's addcdiv_.
        self._common_lr = values[0] if len(set(values)) == 1 else None
        self._work = None if self._common_lr is not None else torch.empty_like(self.params)

    @torch.no_grad()
    def step(self, grads: torch.Tensor, active: torch.Tensor) -> None:
        """One update of the active rows (`active`: (M,) bool) with `grads` (M, P), which it overwrites."""
        self.step_count += 1
        t, col = self.step_count, active[:, None]
        g = grads
        self.exp_avg.lerp_(g, (1 - self.beta1) * col.to(g.dtype))
        self.exp_avg_sq.mul_(torch.where(col, self._one * self.beta2, self._one))
        self.exp_avg_sq.addcmul_(g, g, value=1 - self.beta2)
        denom = torch.sqrt(self.exp_avg_sq, out=g).div_((1 - self.beta2 ** t) ** 0.5)
        denom.add_(torch.where(col, self._one * self.eps, self._inf))
        if self._common_lr is not None:
            self.params.addcdiv_(self.exp_avg, denom, value=-(self._common_lr / (1 - self.beta1 ** t)))
        else:
            step_size = (self.lrs / (1 - self.beta1 ** t)).to(g.dtype)[:, None]
            self.params.addcdiv_(torch.mul(self.exp_avg, -step_size, out=self._work), denom)

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "step_count": self.step_count,
                "lrs": self.lrs.clone(), "betas": (self.beta1, self.beta2), "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.step_count = int(state["step_count"])
        self._set_lrs(state["lrs"])
        self.beta1, self.beta2 = state["betas"]
        self.eps = float(state["eps"])


def check_member_values(values: object, n_members: int, *, name: str, caller: str, allow_none: bool,
                        positive: bool = False) -> list:
    """One value per member from a scalar or a sequence of `n_members` values."""
    seq = list(values) if isinstance(values, (list, tuple)) else [values] * n_members
    if len(seq) != n_members:
        raise InputValueError(f"{caller}: {name} has {len(seq)} value(s); one per member ({n_members}) or a single "
                              "value for all is required.")
    for m, v in enumerate(seq):
        if v is None and allow_none:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            need = "a positive finite number" if positive else "a finite number"
            raise InputValueError(f"{caller}: {name}[{m}] is {v!r}; {need}{' or None' if allow_none else ''} is required.")
    return seq
