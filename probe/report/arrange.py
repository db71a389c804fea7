"""A study result arranged for its page: validated, its grid cells labelled, its numbers as
(cell, [quantile,] seed, step) arrays, means and sample sds over seeds, and the paper's values
for the same cells (`probe.reference`).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from probe import reference
from probe.errors import DataFormatError, InputTypeError, InputValueError
from probe.report.intervals import bounds, finite_pair, interval_name, interval_text
from probe.results import load_dataset

CALLER = "write_report"


FIRST = ("probe_accuracy", "bound_test", "bound_train", "v_information")


LAST = ("loss", "wall_time")


# loss is minus the training bound, wall time is a clock, and target_gap is |bound_test - t|, a
# function of the x axis itself: none of them says anything new against the held-out bound.
NOT_CORRELATED = frozenset({"bound_test", "loss", "wall_time", "target_gap"})


RESERVED_DIMS = ("seed", "step", "quantile")


PAPER_NAME = f"paper ({reference.CITATION})"


# A value that alone widens the span of the others more than this factor is drawn off-scale.
OUTLIER_SPAN = 3.0
BAND_SCALE = 4.0  # bands up to this many times the means' span are drawn whole (see robust_range)


# ±1 sd bands may widen a chart's domain by at most this fraction of its means' span on each side.
BAND_REACH = 0.5


@dataclass
class StudyView:
    """A validated result and what the page derives from it once."""

    ds: xr.Dataset
    source: str
    grid: tuple[str, ...]
    labels: list[str]
    coords: list[dict[str, str]]
    steps: np.ndarray
    variables: list[str]
    skipped: list[str]
    paper: dict | None
    paper_reason: str
    varying: tuple[str, ...] = ()                       # grid dims with more than one value: the labels name these
    fixed: dict[str, str] = dataclasses.field(default_factory=dict)  # grid dims with one value, and that value
    # Variables with one value everywhere (every cell, seed and step): named in a line, not drawn.
    constant: dict[str, float] = dataclasses.field(default_factory=dict)


def load_results(results: object) -> tuple[xr.Dataset, str]:
    if isinstance(results, xr.Dataset):
        return results, "the dataset"
    if not isinstance(results, (str, os.PathLike)):
        raise InputTypeError(
            f"{CALLER}: results is a {type(results).__name__}; an xarray.Dataset or the path of a "
            "study result (.nc) is required."
        )
    path = Path(results)
    return load_dataset(path, caller=CALLER), f"'{path}'"



def describe(ds: xr.Dataset, source: str) -> StudyView:
    error = DataFormatError if source != "the dataset" else InputValueError
    if "step" not in ds.dims:
        raise error(
            f"{CALLER}: {source} has no 'step' dimension (dims: {names(ds.dims)}); a probe study "
            "result has variables over (grid dims..., seed, step). Is it a study result?"
        )
    if ds["step"].dtype.kind not in "iuf":
        raise error(
            f"{CALLER}: {source} has a 'step' coordinate of dtype {ds['step'].dtype}; training steps "
            "must be numbers (0, 1000, ...)."
        )
    ds = ds.sortby("step")
    candidates = [
        name for name in ds.data_vars
        if "step" in ds[name].dims and ds[name].dtype.kind in "biuf"
    ]
    dim_sets = [set(ds[n].dims) - set(RESERVED_DIMS) for n in candidates]
    grid_set = set.intersection(*dim_sets) if dim_sets else set()
    grid = tuple(d for d in ds.dims if d in grid_set)
    allowed = grid_set | set(RESERVED_DIMS)
    variables = [n for n in candidates if set(ds[n].dims) <= allowed and ds[n].size > 0]
    drawn_with = {interval_name(ds, n) for n in variables}  # a variable's interval is drawn on its chart
    skipped = [f"{n} (dims {names(ds[n].dims)})" for n in candidates if n not in variables and n not in drawn_with]
    if not variables:
        raise error(
            f"{CALLER}: {source} has no numeric variable over 'step' to plot (variables: "
            f"{names(ds.data_vars) or 'none'}); a study result holds e.g. probe_accuracy and "
            "bound_test over (seed, step)."
        )
    variables.sort(key=_plot_order)
    constant = {n: value for n in variables if (value := _one_value(ds[n])) is not None}
    if len(constant) < len(variables):  # a result of constants alone is still drawn
        variables = [n for n in variables if n not in constant]
    else:
        constant = {}
    values = [[str(v) for v in ds[d].values] for d in grid]
    coords = [dict(zip(grid, combo)) for combo in itertools.product(*values)]
    varying = tuple(d for d, v in zip(grid, values) if len(v) > 1)
    fixed = {d: v[0] for d, v in zip(grid, values) if len(v) == 1}
    labels = [cell_label(c, varying) for c in coords]
    paper, reason = reference.comparable_paper_values(attr(ds, "study"), ds.attrs.get("dataset"))
    return StudyView(ds, source, grid, labels, coords, np.asarray(ds["step"].values), variables, skipped, paper, reason,
                     varying, fixed, constant)


def _one_value(variable: xr.DataArray) -> float | None:
    """The value of a variable that takes one finite value wherever it is finite (and somewhere is), else None."""
    values = np.asarray(variable.values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < 2 or finite.min() != finite.max():
        return None
    return float(finite[0])


def cell_label(coords: dict[str, str], varying: tuple[str, ...]) -> str:
    """A grid cell's label: its coordinates on the dims that vary, joined by " · ".

    A dim with one value says the same on every label ("· 2.0 · infonce" on all five encoders), so
    it is left out; the page states it once. A grid of one cell is named by all its coordinates.
    """
    return " · ".join(coords[d] for d in varying) or " · ".join(coords.values()) or "probe"


def _plot_order(name: str) -> tuple[int, int, str]:
    if name in FIRST:
        return (0, FIRST.index(name), name)
    if name in LAST:
        return (2, LAST.index(name), name)
    return (1, 0, name)


def names(items) -> str:
    return ", ".join(str(i) for i in items)


def attr(ds: xr.Dataset, key: str, default: str = "") -> str:
    value = ds.attrs.get(key, default)
    return default if value is None else str(value)


def arrange(study: StudyView, name: str, dtype: type = float) -> np.ndarray:
    """Values of `name` as (label, [quantile,] seed, [step]), NaN where a run diverged."""
    return _arranged(study, study.ds[name], dtype)


def interval_rows(study: StudyView, name: str) -> tuple[list[dict], str]:
    """Where each cell ran one seed: rows (label, step, ci_lo, ci_hi, interval) of `name`'s own
    confidence interval (`<name>_ci`, see `intervals`) wherever both ends are finite, and the
    interval's name. Over several seeds the page draws the spread of the seeds instead."""
    ci = interval_name(study.ds, name)
    if ci is None or study.ds.sizes.get("seed", 1) != 1 or "quantile" in study.ds[name].dims:
        return [], ""
    text = interval_text(study.ds[ci])
    lower, upper = (_arranged(study, end, float)[:, 0] for end in bounds(study.ds[ci]))  # (label, step)
    rows = [{"label": label, "step": int(step), "ci_lo": round5(pair[0]), "ci_hi": round5(pair[1]), "interval": text}
            for label, los, his in zip(study.labels, lower, upper)
            for step, lo, hi in zip(study.steps, los, his) if (pair := finite_pair(lo, hi))]
    return rows, text


def _arranged(study: StudyView, da: xr.DataArray, dtype: type) -> np.ndarray:
    missing = {d: study.ds[d].values for d in study.grid if d not in da.dims}
    if missing:
        da = da.expand_dims(missing)
    if "seed" not in da.dims:
        da = da.expand_dims(seed=[0])
    tail = tuple(d for d in ("quantile", "seed", "step") if d in da.dims)
    values = np.asarray(da.transpose(*study.grid, *tail).values, dtype=dtype)
    return values.reshape((-1,) + values.shape[len(study.grid):])


def seed_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample sd (ddof=1) and count of the finite values along axis -2 (seed)."""
    finite = np.isfinite(x)
    n = finite.sum(axis=-2)
    mean = np.full(n.shape, np.nan)
    np.divide(np.where(finite, x, 0.0).sum(axis=-2), n, out=mean, where=n > 0)
    dev = np.where(finite, x - np.expand_dims(mean, -2), 0.0)
    var = np.full(n.shape, np.nan)
    np.divide((dev**2).sum(axis=-2), n - 1, out=var, where=n > 1)
    return mean, np.sqrt(var), n


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Pearson and Spearman r of the finite pairs, and their count (NaN when undefined)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, int(len(x))
    pearson = float(np.corrcoef(x, y)[0, 1])
    ranks = pd.DataFrame({"x": x, "y": y}).rank()
    spearman = float(np.corrcoef(ranks["x"], ranks["y"])[0, 1])
    return pearson, spearman, int(len(x))


def pixel_accuracy(ds: xr.Dataset) -> float | None:
    if "pixel_probe_accuracy" not in ds:
        return None
    values = np.asarray(ds["pixel_probe_accuracy"].values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def paper_points(study: StudyView, key: str) -> tuple[list[dict], list[dict]]:
    """Paper values and bands for paper variable `key`, one row per matching label of ours."""
    if study.paper is None:
        return [], []
    entry, tag = study.paper, study.paper.get("tags", {}).get(key, "")
    points, bands = [], []
    for table, rows, make in (
        (entry["values"], points, lambda p: {"step": p[0], "value": p[1]}),
        (entry["bands"], bands, lambda p: {"step": p[0], "lo": p[1], "hi": p[2], "range": f"{p[1]:g}-{p[2]:g}"}),
    ):
        for paper_label, series in table.get(key, {}).items():
            for label, coords in zip(study.labels, study.coords):
                if reference.label_matches(paper_label, entry["grid"], coords):
                    rows.extend({"label": label, "source": PAPER_NAME, "tag": f"[{tag}]", **make(p)} for p in series)
    return points, bands


def titles(ds: xr.Dataset, name: str) -> tuple[str, str]:
    long_name = str(ds[name].attrs.get("long_name", name))
    units = str(ds[name].attrs.get("units", ""))
    axis = long_name if units in ("", "1") else f"{long_name} ({units})"
    return long_name, axis


def round5(value: float) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(f"{float(value):.5g}")


def _fewest_outliers(core: np.ndarray, first: int, last: int, budget: int) -> tuple[int, int] | None:
    """(from below, from above): the fewest extreme points of sorted core[first:last + 1] whose
    removal shrinks its span more than OUTLIER_SPAN times (the narrowest rest among equally few),
    or None. Several points count together: three diverged seeds at -55 are one excursion."""
    span = core[last] - core[first]
    for k in range(1, budget + 1):
        rests = [(core[last - (k - low)] - core[first + low], low) for low in range(k + 1)
                 if first + low <= last - (k - low)]
        rests = [(rest, low) for rest, low in rests if rest > 0 and span > OUTLIER_SPAN * rest]
        if rests:
            rest, low = min(rests)
            return low, k - low
    return None


def robust_range(means: np.ndarray, lows: np.ndarray | None = None, highs: np.ndarray | None = None,
                 keep: np.ndarray | None = None) -> tuple[float, float] | None:
    """The axis domain that one outlier cannot squash, or None when every value fits anyway.

    `means` are the values a chart must show (curve points, scatter points); `lows`/`highs` the
    ends of their ±1 sd bands (or intervals), one per mean; `keep` values that are always in view
    (the paper's, baselines). The most extreme mean is set off-scale while it alone widens the
    span of the other means more than `OUTLIER_SPAN` times (at most a tenth of the points, and
    only with five or more). The bands of the means in view are drawn whole while they reach no
    more than `BAND_SCALE` spans of those means; wider ones (and the band of a mean set off-scale)
    may widen the domain by `BAND_REACH` of the span on each side and are cut there. None means
    nothing is off-scale: the chart draws every value on the scale Vega picks.
    """
    means = np.asarray(means, dtype=float)
    core = np.sort(means[np.isfinite(means)])
    if core.size == 0:
        return None
    first, last = 0, core.size - 1
    budget = core.size // 10 if core.size >= 5 else 0
    while budget:
        trim = _fewest_outliers(core, first, last, budget)
        if trim is None:
            break
        budget -= trim[0] + trim[1]
        first, last = first + trim[0], last - trim[1]
    lo, hi = float(core[first]), float(core[last])
    if keep is not None:
        kept = np.asarray(keep, dtype=float)
        kept = kept[np.isfinite(kept)]
        if kept.size:
            lo, hi = min(lo, float(kept.min())), max(hi, float(kept.max()))
    span = (hi - lo) or abs(hi) or 1.0
    in_view = (means >= core[first]) & (means <= core[last])
    ends = []
    for band in (lows, highs):
        if band is not None:
            band = np.asarray(band, dtype=float)
            ends.append(band[in_view] if band.shape == means.shape else band)  # an excursion's band: not in view
    bands = np.concatenate(ends) if ends else np.zeros(0)
    bands = bands[np.isfinite(bands)]
    # Bands of the means in view are the message (two estimators 0.007 apart with sd 0.012-0.018, a
    # seed spread wider than the curve's rise): whole while of the means' own scale, else cut.
    reach = BAND_SCALE * span if bands.size and (bands.max() - bands.min()) <= (1 + 2 * BAND_SCALE) * span \
        else BAND_REACH * span
    domain_lo = max(min(lo, bands.min(initial=lo)), lo - reach)
    domain_hi = min(max(hi, bands.max(initial=hi)), hi + reach)
    everything = np.concatenate([core, bands])
    if everything.min() >= domain_lo and everything.max() <= domain_hi:
        return None
    return domain_lo, domain_hi


def fmt_r(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f}"
