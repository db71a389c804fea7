"""Gaussian mixtures: dependence that correlations do not show, with MI by Monte Carlo.

A mixture of Gaussians has no closed-form MI, but its pointwise MI log p(x, y) - log p(x) -
log p(y) is a sum of log-sum-exps of Gaussian densities, so `MonteCarloTruth` averages it over
400,000 seeded pairs (standard error about 0.005 nats on the tasks below). Two families of
issue 19 are built on it:

- `x_mixture`: the "X-shaped" mixture. With probability w the pairs (X_i, Y_i) have
  correlation +ρ, otherwise -ρ, one sign per row shared by all d coordinate pairs. Every
  marginal is N(0, 1) and, for w = ½, every correlation between X and Y is zero, yet I(X; Y) is
  close to d·(-½ ln(1 - ρ²)) - ln 2 when d is large (the sign is then read off the data). A
  Gaussian copula sees nothing.
- `sign_mixing`: Y's coordinates come in pairs (a, b) with b = s·ρ·a + √(1 - ρ²)·e, a random
  sign s (per row, or per pair), and X = Y + σ·noise. Each of Y's coordinates is N(0, 1) and
  uncorrelated with its partner, so a Gaussian copula takes Y's coordinates for independent and
  overestimates the entropy it must subtract: it reports more MI than there is.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from probe.errors import InputValueError
from probe.ground_truth.distributions import LOG_2PI, JointDistribution, MonteCarloTruth, _cholesky, _logdet
from probe.ground_truth.tasks import Task, make_task


class GaussianMixturePair(MonteCarloTruth, JointDistribution):
    """(X, Y) ~ Σ_k w_k N(μ_k, Σ_k), X the first `dim_x` coordinates; MI by Monte Carlo.

    Args: weights (K,) positive, summing to 1; means (K, d); covariances (K, d, d), each
    symmetric positive definite; dim_x with 1 <= dim_x < d.
    """

    def __init__(self, weights, means, covariances, dim_x: int) -> None:
        caller = "GaussianMixturePair"
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.covariances = np.asarray(covariances, dtype=np.float64)
        k = self.weights.size
        if self.weights.ndim != 1 or k == 0 or (self.weights <= 0).any() or not np.isclose(self.weights.sum(), 1.0):
            raise InputValueError(f"{caller}: weights are {self.weights.tolist()}; positive weights summing to 1 "
                                  "are required.")
        if self.means.ndim != 2 or self.means.shape[0] != k or self.covariances.shape != (k, *self.means.shape[1:] * 2):
            raise InputValueError(f"{caller}: means (shape={self.means.shape}) and covariances "
                                  f"(shape={self.covariances.shape}) must be (K, d) and (K, d, d) for K = {k} weights.")
        d = self.means.shape[1]
        if not 1 <= dim_x < d:
            raise InputValueError(f"{caller}: dim_x is {dim_x} for d = {d}; 1 <= dim_x <= d - 1 is required.")
        self.dim_x, self.dim_y = int(dim_x), d - int(dim_x)
        self._chol = np.stack([_cholesky(c, name=f"covariances[{i}]", caller=caller)
                               for i, c in enumerate(self.covariances)])
        blocks = (np.arange(d), np.arange(self.dim_x), np.arange(self.dim_x, d))
        self._block_chol = [np.stack([np.linalg.cholesky(c[np.ix_(b, b)]) for c in self.covariances]) for b in blocks]
        self._blocks = blocks

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        component = rng.choice(self.weights.size, size=n, p=self.weights)
        noise = rng.standard_normal((n, self.means.shape[1]))
        z = self.means[component] + np.einsum("nij,nj->ni", self._chol[component], noise)
        return z[:, : self.dim_x].copy(), z[:, self.dim_x :].copy()

    def _log_density(self, z: np.ndarray, which: int) -> np.ndarray:
        """log of the mixture density of block `which` (0 joint, 1 X, 2 Y) at the rows of z."""
        block, chols = self._blocks[which], self._block_chol[which]
        terms = []
        for w, mean, chol in zip(self.weights, self.means, chols):
            r = np.linalg.solve(chol, (z - mean[block]).T)
            terms.append(math.log(w) - 0.5 * (block.size * LOG_2PI + _logdet(chol) + np.einsum("ij,ij->j", r, r)))
        return logsumexp(np.stack(terms), axis=0)

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = self._check_pair(x, y, "GaussianMixturePair.pointwise_mutual_information")
        return self._log_density(np.hstack([x, y]), 0) - self._log_density(x, 1) - self._log_density(y, 2)


def _check_correlation(rho: float, caller: str) -> float:
    if not (isinstance(rho, (int, float)) and 0.0 < rho < 1.0):
        raise InputValueError(f"{caller}: rho is {rho!r}; a correlation strictly between 0 and 1 is required.")
    return float(rho)


def x_mixture(dim: int, rho: float, weight: float = 0.5) -> Task:
    """X, Y in R^dim: with probability `weight` corr(X_i, Y_i) = +ρ for every i, else -ρ (one sign a row).

    Marginals N(0, I); the X-Y correlation is (2·weight - 1)·ρ, zero at weight ½.
    """
    rho = _check_correlation(rho, "x_mixture")
    if not 0.0 < weight < 1.0:
        raise InputValueError(f"x_mixture: weight is {weight!r}; a probability strictly between 0 and 1 is required.")
    eye = np.eye(dim)
    covariances = [np.block([[eye, s * rho * eye], [s * rho * eye, eye]]) for s in (1.0, -1.0)]
    suffix = "" if weight == 0.5 else f"-w{weight}"
    return make_task(f"x-mixture-{dim}-{dim}-{rho}{suffix}", "mixture",
                     f"X-shaped Gaussian mixture {dim} × {dim} (correlation ±{rho}, weight {weight} on +)",
                     GaussianMixturePair([weight, 1.0 - weight], np.zeros((2, 2 * dim)), covariances, dim))


def sign_mixing(pairs: int, rho: float, noise: float, *, per_pair: bool = False) -> Task:
    """Y = (a_1, b_1, ..., a_p, b_p) with b_j = s·ρ·a_j + √(1 - ρ²)·e_j, X = Y + noise·ε (2p × 2p).

    s is one random sign per row, or (per_pair) one per pair: 2 or 2^p equally likely components.
    """
    rho = _check_correlation(rho, "sign_mixing")
    if not noise > 0:
        raise InputValueError(f"sign_mixing: noise is {noise!r}; a standard deviation > 0 is required.")
    d = 2 * pairs
    signs = ([[s] * pairs for s in (1.0, -1.0)] if not per_pair
             else [[1.0 - 2.0 * ((code >> j) & 1) for j in range(pairs)] for code in range(2**pairs)])
    covariances = []
    for pattern in signs:
        yy = np.zeros((d, d))
        for j, s in enumerate(pattern):
            yy[2 * j: 2 * j + 2, 2 * j: 2 * j + 2] = [[1.0, s * rho], [s * rho, 1.0]]
        covariances.append(np.block([[yy + noise**2 * np.eye(d), yy], [yy, yy]]))
    k = len(covariances)
    kind = "per pair" if per_pair else "per row"
    name = f"sign-mixing-{d}-{d}-{rho}-{noise}" + ("-pairs" if per_pair else "")
    return make_task(name, "sign-mixing", f"Sign-mixed pairs {d} × {d} (ρ = {rho}, one sign {kind}, X = Y + {noise}·ε)",
                     GaussianMixturePair(np.full(k, 1.0 / k), np.zeros((k, 2 * d)), covariances, d))
