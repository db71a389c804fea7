"""Everything measured at one evaluation step, on fixed held-out data.

The "test" bound is computed on held-out pairs, in batches of the training batch size (the
notebook computed it on fresh training batches: docs/reference.md, "Common protocol"); the
linear probe, V-information, triplet margins and g1's Jacobian are measured on the same
encodings.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from probe.data import PairData
from probe.embeddings import embeddings_folder, save_embeddings
from probe.errors import InputValueError
from probe.estimators import get_estimator
from probe.training.config import TrainConfig
from probe.training.noise import noisy_numpy
from probe.training.streams import note_seed, stream_rng

# Evaluation chunk for encoding whole splits without building a graph.
ENCODE_CHUNK = 2048


@torch.no_grad()
def encode(encoder: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Encode a whole split in chunks; float32 (n, d_out)."""
    out = [encoder(torch.from_numpy(x[i: i + ENCODE_CHUNK]).to(device)).cpu() for i in range(0, len(x), ENCODE_CHUNK)]
    return torch.cat(out).numpy()


@torch.no_grad()
def batched_bound(g1: nn.Module, g2: nn.Module, critic: nn.Module, estimator: Callable,
                  x1: np.ndarray, x2: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Mean bound over consecutive full batches of `batch_size` pairs (a partial last batch is
    dropped: InfoNCE's cap log K depends on K)."""
    values = []
    for i in range(0, len(x1) - batch_size + 1, batch_size):
        a = torch.from_numpy(x1[i: i + batch_size]).to(device)
        b = torch.from_numpy(x2[i: i + batch_size]).to(device)
        values.append(float(estimator(critic(g1(a), g2(b)))))
    return float(np.mean(values)) if values else math.nan


def number_of_eval_batches(n_test: int, batch_size: int) -> int:
    return n_test // batch_size


class Evaluator:
    """Everything measured at one evaluation step, on fixed held-out data."""

    def __init__(self, data: PairData, config: TrainConfig, seed: int, device: torch.device):
        self.data, self.config, self.device = data, config, device
        rng = stream_rng(seed, "eval-noise")
        noisy = lambda a, b: noisy_numpy(a, b, config.noise_std, config.noise_coupled, rng)  # noqa: E731
        # Fresh noise at evaluation (paper, Fig. 2), drawn once so every step sees the same inputs.
        self.test1, self.test2 = noisy(data.test1, data.test2)
        self.train1, _ = noisy(data.train1, data.train1 if config.noise_coupled else data.train2)
        n_batches = number_of_eval_batches(len(data.test1), config.batch_size)
        if n_batches == 0:
            raise InputValueError(
                f"training: the test split has {len(data.test1)} pairs, fewer than one batch of "
                f"{config.batch_size}; the held-out bound needs at least one full batch."
            )
        order = stream_rng(seed, "eval-train-batches").permutation(len(data.train1))[: n_batches * config.batch_size]
        # The training-batch bound sees the same kind of inputs as training (noisy, if any).
        self.train_pairs = noisy(data.train1[np.sort(order)], data.train2[np.sort(order)])
        self.jacobian_inputs = self.test1[: config.jacobian_inputs] if config.jacobian_inputs else None

    def __call__(self, g1: nn.Module, g2: nn.Module, critic: nn.Module, step: int | None = None) -> dict[str, object]:
        from probe import analyzers

        estimator = get_estimator(self.config.estimator)
        bs = self.config.batch_size
        for m in (g1, g2, critic):
            m.eval()
        out: dict[str, object] = {
            "bound_test": batched_bound(g1, g2, critic, estimator, self.test1, self.test2, bs, self.device),
            "bound_train": batched_bound(g1, g2, critic, estimator, *self.train_pairs, bs, self.device),
        }
        z_train, z_test = encode(g1, self.train1, self.device), encode(g1, self.test1, self.device)
        if not (np.isfinite(z_train).all() and np.isfinite(z_test).all()):
            raise FloatingPointError("non-finite embeddings")
        # The analyzers' seeds are fixed (the same for every cell) and recorded with the cell's streams.
        probe = analyzers.linear_probe(z_train, self.data.train_labels, z_test, self.data.test_labels,
                                       protocol=self.config.probe_protocol, seed=note_seed("probe", 0))
        folder = embeddings_folder()
        if folder is not None and step is not None:
            save_embeddings(folder / f"step-{step:06d}.npz", z=z_train, y=self.data.train_labels, z_test=z_test,
                            y_test=self.data.test_labels, paired_test=encode(g2, self.test2, self.device))
        out["probe_accuracy"] = float(probe["accuracy"])
        out["probe_cross_entropy"] = float(probe["cross_entropy"])
        if self.config.analyzers:
            # Same split as the probe: V-information of the labels, margins of paired views.
            vinfo = analyzers.v_information(z_train, self.data.train_labels, test_z=z_test,
                                            test_y=self.data.test_labels, seed=note_seed("v-information", 0))
            out["v_information"] = float(vinfo["v_information"])
            z2_test = encode(g2, self.test2, self.device)
            # Margins under the critic's own similarity: the geometry InfoNCE optimises (Sec. 4).
            margins = analyzers.triplet_margins(z_test, z2_test, distance=_critic_similarity(critic, self.device),
                                                n_triplets=5000, seed=note_seed("triplets", 0))
            out["triplet_margin_mean"] = float(margins["margin_mean"])
            out["triplet_violation_fraction"] = float(margins["violation_fraction"].values.ravel()[0])
        if self.jacobian_inputs is not None:
            cond = analyzers.condition_numbers(g1, self.jacobian_inputs)
            out["log_condition_number"] = cond["log_condition_number_quantile"].values.astype(np.float64)
            # Per input too: results.combine_cells pools them over seeds, as the notebook's Fig. 2 bands.
            out["log_condition_number_input"] = cond["log_condition_number"].values.astype(np.float64)
            # ln cond of a numerically rank-deficient Jacobian is round-off (~17 in float32), not conditioning.
            out["jacobian_rank_deficient"] = float(cond["rank_deficient"].mean())
            # Condition numbers compare only between Jacobians of one shape (d_out x d_in).
            out["jacobian_shape"] = np.array([cond.attrs["d_out"], cond.attrs["d_in"]], dtype=np.float64)
            out["quantile"] = cond["quantile"].values
        for m in (g1, g2, critic):
            m.train()
        return out


def _critic_similarity(critic: nn.Module, device: torch.device) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dtype = next(critic.parameters(), torch.empty(0)).dtype

    @torch.no_grad()
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a_t, b_t = (torch.as_tensor(v, dtype=dtype, device=device) for v in (a, b))
        return critic.score_pairs(a_t, b_t).cpu().numpy()

    return similarity


def pixel_probe_accuracy(data: PairData, seed: int, noise_std: float = 0.0, protocol: str = "paper") -> float:
    """The baseline: the linear probe on raw top-half pixels (with noise, if the study adds it)."""
    from probe import analyzers

    rng = stream_rng(seed, "eval-noise")
    train1, _ = noisy_numpy(data.train1, data.train1, noise_std, True, rng)
    test1, _ = noisy_numpy(data.test1, data.test1, noise_std, True, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = analyzers.linear_probe(train1, data.train_labels, test1, data.test_labels, protocol=protocol)
    return float(probe["accuracy"])
