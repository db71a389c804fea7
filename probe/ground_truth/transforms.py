"""Invertible maps applied to X or Y that leave the mutual information unchanged.

I(f(X); g(Y)) = I(X; Y) whenever f and g are injective and measurable with measurable inverses
(diffeomorphisms onto their image, or the Swiss-roll embedding of an interval into the plane).
Each transform here acts on a whole (n, d) array, has an explicit `inverse`, and the elementwise
ones also give their `derivative`, which is positive everywhere (strictly increasing maps). The
maps and their constants are those of the benchmark of Czyż et al., "Beyond Normal: On the
Evaluation of Mutual Information Estimators" (NeurIPS 2023).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri, ndtri_exp

from probe.errors import InputValueError

# Bisection steps: each halves the bracket, so 64 steps shrink any bracket used here
# (at most 10 wide) below one float64 ulp of the answer.
_BISECTION_STEPS = 64


def _bisect_increasing(f: Callable[[np.ndarray], np.ndarray], target: np.ndarray, lo: np.ndarray,
                       hi: np.ndarray) -> np.ndarray:
    """Solve f(x) = target elementwise for a strictly increasing f with f(lo) <= target <= f(hi)."""
    lo, hi = lo.astype(np.float64).copy(), hi.astype(np.float64).copy()
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        below = f(mid) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


class Transform(ABC):
    """A map R^d -> R^(d + added_dims) with an inverse on its image; arrays are (n, d)."""

    name: str = "transform"
    added_dims: int = 0

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply the map to every row of x (n, d); returns (n, d + added_dims)."""

    @abstractmethod
    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo `forward`: y (n, d + added_dims) -> (n, d)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Elementwise(Transform):
    """A strictly increasing scalar map applied to each coordinate.

    `derivative` is >= 0 and zero at most at isolated points (half_cube at 0).
    """

    @abstractmethod
    def derivative(self, x: np.ndarray) -> np.ndarray:
        """d forward / dx elementwise, same shape as x."""


class Identity(Elementwise):
    name = "identity"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, dtype=np.float64)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.array(y, dtype=np.float64)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        return np.ones_like(x, dtype=np.float64)


class NormalCDF(Elementwise):
    """x -> Φ(x), the standard normal CDF: R -> (0, 1); makes Gaussian marginals uniform."""

    name = "normal_cdf"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ndtr(x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return ndtri(y)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * np.square(x)) / np.sqrt(2.0 * np.pi)


class HalfCube(Elementwise):
    """x -> x |x|^(1/2), a signed x^(3/2): heavier tails.

    A homeomorphism of R (derivative 1.5 |x|^(1/2), zero only at x = 0), so MI is unchanged.
    """

    name = "half_cube"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * np.sqrt(np.abs(x))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.sign(y) * np.abs(y) ** (2.0 / 3.0)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        return 1.5 * np.sqrt(np.abs(x))


class Asinh(Elementwise):
    """x -> arcsinh(x) = log(x + sqrt(x² + 1)): tames Student-t tails to logarithmic growth."""

    name = "asinh"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.arcsinh(x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.sinh(y)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(1.0 + np.square(x))


class Wiggly(Elementwise):
    """x -> x + Σ_k a_k sin(b_k x + c_k), strictly increasing because Σ_k |a_k b_k| < 1.

    `terms` holds the (a_k, b_k, c_k). Czyż et al. (2023) use `WIGGLY_X` on X and `WIGGLY_Y` on Y.
    """

    def __init__(self, terms: Sequence[tuple[float, float, float]], name: str = "wiggly") -> None:
        self.terms = np.asarray(terms, dtype=np.float64).reshape(-1, 3)
        slope_bound = float(np.sum(np.abs(self.terms[:, 0] * self.terms[:, 1])))
        if slope_bound >= 1.0:
            raise InputValueError(
                f"Wiggly: terms have sum |a_k b_k| = {slope_bound:.3g}; a value < 1 is required so that the map "
                "is strictly increasing (derivative >= 1 - sum |a_k b_k| > 0)."
            )
        self.name = name

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = x.copy()
        for a, b, c in self.terms:
            out += a * np.sin(b * x + c)
        return out

    def derivative(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = np.ones_like(x)
        for a, b, c in self.terms:
            out += a * b * np.cos(b * x + c)
        return out

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        reach = float(np.sum(np.abs(self.terms[:, 0])))  # |forward(x) - x| <= reach
        return _bisect_increasing(self.forward, y, y - reach, y + reach)


WIGGLY_X = ((0.4, 1.0, 0.0), (0.2, 1.7, 1.0), (0.03, 3.3, -2.5))
WIGGLY_Y = ((-0.4, 0.4, 0.0), (0.17, 1.3, 3.5), (0.02, 4.3, -2.5))


class GaussianMixtureQuantile(Elementwise):
    """z -> F⁻¹(Φ(z)): sends N(0, 1) to the mixture Σ_k w_k N(m_k, 1) (the "bimodal" marginals).

    F is the mixture CDF. Czyż et al. (2023) apply the normal CDF, then a numerically inverted F;
    this is the same map, computed in log space in both tails so that it stays strictly
    increasing and invertible for every float64 input (no clipping of the tails).
    """

    def __init__(self, weights: Sequence[float], means: Sequence[float], name: str = "mixture_quantile") -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        if self.weights.shape != self.means.shape or self.weights.ndim != 1 or self.weights.size == 0:
            raise InputValueError(
                f"GaussianMixtureQuantile: weights (shape={self.weights.shape}) and means (shape={self.means.shape}) "
                "must be 1-D of one length."
            )
        if (self.weights <= 0).any() or not np.isclose(self.weights.sum(), 1.0):
            raise InputValueError(
                f"GaussianMixtureQuantile: weights are {self.weights.tolist()}; positive weights summing to 1 "
                "are required."
            )
        self.name = name

    def _log_cdf(self, x: np.ndarray) -> np.ndarray:
        terms = np.log(self.weights)[:, None] + log_ndtr(x.reshape(1, -1) - self.means[:, None])
        return np.logaddexp.reduce(terms, axis=0).reshape(x.shape)

    def _log_sf(self, x: np.ndarray) -> np.ndarray:
        terms = np.log(self.weights)[:, None] + log_ndtr(self.means[:, None] - x.reshape(1, -1))
        return np.logaddexp.reduce(terms, axis=0).reshape(x.shape)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """x -> Φ⁻¹(F(x)), through log F in the lower tail and log(1 - F) in the upper one."""
        x = np.asarray(x, dtype=np.float64)
        log_cdf, log_sf = self._log_cdf(x), self._log_sf(x)
        return np.where(log_cdf < log_sf, ndtri_exp(np.minimum(log_cdf, 0.0)), -ndtri_exp(np.minimum(log_sf, 0.0)))

    def forward(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        # Φ(x - max m) <= F(x) <= Φ(x - min m), so the solution lies in [z + min m, z + max m].
        return _bisect_increasing(self.inverse, z, z + self.means.min(), z + self.means.max())

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """φ(z) / f(F⁻¹(Φ(z))), with f the mixture density."""
        z = np.asarray(z, dtype=np.float64)
        x = self.forward(z)
        log_f = np.logaddexp.reduce(
            np.log(self.weights)[:, None] - 0.5 * np.square(x.reshape(1, -1) - self.means[:, None]), axis=0
        ).reshape(z.shape)
        return np.exp(-0.5 * np.square(z) - log_f)


BIMODAL_X = GaussianMixtureQuantile((0.3, 0.7), (0.0, 5.0), name="bimodal_x")
BIMODAL_Y = GaussianMixtureQuantile((0.5, 0.5), (-1.0, 3.0), name="bimodal_y")


class Spiral(Transform):
    """x -> R(speed · |x|²) x, R(θ) the rotation by θ in the coordinate plane (i, j) of R^d.

    R(θ) = exp(θ A) for the so(d) generator A with A[i, j] = -1, A[j, i] = 1. Rotations keep |x|,
    so the inverse is y -> R(-speed · |y|²) y: a diffeomorphism of R^d. Czyż et al. (2023) use the
    plane (0, 1) on X, (1, 2) on Y, and speed 1/d.
    """

    def __init__(self, dim: int, plane: tuple[int, int], speed: float) -> None:
        i, j = plane
        if not 0 <= i < j < dim:
            raise InputValueError(f"Spiral: plane is {plane} in {dim} dimensions; 0 <= i < j < {dim} is required.")
        self.dim, self.plane, self.speed = int(dim), (int(i), int(j)), float(speed)
        self.name = "spiral"

    def _rotate(self, x: np.ndarray, sign: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputValueError(f"Spiral: input has shape {x.shape}; (n, {self.dim}) is required.")
        i, j = self.plane
        theta = sign * self.speed * np.einsum("ij,ij->i", x, x)
        cos, sin = np.cos(theta), np.sin(theta)
        out = x.copy()
        out[:, i] = cos * x[:, i] - sin * x[:, j]
        out[:, j] = sin * x[:, i] + cos * x[:, j]
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._rotate(x, +1.0)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self._rotate(y, -1.0)


class SwissRoll(Transform):
    """u in [0, 1] -> (t cos t, t sin t) / 21 with t = 1.5π (1 + 2u): an embedding of (n, 1) into (n, 2).

    The radius t/21 grows with u, so the map is injective and u = (21 |p| / 1.5π - 1) / 2 recovers it.
    The 21 keeps the output near unit scale (Czyż et al. 2023).
    """

    name = "swissroll"
    added_dims = 1

    def forward(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] != 1:
            raise InputValueError(f"SwissRoll: input has shape {u.shape}; (n, 1) is required.")
        t = 1.5 * np.pi * (1.0 + 2.0 * u[:, 0])
        return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 21.0

    def inverse(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        t = 21.0 * np.hypot(p[:, 0], p[:, 1])
        return ((t / (1.5 * np.pi) - 1.0) / 2.0)[:, None]


class Compose(Transform):
    """outer ∘ inner: apply `inner` first."""

    def __init__(self, outer: Transform, inner: Transform) -> None:
        self.outer, self.inner = outer, inner
        self.name = f"{outer.name}∘{inner.name}"
        self.added_dims = inner.added_dims + outer.added_dims

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.outer.forward(self.inner.forward(x))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self.inner.inverse(self.outer.inverse(y))
