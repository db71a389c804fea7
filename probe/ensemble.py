"""Ensembles: M (g1, g2, critic) members of one architecture trained as one vectorised model.

The paper's protocol is 20 seeds per grid cell (Tschannen et al., ICLR 2020; REFERENCE.md,
"Common protocol"). Rather than train the seeds one after another, an `Ensemble` stacks the
members' parameters along a leading member axis, in one (M, P) tensor, and an
`EnsembleTrainer` makes each step of all members at once: one forward pass over (M, K, d)
batches, one backward pass, one Adam update. Each member keeps its own estimator, target,
learning rate, gradient clipping, batches, noise and Adam state, so member m follows the run
`probe.training.train_pair` would make for it alone, to float rounding (tests/test_ensemble.py).

The forward pass runs each known module (`nn.Linear` and the encoders and critics of
`probe.encoders` / `probe.critics`) as batched matrix products (`bmm`, `baddbmm`) on the
stacked parameters; any other module, and the ConvNet, runs under `torch.func.vmap` of its
own forward (`engine="vmap"` uses vmap for everything). bench/ensemble_throughput.py measures
both: the batched products are 1.2-1.6x faster than vmap on 1 CPU core.

The step never reads a value back to the host: losses go into a device buffer that
`read_losses()` returns, and a member whose loss or gradient is not finite is frozen (its
parameters and Adam state stop changing) by masks, with its step recorded on the device.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from probe import critics, encoders
from probe.ensemble_optim import (BatchedAdam, MemberObjective, check_member_values, clip_coefficients,
                                  member_grad_norms)
from probe.errors import InputTypeError, InputValueError
from probe.training import BatchSampler, seeded_generator, stream_rng

Triple = tuple[nn.Module, nn.Module, nn.Module]
ENGINES = ("native", "vmap")


class _Member(nn.Module):
    """One member as one module: scores = critic(g1(x1), g2(x2)), (K, K)."""

    def __init__(self, g1: nn.Module, g2: nn.Module, critic: nn.Module):
        super().__init__()
        self.g1, self.g2, self.critic = g1, g2, critic

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.critic(self.g1(x1), self.g2(x2))


# ------------------------------------------------------------ batched forward, per module
_NATIVE: dict[type, Callable] = {}


def _native(*classes: type) -> Callable:
    def register(fn: Callable) -> Callable:
        for cls in classes:
            _NATIVE[cls] = fn
        return fn
    return register


class _Batched:
    """Runs a module on stacked state {name: (M, ...)} and inputs (M, N, ...): registered
    modules as batched products, anything else under vmap of its own forward."""

    def __init__(self, module: nn.Module, state: dict[str, torch.Tensor], native: bool):
        self.root, self.state, self.native = module, state, native

    def __call__(self, module: nn.Module, prefix: str, *xs: torch.Tensor) -> torch.Tensor:
        handler = _NATIVE.get(type(module)) if self.native else None
        if handler is None:
            sub = {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}
            return vmap(lambda s, *a: functional_call(module, s, a))(sub, *xs)
        return handler(self, module, prefix, *xs)

    def child(self, module: nn.Module, prefix: str, name: str, *xs: torch.Tensor) -> torch.Tensor:
        return self(getattr(module, name), f"{prefix}{name}.", *xs)


@_native(_Member)
def _member(run: _Batched, m: _Member, p: str, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return run.child(m, p, "critic", run.child(m, p, "g1", x1), run.child(m, p, "g2", x2))


@_native(nn.Linear)
def _linear(run: _Batched, m: nn.Linear, p: str, x: torch.Tensor) -> torch.Tensor:
    w = run.state[p + "weight"].transpose(1, 2)
    return torch.bmm(x, w) if m.bias is None else torch.baddbmm(run.state[p + "bias"].unsqueeze(1), x, w)


@_native(nn.Sequential)
def _sequential(run: _Batched, m: nn.Sequential, p: str, x: torch.Tensor) -> torch.Tensor:
    for name in m._modules:
        x = run.child(m, p, name, x)
    return x


_native(nn.ReLU)(lambda run, m, p, x: torch.relu(x))
_native(nn.Identity)(lambda run, m, p, x: x)
_native(encoders.MLPEncoder)(lambda run, m, p, x: run.child(m, p, "net", x))


@_native(encoders.ResidualMLPEncoder)
def _residual(run: _Batched, m: encoders.ResidualMLPEncoder, p: str, x: torch.Tensor) -> torch.Tensor:
    last = len(m.layers) - 1
    for i, layer in enumerate(m.layers):
        h = run(layer, f"{p}layers.{i}.", x)
        x = (h if i == last else torch.relu(h)) + x
    return x


@_native(encoders.AdditiveCoupling)
def _additive(run: _Batched, m: encoders.AdditiveCoupling, p: str, x: torch.Tensor) -> torch.Tensor:
    a, b = x[..., : m.masked], x[..., m.masked:]
    return torch.cat([a, b + run.child(m, p, "shift", a)], dim=-1)


@_native(encoders.AffineCoupling)
def _affine(run: _Batched, m: encoders.AffineCoupling, p: str, x: torch.Tensor) -> torch.Tensor:
    a, b = x[..., : m.masked], x[..., m.masked:]
    raw_scale, shift = run.child(m, p, "net", a).chunk(2, dim=-1)
    return torch.cat([a, b * (torch.nn.functional.softplus(raw_scale) + m.eps) + shift], dim=-1)


@_native(encoders.Permutation)
def _permutation(run: _Batched, m: encoders.Permutation, p: str, x: torch.Tensor) -> torch.Tensor:
    return torch.take_along_dim(x, run.state[p + "permutation"][:, None, :], dim=-1)


@_native(encoders.RealNVP)
def _realnvp(run: _Batched, m: encoders.RealNVP, p: str, x: torch.Tensor) -> torch.Tensor:
    for i, step in enumerate(m.steps):
        x = run(step, f"{p}steps.{i}.", x)
    return x


_native(critics.BilinearCritic)(lambda run, m, p, x, y: torch.bmm(torch.bmm(x, run.state[p + "weight"]), y.mT))
_native(critics.InnerProductCritic)(lambda run, m, p, x, y: torch.bmm(x, y.mT))
_native(critics.SeparableCritic)(
    lambda run, m, p, x, y: torch.bmm(run.child(m, p, "phi_x", x), run.child(m, p, "phi_y", y).mT))


@_native(critics.ConcatCritic)
def _concat(run: _Batched, m: critics.ConcatCritic, p: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # As ConcatCritic.forward: the first layer split, so the K² pairs cost (K + K) products.
    w, bias = run.state[f"{p}net.0.weight"], run.state[f"{p}net.0.bias"]
    dx, (n, k, ky) = x.shape[-1], (x.shape[0], x.shape[1], y.shape[1])
    h = torch.bmm(x, w[..., :dx].mT)[:, :, None, :] + torch.bmm(y, w[..., dx:].mT)[:, None, :, :] + bias[:, None, None, :]
    h = h.reshape(n, k * ky, -1)
    for name in list(m.net._modules)[1:]:
        h = run.child(m.net, f"{p}net.", name, h)
    return h.reshape(n, k, ky)


# ------------------------------------------------------------------------------ ensemble
class Ensemble:
    """M members (g1, g2, critic) of one architecture, parameters stacked in `flat` (M, P).

    `params[name]` is a (M, *shape) view of `flat` (a leaf that requires grad); `buffers[name]`
    (M, *shape) holds each member's buffers (e.g. a flow's permutations). Build with
    `from_modules`; `member_modules(i)` gives member i back as plain modules.
    """

    def __init__(self, template: _Member, flat: torch.Tensor, layout: list[tuple[str, int, int, tuple[int, ...]]],
                 buffers: dict[str, torch.Tensor], engine: str = "native"):
        if engine not in ENGINES:
            raise InputValueError(f"Ensemble: engine is {engine!r}; one of {', '.join(ENGINES)} is required.")
        self.template, self.flat, self.layout, self.buffers, self.engine = template, flat, layout, buffers, engine
        m = flat.shape[0]
        self.params = {name: flat[:, a:b].view(m, *shape).requires_grad_() for name, a, b, shape in layout}
        self._checked = engine != "native"

    @classmethod
    def from_modules(cls, members: Sequence[Triple], *, device: torch.device | str | None = None,
                     engine: str = "native") -> "Ensemble":
        """Stack the parameters and buffers of `members`, a sequence of (g1, g2, critic) with the
        same architecture (module types, parameter and buffer names and shapes). The modules are
        not changed; their current values are copied to `device` (default: the first member's)."""
        if not isinstance(members, (list, tuple)) or not members:
            raise InputTypeError(f"Ensemble.from_modules: members is {type(members).__name__}; a non-empty list of "
                                 "(g1, g2, critic) triples of nn.Module is required.")
        wrapped = []
        for i, triple in enumerate(members):
            if not (isinstance(triple, (list, tuple)) and len(triple) == 3
                    and all(isinstance(t, nn.Module) for t in triple)):
                raise InputTypeError(f"Ensemble.from_modules: members[{i}] is not a (g1, g2, critic) triple of nn.Module.")
            wrapped.append(_Member(*triple))
        params = [dict(w.named_parameters()) for w in wrapped]
        bufs = [{**dict(w.named_buffers()), **{k: p for k, p in params[j].items() if not p.requires_grad}}
                for j, w in enumerate(wrapped)]
        params = [{k: p for k, p in ps.items() if p.requires_grad} for ps in params]
        _check_same_architecture(wrapped, params, bufs)
        device = torch.device(device) if device is not None else next(
            (t.device for t in [*params[0].values(), *bufs[0].values()]), torch.device("cpu"))
        dtypes = {p.dtype for p in params[0].values()}
        if len(dtypes) > 1:
            raise InputTypeError(f"Ensemble.from_modules: the parameters have dtypes {sorted(map(str, dtypes))}; one "
                                 "floating dtype is required. Cast the modules first, e.g. module.float().")
        dtype = dtypes.pop() if dtypes else torch.get_default_dtype()
        layout, offset = [], 0
        for name, p in params[0].items():
            layout.append((name, offset, offset + p.numel(), tuple(p.shape)))
            offset += p.numel()
        with torch.no_grad():
            flat = torch.stack([torch.cat([p.detach().reshape(-1).to(device, dtype) for p in ps.values()])
                                if ps else torch.zeros(0, device=device, dtype=dtype) for ps in params])
            buffers = {name: torch.stack([b[name].detach().to(device) for b in bufs]) for name in bufs[0]}
        template = copy.deepcopy(wrapped[0]).to(device)
        return cls(template, flat, layout, buffers, engine)

    @property
    def n_members(self) -> int:
        return self.flat.shape[0]

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    def scores(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Every member's (K, K) score matrix on its own batch: x1 (M, K, d1), x2 (M, K, d2) -> (M, K, K)."""
        if not self._checked:
            self._check_native(x1, x2)
        state = {**self.params, **self.buffers}
        return _Batched(self.template, state, self.engine == "native")(self.template, "", x1, x2)

    @torch.no_grad()
    def _check_native(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        """Once: the batched products must give what member 0's own modules give; if a module's
        forward changed since they were written, fall back to vmap of the modules' own code."""
        self._checked = True
        state = {k: v[:1] for k, v in {**self.params, **self.buffers}.items()}
        native = _Batched(self.template, state, True)(self.template, "", x1[:1], x2[:1])[0]
        reference = _Member(*self.member_modules(0))(x1[0], x2[0])
        scale = float(reference.abs().max()) if reference.numel() else 0.0
        err = float((native - reference).abs().max()) if reference.numel() else 0.0
        if not math.isfinite(err) or err > 1e-3 * (1.0 + scale):
            warnings.warn(f"Ensemble: the batched forward differs from the modules' own by {err:.3g} (scores up to "
                          f"{scale:.3g}); using engine='vmap' instead. Has a module's forward changed?", stacklevel=3)
            self.engine = "vmap"

    @torch.no_grad()
    def member_modules(self, i: int) -> Triple:
        """Member i as new (g1, g2, critic) modules on the ensemble's device, holding its current values."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.n_members:
            raise InputValueError(f"Ensemble.member_modules: i is {i!r}; an integer in [0, {self.n_members}) is required.")
        member = copy.deepcopy(self.template)
        named = {**dict(member.named_parameters()), **dict(member.named_buffers())}
        for name, value in {**self.params, **self.buffers}.items():
            named[name].copy_(value[i])
        return member.g1, member.g2, member.critic

    def state_dict(self) -> dict:
        return {"flat": self.flat.detach().clone(), "buffers": {k: v.clone() for k, v in self.buffers.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.flat.copy_(state["flat"])
        for k, v in state["buffers"].items():
            self.buffers[k].copy_(v)


def _check_same_architecture(wrapped: list[_Member], params: list[dict], bufs: list[dict]) -> None:
    def signature(j: int) -> dict[str, list]:
        return {"module types": [type(m).__name__ for m in wrapped[j].modules()],
                "parameters": [(k, tuple(p.shape), p.dtype) for k, p in params[j].items()],
                "buffers": [(k, tuple(b.shape), b.dtype) for k, b in bufs[j].items()]}

    first = signature(0)
    for j in range(1, len(wrapped)):
        for what, theirs in signature(j).items():
            if theirs != first[what]:
                ours, other = next(((a, b) for a, b in zip(first[what], theirs) if a != b),
                                   (f"{len(first[what])} entries", f"{len(theirs)} entries"))
                raise InputValueError(f"Ensemble.from_modules: members[{j}] differs from members[0] in its {what} "
                                      f"({other} vs {ours}); every member must share one architecture. "
                                      "Put members of different sizes or kinds in separate ensembles.")


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
            grads = torch.autograd.grad(loss.sum(), list(ens.params.values()), allow_unused=True)
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
            coef = torch.where(self.alive, clip_coefficients(norms, self._max_norms), self._zero)  # no NaN in
            self._grad.mul_(coef[:, None])
            self.optimizer.step(self._grad, self.alive)
        self.steps_done += 1

    def _record(self, loss: torch.Tensor) -> None:
        if self._pending == self._losses.shape[1]:
            self._losses = torch.cat([self._losses, self._losses.new_full((len(loss), self.LOSS_CHUNK), math.nan)], dim=1)
        self._losses[:, self._pending] = loss
        self._pending += 1

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

    def state_dict(self) -> dict:
        return {"ensemble": self.ensemble.state_dict(), "optimizer": self.optimizer.state_dict(),
                "alive": self.alive.clone(), "first_bad_step": self.first_bad_step.clone(),
                "failure": self.failure.clone(), "steps_done": self.steps_done}

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


# ------------------------------------------------------------------------------- batches
class MemberBatches:
    """Each member's training batches and view noise drawn as `train_pair` draws them for its
    seed (`BatchSampler` on stream "batches", noise on stream "train-noise"), as (M, K, d)
    tensors on `device`. The data are copied to the device once; per step only the (M, K)
    indices and the noise travel (pinned, without blocking, on CUDA)."""

    def __init__(self, train1: np.ndarray, train2: np.ndarray, seeds: Sequence[int], batch_size: int, *,
                 noise_std: float = 0.0, noise_coupled: bool = False, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.train1, self.train2 = (torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in (train1, train2))
        self.samplers = [BatchSampler(len(train1), batch_size, stream_rng(int(s), "batches")) for s in seeds]
        self.noise = [seeded_generator(int(s), "train-noise") for s in seeds]
        self.noise_std, self.noise_coupled = float(noise_std), bool(noise_coupled)

    def __iter__(self) -> "MemberBatches":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._to_device(torch.from_numpy(np.stack([next(s) for s in self.samplers])))
        x1, x2 = self.train1[idx], self.train2[idx]
        if self.noise_std <= 0:
            return x1, x2
        k, d1, d2 = idx.shape[1], x1.shape[2], x2.shape[2]
        n1, n2 = [], []
        for g in self.noise:  # train_pair's order: view 1's noise, then view 2's, per step
            n1.append(torch.randn((k, d1), generator=g))
            n2.append(n1[-1] if self.noise_coupled else torch.randn((k, d2), generator=g))
        n1 = self._to_device(torch.stack(n1)) * self.noise_std
        n2 = n1 if self.noise_coupled else self._to_device(torch.stack(n2)) * self.noise_std
        return x1 + n1, x2 + n2

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)
