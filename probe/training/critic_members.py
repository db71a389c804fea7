"""Critics alone, trained as one vectorised model: M critics of one architecture on drawn pairs.

Some studies train a critic directly on pairs they draw each step, with no encoders
(noniid-negatives, estimator-validation). `CriticMembers` trains a group of such cells at once:
the critics are stacked along a leading member axis as an `Ensemble` whose encoders are the
identity (its batched products, or vmap), and each step is one forward and one backward pass
of all members and one `BatchedAdam` update, each member with its own estimator, learning rate
and Adam state (on the CPU, members with large activations go into several such models, one
after another: see CPU_SAVED_FLOATS). Member m's step is the one its cell alone makes with
`torch.optim.Adam` on -estimate: a member whose estimate turns non-finite is frozen at that
step (its status says so) while the others go on; a finite estimate's update is applied as
Adam would apply it, even where the gradient norm overflows float32 (`EnsembleTrainer`
freezes a member there, which would change these studies' numbers). Nothing in a step reads
a value back to the host.

The group's mid-cell checkpoint lives here too: `resume` loads the active plan's checkpoint
(the members' parameters and Adam states, their random streams, the study's records so far) and `save` writes one
when `due`, every `checkpoint_every` updates, so a killed group resumes to the same numbers.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from probe.training.checkpoint import TrainingCheckpoint, global_rng_state, restored, set_global_rng_state, storable
from probe.training.config import TrainConfig
from probe.training.ensemble import Ensemble
from probe.training.ensemble_optim import BatchedAdam, MemberObjective
from probe.training.streams import stream_rng

# Saved activations (floats) of the members stacked in one model, on the CPU. Measured on 2 shared
# cores (2 MiB L2 each): per member a step costs 40-50% more once one model's saved activations
# pass ~2M floats (2 noniid-negatives quick concat critics of 1.6M each, or 2 estimator-validation
# quick ones of 1.1M), while 32 small ones of 41k each run at 1/6 the cost of one alone. On a
# GPU one model of every member is what fills it.
CPU_SAVED_FLOATS = 1_500_000


class CriticMembers:
    """M critics trained together for `steps` updates, each maximising its own estimator on its
    own batches.

    `critics` share one architecture; `estimators[m]` and `lrs[m]` are member m's.
    `estimator_options` per estimator name (e.g. {"smile": {"tau": 5.0}}); `score_dtype`
    evaluates the estimators in another dtype than the critics' (torch.float64 for scores in
    the hundreds). Batches are (M, K, d) float32 tensors on `device`. `example`, one member's
    (x, y), sizes the stacked models on the CPU (see CPU_SAVED_FLOATS): members go into
    consecutive models of as many as fit.
    """

    def __init__(self, critics: Sequence[nn.Module], estimators: Sequence[str], lrs: Sequence[float], steps: int, *,
                 example: tuple[torch.Tensor, torch.Tensor] | None = None, device: torch.device | str = "cpu",
                 estimator_options: dict[str, dict] | None = None, score_dtype: torch.dtype | None = None,
                 engine: str = "native"):
        n, device, size = len(critics), torch.device(device), len(critics)
        if example is not None and device.type == "cpu":
            size = max(1, CPU_SAVED_FLOATS // saved_floats(critics[0], *example))
        self.slices = [slice(a, min(a + size, n)) for a in range(0, n, size)]
        self.models = [_Stack(critics[sl], estimators[sl], lrs[sl], steps, device, estimator_options, score_dtype,
                              engine) for sl in self.slices]
        self.device, self.n_members = device, n
        self.steps_done = 0
        self.checkpoint: TrainingCheckpoint | None = None
        self.started = time.perf_counter()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Every live member's estimate on its batch (kept, see `estimates`), then one update on it."""
        for model, sl in zip(self.models, self.slices):
            model.step(x[sl], y[sl])
        self.steps_done += 1

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's estimate on its own batch, (M,), without an update."""
        return torch.cat([model.bounds(model.ensemble.scores(x[sl], y[sl]))
                          for model, sl in zip(self.models, self.slices)])

    @torch.no_grad()
    def bounds(self, scores: torch.Tensor) -> torch.Tensor:
        """Each member's estimator on its own (K, K) scores of the (M, K, K) stack (any critic's)."""
        return torch.cat([model.bounds(scores[sl]) for model, sl in zip(self.models, self.slices)])

    def estimates(self) -> np.ndarray:
        """Every step's estimates, (M, steps) float64: each member's value on its batch before that
        step's update; NaN for steps not taken, once frozen and where not finite. Reads from the device."""
        values = torch.cat([model.estimates for model in self.models]).cpu().numpy()
        return np.where(np.isfinite(values), values, np.nan)

    def last_estimate(self, m: int) -> float:
        """Member m's estimate at the last step taken (a read from the device)."""
        model, sl = next((model, sl) for model, sl in zip(self.models, self.slices) if sl.start <= m < sl.stop)
        return float(model.estimates[m - sl.start, self.steps_done - 1]) if self.steps_done else math.nan

    def all_frozen(self, step: int) -> bool:
        """Whether every member is frozen: read each step on the CPU, where it costs nothing, and
        every 50 steps on a GPU, where it waits for the queued work."""
        if self.device.type != "cpu" and step % 50:
            return False
        return not any(bool(model.alive.any()) for model in self.models)

    def stopped_at(self) -> tuple[list[int], list[str]]:
        """Per member the step it was frozen at (-1: never) and its status, "ok" or e.g.
        "non-finite estimate at step 12" (the wording of the studies' cells)."""
        steps = torch.cat([model.frozen_at for model in self.models]).tolist()
        return steps, ["ok" if s < 0 else f"non-finite estimate at step {s}" for s in steps]

    def elapsed(self) -> float:
        """Seconds of training so far, counting those before a resumed checkpoint."""
        return time.perf_counter() - self.started

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done, "models": [model.state_dict() for model in self.models]}

    # ------------------------------------------------------------------ checkpoints
    def resume(self, identity: str, streams: Sequence[np.random.Generator],
               default_every: int | None = TrainConfig.checkpoint_every) -> tuple[int, dict | None]:
        """Open the active plan's checkpoint for this group (`identity`: everything it must match);
        if one is there, restore the members, their estimates, `streams` and the clock.
        (the next step, the saved records or None)."""
        self.checkpoint = TrainingCheckpoint.open(identity, default_every)
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        if saved is None:
            return 0, None
        for model, state in zip(self.models, saved["members"]["models"]):
            model.load_state_dict(state)
        self.steps_done = int(saved["members"]["steps_done"])
        for rng, state in zip(streams, saved["streams"]):
            rng.bit_generator.state = state
        set_global_rng_state(saved["global_rng"])
        self.started = time.perf_counter() - float(saved["elapsed"])
        return self.steps_done, restored(saved["records"])

    def due(self, step: int, total: int) -> bool:
        """Whether a checkpoint is to be written after `step` updates of `total`."""
        return self.checkpoint is not None and self.checkpoint.due(step, total)

    def save(self, step: int, streams: Sequence[np.random.Generator], records: dict) -> None:
        """Write the checkpoint after `step` updates; `records` (numpy arrays and lists) hold what
        the study needs to go on from there."""
        self.checkpoint.save({"step": step, "members": self.state_dict(),
                              "streams": [rng.bit_generator.state for rng in streams],
                              "global_rng": global_rng_state(), "elapsed": self.elapsed(),
                              "records": storable(records)})


class _Stack:
    """Consecutive members as one model: stacked parameters, their Adam state and estimates."""

    def __init__(self, critics, estimators, lrs, steps: int, device: torch.device, estimator_options, score_dtype,
                 engine: str):
        self.ensemble = ens = Ensemble.from_modules([(nn.Identity(), nn.Identity(), c) for c in critics],
                                                    device=device, engine=engine)
        m = ens.n_members
        self.objective = MemberObjective(list(estimators), [None] * m, estimator_options, ens.device)
        self.optimizer = BatchedAdam(ens.flat, torch.tensor(list(lrs), dtype=torch.float64))
        self.score_dtype = score_dtype
        # Gradients land in one (M, P) buffer laid out as the parameters (the optimizer overwrites it).
        self._grad = torch.zeros_like(ens.flat)
        self._grad_views = [self._grad[:, a:b].view(m, *shape) for _, a, b, shape in ens.layout]
        self._zero = ens.flat.new_zeros(())
        self.alive = torch.ones(m, dtype=torch.bool, device=ens.device)
        self.frozen_at = torch.full((m,), -1, dtype=torch.int64, device=ens.device)
        self.estimates = torch.full((m, steps), math.nan, dtype=torch.float64, device=ens.device)
        self.steps_done = 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        bounds = self.bounds(self.ensemble.scores(x, y))
        params = list(self.ensemble.params.values())
        grads = torch.autograd.grad((-bounds).sum(), params, allow_unused=True)
        with torch.no_grad():
            bounds = bounds.detach().to(torch.float64)
            bad = self.alive & ~torch.isfinite(bounds)
            self.frozen_at = torch.where(bad, self.steps_done, self.frozen_at)
            self.estimates[:, self.steps_done] = torch.where(self.alive, bounds, math.nan)
            self.alive = self.alive & ~bad
            for g, p, view in zip(grads, params, self._grad_views):  # frozen members' gradients become 0
                torch.where(self.alive.view(-1, *[1] * (p.ndim - 1)), self._zero if g is None else g, self._zero,
                            out=view)
            self.optimizer.step(self._grad, self.alive)
        self.steps_done += 1

    def bounds(self, scores: torch.Tensor) -> torch.Tensor:
        return self.objective.bounds(scores if self.score_dtype is None else scores.to(self.score_dtype))

    def state_dict(self) -> dict:
        return {"ensemble": self.ensemble.state_dict(), "optimizer": self.optimizer.state_dict(),
                "alive": self.alive.cpu(), "frozen_at": self.frozen_at.cpu(), "estimates": self.estimates.cpu(),
                "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.optimizer.load_state_dict(state["optimizer"])
        dev = self.ensemble.device
        self.alive, self.frozen_at, self.estimates = (state[k].to(dev) for k in ("alive", "frozen_at", "estimates"))
        self.steps_done = int(state["steps_done"])


def saved_floats(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """How many floats one forward pass of `critic` on (x, y) keeps for its backward pass."""
    sizes: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (sizes.append(t.numel()), t)[1], lambda t: t):
        critic(x, y)
    return sum(sizes)


class MemberStreams:
    """The random streams of a group's members: one generator per distinct (seed, stream), so
    members whose cells would draw the same numbers alone (the estimators of one seed) share one
    generator and its draws. `add` each member in order, inside its member context (the
    stream's seed is recorded for it there); `tags[i]` is what the i-th generator draws for."""

    def __init__(self):
        self.rngs: list[np.random.Generator] = []
        self.tags: list[Any] = []
        self.of_member: list[int] = []
        self._index: dict[tuple[int, str], int] = {}

    def add(self, seed: int, stream: str, tag: Any = None) -> int:
        """Member number len(of_member) draws from `stream` of `seed`; the generator's index."""
        rng = stream_rng(seed, stream)  # made for every member, so that each records the stream's seed
        key = (int(seed), stream)
        if key not in self._index:
            self._index[key] = len(self.rngs)
            self.rngs.append(rng)
            self.tags.append(tag)
        self.of_member.append(self._index[key])
        return self._index[key]

    def draw(self, fn: Callable[[np.random.Generator, Any], np.ndarray]) -> np.ndarray:
        """`fn(rng, tag)` once per generator, stacked per member: (M, ...)."""
        return np.stack([fn(rng, tag) for rng, tag in zip(self.rngs, self.tags)])[self.of_member]


def group_identity(settings: Any, ids_list: Sequence[dict], seeds: Sequence[int]) -> str:
    """What a group's checkpoint must match: its settings and every member's ids and seed."""
    return json.dumps({"members": [{**ids, "seed": int(s)} for ids, s in zip(ids_list, seeds)],
                       "settings": dataclasses.asdict(settings)}, sort_keys=True, default=str)
