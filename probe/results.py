"""Study results as labelled data: one `xarray.Dataset` per run, saved as netCDF.

Dimensions come from a fixed vocabulary (`estimator`, `critic`, `encoder`, `target`, `seed`,
`step`, `quantile`); every variable carries `long_name` and `units`. Files are written to a
temporary name and renamed, so a crash never leaves a half-written result behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from probe.errors import DataFormatError, DataUnavailableError
from probe.training import CellResult

ENGINE = "netcdf4"

VARIABLE_ATTRS: dict[str, tuple[str, str]] = {
    "bound_test": ("MI bound on held-out pairs", "nats"),
    "bound_train": ("MI bound on training pairs", "nats"),
    "probe_accuracy": ("linear-probe test accuracy", "1"),
    "probe_cross_entropy": ("linear-probe held-out cross-entropy", "nats"),
    "pixel_probe_accuracy": ("linear-probe test accuracy on raw pixels", "1"),
    "v_information": ("V-information of the labels (multinomial logistic V)", "nats"),
    "triplet_margin_mean": ("mean triplet margin f(a,p) - f(a,n) under the critic, paired views", "1"),
    "triplet_violation_fraction": ("fraction of triplets with margin < 0", "1"),
    "log_condition_number": ("quantiles of ln(sigma_max / sigma_min) of g1's Jacobian", "nats"),
    # rank deficient: sigma_min <= max(d_in, d_out) * eps * sigma_max in the Jacobian's dtype
    "jacobian_rank_deficient": ("fraction of g1's Jacobians numerically rank deficient", "1"),
    "wall_time": ("wall time since the run started", "s"),
    "loss": ("training loss at the last update", "nats"),
    "status": ("run status", ""),
    # Study-specific variables.
    "estimate": ("MI estimate on the step's fresh batch (before its update)", "nats"),
    "estimate_smoothed": ("MI estimate, mean over the steps up to the next recorded one", "nats"),
    "true_mi": ("true MI of the batch's distribution (closed form)", "nats"),
    "infonce_cap": ("InfoNCE cap log K", "nats"),
    "estimate_mean": ("mean estimate over the last window of each MI level", "nats"),
    "bias": ("mean estimate minus true MI, last window of each MI level", "nats"),
    "estimate_sd": ("sd of the per-step estimates, last window of each MI level", "nats"),
    "optimal_critic_estimate": ("MI estimate on the same batch with the closed-form critic", "nats"),
    "optimal_critic_bias": ("closed-form critic: mean estimate minus true MI, last window of each MI level", "nats"),
    "optimal_critic_estimate_sd": ("closed-form critic: sd of the per-step estimates, last window of each MI level",
                                   "nats"),
    "target_gap": ("L_t = |I_EST - t| on held-out pairs", "nats"),
    "bound_train_smoothed": ("training-batch MI estimate, Gaussian-smoothed over steps (paper, Fig. 4c)", "nats"),
    "classifier_loss": ("held-out cross-entropy of the adversary's linear classifier (true labels)", "nats"),
    "classifier_accuracy": ("held-out accuracy of the adversary's linear classifier", "1"),
    "encoder_loss": ("held-out cross-entropy of the adversary's output against uniform (ln 10 at best)", "nats"),
    "inverse_round_trip_error": ("max |g1^-1(g1(x)) - x| over the test inputs (float32)", "1"),
    "inverse_round_trip_error_float64": ("max |g1^-1(g1(x)) - x| over the test inputs, the flow in float64", "1"),
}


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """Attach `long_name`/`units` to every known variable (in place) and return `ds`."""
    for name, var in ds.data_vars.items():
        if name in VARIABLE_ATTRS:
            long_name, units = VARIABLE_ATTRS[name]
            var.attrs.setdefault("long_name", long_name)
            var.attrs.setdefault("units", units)
    return ds


def cell_dataset(result: CellResult, ids: dict[str, str | int | float]) -> xr.Dataset:
    """One cell's result as a Dataset with a length-1 dimension per grid id (and `seed`)."""
    coords: dict[str, np.ndarray] = {"step": result.steps, **result.coords}
    data_vars = {name: (dims, values) for name, (dims, values) in result.variables.items()}
    data_vars["status"] = ((), np.array(result.status, dtype=object))
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.expand_dims({dim: [value] for dim, value in ids.items()})
    return annotate(ds)


def combine_cells(cells: list[xr.Dataset]) -> xr.Dataset:
    """Assemble cell Datasets into the study's Dataset (dims in the order the cells give)."""
    ds = xr.combine_by_coords(cells, combine_attrs="drop_conflicts", join="outer")
    if "status" in ds:
        ds["status"] = ds["status"].fillna("missing").astype(str)
    return annotate(ds)


def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine=ENGINE, encoding=_string_encoding(ds))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _string_encoding(ds: xr.Dataset) -> dict:
    # Store strings as variable-length netCDF4 strings so they round-trip as Python str.
    return {name: {"dtype": str} for name, var in ds.variables.items() if var.dtype.kind in "OU"}


def load_dataset(path: str | os.PathLike, *, required: tuple[str, ...] = ()) -> xr.Dataset:
    """Open a results file fully into memory (the file is closed afterwards)."""
    path = Path(path)
    if not path.exists():
        raise DataUnavailableError(f"No results file at {path}. Run `probe run-study NAME` first; it prints the path.")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path} is not a readable netCDF results file ({err}).") from err
    missing = [name for name in required if name not in ds.variables]
    if missing:
        raise DataFormatError(f"{path} is missing variable(s) {', '.join(missing)}; is it a probe results file?")
    return ds
