"""Correlated Gaussian pairs whose mutual information is known in closed form."""
from __future__ import annotations

import math

import numpy as np

from probe.errors import InputTypeError, InputValueError
from probe.validation import check_positive_int


def correlated_gaussian(n: int, dim: int, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw n pairs (x, y), each (n, dim) float32, standard normal per component, with
    corr(x_i, y_i) = rho and components independent across i; I(X; Y) = gaussian_mi(rho, dim)."""
    n = check_positive_int(n, name="n", caller="correlated_gaussian")
    dim = check_positive_int(dim, name="dim", caller="correlated_gaussian")
    rho = check_rho(rho, caller="correlated_gaussian")
    if not isinstance(rng, np.random.Generator):
        raise InputTypeError(f"correlated_gaussian: rng must be a numpy Generator, got {type(rng).__name__}.")
    x = rng.standard_normal((n, dim))
    y = rho * x + math.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
    return x.astype(np.float32), y.astype(np.float32)


def gaussian_mi(rho: float, dim: int) -> float:
    """MI in nats of `dim` independent bivariate normal pairs with correlation rho:
    -dim/2 * ln(1 - rho^2) (Cover & Thomas, Example 8.5.1)."""
    rho = check_rho(rho, caller="gaussian_mi")
    dim = check_positive_int(dim, name="dim", caller="gaussian_mi")
    return -0.5 * dim * math.log1p(-rho * rho)


def rho_for_mi(mi: float, dim: int) -> float:
    """The correlation rho >= 0 for which gaussian_mi(rho, dim) == mi (mi in nats, >= 0)."""
    dim = check_positive_int(dim, name="dim", caller="rho_for_mi")
    if isinstance(mi, bool) or not isinstance(mi, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"rho_for_mi: mi must be a number, got {type(mi).__name__} {mi!r}.")
    if not math.isfinite(mi) or mi < 0:
        raise InputValueError(f"rho_for_mi: mi is {mi}; a finite value >= 0 nats is required.")
    rho = math.sqrt(-math.expm1(-2.0 * mi / dim))
    if rho >= 1.0:  # mi/dim above about 18 nats: 1 - rho^2 underflows float64
        raise InputValueError(f"rho_for_mi: mi={mi} nats over dim={dim} is {mi / dim:.1f} nats per component; "
                              "at most about 18 is representable. Use a larger dim.")
    return rho


def check_rho(rho: float, *, caller: str) -> float:
    """Return rho as a float after checking -1 < rho < 1."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"{caller}: rho must be a number, got {type(rho).__name__} {rho!r}.")
    if not -1.0 < rho < 1.0:  # also rejects NaN
        raise InputValueError(f"{caller}: rho is {rho}; a value strictly between -1 and 1 is required "
                              "(at |rho| = 1 the mutual information is infinite).")
    return float(rho)
