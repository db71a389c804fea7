"""Mid-cell checkpoints: a long cell resumes where it stopped, with exactly the same numbers.

The study runner opens a `checkpointing(path, key)` context around one cell; `train_pair`
looks it up (no study module has to pass anything along) and, every `checkpoint_every`
updates, saves the models, the optimizer, the batch sampler, every random state it draws from
and the evaluations so far to `cells/<cell>.ckpt.pt` (temporary file, then `os.replace`, so a
kill never leaves half a checkpoint). A checkpoint is loaded only when its key (the run's
settings hash, the cell, the training call and its exact configuration) matches: one written
under other settings is ignored with a warning, never resumed. The runner deletes it once the
cell's result file is written.

A cell may call `train_pair` more than once; the calls are numbered. A checkpoint belongs to
one call: earlier calls rerun from scratch (deterministically) and leave it alone.
"""
from __future__ import annotations

import contextlib
import os
import random
import tempfile
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

FORMAT = 1


@dataclass
class CheckpointPlan:
    """Where one cell checkpoints, set by the study runner for the duration of the cell."""

    path: Path
    key: str                    # "<settings hash>/<cell file>": the run folder and the cell
    every: int | None = None    # overrides TrainConfig.checkpoint_every (--checkpoint-every)
    calls: int = 0              # train_pair calls started so far in this cell
    resumed_from: int = 0       # the step the last resumed call started from (0: from scratch)


_PLAN: ContextVar[CheckpointPlan | None] = ContextVar("probe_checkpoint_plan", default=None)


@contextlib.contextmanager
def checkpointing(path: str | os.PathLike, key: str, every: int | None = None) -> Iterator[CheckpointPlan]:
    """Let the training calls inside this block checkpoint to `path` (see the module docstring)."""
    plan = CheckpointPlan(Path(path), key, every)
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


class TrainingCheckpoint:
    """One training call's checkpoint: whether it is due, loading (checked) and saving (atomic)."""

    def __init__(self, plan: CheckpointPlan, call: int, identity: str, every: int):
        self.plan, self.call, self.every = plan, call, every
        self.key = f"{plan.key}|call {call}|{identity}"
        self.writable = True

    @classmethod
    def open(cls, identity: str, default_every: int | None) -> TrainingCheckpoint | None:
        """The active plan's checkpoint for the next training call, or None outside a plan."""
        plan = _PLAN.get()
        if plan is None:
            return None
        call, plan.calls = plan.calls, plan.calls + 1
        every = plan.every if plan.every is not None else default_every
        return cls(plan, call, identity, every) if every else None

    def load(self) -> dict | None:
        path = self.plan.path
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file: start the cell afresh
            warnings.warn(f"checkpoint {path} is unreadable ({err}); the cell starts from step 0.", stacklevel=3)
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("plan_key") != self.plan.key:
            warnings.warn(f"checkpoint {path} was written for another run or cell "
                          f"({state.get('plan_key') if isinstance(state, dict) else '?'}, expected {self.plan.key}); "
                          "it is ignored and will be overwritten.", stacklevel=3)
            return None
        if state["call"] > self.call:
            self.writable = False  # a later training call of this cell owns it
            return None
        if state["key"] != self.key:
            warnings.warn(f"checkpoint {path} holds another training configuration; the cell starts from step 0.",
                          stacklevel=3)
            return None
        self.plan.resumed_from = int(state["step"])
        return state

    def due(self, step: int, total: int) -> bool:
        return self.writable and step % self.every == 0 and step < total

    def save(self, state: dict[str, Any]) -> None:
        atomic_save({"format": FORMAT, "plan_key": self.plan.key, "key": self.key, "call": self.call, **state},
                    self.plan.path)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, flushed to disk, then renamed over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def global_rng_state() -> dict:
    """The process-wide generators (torch CPU and CUDA, numpy's legacy one, Python's `random`)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def storable(value: Any) -> Any:
    """Evaluation records with numpy arrays as tensors (what `torch.load(weights_only=True)` reads)."""
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def restored(value: Any) -> Any:
    """The inverse of `storable`."""
    if isinstance(value, dict):
        return {k: restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restored(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.numpy()
    return value
