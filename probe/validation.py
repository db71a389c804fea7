"""One validator that every public entry point calls first.

Messages follow one template, after scikit-learn's `check_array`:
"{caller}: {input} {problem} (shape=...); {requirement}. {hint}".
Validators never mutate their input: they return a new (or read-only viewed) array.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from probe.errors import InputTypeError, InputValueError

# Above this many elements an analyzer would take minutes and gigabytes; say so instead.
MAX_ELEMENTS = 2_000_000_000
# Analyzers square and multiply their inputs (distances, Gram matrices, variances, scalers): above
# this magnitude x² and sums of up to 1e9 such terms overflow float64 into inf, then NaN. Real
# embeddings are many orders of magnitude below it.
MAX_ABS_VALUE = 1e100


def check_array(
    x: Any,
    *,
    name: str,
    caller: str,
    ndim: int | tuple[int, ...] = 2,
    min_samples: int = 2,
    min_features: int = 1,
    dtype: type = np.float64,
    allow_nonfinite: bool = False,
) -> np.ndarray:
    """Return `x` as a C-contiguous array of `dtype` after checking it.

    Rejects: non-array-likes, object/str/complex dtypes, ragged nested lists, wrong rank,
    fewer than `min_samples` rows, fewer than `min_features` columns, NaN or inf (unless
    `allow_nonfinite`), values that overflow `dtype`, finite values above `MAX_ABS_VALUE` in
    magnitude (their squares overflow float64), and arrays above `MAX_ELEMENTS`.
    """
    if x is None:
        raise InputTypeError(f"{caller}: {name} is None; an array is required.")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    if hasattr(x, "values") and not isinstance(x, np.ndarray) and hasattr(x, "dims"):
        x = x.values  # xarray.DataArray
    if isinstance(x, (str, bytes, dict, set)):
        raise InputTypeError(f"{caller}: {name} is a {type(x).__name__}; an array of numbers is required.")
    try:
        arr = np.asarray(x)
    except ValueError as err:  # ragged nested sequences
        raise InputValueError(
            f"{caller}: {name} is ragged (rows of different lengths); a rectangular array is required. "
            "Pad or trim the rows to one length."
        ) from err
    if arr.dtype == object:
        raise InputTypeError(
            f"{caller}: {name} has dtype object (shape={arr.shape}); a numeric dtype is required. "
            "Ragged rows or mixed types? Convert with np.asarray(x, dtype=float)."
        )
    if arr.dtype.kind not in "biuf":
        raise InputTypeError(
            f"{caller}: {name} has dtype {arr.dtype} (shape={arr.shape}); a real numeric dtype is required."
        )
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        hint = " Reshape a single feature with x.reshape(-1, 1)." if arr.ndim == 1 and 2 in ndims else ""
        raise InputValueError(f"{caller}: {name} is {arr.ndim}-D (shape={arr.shape}); {want} is required.{hint}")
    if arr.size > MAX_ELEMENTS:
        raise InputValueError(
            f"{caller}: {name} has {arr.size:,} elements (shape={arr.shape}); at most {MAX_ELEMENTS:,} are supported. "
            "Subsample the rows first."
        )
    if arr.ndim >= 1 and arr.shape[0] < min_samples:
        raise InputValueError(
            f"{caller}: {name} has {arr.shape[0]} sample(s) (shape={arr.shape}); a minimum of {min_samples} is required."
        )
    if arr.ndim >= 2 and arr.shape[1] < min_features:
        raise InputValueError(
            f"{caller}: {name} has {arr.shape[1]} feature(s) (shape={arr.shape}); a minimum of {min_features} is required."
        )
    if arr.dtype.kind == "f" and not allow_nonfinite:
        _check_finite(arr, name=name, caller=caller)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(arr, dtype=dtype, order="C", copy=True)
    if out.dtype.kind == "f" and not allow_nonfinite and not np.isfinite(out).all():
        raise InputValueError(
            f"{caller}: {name} has values too large for {np.dtype(dtype).name} (shape={arr.shape}); "
            "all values must be finite after conversion. Rescale the input."
        )
    if out.dtype.kind == "f" and out.size:
        _check_magnitude(out, name=name, caller=caller)
    return out


def _check_magnitude(arr: np.ndarray, *, name: str, caller: str) -> None:
    if float(np.finfo(arr.dtype).max) <= MAX_ABS_VALUE:  # float32 and narrower cannot hold such values
        return
    flat = arr.reshape(-1)
    # fmax/fmin skip NaN and copy nothing: the usual, in-range case costs two passes, no memory.
    if not (np.fmax.reduce(flat) > MAX_ABS_VALUE or np.fmin.reduce(flat) < -MAX_ABS_VALUE):
        return
    magnitude = np.abs(arr)
    too_large = magnitude > MAX_ABS_VALUE  # False for NaN; +inf only gets here when allowed
    too_large &= np.isfinite(magnitude)
    if not too_large.any():
        return
    first = np.unravel_index(int(np.argmax(too_large)), arr.shape)
    where = f"first at row {first[0]}" if arr.ndim >= 1 else "scalar"
    peak = float(magnitude[too_large].max())
    raise InputValueError(
        f"{caller}: {name} has {int(too_large.sum())} value(s) above {MAX_ABS_VALUE:.0e} in magnitude (largest "
        f"{peak:.3g}, {where}, shape={arr.shape}); at most {MAX_ABS_VALUE:.0e} is supported because squared "
        "distances and variances would overflow float64. Rescale the input, e.g. standardise the columns."
    )


def _check_finite(arr: np.ndarray, *, name: str, caller: str) -> None:
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = ~finite
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(bad.sum()) - n_nan
    first = np.unravel_index(int(np.argmax(bad)), arr.shape)
    where = f"first at row {first[0]}" if arr.ndim >= 1 else "scalar"
    parts = [f"{n} {kind} value(s)" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    raise InputValueError(
        f"{caller}: {name} contains {' and '.join(parts)} ({where}, shape={arr.shape}); "
        "all values must be finite. Drop or fix those rows first."
    )


def check_labels(y: Any, *, name: str = "labels", caller: str, n_samples: int | None = None,
                 min_classes: int = 2) -> np.ndarray:
    """Return integer class labels 0..C-1 as given (ints, or strings mapped in sorted order)."""
    if y is None:
        raise InputTypeError(f"{caller}: {name} is None; a 1-D array of class labels is required.")
    if isinstance(y, (str, bytes, dict, set)):
        raise InputTypeError(f"{caller}: {name} is a {type(y).__name__}; a 1-D array of class labels is required.")
    try:
        arr = np.asarray(y)
    except ValueError as err:  # ragged nested sequences
        raise InputValueError(
            f"{caller}: {name} is ragged (nested lists of different lengths); a 1-D array of class labels is required."
        ) from err
    if arr.dtype == object:
        _check_label_objects(arr, name=name, caller=caller)
    if arr.dtype == object or arr.dtype.kind in "US":
        try:
            _, arr = np.unique(arr.astype(str), return_inverse=True)
        except (TypeError, ValueError) as err:
            raise InputTypeError(f"{caller}: {name} has mixed types; class labels must be ints or strings.") from err
    if arr.ndim != 1:
        raise InputValueError(f"{caller}: {name} is {arr.ndim}-D (shape={arr.shape}); 1-D class labels are required.")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise InputValueError(
                f"{caller}: {name} has non-integer values (shape={arr.shape}); class labels must be integers."
            )
    elif arr.dtype.kind not in "biu":
        raise InputTypeError(f"{caller}: {name} has dtype {arr.dtype}; integer class labels are required.")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise InputValueError(
            f"{caller}: {name} has {arr.shape[0]} entries but the embeddings have {n_samples} rows; "
            "they must have the same length."
        )
    classes = np.unique(arr)
    if classes.size < min_classes:
        raise InputValueError(
            f"{caller}: {name} has {classes.size} class(es) (shape={arr.shape}); a minimum of {min_classes} is required."
        )
    return arr.astype(np.int64, copy=True)


def _check_label_objects(arr: np.ndarray, *, name: str, caller: str) -> None:
    """Object labels must be scalars, and none may be missing (None or NaN would become a class)."""
    flat = arr.ravel()
    nested = [i for i, v in enumerate(flat) if isinstance(v, (list, tuple, dict, set, np.ndarray))]
    if nested:
        raise InputTypeError(
            f"{caller}: {name} holds a {type(flat[nested[0]]).__name__} at index {nested[0]} (shape={arr.shape}); "
            "each class label must be a single int or string."
        )
    missing = [i for i, v in enumerate(flat) if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))]
    if missing:
        raise InputValueError(
            f"{caller}: {name} has {len(missing)} missing label(s) (None or NaN, first at index {missing[0]}, "
            f"shape={arr.shape}); every sample needs a class label. Drop the unlabelled rows first."
        )


def check_same_length(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str], caller: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise InputValueError(
            f"{caller}: {names[0]} has {a.shape[0]} rows but {names[1]} has {b.shape[0]}; "
            "paired inputs must have the same number of rows."
        )


def check_positive_int(value: Any, *, name: str, caller: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{caller}: {name} must be an integer, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise InputValueError(f"{caller}: {name} is {value}; a value >= {minimum} is required.")
    return int(value)


def check_same_width(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str], caller: str) -> None:
    """Require two 2-D arrays to have the same number of columns (a train and a test set)."""
    if a.shape[1] != b.shape[1]:
        raise InputValueError(
            f"{caller}: {names[0]} has {a.shape[1]} feature(s) (shape={a.shape}) but {names[1]} has "
            f"{b.shape[1]} (shape={b.shape}); they must have the same width."
        )


def check_fraction(value: Any, *, name: str, caller: str) -> float:
    """Return `value` as a float strictly between 0 and 1 (a test fraction, a probability)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{caller}: {name} must be a number, got {type(value).__name__} {value!r}.")
    if not 0.0 < float(value) < 1.0:
        raise InputValueError(f"{caller}: {name} is {value}; a value strictly between 0 and 1 is required.")
    return float(value)


def check_quantiles(values: Any, *, name: str = "quantiles", caller: str) -> np.ndarray:
    """Return a non-empty 1-D float array of distinct levels in [0, 1], sorted ascending."""
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise InputTypeError(f"{caller}: {name} must be numbers in [0, 1], got {values!r}.") from err
    if arr.ndim != 1 or arr.size == 0:
        raise InputValueError(f"{caller}: {name} has shape {arr.shape}; a non-empty 1-D list of levels is required.")
    if not (np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all()):
        raise InputValueError(f"{caller}: {name} is {values!r}; every level must lie in [0, 1].")
    if np.unique(arr).size != arr.size:
        raise InputValueError(f"{caller}: {name} is {values!r}; levels must be distinct.")
    return np.sort(arr)
