"""The page `probe analyze` writes beside analysis.nc: one table per analyzer and, for each value
that came with a confidence interval (`<name>_ci`, see `probe.report.intervals`), a chart of the
value with its interval as an error bar.

A page whose results carry no interval has no chart and no script, a few kilobytes of HTML; one
with intervals inlines the Vega bundle, as the study pages do, and still opens offline.
"""
from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from probe.report.arrange import round5, titles
from probe.report.charts import AXIS_TITLE_CHARS, wrap
from probe.report.html import VEGA_CONFIG, Charts, chart_scripts, escape
from probe.report.intervals import bounds, error_bars, finite_pair, interval_name, interval_text, interval_variables

MAX_LISTED = 25   # a 1-D variable with more values than this is summarised, not listed or charted
CHART_WIDTH = 360
TITLE_CHARS, SUBTITLE_CHARS = 48, 64  # lines of the chart's title (14 px) and subtitle (11 px) that fit its width


def format_value(variable) -> str:
    values = variable.values
    if values.ndim == 0:
        return f"{values.item():.4g}" if values.dtype.kind == "f" else str(values.item())
    if values.ndim == 1 and values.size <= MAX_LISTED:
        fmt = (lambda v: f"{v:.4g}") if values.dtype.kind == "f" else str
        return ", ".join(f"{lab}: {fmt(v)}" for lab, v in zip(_labels(variable), values))
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    summary = f", median {np.median(finite):.4g}" if finite.size else ""
    return f"array {dict(variable.sizes)}{summary}"


def _labels(variable: xr.DataArray) -> list:
    dim = variable.dims[0]
    return list(variable[dim].values) if dim in variable.coords else list(range(variable.size))


def _listed(variable: xr.DataArray) -> bool:
    return variable.ndim == 0 or (variable.ndim == 1 and variable.size <= MAX_LISTED)


def format_interval(ds: xr.Dataset, name: str) -> str:
    """`name`'s interval as "[lower, upper]" (one per coordinate for a 1-D variable), or ""."""
    ci = interval_name(ds, name)
    if ci is None:
        return ""
    if not _listed(ds[name]):
        return f"{ds[ci].dims} array in analysis.nc"
    lower, upper = (np.atleast_1d(np.asarray(b.values, dtype=float)) for b in bounds(ds[ci]))
    pairs = [f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(lower, upper)]
    if ds[name].ndim == 0:
        return pairs[0]
    return ", ".join(f"{lab}: {pair}" for lab, pair in zip(_labels(ds[name]), pairs))


def units_text(units: object) -> str:
    """A variable's `units` attr as a table shows it: "1" is "dimensionless", none is "—"."""
    text = str(units or "").strip()
    return "dimensionless" if text == "1" else text or "—"


def interval_chart(ds: xr.Dataset, name: str) -> alt.LayerChart | None:
    """`name`'s value(s) as points with the interval as a bar, or None without a finite interval."""
    ci = interval_name(ds, name)
    if ci is None or not _listed(ds[name]) or ds[name].dtype.kind not in "iuf":
        return None
    variable = ds[name]
    labels = [name] if variable.ndim == 0 else [f"{variable.dims[0]} {lab}" for lab in _labels(variable)]
    values = np.atleast_1d(np.asarray(variable.values, dtype=float))
    lower, upper = (np.atleast_1d(np.asarray(b.values, dtype=float)) for b in bounds(ds[ci]))
    text = interval_text(ds[ci])
    points = [{"label": lab, "value": round5(v)} for lab, v in zip(labels, values) if np.isfinite(v)]
    ends = [(lab, pair, v) for lab, lo, hi, v in zip(labels, lower, upper, values) if (pair := finite_pair(lo, hi))]
    if not ends:
        return None
    frame = pd.DataFrame([{"label": lab, "ci_lo": round5(lo), "ci_hi": round5(hi), "value": round5(v),
                           "interval": text} for lab, (lo, hi), v in ends])
    long_name, axis_title = titles(ds, name)
    x_title = wrap(axis_title, AXIS_TITLE_CHARS)
    y = alt.Y("label:N", title=None, sort=labels)
    scale = alt.Scale(zero=False)
    value_tip = alt.Tooltip("value:Q", format=".4g", title=long_name)
    layers = [error_bars(frame, across=y, horizontal=True, title=x_title, scale=scale, extra_tooltip=["label:N", value_tip])]
    if points:
        layers.append(alt.Chart(pd.DataFrame(points)).mark_circle(size=70, opacity=1, color="#4c78a8").encode(
            x=alt.X("value:Q", title=x_title, scale=scale), y=y, tooltip=["label:N", value_tip]))
    missing = len(labels) - len(ends)
    notes = ["point: the value", f"bar: {text}"] + ([f"{missing} interval(s) not finite, not drawn"] if missing else [])
    subtitle = [part for line in notes for part in np.atleast_1d(wrap(line, SUBTITLE_CHARS)).tolist()]
    return alt.layer(*layers).properties(width=CHART_WIDTH, height=max(40, 26 * len(labels)),
                                         title=alt.Title(wrap(long_name, TITLE_CHARS), subtitle=subtitle))


def _analyzer_section(analyzer: str, ds: xr.Dataset, charts: Charts) -> str:
    e = escape
    intervals = interval_variables(ds)
    rows = [f'<h2>{e(analyzer)}</h2><p class="method">{e(str(ds.attrs.get("method", "")))}</p>',
            "<table><tr><th>variable</th><th>value</th><th>interval</th><th>units</th><th>meaning</th></tr>"]
    figures = []
    for name, var in ds.data_vars.items():
        name = str(name)
        if name in intervals:  # shown in its variable's row and chart
            continue
        cells = (name, format_value(var), format_interval(ds, name), units_text(var.attrs.get("units")),
                 var.attrs.get("long_name", ""))
        rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
        chart = interval_chart(ds, name)
        if chart is not None:
            figures.append(charts.add(chart))
    rows.append("</table>")
    params = "; ".join(f"{k}={v}" for k, v in ds.attrs.items() if k not in ("analyzer", "method"))
    rows.append(f'<p class="params">{e(params)}</p>')
    if figures:
        rows.append(f'<div class="grid">{"".join(figures)}</div>')
    return "".join(rows)


STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
         "text-align:left;vertical-align:top}th{background:#f3f3f3}.method,.params{color:#555;font-size:.9em}"
         ".grid{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;border:1px solid #ddd;padding:.6em;"
         "border-radius:6px}")


def analysis_page(results: dict[str, Any], title: str, settings: dict[str, Any]) -> str:
    e = escape
    charts = Charts()
    sections = "".join(_analyzer_section(analyzer, ds, charts) for analyzer, ds in results.items())
    setting_rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in settings.items())
    scripts = chart_scripts({"config": VEGA_CONFIG, "datasets": charts.datasets, "charts": charts.items}) \
        if charts.items else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1>"
            f"<table><tr><th>setting</th><th>value</th></tr>{setting_rows}</table>"
            f"{sections}{scripts}</body></html>\n")
