"""Ensembles: M (g1, g2, critic) members of one architecture trained as one vectorised model.

The paper's protocol is 20 seeds per grid cell (Tschannen et al., ICLR 2020; docs/reference.md,
"Common protocol"). Rather than train the seeds one after another, an `Ensemble` stacks the
members' parameters along a leading member axis, in one (M, P) tensor, and
`probe.training.ensemble_optim.EnsembleTrainer` makes each step of all members at once: one forward
pass over (M, K, d) batches, one backward pass, one Adam update. Each member keeps its own
estimator, target, learning rate, gradient clipping, batches (`MemberBatches`), noise and Adam
state, so member m follows the run `probe.training.train_pair` would make for it alone, to
float rounding (tests/test_ensemble.py).

The forward pass runs each known module (`nn.Linear` and the encoders and critics of
`probe.encoders` / `probe.critics`) as batched products on the stacked parameters (`bmm`,
`baddbmm`, one grouped convolution for the ConvNet); any other module runs under
`torch.func.vmap` of its own forward, and so does everything with `engine="vmap"`. On the
first call the batched forward is checked once against member 0's own modules and replaced by
vmap if they disagree (a module changed since its batched form was written).
bench/ensemble_throughput.py measures both engines: on 1 CPU thread the batched products give
1.3x vmap's member-steps/s at smoke sizes (median over architectures, M >= 4; MLP 1.2-1.5x,
RealNVP 1.5-1.8x) and 0.9-1.3x at quick sizes, where the matrix products dominate either way.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from probe import critics, encoders
from probe.errors import InputTypeError, InputValueError
from probe.training.noise import BatchSampler
from probe.training.streams import seeded_generator, stream_rng

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
    return torch.cat([a, b * (F.softplus(raw_scale) + m.eps) + shift], dim=-1)


@_native(encoders.Permutation)
def _permutation(run: _Batched, m: encoders.Permutation, p: str, x: torch.Tensor) -> torch.Tensor:
    # gather on an expanded (stride-0) index: take_along_dim would also normalise the indices every call.
    return x.gather(-1, run.state[p + "permutation"][:, None, :].expand(-1, x.shape[1], -1))


@_native(encoders.RealNVP)
def _realnvp(run: _Batched, m: encoders.RealNVP, p: str, x: torch.Tensor) -> torch.Tensor:
    for i, step in enumerate(m.steps):
        x = run(step, f"{p}steps.{i}.", x)
    return x


@_native(encoders.ConvEncoder)
def _convnet(run: _Batched, m: encoders.ConvEncoder, p: str, x: torch.Tensor) -> torch.Tensor:
    # The M members' convolutions as one grouped convolution: activations are (K, M·C, H, W).
    n, k = x.shape[0], x.shape[1]
    h, w, c = m.image_shape
    z = x.reshape(n, k, h, w, c).permute(1, 0, 4, 2, 3).reshape(k, n * c, h, w)
    for name in ("conv1", "conv2"):
        conv, weight, bias = getattr(m, name), run.state[f"{p}{name}.weight"], run.state[f"{p}{name}.bias"]
        top, bottom = encoders._same_padding(z.shape[2], m.kernel, 2)
        left, right = encoders._same_padding(z.shape[3], m.kernel, 2)
        z = F.conv2d(F.pad(z, (left, right, top, bottom)), weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1),
                     stride=conv.stride, groups=n)
        z = torch.relu(z)
    channels = z.shape[1] // n
    ones = z.new_ones(channels)
    z = encoders.layer_norm(z.reshape(k * n, channels, *z.shape[2:]), ones, torch.zeros_like(ones))
    z = z.reshape(k, n, channels, *z.shape[2:])
    z = z * run.state[f"{p}norm_scale"][None, :, :, None, None] + run.state[f"{p}norm_bias"][None, :, :, None, None]
    return run.child(m, p, "head", z.mean(dim=(3, 4)).transpose(0, 1))


_native(critics.BilinearCritic)(lambda run, m, p, x, y: torch.bmm(torch.bmm(x, run.state[p + "weight"]), y.mT))
_native(critics.InnerProductCritic)(lambda run, m, p, x, y: torch.bmm(x, y.mT))
_native(critics.SeparableCritic)(
    lambda run, m, p, x, y: torch.bmm(run.child(m, p, "phi_x", x), run.child(m, p, "phi_y", y).mT))


# Above this many (pair, unit) activations per member, the concat critic runs member by member:
# one (M, K², hidden) tensor leaves the cache. One CPU thread, ms a step of 12 members, batched vs
# member by member: K = 128, hidden 200 (critic-capacity quick) 3.5x slower batched; K = 128,
# hidden 32: 48 vs 17; K = 128, hidden 10 (noniid-negatives quick): 78 vs 71; K = 32, hidden 10:
# 4.6 vs 4.6 (bench/README.md).
CONCAT_LOOP_ABOVE = 1 << 16


@_native(critics.ConcatCritic)
def _concat(run: _Batched, m: critics.ConcatCritic, p: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # As ConcatCritic.forward: the first layer split, so the K² pairs cost (K + K) products.
    w, bias = run.state[f"{p}net.0.weight"], run.state[f"{p}net.0.bias"]
    dx, (n, k, ky) = x.shape[-1], (x.shape[0], x.shape[1], y.shape[1])
    hx, hy = torch.bmm(x, w[..., :dx].mT), torch.bmm(y, w[..., dx:].mT)
    rest = list(m.net._modules)[1:]
    if k * ky * w.shape[1] > CONCAT_LOOP_ABOVE and all(type(m.net._modules[name]) in (nn.Linear, nn.ReLU) for name in rest):
        return torch.stack([_concat_member(run, m, p, i, hx[i], hy[i], bias[i]) for i in range(n)])
    h = (hx[:, :, None, :] + hy[:, None, :, :] + bias[:, None, None, :]).reshape(n, k * ky, -1)
    for name in rest:
        h = run.child(m.net, f"{p}net.", name, h)
    return h.reshape(n, k, ky)


def _concat_member(run: _Batched, m: critics.ConcatCritic, p: str, i: int, hx: torch.Tensor, hy: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
    """Member i's K x K scores from its first layer's two halves (the layers after it are
    Linear and ReLU)."""
    k, ky = hx.shape[0], hy.shape[0]
    h = (hx[:, None, :] + hy[None, :, :] + bias).reshape(k * ky, -1)
    for name in list(m.net._modules)[1:]:
        layer = m.net._modules[name]
        if isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        else:
            weight = run.state[f"{p}net.{name}.weight"][i]
            h = F.linear(h, weight, None if layer.bias is None else run.state[f"{p}net.{name}.bias"][i])
    return h.reshape(k, ky)


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
        reference = _Member(*self.member_modules(0))(x1[0], x2[0])
        scale = float(reference.abs().max()) if reference.numel() else 0.0
        try:
            native = _Batched(self.template, state, True)(self.template, "", x1[:1], x2[:1])[0]
            problem = f"differs from the modules' own by {float((native - reference).abs().max()):.3g}"
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as err:
            problem, native = f"failed ({type(err).__name__}: {err})", None
        if native is None or not float((native - reference).abs().max()) <= 1e-3 * (1.0 + scale):
            warnings.warn(f"Ensemble: the batched forward {problem} (scores up to {scale:.3g}); using engine='vmap' "
                          "instead. Has a module's forward changed?", stacklevel=3)
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

    def state_dict(self, *, copy: bool = True) -> dict:
        """The stacked parameters and buffers; `copy=False` gives the live tensors (for saving at once)."""
        keep = (lambda t: t.detach().clone()) if copy else (lambda t: t.detach())  # noqa: E731
        return {"flat": keep(self.flat), "buffers": {k: keep(v) for k, v in self.buffers.items()}}

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

    def throwaway(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch made as `next` makes one (the same gathers, the same noise draws), from
        generators of its own: no member's stream moves. For timing a step before training."""
        rng = np.random.default_rng(seed)
        idx = self._to_device(torch.from_numpy(rng.integers(0, len(self.train1), (len(self.samplers),
                                                                                  self.samplers[0].batch_size))))
        x1, x2 = self.train1[idx], self.train2[idx]
        if self.noise_std <= 0:
            return x1, x2
        gen = torch.Generator().manual_seed(seed)
        n1 = self._to_device(torch.randn(x1.shape, generator=gen)) * self.noise_std
        n2 = n1 if self.noise_coupled else self._to_device(torch.randn(x2.shape, generator=gen)) * self.noise_std
        return x1 + n1, x2 + n2

    def state_dict(self) -> dict:
        return {"samplers": [s.state_dict() for s in self.samplers], "noise": [g.get_state() for g in self.noise]}

    def load_state_dict(self, state: dict) -> None:
        for sampler, saved in zip(self.samplers, state["samplers"]):
            sampler.load_state_dict(saved)
        for gen, saved in zip(self.noise, state["noise"]):
            gen.set_state(saved)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)
