"""Study results as labelled data: one `xarray.Dataset` per run, saved as netCDF.

Dimensions come from a fixed vocabulary (`estimator`, `critic`, `encoder`, `target`, `seed`,
`step`, `quantile`); every variable carries `long_name` and `units`. Files are written to a
temporary name and renamed, so a crash never leaves a half-written result behind.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from probe.errors import DataFormatError, DataUnavailableError
from probe.io import atomic_path

ENGINE = "netcdf4"


@dataclass
class CellResult:
    """Per-evaluation values of one run: `variables[name] = (dims, array)`, dims start with "step"."""

    steps: np.ndarray
    variables: dict[str, tuple[tuple[str, ...], np.ndarray]] = field(default_factory=dict)
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    status: str = "ok"


# Record arrays over a dimension other than `quantile`: {variable: (dim, coordinate or None for 0..n-1)}.
RECORD_DIMS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "log_condition_number_input": ("jacobian_input", None),
    "jacobian_shape": ("jacobian_axis", ("d_out", "d_in")),
}


def collect_records(eval_steps: np.ndarray, records: list[dict], status: str, *,
                    empty: tuple[str, ...] = ("bound_test", "bound_train", "probe_accuracy"),
                    **series: list[float]) -> CellResult:
    """One evaluation record per step (dicts of scalars, or arrays over `quantile` with the
    coordinate under "quantile", or over the dimension RECORD_DIMS names) as a CellResult; steps
    never reached are NaN. `series` are extra per-evaluation lists (wall_time, loss). A run with
    no record has NaN `empty` variables."""
    n = len(eval_steps)
    result = CellResult(steps=eval_steps, status=status)
    if records and "quantile" in records[0]:
        result.coords["quantile"] = np.asarray(records[0]["quantile"], dtype=np.float64)
    names = [k for k in records[0] if k != "quantile"] if records else [e for e in empty if e not in series]
    for name in names:
        first = np.asarray(records[0][name], dtype=np.float64) if records else np.float64(np.nan)
        values = np.full((n, *first.shape), np.nan)
        for i, rec in enumerate(records):
            values[i] = rec[name]
        dim = "quantile"
        if name in RECORD_DIMS and first.ndim == 1:
            dim, labels = RECORD_DIMS[name]
            result.coords[dim] = np.arange(first.size) if labels is None else np.asarray(labels, dtype=object)
        result.variables[name] = (("step",) if first.ndim == 0 else ("step", dim), values)
    for name, values_so_far in series.items():
        values = np.full(n, np.nan)
        values[: len(values_so_far)] = values_so_far
        result.variables[name] = (("step",), values)
    return result

VARIABLE_ATTRS: dict[str, tuple[str, str]] = {
    "bound_test": ("MI bound on held-out pairs", "nats"),
    "bound_train": ("MI bound on training pairs", "nats"),
    "probe_accuracy": ("linear-probe test accuracy", "1"),
    "probe_cross_entropy": ("linear-probe held-out cross-entropy", "nats"),
    "pixel_probe_accuracy": ("linear-probe test accuracy on raw pixels", "1"),
    "v_information": ("V-information of the labels (multinomial logistic V)", "nats"),
    "v_information_C": ("inverse L2 strength C of V-information's logistic family (chosen at the first evaluation)", "1"),
    "v_information_C_step": ("step whose evaluation chose that C", "step"),
    "triplet_margin_mean": ("mean triplet margin f(a,p) - f(a,n) under the critic, paired views", "1"),
    "triplet_violation_fraction": ("fraction of triplets with margin < 0", "1"),
    "log_condition_number": ("per-seed quantiles of ln(sigma_max / sigma_min) of g1's Jacobian", "nats"),
    "log_condition_number_input": ("ln(sigma_max / sigma_min) of g1's Jacobian at each input", "nats"),
    "log_condition_number_pooled": ("quantiles of ln(sigma_max / sigma_min) of g1's Jacobian, pooled over "
                                    "seeds x inputs", "nats"),
    "jacobian_shape": ("shape (d_out, d_in) of g1's Jacobian", "1"),
    # rank deficient: sigma_min <= max(d_in, d_out) * eps * sigma_max in the Jacobian's dtype
    "jacobian_rank_deficient": ("fraction of g1's Jacobians numerically rank deficient", "1"),
    "wall_time": ("wall time since the run started", "s"),
    "loss": ("training loss at the last update", "nats"),
    "status": ("run status", ""),
}


def annotate(ds: xr.Dataset, variables: Mapping[str, tuple[str, str]] | None = None) -> xr.Dataset:
    """Attach `long_name`/`units` to every known variable (in place) and return `ds`.

    `variables` are a study's own {name: (long_name, units)}, on top of the shared VARIABLE_ATTRS.
    """
    known = {**VARIABLE_ATTRS, **(variables or {})}
    for name, var in ds.data_vars.items():
        if name in known:
            long_name, units = known[name]
            var.attrs.setdefault("long_name", long_name)
            var.attrs.setdefault("units", units)
    return ds


def cell_dataset(result: CellResult, ids: dict[str, str | int | float],
                 variables: Mapping[str, tuple[str, str]] | None = None) -> xr.Dataset:
    """One cell's result as a Dataset with a length-1 dimension per grid id (and `seed`)."""
    coords: dict[str, np.ndarray] = {"step": result.steps, **result.coords}
    data_vars = {name: (dims, values) for name, (dims, values) in result.variables.items()}
    data_vars["status"] = ((), np.array(result.status, dtype=object))
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.expand_dims({dim: [value] for dim, value in ids.items()})
    return annotate(ds, variables)


def combine_cells(cells: list[xr.Dataset], variables: Mapping[str, tuple[str, str]] | None = None) -> xr.Dataset:
    """Assemble cell Datasets into the study's Dataset (dims in the order the cells give)."""
    ds = xr.combine_by_coords(cells, combine_attrs="drop_conflicts", join="outer")
    if "status" in ds:
        ds["status"] = ds["status"].fillna("missing").astype(str)
    if "log_condition_number_input" in ds and "quantile" in ds.coords:
        ds["log_condition_number_pooled"] = pool_quantiles(ds["log_condition_number_input"], ds["quantile"].values,
                                                           over=("seed", "jacobian_input"))
    return annotate(ds, variables)


def pool_quantiles(values: xr.DataArray, levels, over: tuple[str, ...]) -> xr.DataArray:
    """Quantiles at `levels` of `values` pooled over the dims `over` (e.g. every seed's inputs at
    once, as the notebook's Fig. 2 bands), per remaining coordinate; NaN entries (steps a run never
    reached) are left out, and a pool with no finite-or-inf value is NaN.

    np.quantile's linear interpolation, +inf-safe as `probe.analyzers.condition_numbers`'s quantiles
    (between a finite value and +inf the quantile is +inf)."""
    levels = np.asarray(levels, dtype=np.float64)
    present = [d for d in over if d in values.dims]

    def pooled(block: np.ndarray) -> np.ndarray:
        flat = block.reshape(*block.shape[: block.ndim - len(present)], -1)
        out = np.full((*flat.shape[:-1], levels.size), np.nan)
        for index in np.ndindex(*flat.shape[:-1]):
            v = np.sort(flat[index][~np.isnan(flat[index])])
            if v.size:
                pos = levels * (v.size - 1)
                lo, hi = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
                a, b, frac = v[lo], v[hi], pos - lo
                with np.errstate(invalid="ignore"):
                    out[index] = np.where((frac == 0) | (a == b), a, a + frac * (b - a))
        return out

    result = xr.apply_ufunc(pooled, values.astype(np.float64), input_core_dims=[present],
                            output_core_dims=[["quantile"]], keep_attrs=False)
    return result.assign_coords(quantile=levels).assign_attrs(pooled_over=" x ".join(present))


def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine=ENGINE, encoding=_string_encoding(ds))
    return path


def _string_encoding(ds: xr.Dataset) -> dict:
    # Store strings as variable-length netCDF4 strings so they round-trip as Python str.
    return {name: {"dtype": str} for name, var in ds.variables.items() if var.dtype.kind in "OU"}


def load_dataset(path: str | os.PathLike, *, required: tuple[str, ...] = (), caller: str = "") -> xr.Dataset:
    """Open a netCDF file fully into memory (the file is closed afterwards): the one reader of
    results, cell files and analyses. `caller` prefixes the error messages."""
    path = Path(path)
    who = f"{caller}: " if caller else ""
    if not path.is_file():
        raise DataUnavailableError(f"{who}No results file at '{path}': it does not exist or is not a file. Check the "
                                   "path; `probe run-study NAME` prints the path of the results it writes.")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    except Exception as err:  # netCDF4/h5 raise many types for a foreign or truncated file
        raise DataFormatError(f"{who}'{path}' is not a readable netCDF file ({type(err).__name__}: {err}); "
                              "a probe results file (.nc) is required.") from err
    missing = [name for name in required if name not in ds.variables]
    if missing:
        raise DataFormatError(f"{path} is missing variable(s) {', '.join(missing)}; is it a probe results file?")
    return ds


def merge_prefixed(results: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """Merge analyzer Datasets, prefixing variables and attributes with the analyzer name.

    A dimension whose coordinate (or size) differs between analyzers is renamed
    <analyzer>_<dim> so nothing is silently aligned or filled with NaN.
    """
    seen: dict[str, object] = {}
    parts = []
    for analyzer, ds in results.items():
        renames = {}
        for dim, size in ds.sizes.items():
            values = ds[dim].values if dim in ds.coords else size
            if dim in seen and not np.array_equal(seen[dim], values):
                renames[dim] = f"{analyzer}_{dim}"
            else:
                seen[dim] = values
        ds = ds.rename({**renames, **{v: f"{analyzer}_{v}" for v in ds.data_vars}})
        ds.attrs = {f"{analyzer}_{k}": v for k, v in ds.attrs.items()}
        parts.append(ds)
    # "override" keeps each variable's own attrs (each name occurs once); dataset attrs are rebuilt below.
    merged = xr.merge(parts, compat="no_conflicts", join="exact", combine_attrs="override")
    merged.attrs = {}
    for ds in parts:
        merged.attrs.update(ds.attrs)
    return merged
