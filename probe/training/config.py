"""The settings of one training run, and how a study's settings become them.

Steps count parameter updates; evaluation at step s happens after s updates, for s = 0,
eval_every, 2·eval_every, ..., steps. `TrainConfig.from_settings` fills every field a study's
settings dataclass shares with TrainConfig in one call, so a study states only what differs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from probe.errors import InputValueError
from probe.estimators import get_estimator


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Steps count parameter updates; evaluation at step s
    happens after s updates, for s = 0, eval_every, 2·eval_every, ..., steps."""

    estimator: str
    steps: int
    batch_size: int = 128
    learning_rate: float = 1e-4
    eval_every: int = 1000
    target: float | None = None        # None: maximise the bound; else minimise |I_EST - t|
    grad_clip: float | None = None     # clip the global gradient norm (None: the paper, no clipping)
    noise_std: float = 0.0             # Gaussian noise added to the views during training
    noise_coupled: bool = False        # the same noise vector on both views (paper, Fig. 2)
    probe_protocol: str = "paper"      # linear evaluation protocol, see probe.analyzers
    jacobian_inputs: int = 0           # inputs at which g1's Jacobian is measured per evaluation
    analyzers: bool = True             # record V-information and triplet margins per evaluation
    checkpoint_every: int | None = 1000  # updates between mid-cell checkpoints (study runner only; None: off)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise InputValueError(
                    f"training: {name} is {value!r}; a {'non-negative' if name == 'steps' else 'positive'} integer is required."
                )
        if self.steps < 1:
            raise InputValueError("training: steps is 0; at least 1 training step is required. Pass --steps N with N >= 1.")
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int)
                                                  or self.checkpoint_every < 1):
            raise InputValueError(f"training: checkpoint_every is {self.checkpoint_every!r}; a positive integer "
                                  "(updates between checkpoints) or None (no checkpoints) is required.")
        if self.batch_size < 2:
            raise InputValueError(f"training: batch_size is {self.batch_size}; a bound needs K >= 2 pairs per batch.")
        get_estimator(self.estimator)  # fail early on a typo

    @property
    def eval_steps(self) -> np.ndarray:
        return evaluation_steps(self.steps, self.eval_every)

    @classmethod
    def from_settings(cls, settings: Any, **fields: Any) -> "TrainConfig":
        """A TrainConfig from a study's settings: every field of both with the settings' value,
        then `fields` (e.g. `estimator=ids["estimator"]`) on top."""
        names = {f.name for f in dataclasses.fields(cls)}
        shared = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name in names}
        return cls(**{**shared, **fields})


def evaluation_steps(steps: int, every: int) -> np.ndarray:
    """Where a run of `steps` updates evaluates: 0, every, 2 * every, ... and always the last step."""
    points = list(range(0, steps + 1, every))
    if points[-1] != steps:
        points.append(steps)
    return np.asarray(points, dtype=np.int64)
