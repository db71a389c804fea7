"""Training an ensemble (`probe.training.ensemble.Ensemble`): every member's bound, loss, gradient
clipping and Adam update at once, on tensors with a leading member axis (M, ...).

What makes member m's update the one `train_pair` would make for it alone:

- `MemberObjective`: per-member estimator (InfoNCE for some members, NWJ for others) on the
  (M, K, K) score stack, and per-member loss, -I (maximise) or |I - t| (Tschannen et al.,
  ICLR 2020, Sec. 3.3, Fig. 4a/b);
- `member_grad_norms`, `clip_coefficients`: `torch.nn.utils.clip_grad_norm_` per member
  (norm of that member's per-tensor gradient norms; factor max_norm / (norm + 1e-6), capped at 1);
- `BatchedAdam`: `torch.optim.Adam`'s update (Kingma & Ba 2015, as torch implements it) with one
  learning rate per member and a mask of members that take this step;
- `EnsembleTrainer`: the step that puts them together, and the device-side record of losses and
  of members frozen by a non-finite loss or gradient.

Nothing in a step reads a value back to the host: masks and `torch.where` replace Python branches.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import vmap

from probe import estimators as _est
from probe.errors import InputTypeError, InputValueError
from probe.training.ensemble import Ensemble

BatchedEstimator = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------- batched estimators
def _off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """The K(K-1) off-diagonal scores of each member, (M, K(K-1)), in the row-major order of
    `scores[~eye]`. Gathered by computed indices: a boolean mask would read its count back to the host."""
    k = scores.shape[-1]
    pos = torch.arange(k * (k - 1), device=scores.device)
    row, col = pos // (k - 1), pos % (k - 1)
    return scores.flatten(1).index_select(1, row * k + col + (col >= row))


def _js_objective(scores: torch.Tensor) -> torch.Tensor:
    """f-GAN JS objective per member, (M, K, K) -> (M,): E_p[-softplus(-S)] - E_q[softplus(S)]."""
    return -F.softplus(-scores.diagonal(dim1=-2, dim2=-1)).mean(-1) - F.softplus(_off_diagonal(scores)).mean(-1)


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

    def state_dict(self, *, copy: bool = True) -> dict:
        """The moments and step count; `copy=False` gives the live tensors (for saving at once)."""
        keep = (lambda t: t.clone()) if copy else (lambda t: t)  # noqa: E731
        return {"exp_avg": keep(self.exp_avg), "exp_avg_sq": keep(self.exp_avg_sq), "step_count": self.step_count,
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


# ------------------------------------------------------------------------------- trainer
FAILURES = ("ok", "non-finite loss", "non-finite gradient")


class EnsembleTrainer:
    """Adam on each member's own objective: -I (maximise the bound) or |I - t|.

    Per member m: `estimators[m]` (a name in `probe.estimators`), `lrs[m]`, `targets[m]` (None:
    maximise), `grad_clips[m]` (None: no clipping; else the global gradient norm of that member,
    as `clip_grad_norm_`). Each argument also takes one value for all members.
    `estimator_options` passes keyword arguments per estimator name, e.g. {"smile": {"tau": 5.0}};
    `score_dtype` evaluates the estimators in another dtype (e.g. torch.float64, as
    estimator-validation does); `tf32` allows TF32 matmuls and convolutions on CUDA during the
    step (default off: the global settings are left as they are).

    A member whose loss or gradient norm is not finite at step s takes no update at s or after
    (train_pair stops at a non-finite loss before updating; a non-finite gradient with a finite
    loss, which train_pair would apply, freezes the member here too). `alive`, `first_bad_step`
    and `failure` (index into FAILURES) live on the device; `statuses()` reads them.
    """

    LOSS_CHUNK = 256  # columns the loss buffer grows by

    def __init__(self, ensemble: Ensemble, estimators: str | Sequence[str], lrs: float | Sequence[float],
                 targets: float | None | Sequence[float | None] = None, grad_clips: float | None | Sequence = None,
                 *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 estimator_options: dict[str, dict] | None = None, score_dtype: torch.dtype | None = None,
                 tf32: bool = False):
        if not isinstance(ensemble, Ensemble):
            raise InputTypeError(f"EnsembleTrainer: ensemble is a {type(ensemble).__name__}; an Ensemble is required. "
                                 "Build one with Ensemble.from_modules([(g1, g2, critic), ...]).")
        m, caller, dev = ensemble.n_members, "EnsembleTrainer", ensemble.device
        names = [estimators] * m if isinstance(estimators, str) else list(estimators)
        if len(names) != m:
            raise InputValueError(f"{caller}: estimators has {len(names)} name(s); one per member ({m}) or one for all.")
        lrs = check_member_values(lrs, m, name="lrs", caller=caller, allow_none=False, positive=True)
        targets = check_member_values(targets, m, name="targets", caller=caller, allow_none=True)
        clips = check_member_values(grad_clips, m, name="grad_clips", caller=caller, allow_none=True, positive=True)
        self.ensemble, self.estimators, self.score_dtype, self.tf32 = ensemble, names, score_dtype, bool(tf32)
        self.objective = MemberObjective(names, targets, estimator_options, dev)
        self.optimizer = BatchedAdam(ensemble.flat, torch.tensor(lrs, dtype=torch.float64), betas, eps)
        self._max_norms = torch.tensor([math.inf if c is None else float(c) for c in clips], dtype=ensemble.dtype,
                                       device=dev)
        self._zero = ensemble.flat.new_zeros(())
        # Gradients land in one (M, P) buffer laid out as the parameters (the optimizer overwrites it).
        self._grad = torch.zeros_like(ensemble.flat)
        self._grad_views = [self._grad[:, a:b].view(m, *shape) for _, a, b, shape in ensemble.layout]
        self.alive = torch.ones(m, dtype=torch.bool, device=dev)
        self.first_bad_step = torch.full((m,), -1, dtype=torch.int64, device=dev)
        self.failure = torch.zeros(m, dtype=torch.int64, device=dev)
        self.steps_done = 0
        self._losses = torch.full((m, self.LOSS_CHUNK), math.nan, dtype=torch.float64, device=dev)
        self._pending = 0

    def step(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        """One update of every live member on its batch: x1 (M, K, d1), x2 (M, K, d2), on the device."""
        ens = self.ensemble
        _check_batch(x1, x2, ens)
        with self._precision():
            scores = ens.scores(x1, x2)
            if self.score_dtype is not None:
                scores = scores.to(self.score_dtype)
            loss = self.objective.losses(self.objective.bounds(scores))
            grads = torch.autograd.grad(loss.sum(), list(ens.params.values()), allow_unused=True) if ens.params else ()
        with torch.no_grad():
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, ens.params.values())]
            norms = member_grad_norms(grads) if grads else loss.new_zeros(ens.n_members)
            loss = loss.detach()
            finite_loss = torch.isfinite(loss)
            bad = self.alive & ~(finite_loss & torch.isfinite(norms))
            self.first_bad_step = torch.where(bad, self.steps_done, self.first_bad_step)
            self.failure = torch.where(bad, torch.where(finite_loss, 2, 1), self.failure)
            self._record(torch.where(self.alive, loss.to(torch.float64), math.nan))
            self.alive = self.alive & ~bad
            # One pass per parameter into the (M, P) buffer: frozen members' gradients become 0.
            for g, view in zip(grads, self._grad_views):
                torch.where(self.alive.view(-1, *[1] * (g.ndim - 1)), g, self._zero, out=view)
            # A frozen member's norm may be NaN: its coefficient is 0, so its zeroed gradient stays 0.
            coef = torch.where(self.alive, clip_coefficients(norms, self._max_norms), self._zero)
            self._grad.mul_(coef[:, None])
            self.optimizer.step(self._grad, self.alive)
        self.steps_done += 1

    def _record(self, loss: torch.Tensor) -> None:
        if self._pending == self._losses.shape[1]:
            self._losses = torch.cat([self._losses, self._losses.new_full((len(loss), self.LOSS_CHUNK), math.nan)], dim=1)
        self._losses[:, self._pending] = loss
        self._pending += 1

    @property
    def unread_steps(self) -> int:
        """Steps whose losses `read_losses` would return now."""
        return self._pending

    def read_losses(self) -> np.ndarray:
        """The losses of the steps since the last read, float64 (M, n); NaN once a member is frozen
        (the step that froze it shows its non-finite loss). Reads from the device."""
        out = self._losses[:, : self._pending].cpu().numpy().copy()
        self._pending = 0
        return out

    def statuses(self) -> list[str]:
        """Per member "ok" or e.g. "non-finite loss at step 12" (train_pair's wording). Reads from the device."""
        failure, step = self.failure.tolist(), self.first_bad_step.tolist()
        return [FAILURES[f] if f == 0 else f"{FAILURES[f]} at step {s}" for f, s in zip(failure, step)]

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if not (self.tf32 and self.ensemble.device.type == "cuda"):
            yield
            return
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
        saved = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision = conv.fp32_precision = "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved

    def state_dict(self, *, copy: bool = True) -> dict:
        """Everything a resumed trainer needs. `copy=False` gives the parameters and moments
        themselves, not clones: for a checkpoint written at once, where 3 clones of the (M, P)
        tensors would be the run's peak memory."""
        return {"ensemble": self.ensemble.state_dict(copy=copy), "optimizer": self.optimizer.state_dict(copy=copy),
                "alive": self.alive.clone(), "first_bad_step": self.first_bad_step.clone(),
                "failure": self.failure.clone(), "steps_done": self.steps_done}

    @contextlib.contextmanager
    def dry_run(self) -> Iterator[None]:
        """Steps that change nothing, for timing one before training starts (the runner's
        projection): every member counts as frozen, so `step` does all its work (forward,
        backward, clipping, the Adam arithmetic) while BatchedAdam keeps every row, and so the
        parameters and moments, bit for bit; the step count and the loss record are restored."""
        saved = (self.alive, self.first_bad_step, self.failure, self.steps_done, self._pending,
                 self.optimizer.step_count)
        self.alive = torch.zeros_like(self.alive)
        try:
            yield
        finally:
            (self.alive, self.first_bad_step, self.failure, self.steps_done, self._pending,
             self.optimizer.step_count) = saved

    def load_state_dict(self, state: dict) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.optimizer.load_state_dict(state["optimizer"])
        dev = self.ensemble.device
        self.alive, self.first_bad_step, self.failure = (state[k].to(dev) for k in ("alive", "first_bad_step", "failure"))
        self.steps_done, self._pending = int(state["steps_done"]), 0


def _check_batch(x1: object, x2: object, ens: Ensemble) -> None:
    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(f"EnsembleTrainer.step: {name} is a {type(x).__name__}; a tensor (M, K, d) is required.")
        if x.ndim != 3 or x.shape[0] != ens.n_members or x.shape[1] < 2:
            raise InputValueError(f"EnsembleTrainer.step: {name} has shape {tuple(x.shape)}; (M, K, d) with M = "
                                  f"{ens.n_members} members and K >= 2 pairs is required.")
        if x.device != ens.device or x.dtype != ens.dtype:
            raise InputValueError(f"EnsembleTrainer.step: {name} is {x.dtype} on {x.device}; the ensemble is "
                                  f"{ens.dtype} on {ens.device}. Move the batch with .to(device, dtype).")
    if x1.shape[1] != x2.shape[1]:
        raise InputValueError(f"EnsembleTrainer.step: x1 has {x1.shape[1]} pairs per member, x2 {x2.shape[1]}; "
                              "the two views of a batch must pair up.")
