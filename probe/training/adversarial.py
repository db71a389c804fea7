"""Adversarial training of an invertible encoder against a linear classifier (Fig. 1c), one cell
alone or a group of cells as one vectorised model.

After `warmup_steps` classifier-only steps, every iteration takes `classifier_steps` steps of
the classifier (cross-entropy on the true labels, the flow fixed) and one step of the flow
(cross-entropy of the classifier's output against uniform), each with its own Adam; batches
come from the cell's "batches" stream, one batch per step in that order. Steps here count
encoder steps (iterations); evaluations and checkpoints fall between iterations.

`train_adversarial` is the reference loop on plain modules and `torch.optim.Adam`.
`train_adversarial_members` trains M cells at once: flows and classifiers stacked along a
leading member axis (`_Stack`, run by probe.training.ensemble's batched products), one
`BatchedAdam` per role with a learning rate per member, each member drawing its own batches
from its own sampler. Member m follows `train_adversarial`'s run for it to float rounding
(tests/test_adversarial_engine.py). A member whose encoder loss or embeddings turn non-finite
is frozen, with the status `train_adversarial` would give it, and the others go on.

Inside the study runner's `checkpointing` block both save every `checkpoint_every` encoder
steps (models, optimizers, samplers, the process's random state, the evaluations so far) and
resume from there with the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probe.data import PairData
from probe.errors import InputValueError
from probe.results import CellResult, collect_records
from probe.training.checkpoint import TrainingCheckpoint, global_rng_state, restored, set_global_rng_state, storable
from probe.training.config import evaluation_steps
from probe.training.ensemble import _Batched
from probe.training.ensemble_optim import BatchedAdam
from probe.training.noise import BatchSampler
from probe.training.probe_pool import settle
from probe.training.streams import stream_rng

# evaluate(flow, classifier) -> the evaluation's record, or None where the embeddings are not finite.
Evaluate = Callable[[nn.Module, nn.Module], "dict | None"]


@dataclass(frozen=True)
class AdversarialConfig:
    lr_classifier: float
    lr_encoder: float
    steps: int                          # encoder steps (iterations)
    batch_size: int = 128
    warmup_steps: int = 1_000           # classifier-only steps before step 0
    classifier_steps: int = 10          # classifier steps per encoder step
    eval_every: int = 400
    checkpoint_every: int | None = 1_000  # encoder steps between mid-cell checkpoints (None: off)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise InputValueError(f"adversarial training: {name} is {getattr(self, name)}; at least 1 is required.")
        if self.warmup_steps < 0 or self.classifier_steps < 0:
            raise InputValueError("adversarial training: warmup_steps and classifier_steps must be >= 0.")

    @property
    def eval_steps(self) -> np.ndarray:
        return evaluation_steps(self.steps, self.eval_every)


# Members of one group may differ only in these; everything else is one step loop.
PER_MEMBER = ("lr_classifier", "lr_encoder")


def uniform_target_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(logits) against the uniform distribution over the C classes,
    over the K rows: (..., K, C) -> (...). Per row -(1/C) Σ_c log softmax(l)_c = logsumexp(l) -
    mean(l), ln C exactly when the logits are equal."""
    return (torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1)).mean(dim=-1)


def train_adversarial(flow: nn.Module, classifier: nn.Module, data: PairData, config: AdversarialConfig, *,
                      seed: int, evaluate: Evaluate, device: torch.device | str = "cpu",
                      on_step: Callable[[int, dict], None] | None = None,
                      empty: tuple[str, ...] = ("probe_accuracy",)) -> CellResult:
    """One cell: train `flow` against `classifier` on data.train1 / train_labels; `evaluate` at
    config.eval_steps. A non-finite encoder loss or evaluation stops the run (its status says
    where). `on_step(step, last_record)` after every encoder step, its evaluation and checkpoint."""
    device = torch.device(device)
    flow.to(device).train()
    classifier.to(device).train()
    opt_c = torch.optim.Adam(classifier.parameters(), lr=config.lr_classifier)
    opt_e = torch.optim.Adam(flow.parameters(), lr=config.lr_encoder)
    sampler = BatchSampler(len(data.train1), config.batch_size, stream_rng(seed, "batches"))
    x_train, y_train = torch.from_numpy(data.train1), torch.from_numpy(data.train_labels)
    stateful = {"flow": flow, "classifier": classifier, "opt_c": opt_c, "opt_e": opt_e, "sampler": sampler}

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(next(sampler))
        return x_train[idx].to(device), y_train[idx].to(device)

    def classifier_step() -> None:
        x, y = batch()
        with torch.no_grad():
            z = flow(x)
        loss = F.cross_entropy(classifier(z), y)
        opt_c.zero_grad(set_to_none=True)
        loss.backward()
        opt_c.step()

    def encoder_step() -> float:
        x, _ = batch()
        loss = uniform_target_loss(classifier(flow(x)))
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        opt_e.step()
        return float(loss.detach())

    ckpt = TrainingCheckpoint.open(_identity([config], [seed]), config.checkpoint_every)
    saved = ckpt.load() if ckpt is not None else None
    run = _Run(1) if saved is None else _Run.resume(saved)
    if saved is not None:
        for name, obj in stateful.items():
            obj.load_state_dict(saved["state"][name])
    eval_at = set(config.eval_steps.tolist())
    start = time.perf_counter() - run.elapsed

    def evaluate_now() -> None:
        record = evaluate(flow, classifier)
        if record is None:
            run.status[0] = f"non-finite embeddings at step {run.step}"
        else:
            run.add(0, record, time.perf_counter() - start)

    if saved is None:
        for _ in range(config.warmup_steps):
            classifier_step()
        evaluate_now()
    while run.status[0] == "ok" and run.step < config.steps:
        for _ in range(config.classifier_steps):
            classifier_step()
        run.last_loss[0] = encoder_step()
        run.step += 1
        if not math.isfinite(run.last_loss[0]):
            run.status[0] = f"non-finite encoder loss at step {run.step}"
            break
        if run.step in eval_at:
            evaluate_now()
        if ckpt is not None and run.status[0] == "ok" and ckpt.due(run.step, config.steps):
            run.elapsed = time.perf_counter() - start
            settle([evaluate])  # a checkpoint keeps only complete records
            ckpt.save({**run.snapshot(), "state": {name: obj.state_dict() for name, obj in stateful.items()}})
        if on_step is not None:
            on_step(run.step, run.records[0][-1] if run.records[0] else {})
    settle([evaluate])
    return run.result(0, config.eval_steps, empty)


def train_adversarial_members(flows: Sequence[nn.Module], classifiers: Sequence[nn.Module], data: PairData,
                              configs: Sequence[AdversarialConfig], seeds: Sequence[int], *,
                              evaluators: Sequence[Evaluate], device: torch.device | str = "cpu",
                              on_step: Callable[[int, dict], None] | None = None,
                              member_context: Callable[[int], ContextManager] | None = None,
                              empty: tuple[str, ...] = ("probe_accuracy",)) -> list[CellResult]:
    """`train_adversarial` for M cells at once: member m is (flows[m], classifiers[m],
    configs[m], seeds[m], evaluators[m]). The configs may differ only in PER_MEMBER.
    `member_context(m)` is entered around what is drawn and evaluated for member m alone (its
    sampler, its evaluations). `on_step(step, last_record_of_member_0)` after every encoder step."""
    n = len(flows)
    if not n or not (len(classifiers) == len(configs) == len(seeds) == len(evaluators) == n):
        raise InputValueError(f"train_adversarial_members: {n} flows, {len(classifiers)} classifiers, {len(configs)} "
                              f"configs, {len(seeds)} seeds and {len(evaluators)} evaluators; one of each per member.")
    shared = configs[0]
    for m, config in enumerate(configs):
        differ = [f.name for f in dataclasses.fields(config)
                  if f.name not in PER_MEMBER and getattr(config, f.name) != getattr(shared, f.name)]
        if differ:
            raise InputValueError(f"train_adversarial_members: member {m} differs from member 0 in "
                                  f"{', '.join(differ)}; members of one group may differ only in {', '.join(PER_MEMBER)}.")
    around = member_context or (lambda m: contextlib.nullcontext())
    device = torch.device(device)
    flow, clf = _Stack(flows, device), _Stack(classifiers, device)
    opt_c = BatchedAdam(clf.flat, torch.tensor([c.lr_classifier for c in configs], dtype=torch.float64))
    opt_e = BatchedAdam(flow.flat, torch.tensor([c.lr_encoder for c in configs], dtype=torch.float64))
    samplers = []
    for m, seed in enumerate(seeds):
        with around(m):
            samplers.append(BatchSampler(len(data.train1), shared.batch_size, stream_rng(int(seed), "batches")))
    x_train = torch.from_numpy(np.ascontiguousarray(data.train1)).to(device)
    y_train = torch.from_numpy(np.ascontiguousarray(data.train_labels)).to(device)
    # Device-side: who still trains, when a non-finite encoder loss froze a member, the last losses.
    alive = torch.ones(n, dtype=torch.bool, device=device)
    bad_step = torch.full((n,), -1, dtype=torch.int64, device=device)
    last_loss = torch.full((n,), math.nan, dtype=torch.float64, device=device)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(np.stack([next(s) for s in samplers])).to(device)
        return x_train[idx], y_train[idx]

    def classifier_step() -> None:
        x, y = batch()
        with torch.no_grad():
            z = flow(x)
        logits = clf(z)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(n, -1).mean(dim=1)
        opt_c.step(clf.gradient(loss, alive), alive)

    def encoder_step(step: int) -> None:
        nonlocal alive, bad_step, last_loss
        x, _ = batch()
        loss = uniform_target_loss(clf(flow(x)))
        with torch.no_grad():
            last_loss = torch.where(alive, loss.detach().to(torch.float64), last_loss)
            bad = alive & ~torch.isfinite(loss)
            bad_step, alive = torch.where(bad, step, bad_step), alive & ~bad
        opt_e.step(flow.gradient(loss, alive), alive)

    evaluators = list(evaluators)
    ckpt = TrainingCheckpoint.open(_identity(configs, seeds), shared.checkpoint_every)
    saved = ckpt.load() if ckpt is not None else None
    run = _Run(n) if saved is None else _Run.resume(saved)
    if saved is not None:
        flow.load_state_dict(saved["flow"])
        clf.load_state_dict(saved["classifier"])
        opt_c.load_state_dict(saved["opt_c"])
        opt_e.load_state_dict(saved["opt_e"])
        for sampler, state in zip(samplers, saved["samplers"]):
            sampler.load_state_dict(state)
        alive, bad_step, last_loss = (saved[k].to(device) for k in ("alive", "bad_step", "last_loss"))
    eval_at = set(shared.eval_steps.tolist())
    start = time.perf_counter() - run.elapsed

    def evaluate_now() -> None:
        frozen_at, losses = bad_step.tolist(), last_loss.tolist()  # the host reads: at evaluations only
        for m in range(n):
            run.last_loss[m] = losses[m]
            if run.status[m] != "ok":
                continue
            if frozen_at[m] >= 0:
                run.status[m] = f"non-finite encoder loss at step {frozen_at[m]}"
                continue
            with around(m):
                record = evaluators[m](flow.module(m), clf.module(m))
            if record is None:
                run.status[m] = f"non-finite embeddings at step {run.step}"
                alive[m] = False
            else:
                run.add(m, record, time.perf_counter() - start)

    if saved is None:
        for _ in range(shared.warmup_steps):
            classifier_step()
        evaluate_now()
    while run.step < shared.steps and "ok" in run.status:
        for _ in range(shared.classifier_steps):
            classifier_step()
        encoder_step(run.step + 1)
        run.step += 1
        if run.step in eval_at:
            evaluate_now()
        if ckpt is not None and ckpt.due(run.step, shared.steps):
            run.elapsed = time.perf_counter() - start
            settle(evaluators)  # a checkpoint keeps only complete records
            ckpt.save({**run.snapshot(), "flow": flow.state_dict(), "classifier": clf.state_dict(),
                       "opt_c": opt_c.state_dict(), "opt_e": opt_e.state_dict(),
                       "samplers": [s.state_dict() for s in samplers], "alive": alive.cpu(),
                       "bad_step": bad_step.cpu(), "last_loss": last_loss.cpu()})
        if on_step is not None:
            on_step(run.step, run.records[0][-1] if run.records[0] else {})
    # A member frozen after the last evaluation still says why.
    for m, s in enumerate(bad_step.tolist()):
        if run.status[m] == "ok" and s >= 0:
            run.status[m] = f"non-finite encoder loss at step {s}"
    settle(evaluators)
    return [run.result(m, shared.eval_steps, empty) for m in range(n)]


class _Run:
    """What the loop has produced so far, per member; with the models, optimizers and samplers, a checkpoint."""

    def __init__(self, n: int):
        self.step, self.elapsed = 0, 0.0
        self.records: list[list[dict]] = [[] for _ in range(n)]
        self.wall: list[list[float]] = [[] for _ in range(n)]
        self.losses: list[list[float]] = [[] for _ in range(n)]
        self.last_loss, self.status = [math.nan] * n, ["ok"] * n

    def add(self, m: int, record: dict, wall: float) -> None:
        self.records[m].append(record)
        self.wall[m].append(wall)
        self.losses[m].append(self.last_loss[m])

    def result(self, m: int, eval_steps: np.ndarray, empty: tuple[str, ...]) -> CellResult:
        return collect_records(eval_steps, self.records[m], self.status[m], empty=empty, wall_time=self.wall[m],
                               loss=self.losses[m])

    def snapshot(self) -> dict:
        # The process's generators too: nothing here draws from them, but an evaluation might.
        return {"step": self.step, "elapsed": self.elapsed, "records": storable(self.records), "wall": self.wall,
                "losses": self.losses, "last_loss": self.last_loss, "status": self.status,
                "global_rng": global_rng_state()}

    @classmethod
    def resume(cls, saved: dict) -> "_Run":
        run = cls(len(saved["status"]))
        run.step, run.elapsed = int(saved["step"]), float(saved["elapsed"])
        run.records, run.wall, run.losses = restored(saved["records"]), saved["wall"], saved["losses"]
        run.last_loss, run.status = list(saved["last_loss"]), list(saved["status"])
        set_global_rng_state(saved["global_rng"])
        return run


def _identity(configs: Sequence[AdversarialConfig], seeds: Sequence[int]) -> str:
    """What a checkpoint must match: every member's seed and settings but the interval."""
    return json.dumps([{"seed": int(s), **{k: v for k, v in dataclasses.asdict(c).items() if k != "checkpoint_every"}}
                       for c, s in zip(configs, seeds)], sort_keys=True)


class _Stack:
    """M modules of one architecture as one: parameters as the rows of `flat` (M, P), buffers
    (M, ...); called on (M, N, ...) inputs it runs probe.training.ensemble's batched products
    (vmap of the module's own forward where it has none, or where they disagree with it)."""

    def __init__(self, modules: Sequence[nn.Module], device: torch.device):
        named = [dict(m.named_parameters()) for m in modules]
        shapes = [[(k, tuple(p.shape)) for k, p in ps.items()] for ps in named]
        if any(s != shapes[0] for s in shapes):
            raise InputValueError("adversarial training: the members' modules differ in their parameters; one "
                                  "architecture per group is required.")
        self.template = copy.deepcopy(modules[0]).to(device)
        self.layout, offset = [], 0
        for name, shape in shapes[0]:
            size = math.prod(shape)
            self.layout.append((name, offset, offset + size, shape))
            offset += size
        n = len(modules)
        with torch.no_grad():
            self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in ps.values()]) for ps in named]).to(device)
            self.buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in modules]).to(device)
                            for k, _ in modules[0].named_buffers()}
        # Views of `flat`, so BatchedAdam's in-place update of the rows is the parameters' update.
        self.params = {name: self.flat[:, a:b].view(n, *shape).requires_grad_() for name, a, b, shape in self.layout}
        self.grad = torch.zeros_like(self.flat)
        self._grad_views = [self.grad[:, a:b].view(n, *shape) for _, a, b, shape in self.layout]
        self._zero = self.flat.new_zeros(())
        self.native, self._checked = True, False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self._checked:
            self._check(x)
        return _Batched(self.template, {**self.params, **self.buffers}, self.native)(self.template, "", x)

    @torch.no_grad()
    def _check(self, x: torch.Tensor) -> None:
        """Once: the batched products must give member 0's own forward (a module's forward may
        have changed since they were written); else vmap of that forward."""
        self._checked = True
        reference = self.module(0)(x[0])
        state = {k: v[:1] for k, v in {**self.params, **self.buffers}.items()}
        batched = _Batched(self.template, state, True)(self.template, "", x[:1])[0]
        gap = float((batched - reference).abs().max())
        if not gap <= 1e-3 * (1.0 + float(reference.abs().max())):
            warnings.warn(f"adversarial training: the batched forward of {type(self.template).__name__} differs from "
                          f"its own by {gap:.3g}; using vmap of its forward instead.", stacklevel=3)
            self.native = False

    def gradient(self, loss: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """Each member's gradient of its own loss (M,), as rows (M, P); 0 for frozen members."""
        grads = torch.autograd.grad(loss.sum(), list(self.params.values()))
        with torch.no_grad():
            for g, view in zip(grads, self._grad_views):
                torch.where(alive.view(-1, *[1] * (g.ndim - 1)), g, self._zero, out=view)
        return self.grad

    @torch.no_grad()
    def module(self, i: int) -> nn.Module:
        """Member i as a plain module holding its current values."""
        module = copy.deepcopy(self.template)
        named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        for name, value in {**self.params, **self.buffers}.items():
            named[name].copy_(value[i])
        return module

    def state_dict(self) -> dict:
        return {"flat": self.flat.detach().cpu().clone()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.flat.copy_(state["flat"])
