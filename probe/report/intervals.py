"""Confidence intervals on the pages: a variable's `<name>_ci` (over `interval`, "lower" and
"upper", as `probe.analyzers._bootstrap.ci_variable` writes it) found beside the variable, named
for the reader, and drawn as error bars on points or as a band along a curve.

The drawn data carry the ends as `ci_lo` and `ci_hi` and the interval's name as `interval`, so an
interval layer is never mistaken for the ±1 sd bands of the study pages (`lo`, `hi`).
"""
from __future__ import annotations

import re

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

CI_DIM = "interval"
LOWER, UPPER = "ci_lo", "ci_hi"
INTERVAL_COLOUR = "#1f2328"


def interval_name(ds: xr.Dataset, name: str) -> str | None:
    """The name of `name`'s interval variable in `ds`, or None when it has none.

    The interval of `name` is `<name>_ci`, a number over the dims of `name` and `interval`; an
    `<x>_estimate` may also have it as `<x>_ci` (mi_estimate's `candidate_ci` belongs to its
    `candidate_estimate`).
    """
    if name not in ds.data_vars or name.endswith("_ci"):
        return None
    options = [f"{name}_ci"]
    if name.endswith("_estimate"):
        options.append(f"{name.removesuffix('_estimate')}_ci")
    return next((o for o in options if o in ds.data_vars and _belongs(ds[o], ds[name])), None)


def _belongs(ci: xr.DataArray, variable: xr.DataArray) -> bool:
    return (ci.dtype.kind in "iuf" and CI_DIM in ci.dims and ci.sizes[CI_DIM] == 2
            and set(ci.dims) - {CI_DIM} == set(variable.dims)
            and all(ci.sizes[d] == variable.sizes[d] for d in variable.dims))


def interval_variables(ds: xr.Dataset) -> set[str]:
    """Every interval variable of `ds` that belongs to another of its variables (drawn with it)."""
    return {ci for name in ds.data_vars if (ci := interval_name(ds, str(name))) is not None}


def bounds(ci: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """The lower and upper ends of an interval variable, its `interval` dim dropped."""
    ends = [str(v) for v in ci[CI_DIM].values] if CI_DIM in ci.coords else []
    if {"lower", "upper"} <= set(ends):
        return ci.sel({CI_DIM: "lower"}, drop=True), ci.sel({CI_DIM: "upper"}, drop=True)
    return ci.isel({CI_DIM: 0}, drop=True), ci.isel({CI_DIM: 1}, drop=True)


def interval_text(ci: xr.DataArray) -> str:
    """What the interval is, in words: "95 % percentile bootstrap interval over held-out rows;
    200 resamples" from its attrs, else its long name without a closing aside in parentheses
    (a study's "... of Î (NaN where it gives none)": the chart draws no NaN)."""
    level, method = ci.attrs.get("level"), str(ci.attrs.get("method", "")).strip()
    if level is None or not method:
        return re.sub(r"\s*\([^()]*\)$", "", str(ci.attrs.get("long_name") or "")) or "confidence interval"
    what = (method.replace("bootstrap over", "bootstrap interval over", 1) if "bootstrap over" in method
            else f"interval ({method})")
    resamples = ci.attrs.get("n_bootstrap")
    return f"{float(level) * 100:g} % {what}" + (f"; {int(resamples)} resamples" if resamples else "")


def finite_pair(lower: float, upper: float) -> tuple[float, float] | None:
    """(lower, upper) as floats when both are finite (JSON holds no inf or NaN), else None."""
    lo, hi = float(lower), float(upper)
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None


def tooltip() -> list[alt.Tooltip]:
    return [alt.Tooltip(f"{LOWER}:Q", format=".4g", title="interval lower"),
            alt.Tooltip(f"{UPPER}:Q", format=".4g", title="interval upper"),
            alt.Tooltip("interval:N", title="interval")]


def error_bars(frame: pd.DataFrame, *, across: alt.X | alt.Y, horizontal: bool, title: str | list[str],
               colour: alt.Color | None = None, extra_tooltip: list | None = None,
               scale: alt.Scale | None = None) -> alt.Chart:
    """A rule from `ci_lo` to `ci_hi` at each row's position `across` (the other axis):
    horizontal bars on a dot plot, vertical ones on a scatter."""
    channel, channel2 = (alt.X, alt.X2) if horizontal else (alt.Y, alt.Y2)
    end = channel(f"{LOWER}:Q", title=title, **({"scale": scale} if scale is not None else {}))
    encoding = {"x" if horizontal else "y": end, "x2" if horizontal else "y2": channel2(f"{UPPER}:Q"),
                "y" if horizontal else "x": across, "tooltip": (extra_tooltip or []) + tooltip()}
    if colour is not None:
        encoding["color"] = colour
    mark = {"strokeWidth": 2, "opacity": 0.8, **({} if colour is not None else {"color": INTERVAL_COLOUR})}
    return alt.Chart(frame).mark_rule(**mark).encode(**encoding)


def band(frame: pd.DataFrame, *, x: alt.X, title: str | list[str], colour: alt.Color) -> alt.Chart:
    """An area from `ci_lo` to `ci_hi` along `x`, one per `label`: an interval along a curve."""
    return alt.Chart(frame).mark_area(opacity=0.22).encode(
        x=x, y=alt.Y(f"{LOWER}:Q", title=title), y2=f"{UPPER}:Q", color=colour, detail="label:N",
        tooltip=["label:N", "step:Q", *tooltip()])
