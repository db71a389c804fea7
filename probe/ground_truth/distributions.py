"""Joint distributions P_XY whose mutual information is known in closed form (nats).

These are the untransformed ("base") distributions of the benchmark of Czyż, Grabowski, Vogt,
Beerenwinkel & Marx, "Beyond Normal: On the Evaluation of Mutual Information Estimators"
(NeurIPS 2023): a Gaussian split into an X block and a Y block, a multivariate Student-t split
the same way, and the additive-uniform-noise pair. Each one samples from a
`numpy.random.Generator`, states its MI, and evaluates the pointwise mutual information
log p(x, y) - log p(x) - log p(y), whose mean under P_XY is the MI (so the closed form can be
checked by Monte Carlo).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy.special import digamma, gammaln

from probe.errors import InputValueError
from probe.validation import check_array, check_same_length

LOG_2PI = float(np.log(2.0 * np.pi))


class JointDistribution(ABC):
    """A distribution of a pair (X, Y), X in R^dim_x and Y in R^dim_y, with closed-form MI."""

    dim_x: int
    dim_y: int

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw `n` pairs: float64 arrays of shape (n, dim_x) and (n, dim_y)."""

    @abstractmethod
    def mutual_information(self) -> float:
        """I(X; Y) in nats, in closed form."""

    @abstractmethod
    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log p(x, y) - log p(x) - log p(y) in nats, shape (n,), for x (n, dim_x) and y (n, dim_y)."""

    def mutual_information_se(self) -> float:
        """Standard error of `mutual_information()` in nats: 0 for a closed form."""
        return 0.0

    def _check_pair(self, x: np.ndarray, y: np.ndarray, caller: str) -> tuple[np.ndarray, np.ndarray]:
        x = check_array(x, name="x", caller=caller, min_samples=1)
        y = check_array(y, name="y", caller=caller, min_samples=1)
        check_same_length(x, y, names=("x", "y"), caller=caller)
        for name, arr, dim in (("x", x, self.dim_x), ("y", y, self.dim_y)):
            if arr.shape[1] != dim:
                raise InputValueError(
                    f"{caller}: {name} has {arr.shape[1]} column(s) (shape={arr.shape}); this distribution's "
                    f"{name} has {dim}."
                )
        return x, y


class MonteCarloTruth:
    """Mixin for a distribution whose MI has no closed form: I(X; Y) = E[pmi(X, Y)], averaged over
    `MC_SAMPLES` pairs drawn with the fixed seed `MC_SEED` (in chunks, once, then cached), with
    its standard error std(pmi) / sqrt(MC_SAMPLES)."""

    MC_SAMPLES = 400_000
    MC_SEED = 20_231
    _MC_CHUNK = 50_000

    def _monte_carlo(self) -> tuple[float, float]:
        cached = getattr(self, "_mc_cache", None)
        if cached is None:
            rng = np.random.default_rng(self.MC_SEED)
            total, squares, count = 0.0, 0.0, 0
            while count < self.MC_SAMPLES:
                size = min(self._MC_CHUNK, self.MC_SAMPLES - count)
                pmi = self.pointwise_mutual_information(*self.sample(size, rng))
                total, squares, count = total + pmi.sum(), squares + (pmi**2).sum(), count + size
            mean = total / count
            cached = (float(mean), float(np.sqrt(max(squares / count - mean**2, 0.0) / (count - 1))))
            self._mc_cache = cached
        return cached

    def mutual_information(self) -> float:
        """I(X; Y) in nats by Monte Carlo over MC_SAMPLES seeded pairs (see the class docstring)."""
        return self._monte_carlo()[0]

    def mutual_information_se(self) -> float:
        return self._monte_carlo()[1]


def _cholesky(matrix: np.ndarray, *, name: str, caller: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError as err:
        raise InputValueError(
            f"{caller}: {name} is not positive definite (shape={matrix.shape}); a symmetric positive definite "
            "matrix is required."
        ) from err


def _check_scatter(matrix: np.ndarray, dim_x: int, *, name: str, caller: str) -> np.ndarray:
    """Validate a joint covariance or dispersion matrix of shape (d, d), d = dim_x + dim_y."""
    matrix = check_array(matrix, name=name, caller=caller, min_samples=2)
    if matrix.shape[0] != matrix.shape[1]:
        raise InputValueError(f"{caller}: {name} is not square (shape={matrix.shape}); a (d, d) matrix is required.")
    if not 1 <= dim_x < matrix.shape[0]:
        raise InputValueError(
            f"{caller}: dim_x is {dim_x} for a {name} of shape {matrix.shape}; X and Y each need at least one "
            f"dimension, so 1 <= dim_x <= {matrix.shape[0] - 1} is required."
        )
    if not np.allclose(matrix, matrix.T, rtol=0.0, atol=1e-12):
        raise InputValueError(
            f"{caller}: {name} is not symmetric (shape={matrix.shape}); a symmetric matrix is required."
        )
    _cholesky(matrix, name=name, caller=caller)
    return matrix


def _mahalanobis_sq(z: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """z^T Σ^{-1} z per row, for Σ = chol chol^T; z (n, d) -> (n,)."""
    w = np.linalg.solve(chol, z.T)  # triangular system; d is small enough that a general solve is fine
    return np.einsum("ij,ij->j", w, w)


def _logdet(chol: np.ndarray) -> float:
    return float(2.0 * np.sum(np.log(np.diag(chol))))


def gaussian_mutual_information(covariance: np.ndarray, dim_x: int) -> float:
    """I(X; Y) = ½ (log det Σ_XX + log det Σ_YY - log det Σ) in nats for (X, Y) ~ N(μ, Σ).

    `covariance` is the joint (d, d) matrix with X in the first `dim_x` coordinates.
    """
    _, ld_x = np.linalg.slogdet(covariance[:dim_x, :dim_x])
    _, ld_y = np.linalg.slogdet(covariance[dim_x:, dim_x:])
    _, ld = np.linalg.slogdet(covariance)
    return float(0.5 * (ld_x + ld_y - ld))


def student_t_entropy(k: int, dof: float) -> float:
    """Differential entropy (nats) of a k-variate Student-t with identity dispersion and `dof` degrees.

    h = log Γ(ν/2) - log Γ((ν+k)/2) + (k/2) log(νπ) + ((ν+k)/2) (ψ((ν+k)/2) - ψ(ν/2)),
    Arellano-Valle, Contreras-Reyes & Genton (2013), Eq. 7, as used by Czyż et al. (2023).
    A dispersion Σ adds ½ log det Σ.
    """
    half = 0.5 * (dof + k)
    return float(
        gammaln(0.5 * dof) - gammaln(half) + 0.5 * k * np.log(dof * np.pi) + half * (digamma(half) - digamma(0.5 * dof))
    )


def student_t_mi_correction(dof: float, dim_x: int, dim_y: int) -> float:
    """The part of a split Student-t's MI that does not depend on the dispersion (nats, >= 0).

    h(X) + h(Y) - h(X, Y) for identity dispersion; it vanishes as dof -> infinity (the Gaussian).
    """
    return student_t_entropy(dim_x, dof) + student_t_entropy(dim_y, dof) - student_t_entropy(dim_x + dim_y, dof)


class GaussianPair(JointDistribution):
    """(X, Y) ~ N(0, Σ) with X the first `dim_x` coordinates; MI = ½ (log|Σ_XX| + log|Σ_YY| - log|Σ|)."""

    def __init__(self, covariance: np.ndarray, dim_x: int) -> None:
        self.covariance = _check_scatter(covariance, dim_x, name="covariance", caller="GaussianPair")
        self.dim_x = int(dim_x)
        self.dim_y = self.covariance.shape[0] - self.dim_x
        self._chol = np.linalg.cholesky(self.covariance)
        self._chol_x = np.linalg.cholesky(self.covariance[: self.dim_x, : self.dim_x])
        self._chol_y = np.linalg.cholesky(self.covariance[self.dim_x :, self.dim_x :])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xy = rng.standard_normal((n, self.dim_x + self.dim_y)) @ self._chol.T
        return xy[:, : self.dim_x].copy(), xy[:, self.dim_x :].copy()

    def mutual_information(self) -> float:
        return gaussian_mutual_information(self.covariance, self.dim_x)

    @staticmethod
    def _log_density(z: np.ndarray, chol: np.ndarray) -> np.ndarray:
        k = chol.shape[0]
        return -0.5 * (k * LOG_2PI + _logdet(chol) + _mahalanobis_sq(z, chol))

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = self._check_pair(x, y, "GaussianPair.pointwise_mutual_information")
        joint = self._log_density(np.hstack([x, y]), self._chol)
        return joint - self._log_density(x, self._chol_x) - self._log_density(y, self._chol_y)


class StudentPair(JointDistribution):
    """(X, Y) ~ multivariate Student-t(0, Σ, ν) with X the first `dim_x` coordinates.

    Sampled as Z / sqrt(W / ν), Z ~ N(0, Σ), W ~ χ²(ν). MI = the Gaussian MI of the dispersion Σ
    plus `student_t_mi_correction(ν, dim_x, dim_y)` (Czyż et al. 2023, Appendix; Arellano-Valle et
    al. 2013). Marginals are Student-t with the same ν and the sub-blocks of Σ.
    """

    def __init__(self, dispersion: np.ndarray, dim_x: int, dof: float) -> None:
        self.dispersion = _check_scatter(dispersion, dim_x, name="dispersion", caller="StudentPair")
        if isinstance(dof, bool) or not isinstance(dof, (int, float, np.integer, np.floating)) or not (
            np.isfinite(dof) and dof > 0
        ):
            raise InputValueError(f"StudentPair: dof is {dof!r}; a finite number > 0 is required.")
        self.dof = float(dof)
        self.dim_x = int(dim_x)
        self.dim_y = self.dispersion.shape[0] - self.dim_x
        self._chol = np.linalg.cholesky(self.dispersion)
        self._chol_x = np.linalg.cholesky(self.dispersion[: self.dim_x, : self.dim_x])
        self._chol_y = np.linalg.cholesky(self.dispersion[self.dim_x :, self.dim_x :])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z = rng.standard_normal((n, self.dim_x + self.dim_y)) @ self._chol.T
        w = rng.chisquare(self.dof, size=(n, 1))
        xy = z / np.sqrt(w / self.dof)
        return xy[:, : self.dim_x].copy(), xy[:, self.dim_x :].copy()

    def mutual_information(self) -> float:
        gaussian = gaussian_mutual_information(self.dispersion, self.dim_x)
        return gaussian + student_t_mi_correction(self.dof, self.dim_x, self.dim_y)

    def _log_density(self, z: np.ndarray, chol: np.ndarray) -> np.ndarray:
        k, nu = chol.shape[0], self.dof
        norm = gammaln(0.5 * (nu + k)) - gammaln(0.5 * nu) - 0.5 * k * np.log(nu * np.pi) - 0.5 * _logdet(chol)
        return norm - 0.5 * (nu + k) * np.log1p(_mahalanobis_sq(z, chol) / nu)

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = self._check_pair(x, y, "StudentPair.pointwise_mutual_information")
        joint = self._log_density(np.hstack([x, y]), self._chol)
        return joint - self._log_density(x, self._chol_x) - self._log_density(y, self._chol_y)


class AdditiveUniformPair(JointDistribution):
    """X ~ U(0, 1), N ~ U(-ε, ε) independent, Y = X + N (1 × 1).

    I(X; Y) = h(Y) - h(N) = ε - log(2ε) for ε <= ½ and 1/(4ε) for ε > ½: Y has a trapezoidal
    density whose ramps contribute ε (or log 2ε + 1/(4ε)) nats of entropy (Czyż et al. 2023).
    """

    def __init__(self, epsilon: float) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.integer, np.floating)) or not (
            np.isfinite(epsilon) and epsilon > 0
        ):
            raise InputValueError(f"AdditiveUniformPair: epsilon is {epsilon!r}; a finite number > 0 is required.")
        self.epsilon = float(epsilon)
        self.dim_x = 1
        self.dim_y = 1

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(0.0, 1.0, size=(n, 1))
        noise = rng.uniform(-self.epsilon, self.epsilon, size=(n, 1))
        return x, x + noise

    def mutual_information(self) -> float:
        eps = self.epsilon
        return float(eps - np.log(2.0 * eps)) if eps <= 0.5 else 0.25 / eps

    def density_y(self, y: np.ndarray) -> np.ndarray:
        """p(y) = |[0, 1] ∩ [y - ε, y + ε]| / (2ε), the trapezoid; any shape."""
        y = np.asarray(y, dtype=np.float64)
        overlap = np.minimum(1.0, y + self.epsilon) - np.maximum(0.0, y - self.epsilon)
        return np.clip(overlap, 0.0, None) / (2.0 * self.epsilon)

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        caller = "AdditiveUniformPair.pointwise_mutual_information"
        x, y = self._check_pair(x, y, caller)
        x, y = x[:, 0], y[:, 0]
        outside = (x < 0.0) | (x > 1.0) | (np.abs(y - x) > self.epsilon)
        if outside.any():
            first = int(np.argmax(outside))
            raise InputValueError(
                f"{caller}: {int(outside.sum())} pair(s) lie outside the support (first at row {first}); "
                f"0 <= x <= 1 and |y - x| <= {self.epsilon} are required, where p(x, y) > 0."
            )
        # p(x, y) = p(y | x) = 1/(2ε) on the support and p(x) = 1, so the PMI is -log(2ε p(y)).
        return -np.log(2.0 * self.epsilon * self.density_y(y))
