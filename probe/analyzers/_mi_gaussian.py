"""Gaussian MI of normal scores, its per-row terms, and the checks of its one assumption.

For (X̃, Ỹ) the normal scores, the Gaussian-copula MI is I_G = -½ Σ_i ln(1 - ρ_i²) over the
canonical correlations ρ_i, with the Wishart bias correction of Ince et al. (2017). It is
exact when the scores are jointly Gaussian. Otherwise, writing D(·) ≥ 0 for the negentropy
(how far a vector is from the Gaussian of its covariance),

    I(X; Y) = I_G - D(X̃) - D(Ỹ) + D(X̃, Ỹ),

so when each view's scores are Gaussian (D(X̃) = D(Ỹ) = 0: always for one column) I_G is a
lower bound, and when a view's are not, I_G can be too high as well as too low (the
sign-mixing pairs of issue 19). `shape` tests each block with Mardia's multivariate kurtosis,
which exceeds its Gaussian value for every scale or covariance mixture, and skewness, which
curved dependence (spirals, bananas) shows (Mardia 1970); `conditional_z` tests the leading
canonical pairs, where the MI is, for a conditional mean or spread that varies with the partner
(uniform noise on a uniform signal keeps Mardia's statistics near their Gaussian values at a
few hundred rows, and the copula then reports half the MI).

Per-row terms: the influence function of I_G is pmi_G(x, y) - I_G, the pointwise MI of the
fitted Gaussian, so the estimate is the mean of pmi_G over rows (shifted by the bias
correction) and its standard error std(pmi_G) / sqrt(n) (the delta method), with no resampled
covariance to become singular.

References: Ince et al., Human Brain Mapping 38 (2017); Mardia, Biometrika 57 (1970), 519-530.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma

from probe.analyzers import _reliability as limits
from probe.analyzers._mi_data import normal_scores


@dataclass
class Shape:
    """Mardia's statistics of one block of whitened rows: relative excess kurtosis (of E[q²] / E[q]²
    over its Gaussian value (d + 2) / d, q = |u|²) and skewness b1 = Σ_ijk E[u_i u_j u_k]², each
    with its z-score under normality (Mardia 1970: n b1 / 6 ~ χ² with d(d + 1)(d + 2) / 6 degrees)."""

    kurtosis: float
    kurtosis_z: float
    skewness: float
    skewness_z: float
    dims: int = 1             # dimensions the skewness was measured in

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.kurtosis, self.kurtosis_z, self.skewness, self.skewness_z)

    @property
    def gaussian(self) -> bool:
        """Neither statistic off by more than MARDIA_Z standard errors and MARDIA_EFFECT in size."""
        return self.gaussian_at(limits.MARDIA_Z)

    def gaussian_at(self, z: float) -> bool:
        """Neither statistic off by more than `z` standard errors and MARDIA_EFFECT in size."""
        kurtosis_off = abs(self.kurtosis_z) > z and abs(self.kurtosis) > limits.MARDIA_EFFECT
        skewness_off = self.skewness_z > z and self.skewness > limits.MARDIA_EFFECT
        return not (kurtosis_off or skewness_off)

    def describe(self) -> str:
        return (f"Mardia's kurtosis {self.kurtosis:+.0%} of its Gaussian value (z = {self.kurtosis_z:.1f}), "
                f"skewness {self.skewness:.3g} (z = {self.skewness_z:.1f})")


SHAPE_STATISTICS = ("kurtosis", "kurtosis_z", "skewness", "skewness_z")


@dataclass
class Gaussian:
    """The Gaussian fit of (x̃, ỹ): corrected MI, per-row terms and the shape of each block."""

    value: float                   # bias-corrected I_G (nats)
    terms: np.ndarray              # (n,) per-row terms, mean = value
    ranks: tuple[int, int]         # dimensions kept in x and y (rank of each view's covariance)
    shapes: dict[str, Shape]       # block -> Mardia's statistics: "x", "y", "joint"
    whitened_norms: tuple[np.ndarray, np.ndarray]  # (n,) lengths of the whitened views
    saturated: int = 0             # canonical correlations equal to 1 to rounding (clipped at RHO_MAX)
    rotation_z: float = math.nan   # rotation_z of the whitened views (nan where not measured)
    conditional_z: float = math.nan  # conditional_z of the canonical pairs (nan where not measured)

    @property
    def jointly_gaussian(self) -> bool:
        """Mardia's statistics of the pair and the canonical pairs' conditional test both pass."""
        return self.shapes["joint"].gaussian and not self.conditional_z > limits.COPULA_CONDITIONAL_Z


RHO_MAX = 1.0 - 1e-12  # the largest canonical correlation kept finite: -½ ln(1 - ρ²) = 13.5 nats at most


def wishart_bias(d: int, n: int) -> float:
    """E[ln det S] - ln det Σ for the sample covariance S of n Gaussian rows in d dimensions."""
    return float(d * math.log(2.0 / (n - 1)) + digamma((n - np.arange(1, d + 1)) / 2.0).sum())


def _whiten(a: np.ndarray) -> np.ndarray:
    """Centred rows times Σ^(-1/2) on the non-degenerate eigenvectors (rank loss dropped exactly);
    the columns are in ascending order of variance, so the last ones lead."""
    centred = a - a.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / (a.shape[0] - 1))
    keep = values > 1e-10 * max(values.max(), 1e-300)
    return centred @ (vectors[:, keep] / np.sqrt(values[keep]))


def _third_moments(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(d, d, d): Σ_n w_n u_n ⊗ u_n ⊗ u_n / Σ w, in chunks of rows (memory ~ chunk · d²)."""
    d = u.shape[1]
    out = np.zeros((d, d, d))
    for lo in range(0, u.shape[0], 4096):
        part, w = u[lo:lo + 4096], weights[lo:lo + 4096]
        out += np.einsum("n,ni,nj,nk->ijk", w, part, part, part, optimize=True)
    return out / weights.sum()


def shape(u: np.ndarray, weights: np.ndarray | None = None) -> Shape:
    """Mardia's kurtosis and skewness of rows `u` (n, d) whitened to identity covariance, optionally
    weighted (a mixture component's responsibilities); at most MARDIA_MAX_DIMS / SKEW_MAX_DIMS
    trailing (leading-variance) columns are used. Dividing E[q²] by E[q]² removes the inflation a
    covariance estimated on other rows gives both moments."""
    weights = np.ones(u.shape[0]) if weights is None else weights
    total = max(float(weights.sum()), 1e-12)
    n_eff = max(total**2 / max(float((weights**2).sum()), 1e-300), 2.0)
    k = u[:, -limits.MARDIA_MAX_DIMS:] if u.shape[1] > limits.MARDIA_MAX_DIMS else u
    d = k.shape[1]
    q = (k**2).sum(axis=1)
    first, second = float(weights @ q / total), float(weights @ q**2 / total)
    expected = (d + 2) / d * first**2 * (n_eff - 1) / (n_eff + 1)
    kurtosis_z = (second - expected) / (math.sqrt(8.0 * d * (d + 2) / n_eff) * (first / d) ** 2)
    s = u[:, -limits.SKEW_MAX_DIMS:] if u.shape[1] > limits.SKEW_MAX_DIMS else u
    ds = s.shape[1]
    b1 = float((_third_moments(s, weights) ** 2).sum())
    degrees = ds * (ds + 1) * (ds + 2) / 6
    return Shape(second / expected - 1.0, kurtosis_z, b1, (n_eff * b1 / 6 - degrees) / math.sqrt(2 * degrees), ds)


def gaussian_fit(xs: np.ndarray, ys: np.ndarray) -> Gaussian:
    """I_G of the scores (xs, ys), its per-row terms, and Mardia's statistics of x, y and the pair."""
    n = xs.shape[0]
    wx, wy = _whiten(xs), _whiten(ys)
    kx, ky = wx.shape[1], wy.shape[1]
    cross = wx.T @ wy / (n - 1)
    u_basis, rho, v_basis_t = np.linalg.svd(cross, full_matrices=False)
    saturated = int((rho >= RHO_MAX).sum())
    rho = np.clip(rho, 0.0, RHO_MAX)
    u, v = wx @ u_basis, wy @ v_basis_t.T
    one = 1.0 - rho**2
    raw = float(-0.5 * np.log(one).sum())
    # pmi_G per row in canonical coordinates: Σ_i -½ ln(1 - ρ²) - (ρ² (u² + v²) - 2 ρ u v) / (2 (1 - ρ²)).
    terms = raw - ((rho**2 * (u**2 + v**2) - 2.0 * rho * u * v) / (2.0 * one)).sum(axis=1)
    correction = 0.5 * (wishart_bias(kx, n) + wishart_bias(ky, n) - wishart_bias(kx + ky, n))
    half = limits.MARDIA_MAX_DIMS // 2
    joint = _whiten(np.hstack([wx[:, -half:], wy[:, -half:]]))
    shapes = {"x": shape(wx), "y": shape(wy), "joint": shape(joint)}
    norms = (np.sqrt((wx**2).sum(axis=1)), np.sqrt((wy**2).sum(axis=1)))
    return Gaussian(raw - correction, terms - correction, (kx, ky), shapes, norms, saturated,
                    rotation_z(wx, wy, norms), math.nan if saturated else conditional_z(u, v, rho))


def conditional_z(u: np.ndarray, v: np.ndarray, rho: np.ndarray) -> float:
    """How far the leading canonical pairs (u_i, v_i) with correlations rho (descending) are from
    jointly Gaussian, as the larger z of two Bartlett tests: the residuals r_i = (v_i - rho_i u_i) /
    sqrt(1 - rho_i²) and their squares against the u_i and their squares, and the same with u and v
    swapped.

    In a Gaussian pair r is independent of u, so neither its mean (a curved regression) nor its
    spread (heteroscedasticity: uniform noise on a uniform signal, a mixture) may depend on u; the
    test looks where the MI is, which Mardia's averages over every direction dilute. At most
    COPULA_CONDITIONAL_PAIRS pairs; nan with fewer than ROWS_PER_DIM rows per feature.
    """
    k = min(limits.COPULA_CONDITIONAL_PAIRS, rho.size)
    if u.shape[0] < limits.ROWS_PER_DIM * 4 * k:
        return math.nan
    u, v, rho = u[:, :k], v[:, :k], rho[:k]
    spread = np.sqrt(1.0 - rho**2)
    r, s = (v - rho * u) / spread, (u - rho * v) / spread
    return max(_uncorrelated_z(np.hstack([u, u**2]), np.hstack([r, r**2])),
               _uncorrelated_z(np.hstack([v, v**2]), np.hstack([s, s**2])))


def _direction_features(w: np.ndarray, length: np.ndarray) -> np.ndarray:
    """u = w / |w| and, for d >= 2, the entries of u u^T - I / d (all but one diagonal): (n, p)."""
    u = w / np.maximum(length, 1e-300)[:, None]
    d = u.shape[1]
    if d == 1:
        return u
    upper = np.triu_indices(d, 1)
    return np.hstack([u, (u[:, :, None] * u[:, None, :])[:, upper[0], upper[1]], u[:, :-1] ** 2 - 1.0 / d])


def _direction_count(d: int) -> int:
    """Columns of `_direction_features` for d dimensions."""
    return 1 if d == 1 else d + d * (d - 1) // 2 + d - 1


def _uncorrelated_z(a: np.ndarray, b: np.ndarray) -> float:
    """Bartlett's test that every canonical correlation of feature blocks a and b is 0, as a z-score:
    (chi^2 - dof) / sqrt(2 dof), with chi^2 = -(n - 1 - (p + q + 1) / 2) sum ln(1 - rho^2) on p q dof."""
    wa, wb = _whiten(a), _whiten(b)
    p, q = wa.shape[1], wb.shape[1]
    rho = np.clip(np.linalg.svd(wa.T @ wb / (a.shape[0] - 1), compute_uv=False), 0.0, RHO_MAX)
    chi2 = -(a.shape[0] - 1 - (p + q + 1) / 2) * np.log(1.0 - rho**2).sum()
    return float((chi2 - p * q) / math.sqrt(2 * p * q))


def rotation_z(wx: np.ndarray, wy: np.ndarray, lengths: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """How far the whitened views are from invariance under separate rotations of x and of y, as the
    larger z of two Bartlett tests: x's direction against (its length, y), and y's against (its length, x).

    Under that invariance each direction is uniform and independent of everything else, so
    I(X; Y) = I(|X|; |Y|) and the radial KSG is an estimate, not only a lower bound (an elliptical
    pair with zero cross-scatter, such as a multivariate t with block-diagonal scatter). The test
    sees moments up to the second of the directions; nan where a view has more than
    RADIAL_MAX_VIEW_DIMS dimensions or there are fewer than RADIAL_ROWS_PER_FEATURE rows per feature.
    `lengths`: the views' row lengths, if already computed.
    """
    n, dx, dy = wx.shape[0], wx.shape[1], wy.shape[1]
    features = _direction_count(dx) + 3 + dy + _direction_count(dy)  # x's direction against (its length, y)
    if max(dx, dy) > limits.RADIAL_MAX_VIEW_DIMS or n < limits.RADIAL_ROWS_PER_FEATURE * features:
        return math.nan
    lx, ly = lengths if lengths is not None else (np.sqrt((wx**2).sum(axis=1)), np.sqrt((wy**2).sum(axis=1)))
    fx, fy = _direction_features(wx, lx), _direction_features(wy, ly)
    sx, sy = normal_scores(lx[:, None]), normal_scores(ly[:, None])
    rest_x = np.hstack([sx, sx**2, wy, fy, sy])
    rest_y = np.hstack([sy, sy**2, wx, fx, sx])
    return max(_uncorrelated_z(fx, rest_x), _uncorrelated_z(fy, rest_y))
