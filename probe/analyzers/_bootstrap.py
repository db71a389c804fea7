"""Seeded percentile bootstrap over held-out rows, and the `<var>_ci` variables it fills.

An analyzer computes its statistic once on the held-out rows (or the sampled triplets, or the
rows a fitted probe scores); `bootstrap_ci` then redraws those rows with replacement
`n_bootstrap` times and recomputes the statistic on each redraw, without refitting anything
fitted on other data. The interval is the percentile interval (Efron & Tibshirani, An
Introduction to the Bootstrap, 1993, Sec. 13.3): the alpha/2 and 1 - alpha/2 order statistics
of the replicates, alpha = 1 - level. It describes the variation from the held-out rows only:
a probe's or critic's training variation is not in it.

Redrawn rows repeat about a third of the rows, and a statistic that is not an average of
per-row terms can shift under that: spectra and similarity indices of n rows in d dimensions
(RankMe, linear CKA) move by several times their spread when d is not small against n (RankMe
of 200 x 64 standard normal rows: 61.0, replicates 57.4 to 58.7). Pass `estimate` for such a
statistic: the replicates are then recentred so that their median is the estimate, and the
interval keeps the bootstrap's spread around the value reported beside it. That spread is
then conservative: for those 200 x 64 rows the 95% interval of RankMe is 1.26 wide against
0.34 for the central 95% of RankMe over fresh draws of 200 rows (linear CKA: 0.035 against 0.023).

Usage, in an analyzer:

    n_bootstrap = check_n_bootstrap(n_bootstrap, CALLER)
    level = check_ci_level(ci_level, CALLER)
    if n_bootstrap:
        lower, upper = bootstrap_ci(lambda rows: correct[rows].mean(), correct.size,
                                    n_bootstrap=n_bootstrap, seed=seed, level=level)
        data_vars["accuracy_ci"] = ci_variable(lower, upper, "probe accuracy", "1",
                                               level=level, n_bootstrap=n_bootstrap)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from probe.errors import InputTypeError, InputValueError

CI_DIM = "interval"
CI_BOUNDS = ("lower", "upper")
CI_METHOD = "percentile bootstrap over held-out rows"
# The bootstrap draws its rows from default_rng([seed, BOOTSTRAP_STREAM]): a stream apart from the
# analyzer's own samplers (triplets, subsets, splits), which are seeded with default_rng(seed).
BOOTSTRAP_STREAM = 0xB007


def check_n_bootstrap(value: Any, caller: str) -> int:
    """Return `value` as an int >= 0: 0 turns intervals off, n > 0 draws n resamples."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(
            f"{caller}: n_bootstrap must be an integer, got {type(value).__name__} {value!r}; "
            "use 0 for no interval or a count of resamples such as 1000."
        )
    if value < 0:
        raise InputValueError(
            f"{caller}: n_bootstrap is {value}; a value >= 0 is required. "
            "Use 0 for no interval or a count of resamples such as 1000."
        )
    return int(value)


def check_ci_level(value: Any, caller: str) -> float:
    """Return `value` as a float strictly between 0 and 1 (the interval's coverage)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{caller}: ci_level must be a number, got {type(value).__name__} {value!r}.")
    if not 0.0 < float(value) < 1.0:
        raise InputValueError(
            f"{caller}: ci_level is {value}; a value strictly between 0 and 1 is required, e.g. 0.95."
        )
    return float(value)


def bootstrap_replicates(statistic: Callable[[np.ndarray], float | np.ndarray], n_rows: int, *,
                         n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, *shape) values of `statistic` on row indices drawn with replacement.

    `statistic` takes an (n_rows,) int64 array of row indices into the held-out rows (with
    repeats) and returns a float or an array of one fixed shape.
    """
    if n_rows < 1:
        raise InputValueError(f"bootstrap_ci: n_rows is {n_rows}; at least 1 held-out row is required.")
    if n_bootstrap < 1:
        raise InputValueError(f"bootstrap_ci: n_bootstrap is {n_bootstrap}; at least 1 resample is required.")
    rng = np.random.default_rng([seed, BOOTSTRAP_STREAM])
    first = np.asarray(statistic(rng.integers(0, n_rows, n_rows)), dtype=np.float64)
    out = np.empty((n_bootstrap, *first.shape))
    out[0] = first
    for b in range(1, n_bootstrap):
        out[b] = statistic(rng.integers(0, n_rows, n_rows))
    return out


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds over axis 0, as order statistics (no interpolation).

    Order statistics keep +-inf replicates meaningful (interpolating between inf and a finite
    value gives NaN); the lower bound rounds down and the upper up, so the interval never
    narrows below the nominal level. A NaN replicate is an error, never a silent NaN bound.
    """
    n_nan = int(np.isnan(replicates).sum())
    if n_nan:
        raise InputValueError(
            f"bootstrap_ci: the statistic gave NaN on {n_nan} value(s) of {replicates.shape[0]} resamples; "
            "it must be defined on every resample of the rows. Is it undefined on repeated rows?"
        )
    # Positions tail * (B - 1) and (1 - tail) * (B - 1), rounded outwards; the 1e-9 keeps float
    # error in (1 - level) / 2 (0.9 gives 0.04999...) from moving an exact position one rank out.
    last = replicates.shape[0] - 1
    tail = (1.0 - level) / 2.0
    low = int(np.floor(tail * last + 1e-9))
    high = int(np.ceil((1.0 - tail) * last - 1e-9))
    ordered = np.sort(replicates, axis=0)
    return ordered[low], ordered[high]


def bootstrap_ci(statistic: Callable[[np.ndarray], float | np.ndarray], n_rows: int, *, n_bootstrap: int,
                 seed: int, level: float = 0.95, estimate: float | np.ndarray | None = None,
                 ) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Percentile bootstrap interval of `statistic` over `n_rows` held-out rows.

    Args:
        statistic: maps an (n_rows,) array of row indices (drawn with replacement) to a float
            or an array of fixed shape; it must not refit anything on those rows' neighbours.
        n_rows: number of held-out rows (or sampled units) the indices range over.
        n_bootstrap: resamples (>= 1). seed: the resampler. level: coverage in (0, 1).
        estimate: the statistic on all rows, for a statistic the redraws bias (see the module
            docstring): the replicates are shifted so their median equals it, so the interval
            always holds it. None (for averages of per-row terms): the plain percentile interval.

    Returns:
        (lower, upper): floats for a scalar statistic, else arrays of the statistic's shape.

    Reference: Efron & Tibshirani 1993, Sec. 13.3 (percentile interval).
    """
    replicates = bootstrap_replicates(statistic, n_rows, n_bootstrap=n_bootstrap, seed=seed)
    if estimate is not None:
        with np.errstate(invalid="ignore"):  # an infinite median is left alone below
            shift = np.asarray(estimate, dtype=np.float64) - np.median(replicates, axis=0)
        replicates = replicates + np.where(np.isfinite(shift), shift, 0.0)
    lower, upper = percentile_interval(replicates, level)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def ci_variable(lower: Any, upper: Any, long_name: str, units: str, *, level: float, n_bootstrap: int,
                dims: str | Sequence[str] = (), coords: dict | None = None,
                resampled: str = "held-out rows", recentred: bool = False) -> xr.DataArray:
    """The `<var>_ci` variable: the interval along a trailing `interval` dim ("lower", "upper").

    `lower` and `upper` have the shape of the variable (over `dims`, whose coordinates may be
    given in `coords`); `long_name` and `units` are the variable's own; `resampled` names the
    units redrawn when they are not plain held-out rows (method "percentile bootstrap over
    anchor rows"); `recentred` says the interval came from `bootstrap_ci(..., estimate=...)`.
    Attributes (level, n_bootstrap, method) are netCDF-safe.
    """
    dims = (dims,) if isinstance(dims, str) else tuple(dims)
    values = np.stack([np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)], axis=-1)
    if values.ndim != len(dims) + 1:
        raise InputValueError(
            f"ci_variable: lower has shape {np.shape(lower)} but dims are {dims}; one dim per axis is required."
        )
    attrs = {"long_name": f"{level:.0%} confidence interval of the {long_name}", "units": units,
             "level": float(level), "n_bootstrap": int(n_bootstrap),
             "method": f"percentile bootstrap over {resampled}"
                       + (", replicates recentred on the estimate" if recentred else "")}
    all_coords = {**(coords or {}), CI_DIM: np.array(CI_BOUNDS)}
    return xr.DataArray(values, dims=(*dims, CI_DIM), coords=all_coords, attrs=attrs)
