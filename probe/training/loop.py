"""Train two encoders and a critic on two views by maximising an MI bound (or matching it).

One call of `train_pair` is one grid cell of a study: it trains g1, g2 and the critic with
Adam, evaluates at step 0 and every `eval_every` steps (`probe.training.evaluation`), and
returns per-step arrays. The protocol follows the paper (docs/reference.md, "Common
protocol"). Inside the study runner's `checkpointing` block it saves and resumes mid-cell
checkpoints with the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from probe.data import PairData
from probe.estimators import get_estimator
from probe.results import CellResult, collect_records
from probe.training.checkpoint import TrainingCheckpoint, global_rng_state, restored, set_global_rng_state, storable
from probe.training.config import TrainConfig
from probe.training.evaluation import Evaluator, timed_evaluation
from probe.training.noise import BatchSampler, add_view_noise
from probe.training.streams import seeded_generator, stream_rng
from probe.training.timing import report_start, wants_start


def train_pair(g1: nn.Module, g2: nn.Module, critic: nn.Module, data: PairData, config: TrainConfig, *,
               seed: int, device: torch.device | str = "cpu",
               on_step: Callable[[int, dict], None] | None = None) -> CellResult:
    """Train (g1, g2, critic) jointly with Adam on `config.estimator`; evaluate on a schedule.

    Returns a `CellResult` whose variables have a leading `step` dimension. A non-finite loss
    stops this run: its status says at which step, and the remaining evaluations are NaN.
    `on_step(step, last_eval)` is called after every update (progress bars), after that step's
    evaluation and checkpoint. Inside the study runner's `probe.checkpoint.checkpointing`
    block the run saves a checkpoint every `config.checkpoint_every` updates and resumes from
    one, with the same numbers as an uninterrupted run.
    """
    device = torch.device(device)
    for m in (g1, g2, critic):
        m.to(device).train()
    params = [p for m in (g1, g2, critic) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    estimator = get_estimator(config.estimator)
    evaluate = Evaluator(data, config, seed, device, reuse_fits=True)  # C once per run, warm starts
    sampler = BatchSampler(len(data.train1), config.batch_size, stream_rng(seed, "batches"))
    noise_gen = seeded_generator(seed, "train-noise")
    train1, train2 = torch.from_numpy(data.train1), torch.from_numpy(data.train2)
    stateful = {"g1": g1, "g2": g2, "critic": critic, "optimizer": optimizer, "sampler": sampler}
    ckpt = TrainingCheckpoint.open(_identity(config, seed), config.checkpoint_every)
    saved = ckpt.load() if ckpt is not None else None
    run = _Progress() if saved is None else _resume(saved, stateful, noise_gen, evaluate)
    eval_steps = config.eval_steps
    eval_at = set(eval_steps.tolist())
    status, start = "ok", time.perf_counter() - run.elapsed

    def evaluate_now() -> bool:
        try:
            run.records.append(evaluate(g1, g2, critic, step=run.step))
        except FloatingPointError:
            return False
        run.wall.append(time.perf_counter() - start)
        run.losses.append(run.last_loss)
        return True

    evaluated = time.perf_counter()
    if saved is None and not evaluate_now():
        status = "non-finite embeddings at step 0"
    elif saved is None and wants_start():
        report_start(timed_evaluation(evaluate, 1, time.perf_counter() - evaluated))
    while status == "ok" and run.step < config.steps:
        idx = torch.from_numpy(next(sampler))
        x1, x2 = add_view_noise(train1[idx].to(device), train2[idx].to(device),
                                config.noise_std, config.noise_coupled, noise_gen)
        bound = estimator(critic(g1(x1), g2(x2)))
        loss = -bound if config.target is None else (bound - config.target).abs()
        if not torch.isfinite(loss):
            status = f"non-finite loss at step {run.step}"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        run.last_loss = float(loss.detach())
        run.step += 1
        if run.step in eval_at and not evaluate_now():
            status = f"non-finite embeddings at step {run.step}"
            break
        if ckpt is not None and ckpt.due(run.step, config.steps):
            run.elapsed = time.perf_counter() - start
            evaluate.settle()  # a checkpoint keeps only complete records
            ckpt.save(_snapshot(run, stateful, noise_gen, evaluate))
        if on_step is not None:
            on_step(run.step, run.records[-1] if run.records else {})
    evaluate.settle()
    return collect_records(eval_steps, run.records, status, wall_time=run.wall, loss=run.losses)


@dataclass
class _Progress:
    """What the loop has produced so far; with the models, optimizer and generators, a checkpoint."""

    step: int = 0                      # updates done
    records: list[dict] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    last_loss: float = math.nan
    elapsed: float = 0.0               # seconds of training before this process took over


def _snapshot(run: _Progress, stateful: dict, noise_gen: torch.Generator, evaluate: Evaluator) -> dict:
    return {"step": run.step, "state": {name: obj.state_dict() for name, obj in stateful.items()},
            "evaluator": evaluate.state_dict(),
            "train_noise": noise_gen.get_state(), "global_rng": global_rng_state(), "records": storable(run.records),
            "wall": run.wall, "losses": run.losses, "last_loss": run.last_loss, "elapsed": run.elapsed}


def _resume(saved: dict, stateful: dict, noise_gen: torch.Generator, evaluate: Evaluator) -> _Progress:
    evaluate.load_state_dict(saved.get("evaluator", {}))
    for name, obj in stateful.items():
        obj.load_state_dict(saved["state"][name])
    noise_gen.set_state(saved["train_noise"])
    set_global_rng_state(saved["global_rng"])
    return _Progress(int(saved["step"]), restored(saved["records"]), list(saved["wall"]), list(saved["losses"]),
                     float(saved["last_loss"]), float(saved["elapsed"]))


def _identity(config: TrainConfig, seed: int) -> str:
    """What a checkpoint must match to be resumed: the seed and every setting but its own interval."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_every"}
    return json.dumps({"seed": seed, **fields}, sort_keys=True, default=str)
