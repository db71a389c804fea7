"""Helpers shared by the analyzers: labelled outputs, netCDF-safe attributes, seeded splits.

Nothing here is public; each analyzer module imports what it needs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import xarray as xr

from probe.devices import MAX_FIT_THREADS, capped_blas_threads, fit_threads  # noqa: F401
from probe.errors import InputValueError
from probe.validation import check_positive_int

# Levels reported by the distribution summaries (`quantile` dimension) unless a caller asks otherwise.
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
# Predicted probabilities are clipped below at this value before the log: a probe that gives a
# held-out label probability 0 costs at most -ln(1e-12) = 27.6 nats on that sample, not inf.
PROB_FLOOR = 1e-12
NATS_PER_BIT = math.log(2.0)
# Thread caps live with the other thread and core choices (probe.devices); re-exported for the analyzers.
def var(dims: str | tuple[str, ...], values: Any, long_name: str, units: str) -> tuple:
    """One data variable in the (dims, values, attrs) form xr.Dataset accepts."""
    dims = (dims,) if isinstance(dims, str) else tuple(dims)
    return dims, np.asarray(values), {"long_name": long_name, "units": units}


def netcdf_value(value: Any) -> str | int | float:
    """A parameter as a netCDF attribute: bools -> 0/1, None -> "none", sequences -> "a,b,c"."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return ",".join(str(netcdf_value(v)) for v in np.asarray(value, dtype=object).ravel())
    if callable(value):
        return getattr(value, "__qualname__", None) or type(value).__name__
    return str(value)


def make_dataset(analyzer: str, method: str, data_vars: dict, *, coords: dict | None = None,
                 reference: str, **params: Any) -> xr.Dataset:
    """Assemble an analyzer's output with the attributes every analyzer records.

    `method` names the variant computed (protocol, estimator family, sampling mode);
    `params` are the analyzer's arguments, stored as netCDF-safe attributes.
    """
    attrs = {"analyzer": analyzer, "method": method, "reference": reference}
    attrs.update({key: netcdf_value(value) for key, value in params.items()})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def check_seed(seed: Any, caller: str) -> int:
    return check_positive_int(seed, name="seed", caller=caller, minimum=0)


def split_indices(n: int, test_fraction: float, seed: int, *, labels: np.ndarray | None = None,
                  caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test row indices (each sorted), stratified by `labels` when given.

    The test set has round(test_fraction * n) rows; stratified, each class gets its share
    (largest remainders first) while keeping at least one of its rows in training.
    Raises InputValueError when the test set would be empty.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    sizes = np.array([g.size for g in groups])
    share = test_fraction * sizes
    n_test = np.floor(share).astype(np.int64)
    missing = max(int(math.floor(test_fraction * n + 0.5)) - int(n_test.sum()), 0)
    for i in np.argsort(-(share - n_test), kind="stable")[:missing]:
        n_test[i] += 1
    n_test = np.minimum(n_test, sizes - 1)
    test_idx = np.sort(np.concatenate([rng.permutation(g)[:k] for g, k in zip(groups, n_test)]))
    train_idx = np.setdiff1d(np.arange(n), test_idx)
    if test_idx.size == 0:
        raise InputValueError(
            f"{caller}: a test fraction of {test_fraction} of {n} samples leaves an empty test set; "
            "raise test_fraction or pass a test set."
        )
    return train_idx, test_idx


def quantiles(values: np.ndarray, levels: Iterable[float]) -> np.ndarray:
    """np.quantile's linear interpolation, made safe for +inf entries (no NaN, no warning).

    Between a finite value and +inf the quantile is +inf; between two +inf it is +inf.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    pos = np.asarray(list(levels), dtype=np.float64) * (v.size - 1)
    lo, hi = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
    a, b, frac = v[lo], v[hi], pos - lo
    with np.errstate(invalid="ignore"):
        return np.where((frac == 0) | (a == b), a, a + frac * (b - a))


def held_out_cross_entropy(proba: np.ndarray, model_classes: np.ndarray, y: np.ndarray) -> float:
    """Mean -ln p(y_i) in nats; `proba` columns follow the sorted `model_classes`.

    A test label the model never saw in training gets probability 0 (then clipped at PROB_FLOOR).
    """
    p = np.zeros(y.shape[0])
    seen = np.isin(y, model_classes)
    cols = np.searchsorted(model_classes, y[seen])
    p[seen] = proba[np.flatnonzero(seen), cols]
    return float(-np.mean(np.log(np.maximum(p, PROB_FLOOR))))


def run_quietly(fit: Callable[[], Any], categories: tuple[type[Warning], ...]) -> Any:
    """Call `fit()` with the given warning categories silenced (and nothing else)."""
    import warnings

    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("ignore", category)
        return fit()


def check_label_pair(train_y: Any, test_y: Any, *, n_train: int, n_test: int, caller: str,
                     names: tuple[str, str] = ("train_y", "test_y")) -> tuple[np.ndarray, np.ndarray]:
    """Validate train and test class labels and encode them in one shared label space.

    String labels are mapped to integers jointly (sorted order over both sets), so a class
    missing from the test set keeps its code.
    """
    from probe.validation import check_labels

    train = check_labels(train_y, name=names[0], caller=caller, n_samples=n_train, min_classes=2)
    test = check_labels(test_y, name=names[1], caller=caller, n_samples=n_test, min_classes=1)
    raw_train, raw_test = np.asarray(train_y), np.asarray(test_y)
    textual = [a.dtype == object or a.dtype.kind in "US" for a in (raw_train, raw_test)]
    if textual[0] != textual[1]:
        raise InputValueError(
            f"{caller}: {names[0]} and {names[1]} mix string and integer class labels; "
            "use the same label type for both."
        )
    if textual[0]:
        _, codes = np.unique(np.concatenate([raw_train.astype(str), raw_test.astype(str)]), return_inverse=True)
        train, test = codes[:n_train].astype(np.int64), codes[n_train:].astype(np.int64)
    return train, test


def check_positive_float(value: Any, *, name: str, caller: str) -> float:
    """Return `value` as a finite float > 0 (a regularisation strength, a learning rate)."""
    from probe.errors import InputTypeError

    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{caller}: {name} must be a number, got {type(value).__name__} {value!r}.")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise InputValueError(f"{caller}: {name} is {value}; a finite value > 0 is required.")
    return float(value)


def check_choice(value: Any, *, kind: str, choices: tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices`, else the did-you-mean UnknownNameError."""
    from probe.errors import unknown_name

    if not isinstance(value, str) or value not in choices:
        raise unknown_name(kind, value, list(choices))
    return value
