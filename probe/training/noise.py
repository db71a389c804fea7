"""Minibatches and view noise: what the training loop and the evaluation draw each step."""
from __future__ import annotations

import numpy as np
import torch

from probe.errors import InputValueError


class BatchSampler:
    """Epoch-wise shuffled minibatches of row indices, dropping the remainder (as tf.data)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        if n < batch_size:
            raise InputValueError(
                f"training: the training split has {n} pairs, fewer than the batch size {batch_size}. "
                "Lower --batch-size or use a larger dataset."
            )
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self._order, self._pos = self.rng.permutation(n), 0

    def __next__(self) -> np.ndarray:
        if self._pos + self.batch_size > self.n:
            self._order, self._pos = self.rng.permutation(self.n), 0
        idx = self._order[self._pos: self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": torch.from_numpy(self._order.copy()), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._order, self._pos = state["order"].numpy().copy(), int(state["pos"])


def add_view_noise(x1: torch.Tensor, x2: torch.Tensor, std: float, coupled: bool,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if std <= 0:
        return x1, x2
    n1 = torch.randn(x1.shape, generator=generator).to(x1.device) * std
    n2 = n1 if coupled else torch.randn(x2.shape, generator=generator).to(x2.device) * std
    return x1 + n1, x2 + n2


def noisy_numpy(a: np.ndarray, b: np.ndarray, std: float, coupled: bool,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Views with Gaussian noise of `std` (float32), the same vector on both when `coupled`
    (paper, Fig. 2); drawn once at evaluation so every step sees the same inputs."""
    if std <= 0:
        return a, b
    na = rng.normal(0.0, std, size=a.shape).astype(np.float32)
    nb = na if coupled else rng.normal(0.0, std, size=b.shape).astype(np.float32)
    return a + na, b + nb
