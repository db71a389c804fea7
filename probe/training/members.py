"""Train M members of one architecture at once: `train_pair` for a whole group of grid cells.

The members are (g1, g2, critic) triples that share an architecture: the seeds of one grid cell,
and cells that differ only in estimator, target t or learning rate. `train_members` stacks them
into one vectorised model (`probe.training.ensemble`), draws each member's batches and noise from the
streams `train_pair` would draw them from for its seed, makes one update of every member per
step without reading anything back to the host, and evaluates each member with the same
`Evaluator` at the same steps. Member m's `CellResult` is therefore `train_pair`'s for it, to
float rounding (tests/test_members.py). A member whose loss turns non-finite is frozen and
recorded with its status; the others go on.

Inside the runner's `checkpointing` block the group saves a checkpoint every
`checkpoint_every` updates and resumes from one, as `train_pair` does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import time
from typing import Callable, ContextManager, Sequence

import torch
from torch import nn

from probe.data import PairData
from probe.errors import InputValueError
from probe.results import CellResult, collect_records
from probe.training.checkpoint import TrainingCheckpoint, global_rng_state, restored, set_global_rng_state, storable
from probe.training.config import TrainConfig
from probe.training.evaluation import Evaluator, timed_evaluation
from probe.training.loop import train_pair
from probe.training.probe_pool import settle
from probe.training.streams import _stream_seed
from probe.training.timing import report_start, wants_start

# Settings every member of one group must share: one step loop, one batch shape, one schedule.
SHARED = ("steps", "batch_size", "eval_every", "noise_std", "noise_coupled", "probe_protocol", "jacobian_inputs",
          "analyzers", "checkpoint_every")
# Settings that may differ per member.
PER_MEMBER = ("estimator", "learning_rate", "target", "grad_clip")

Triple = tuple[nn.Module, nn.Module, nn.Module]


@dataclasses.dataclass
class Member:
    """One grid cell's models and training settings, as a study builds them: trained alone by
    `train_alone`, or with the other members of its group by `train_members`. `finish` adds
    what the study derives from the trained run (e.g. L_t = |bound_test - t|)."""

    g1: nn.Module
    g2: nn.Module
    critic: nn.Module
    config: TrainConfig
    finish: Callable[[CellResult], CellResult] | None = None

    @property
    def triple(self) -> Triple:
        return self.g1, self.g2, self.critic


def train_alone(build: Callable[..., Member]) -> Callable[..., CellResult]:
    """A study's `run_cell` from its `build(settings, ids, seed, data) -> Member`: one cell, alone."""
    def run_cell(settings, ids: dict, seed: int, data: PairData, device, on_step=None) -> CellResult:
        member = build(settings, ids, seed, data)
        result = train_pair(*member.triple, data, member.config, seed=seed, device=device, on_step=on_step)
        return member.finish(result) if member.finish is not None else result
    run_cell.__doc__ = f"Train one cell alone, as {build.__name__} builds it."
    return run_cell


def check_group(configs: Sequence[TrainConfig]) -> None:
    """Raise unless every config agrees on the SHARED settings (members of one step loop)."""
    first = configs[0]
    for i, config in enumerate(configs[1:], start=1):
        differ = [f for f in SHARED if getattr(config, f) != getattr(first, f)]
        if differ:
            raise InputValueError(
                f"train_members: member {i} differs from member 0 in {', '.join(differ)}; members of one group "
                f"share {', '.join(SHARED)} and may differ only in {', '.join(PER_MEMBER)}. Train it in another group."
            )


# Dry steps timed before the step-0 evaluations: at most this many, or until this many seconds (at least one).
TIMED_STEPS, TIMING_SECONDS = 6, 5.0


def train_members(members: Sequence[Triple], data: PairData, configs: Sequence[TrainConfig], seeds: Sequence[int], *,
                  device: torch.device | str = "cpu", engine: str = "native",
                  on_step: Callable[[int, dict], None] | None = None,
                  member_context: Callable[[int], ContextManager] | None = None) -> list[CellResult]:
    """Train every (g1, g2, critic) of `members` on its own config and seed, all at once.

    `configs[m]` and `seeds[m]` are what `train_pair` would take for member m. Returns one
    CellResult per member, in order. `on_step(step, last_eval_of_member_0)` after every update.
    `member_context(m)` is entered around everything done for member m alone (its evaluator,
    its evaluations, its streams' seeds): the runner records each cell's streams and saves
    each cell's embeddings there. Inside `probe.training.timing.reporting_start` a fresh (not
    resumed) group first times a few dry steps and member 0's step-0 evaluation and reports
    them, before the other members' step-0 evaluations (M of them on 60,000 rows take minutes):
    the runner decides there whether the run goes on. Nothing it does changes a number.
    """
    setup_started = time.perf_counter()
    around = member_context or (lambda m: contextlib.nullcontext())
    from probe.training.ensemble import Ensemble, MemberBatches
    from probe.training.ensemble_optim import EnsembleTrainer

    if not (len(members) == len(configs) == len(seeds)) or not members:
        raise InputValueError(f"train_members: {len(members)} members, {len(configs)} configs and {len(seeds)} seeds; "
                              "one config and one seed per member are required.")
    check_group(configs)
    device = torch.device(device)
    shared = configs[0]
    ensemble = Ensemble.from_modules(list(members), device=device, engine=engine)
    trainer = EnsembleTrainer(ensemble, [c.estimator for c in configs], [c.learning_rate for c in configs],
                              [c.target for c in configs], [c.grad_clip for c in configs])
    batches = MemberBatches(data.train1, data.train2, seeds, shared.batch_size, noise_std=shared.noise_std,
                            noise_coupled=shared.noise_coupled, device=device)
    evaluators = []
    for m, (config, seed) in enumerate(zip(configs, seeds)):
        with around(m):
            evaluators.append(Evaluator(data, config, int(seed), device, reuse_fits=True))
            _stream_seed(int(seed), "batches"), _stream_seed(int(seed), "train-noise")  # drawn by MemberBatches
    run = _Group(len(members))
    ckpt = TrainingCheckpoint.open(_identity(configs, seeds), shared.checkpoint_every)
    saved = ckpt.load() if ckpt is not None else None
    resumed = saved is not None
    if resumed:
        run = _resume(saved, trainer, batches, evaluators)
        saved = None  # its copies of the parameters and moments would live as long as the run
    eval_steps = shared.eval_steps
    eval_at = set(eval_steps.tolist())
    start = time.perf_counter() - run.elapsed

    def evaluate(step: int, which: Sequence[int] = range(len(members))) -> None:
        statuses = trainer.statuses()  # the one host read: at evaluations only
        last = trainer.read_losses()
        for m in which:
            if last.shape[1]:
                run.last_loss[m] = float(last[m, -1])
            if run.status[m] != "ok":
                continue
            if statuses[m] != "ok":
                run.status[m] = statuses[m]
                continue
            g1, g2, critic = ensemble.member_modules(m)
            try:
                with around(m):
                    record = evaluators[m](g1, g2, critic, step=step)
            except FloatingPointError:
                run.status[m] = f"non-finite embeddings at step {step}"
                continue
            run.records[m].append(record)
            run.wall[m].append(time.perf_counter() - start)
            run.losses[m].append(run.last_loss[m])

    if not resumed and wants_start():
        setup_s = time.perf_counter() - setup_started
        step_s = _time_steps(trainer, batches, device)
        evaluated = time.perf_counter()
        evaluate(0, [0])
        report_start(timed_evaluation(evaluators[0], len(members), time.perf_counter() - evaluated, step_s, setup_s))
        evaluate(0, range(1, len(members)))
    elif not resumed:
        evaluate(0)
    while run.step < shared.steps and any(s == "ok" for s in run.status):
        x1, x2 = next(batches)
        trainer.step(x1, x2)
        run.step += 1
        if run.step in eval_at:
            evaluate(run.step)
        if ckpt is not None and ckpt.due(run.step, shared.steps):
            run.elapsed = time.perf_counter() - start
            settle(evaluators)  # a checkpoint keeps only complete records
            ckpt.save(_snapshot(run, trainer, batches, evaluators))
        if on_step is not None:
            on_step(run.step, run.records[0][-1] if run.records[0] else {})
    # A member frozen after the last evaluation (or all of them, ending the loop early) still says why.
    run.status = [mine if mine != "ok" else theirs for mine, theirs in zip(run.status, trainer.statuses())]
    settle(evaluators)
    return [collect_records(eval_steps, run.records[m], run.status[m], wall_time=run.wall[m], loss=run.losses[m])
            for m in range(len(members))]


def _time_steps(trainer, batches, device: torch.device) -> float:
    """Seconds of one update of the whole group, drawing its batches: dry steps (nothing changes),
    `TIMED_STEPS` or as many as fit in `TIMING_SECONDS`; the first holds one-time costs (the
    ensemble's check of its batched forward, first allocations), so it counts only when alone."""
    times: list[float] = []
    with trainer.dry_run():
        while len(times) < TIMED_STEPS and sum(times) < TIMING_SECONDS:
            started = time.perf_counter()
            trainer.step(*batches.throwaway(len(times)))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


@dataclasses.dataclass
class _Group:
    """What the loop has produced so far, per member; with the trainer and batches, a checkpoint."""

    n: int
    step: int = 0
    elapsed: float = 0.0
    records: list = None
    wall: list = None
    losses: list = None
    last_loss: list = None
    status: list = None

    def __post_init__(self) -> None:
        self.records = self.records or [[] for _ in range(self.n)]
        self.wall = self.wall or [[] for _ in range(self.n)]
        self.losses = self.losses or [[] for _ in range(self.n)]
        self.last_loss = self.last_loss or [math.nan] * self.n
        self.status = self.status or ["ok"] * self.n


def _snapshot(run: _Group, trainer, batches, evaluators) -> dict:
    # Live tensors, not clones: the checkpoint is written at once (clones would be the run's peak memory).
    return {"step": run.step, "trainer": trainer.state_dict(copy=False), "evaluators": [e.state_dict() for e in evaluators],
            "samplers": [s.state_dict() for s in batches.samplers], "noise": [g.get_state() for g in batches.noise],
            "global_rng": global_rng_state(), "records": storable(run.records), "wall": run.wall,
            "losses": run.losses, "last_loss": run.last_loss, "status": run.status, "elapsed": run.elapsed}


def _resume(saved: dict, trainer, batches, evaluators) -> _Group:
    trainer.load_state_dict(saved["trainer"])
    for evaluator, state in zip(evaluators, saved.get("evaluators", [{}] * len(evaluators))):
        evaluator.load_state_dict(state)
    for sampler, state in zip(batches.samplers, saved["samplers"]):
        sampler.load_state_dict(state)
    for generator, state in zip(batches.noise, saved["noise"]):
        generator.set_state(state)
    set_global_rng_state(saved["global_rng"])
    n = len(saved["status"])
    return _Group(n, int(saved["step"]), float(saved["elapsed"]), restored(saved["records"]), list(saved["wall"]),
                  list(saved["losses"]), list(saved["last_loss"]), list(saved["status"]))


def _identity(configs: Sequence[TrainConfig], seeds: Sequence[int]) -> str:
    """What a group checkpoint must match: every member's seed and settings but the interval."""
    members = [{"seed": int(s), **{k: v for k, v in dataclasses.asdict(c).items() if k != "checkpoint_every"}}
               for c, s in zip(configs, seeds)]
    return json.dumps(members, sort_keys=True, default=str)
