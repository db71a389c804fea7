"""One self-contained HTML page per study result.

`write_report(results)` reads a study result (an `xarray.Dataset` or its netCDF file: variables
over (grid dims..., seed, step), see `probe.results`) and writes a page that opens offline: the
Vega, Vega-Lite and vega-embed bundle shipped by vl-convert is inlined, the chart specs travel
as one JSON block, and every string taken from the result is HTML-escaped.

The page shows, for each variable over `step`, the mean over seeds with a ±1 sd band (sample sd,
ddof=1, as the curves of Tschannen et al. 2020), one colour per grid cell; percentile bands for
variables over `quantile` (the paper's Fig. 2); the paper's values beside ours where they are
comparable (`probe.reference`); how each variable co-varies with the held-out bound; a table of
first and last values; and the runs that did not finish cleanly.
"""
from __future__ import annotations

import functools
import html
import itertools
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from probe import reference
from probe.errors import DataFormatError, DataUnavailableError, InputTypeError, InputValueError

CALLER = "write_report"
FIRST = ("probe_accuracy", "bound_test", "bound_train", "v_information")
LAST = ("loss", "wall_time")
# loss is minus the training bound and wall time is a clock: neither says anything new vs the bound.
NOT_CORRELATED = frozenset({"bound_test", "loss", "wall_time"})
RESERVED_DIMS = ("seed", "step", "quantile")
WIDTH, HEIGHT = 420, 240
PAPER_NAME = f"paper ({reference.CITATION})"
MAX_ENDPOINT_CELLS = 12    # end-of-training dot plots without paper values: more rows stop being a glance
MAX_SCATTER_POINTS = 3000  # the correlation uses every point; the plot thins to keep pages small
PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
    "#ff9da6", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
)
VEGA_CONFIG = {
    "font": "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif",
    "view": {"stroke": None},
    "axis": {"gridColor": "#eaeef2", "domainColor": "#8c959f", "tickColor": "#8c959f",
             "labelColor": "#424a53", "titleColor": "#1f2328", "titleFontWeight": 500},
    "legend": {"orient": "bottom", "direction": "horizontal", "columns": 3,
               "labelLimit": 220, "symbolSize": 90, "titleFontWeight": 500},
    "title": {"anchor": "start", "fontSize": 14, "fontWeight": 600, "subtitleColor": "#59636e",
              "subtitleFontSize": 11, "offset": 8},
}


@dataclass
class _Study:
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


def write_report(results: xr.Dataset | str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the HTML page of a study result and return its path.

    `results` is an `xarray.Dataset` or the path of its netCDF file. `out` defaults to
    `reports/<study>.html` under the current directory; an existing directory gets
    `<study>.html` inside it. The file is written to a temporary name first, then moved into
    place, so a reader never sees half a page.
    """
    ds, source = _load(results)
    study = _describe(ds, source)
    page = _render(study)
    path = _out_path(out, study)
    write_page(path, page)
    return path


def write_page(path: Path, text: str) -> None:
    """Write an HTML page to a temporary name, then move it into place: no reader sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- input

def _load(results: object) -> tuple[xr.Dataset, str]:
    if isinstance(results, xr.Dataset):
        return results, "the dataset"
    if not isinstance(results, (str, os.PathLike)):
        raise InputTypeError(
            f"{CALLER}: results is a {type(results).__name__}; an xarray.Dataset or the path of a "
            "study result (.nc) is required."
        )
    path = Path(results)
    if not path.is_file():
        raise DataUnavailableError(f"{CALLER}: results file '{path}' does not exist or is not a file. Check the path.")
    try:
        with xr.open_dataset(path) as opened:
            ds = opened.load()
    except Exception as err:  # netCDF4/h5 raise many types for a foreign or truncated file
        raise DataFormatError(
            f"{CALLER}: '{path}' is not a readable netCDF file ({type(err).__name__}: {err}); "
            "a probe study result (.nc) is required."
        ) from err
    return ds, f"'{path}'"


def _describe(ds: xr.Dataset, source: str) -> _Study:
    error = DataFormatError if source != "the dataset" else InputValueError
    if "step" not in ds.dims:
        raise error(
            f"{CALLER}: {source} has no 'step' dimension (dims: {_names(ds.dims)}); a probe study "
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
    skipped = [f"{n} (dims {_names(ds[n].dims)})" for n in candidates if n not in variables]
    if not variables:
        raise error(
            f"{CALLER}: {source} has no numeric variable over 'step' to plot (variables: "
            f"{_names(ds.data_vars) or 'none'}); a study result holds e.g. probe_accuracy and "
            "bound_test over (seed, step)."
        )
    variables.sort(key=_plot_order)
    values = [[str(v) for v in ds[d].values] for d in grid]
    coords = [dict(zip(grid, combo)) for combo in itertools.product(*values)]
    labels = [" · ".join(c[d] for d in grid) or "probe" for c in coords]
    paper, reason = reference.comparable_paper_values(_attr(ds, "study"), ds.attrs.get("dataset"))
    return _Study(ds, source, grid, labels, coords, np.asarray(ds["step"].values), variables, skipped, paper, reason)


def _plot_order(name: str) -> tuple[int, int, str]:
    if name in FIRST:
        return (0, FIRST.index(name), name)
    if name in LAST:
        return (2, LAST.index(name), name)
    return (1, 0, name)


def _names(items) -> str:
    return ", ".join(str(i) for i in items)


def _attr(ds: xr.Dataset, key: str, default: str = "") -> str:
    value = ds.attrs.get(key, default)
    return default if value is None else str(value)


def file_name(text: object, default: str) -> str:
    """`text` as a safe file-name stem (letters, digits, '.', '_', '-'), or `default` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-") or default


def _out_path(out: str | os.PathLike | None, study: _Study) -> Path:
    name = file_name(_attr(study.ds, "study"), "report")
    if out is None:
        return Path.cwd() / "reports" / f"{name}.html"
    path = Path(out)
    return path / f"{name}.html" if path.is_dir() else path


# ----------------------------------------------------------------------------- numbers

def _arrange(study: _Study, name: str, dtype: type = float) -> np.ndarray:
    """Values of `name` as (label, [quantile,] seed, [step]), NaN where a run diverged."""
    da = study.ds[name]
    missing = {d: study.ds[d].values for d in study.grid if d not in da.dims}
    if missing:
        da = da.expand_dims(missing)
    if "seed" not in da.dims:
        da = da.expand_dims(seed=[0])
    tail = tuple(d for d in ("quantile", "seed", "step") if d in da.dims)
    values = np.asarray(da.transpose(*study.grid, *tail).values, dtype=dtype)
    return values.reshape((-1,) + values.shape[len(study.grid):])


def _seed_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample sd (ddof=1) and count of the finite values along axis -2 (seed)."""
    finite = np.isfinite(x)
    n = finite.sum(axis=-2)
    mean = np.full(n.shape, np.nan)
    np.divide(np.where(finite, x, 0.0).sum(axis=-2), n, out=mean, where=n > 0)
    dev = np.where(finite, x - np.expand_dims(mean, -2), 0.0)
    var = np.full(n.shape, np.nan)
    np.divide((dev**2).sum(axis=-2), n - 1, out=var, where=n > 1)
    return mean, np.sqrt(var), n


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Pearson and Spearman r of the finite pairs, and their count (NaN when undefined)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, int(len(x))
    pearson = float(np.corrcoef(x, y)[0, 1])
    ranks = pd.DataFrame({"x": x, "y": y}).rank()
    spearman = float(np.corrcoef(ranks["x"], ranks["y"])[0, 1])
    return pearson, spearman, int(len(x))


def _pixel_accuracy(ds: xr.Dataset) -> float | None:
    if "pixel_probe_accuracy" not in ds:
        return None
    values = np.asarray(ds["pixel_probe_accuracy"].values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _paper_points(study: _Study, key: str) -> tuple[list[dict], list[dict]]:
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


# ----------------------------------------------------------------------------- charts

def _palette(study: _Study) -> list[str]:
    return (list(PALETTE) * (len(study.labels) // len(PALETTE) + 1))[: len(study.labels)]


def _colour(study: _Study) -> alt.Color:
    # Every layer carries the same legend: Vega-Lite merges them, but a null on any layer hides it.
    return alt.Color(
        "label:N",
        scale=alt.Scale(domain=study.labels, range=_palette(study)),
        legend=alt.Legend(title=" · ".join(study.grid), symbolOpacity=1, symbolType="circle") if study.grid else None,
    )


def _titles(ds: xr.Dataset, name: str) -> tuple[str, str]:
    long_name = str(ds[name].attrs.get("long_name", name))
    units = str(ds[name].attrs.get("units", ""))
    axis = long_name if units in ("", "1") else f"{long_name} ({units})"
    return long_name, axis


def _paper_layers(study: _Study, key: str, y_title: str, *, label: str | None = None,
                  colour: str | None = None, connect: bool = True) -> list[alt.Chart]:
    """Paper values (diamonds, dashed) and ranges (thick rules) for paper variable `key`.

    With `label`, only that grid cell's values, drawn in `colour` (the per-cell quantile charts).
    Values past our last step are left to the table: they would squash a short run's curves.
    """
    max_step = float(study.steps.max()) * 1.05
    points, bands = _paper_points(study, key)
    points = [p for p in points if p["step"] <= max_step and label in (None, p["label"])]
    bands = [b for b in bands if b["step"] <= max_step and label in (None, b["label"])]
    layers = []
    x = alt.X("step:Q")
    hue = alt.value(colour) if colour else _colour(study)
    shape = alt.Shape("source:N", scale=alt.Scale(domain=[PAPER_NAME], range=["diamond"]), legend=alt.Legend(title=None))
    about = [alt.Tooltip("source:N", title="source"), alt.Tooltip("paper:N", title="paper value of"), "label:N", "step:Q"]
    if points:
        frame = pd.DataFrame(points).assign(paper=key)
        if connect:
            layers.append(alt.Chart(frame).mark_line(strokeDash=[5, 4], strokeWidth=1.3, opacity=0.8)
                          .encode(x=x, y=alt.Y("value:Q", title=y_title), color=hue, detail="label:N"))
        layers.append(alt.Chart(frame).mark_point(filled=True, size=80, stroke="white", strokeWidth=0.8, opacity=1)
                      .encode(x=x, y=alt.Y("value:Q", title=y_title), color=hue, shape=shape,
                              tooltip=about + [alt.Tooltip("value:Q", title="value"), alt.Tooltip("tag:N", title="how read")]))
    if bands:
        frame = pd.DataFrame(bands).assign(paper=key)
        layers.append(alt.Chart(frame).mark_rule(strokeWidth=3, opacity=0.55, strokeCap="round")
                      .encode(x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", color=hue,
                              tooltip=about + [alt.Tooltip("range:N", title="range"), alt.Tooltip("tag:N", title="how read")]))
    return layers


def _rule(value: float, text: str, y_title: str) -> list[alt.Chart]:
    frame = pd.DataFrame([{"value": value, "text": text}])
    rule = alt.Chart(frame).mark_rule(strokeDash=[6, 4], color="#6e7781", strokeWidth=1.3).encode(
        y=alt.Y("value:Q", title=y_title), tooltip=[alt.Tooltip("text:N", title="baseline"), alt.Tooltip("value:Q", format=".4f")])
    label = alt.Chart(frame).mark_text(align="right", baseline="bottom", dx=-4, dy=-3, color="#57606a", fontSize=11).encode(
        x=alt.value(WIDTH), y=alt.Y("value:Q", title=y_title), text="text:N")
    return [rule, label]


def _line_chart(study: _Study, name: str) -> alt.LayerChart | None:
    mean, sd, n = _seed_stats(_arrange(study, name))
    long_name, y_title = _titles(study.ds, name)
    rows = [
        {"label": label, "step": int(step), "mean": _round(m), "sd": _round(s), "n": int(k),
         "lo": _round(m - s), "hi": _round(m + s)}
        for label, ms, ss, ks in zip(study.labels, mean, sd, n)
        for step, m, s, k in zip(study.steps, ms, ss, ks) if k > 0
    ]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    x = alt.X("step:Q", title="training step", axis=alt.Axis(format="~s"))
    y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = ["label:N", "step:Q", alt.Tooltip("mean:Q", format=".4f", title=f"mean {long_name}"),
               alt.Tooltip("sd:Q", format=".4f", title="sd over seeds"), alt.Tooltip("n:Q", title="seeds")]
    layers = []
    banded = frame[frame["n"] >= 2]
    if len(banded):
        layers.append(alt.Chart(banded).mark_area(opacity=0.16).encode(
            x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", color=_colour(study), detail="label:N"))
    layers.append(alt.Chart(frame).mark_line(strokeWidth=2).encode(x=x, y=y, color=_colour(study)))
    layers.append(alt.Chart(frame).mark_circle(size=26, opacity=1).encode(x=x, y=y, color=_colour(study), tooltip=tooltip))
    layers += _paper_layers(study, name, y_title)
    pixels = _pixel_accuracy(study.ds)
    if name == "probe_accuracy" and pixels is not None:
        layers += _rule(pixels, f"pixels {pixels:.3f}", y_title)
    if study.paper and name.startswith("bound") and "true_mi" in study.paper["baselines"]:
        layers += _rule(study.paper["baselines"]["true_mi"]["value"], "true MI (paper)", y_title)
    seeds = int(n.max())
    subtitle = f"{name} · mean ± 1 sd over {seeds} seeds" if seeds > 1 else f"{name} · one seed"
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=alt.Title(long_name, subtitle=subtitle))


def _endpoint_charts(study: _Study) -> tuple[list[alt.LayerChart], bool]:
    """Our last evaluation (mean ± 1 sd over seeds) per grid cell, beside the paper's last reported
    value where the paper has one: a short run ends long before the paper's 20k steps, so its
    curves cannot meet the paper's end points on a shared step axis. For a study the paper has no
    values for, every variable's end state, so the grid cells compare at a glance. Returns the
    charts and whether they carry paper values."""
    keys: list[str] = []
    if study.paper is not None:
        keys = [k for k in dict.fromkeys([*study.paper["values"], *study.paper["bands"]])
                if k.partition(":")[0] in study.variables]
    with_paper = bool(keys)
    if not with_paper and len(study.labels) <= MAX_ENDPOINT_CELLS:
        keys = [n if "quantile" not in study.ds[n].dims else f"{n}:median"
                for n in study.variables if n not in LAST]
    charts = [c for c in (_endpoint_chart(study, key, with_paper) for key in keys) if c is not None]
    return charts, with_paper


def _endpoint_chart(study: _Study, key: str, with_paper: bool) -> alt.LayerChart | None:
    name, _, stat = key.partition(":")
    last = int(study.steps[-1])
    values = _arrange(study, name)
    if values.ndim == 4:
        if stat not in reference.QUANTILE_STATS:
            return None
        q = np.asarray(study.ds["quantile"].values, dtype=float)
        pick = int(np.argmin(np.abs(q - reference.QUANTILE_STATS[stat])))
        stat = f"p{q[pick] * 100:g}"
        values = values[:, pick]
    mean, sd, n = _seed_stats(values)
    points, bands = _paper_points(study, key) if with_paper else ([], [])
    ours, paper = [], []
    for i, label in enumerate(study.labels):
        mine = [p for p in points if p["label"] == label]
        ranges = [b for b in bands if b["label"] == label]
        if (with_paper and not (mine or ranges)) or n[i, -1] == 0:
            continue
        m, s = float(mean[i, -1]), float(sd[i, -1]) if n[i, -1] > 1 else 0.0
        ours.append({"label": label, "value": _round(m), "lo": _round(m - s), "hi": _round(m + s),
                     "source": f"ours, step {last}", "n": int(n[i, -1])})
        if mine:
            end = max(mine, key=lambda p: p["step"])
            paper.append({"label": label, "value": end["value"], "source": f"paper, step {end['step']:,}",
                          "tag": end["tag"]})
        if ranges:
            end = max(ranges, key=lambda b: b["step"])
            paper.append({"label": label, "value": (end["lo"] + end["hi"]) / 2, "lo": end["lo"], "hi": end["hi"],
                          "source": f"paper, step {end['step']:,} (range {end['range']})", "tag": end["tag"]})
    if not ours:
        return None
    long_name, title = _titles(study.ds, name)
    x = alt.X("value:Q", title=title + (f" ({stat})" if stat else ""), scale=alt.Scale(zero=False))
    y = alt.Y("label:N", title=None, sort=study.labels)
    tip = ["label:N", "source:N", alt.Tooltip("value:Q", format=".4f")]
    frame = pd.DataFrame(ours)
    layers = [
        alt.Chart(frame).mark_rule(strokeWidth=2).encode(x="lo:Q", x2="hi:Q", y=y, color=_colour(study)),
        alt.Chart(frame).mark_circle(size=70, opacity=1).encode(
            x=x, y=y, color=_colour(study), tooltip=tip + [alt.Tooltip("n:Q", title="seeds")]),
    ]
    if paper:
        pframe = pd.DataFrame(paper)
        if "lo" in pframe:
            ranged = pframe.dropna(subset=["lo"])
            if len(ranged):
                layers.append(alt.Chart(ranged).mark_rule(strokeWidth=6, opacity=0.3, color="#59636e")
                              .encode(x="lo:Q", x2="hi:Q", y=y))
        layers.append(alt.Chart(pframe).mark_point(shape="diamond", filled=True, size=110, color="#1f2328",
                                                   opacity=0.85).encode(x=x, y=y, tooltip=tip + ["tag:N"]))
    subtitle = f"{name}: ours (circle, ± 1 sd) at step {last}" + ("; paper (◆) at its last step" if with_paper else "")
    return alt.layer(*layers).properties(
        width=WIDTH - 120, height=max(60, 26 * len(ours)),  # leaves room for the cell labels
        title=alt.Title(long_name + (f", {stat}" if stat else ""), subtitle=subtitle))


def _quantile_charts(study: _Study, name: str) -> list[tuple[str, alt.LayerChart]]:
    """The paper's Fig. 2 view: nested percentile bands over steps, one chart per grid cell."""
    quantiles = [float(q) for q in study.ds["quantile"].values]
    order = np.argsort(quantiles)
    quantiles = [quantiles[i] for i in order]
    mean, _, n = _seed_stats(_arrange(study, name)[:, order])  # (label, quantile, step)
    long_name, y_title = _titles(study.ds, name)
    pairs = [(i, len(quantiles) - 1 - i) for i in range(len(quantiles) // 2)]
    names = [f"{quantiles[lo] * 100:g}–{quantiles[hi] * 100:g} %" for lo, hi in pairs]
    opacity = alt.Opacity("band:N", scale=alt.Scale(domain=names, range=list(np.linspace(0.14, 0.5, len(names)).round(2))),
                          legend=alt.Legend(title="percentiles over inputs"))
    charts = []
    for index, label in enumerate(study.labels):
        colour = _palette(study)[index]
        bands = [{"band": names[b], "step": int(s), "lo": _round(mean[index, lo, t]), "hi": _round(mean[index, hi, t])}
                 for b, (lo, hi) in enumerate(pairs) for t, s in enumerate(study.steps) if n[index, lo, t] and n[index, hi, t]]
        lines = [{"quantile": f"{q * 100:g} %", "step": int(s), "value": _round(mean[index, qi, t])}
                 for qi, q in enumerate(quantiles) for t, s in enumerate(study.steps) if n[index, qi, t]]
        if not lines:
            continue
        x = alt.X("step:Q", title="training step", axis=alt.Axis(format="~s"))
        layers = [
            alt.Chart(pd.DataFrame(bands)).mark_area(color=colour).encode(x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", opacity=opacity),
            alt.Chart(pd.DataFrame(lines)).mark_line(color=colour, strokeWidth=0.8, opacity=0.8, point=alt.OverlayMarkDef(size=14, color=colour)).encode(
                x=x, y=alt.Y("value:Q", title=y_title), detail="quantile:N",
                tooltip=[alt.Tooltip("quantile:N", title="percentile"), "step:Q", alt.Tooltip("value:Q", format=".3f", title=long_name)]),
        ]
        for stat in reference.QUANTILE_STATS:
            layers += _paper_layers(study, f"{name}:{stat}", y_title, label=label, colour=colour, connect=False)
        title = alt.Title(f"{long_name} · {label}", subtitle=f"{name} · percentiles over inputs, mean over {int(n.max())} seed(s)")
        charts.append((label, alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=title)))
    return charts


def _correlation_charts(study: _Study) -> list[tuple[str, alt.Chart]]:
    """Each other variable against the held-out bound, over steps and seeds (flattened)."""
    if "bound_test" not in study.variables:
        return []
    others = [n for n in study.variables if n not in NOT_CORRELATED]
    if not others:
        return []
    bound = _arrange(study, "bound_test")  # (label, seed, step)
    label_idx, seed_idx, step_idx = np.indices(bound.shape)
    columns = {"label": np.asarray(study.labels, dtype=object)[label_idx.ravel()],
               "seed": np.asarray(study.ds["seed"].values if "seed" in study.ds.dims else [0])[seed_idx.ravel()],
               "step": study.steps[step_idx.ravel()], "x": bound.ravel()}
    described = {}
    for i, name in enumerate(others):
        values = _arrange(study, name)
        note = ""
        if values.ndim == 4:  # quantile variables: the percentile nearest the median
            q = np.asarray(study.ds["quantile"].values, dtype=float)
            k = int(np.argmin(np.abs(q - 0.5)))
            values, note = values[:, k], f" (percentile {q[k] * 100:g})"
        columns[f"v{i}"] = values.ravel()
        described[name] = (f"v{i}", note)
    frame = pd.DataFrame(columns)
    frame = frame[np.isfinite(frame["x"])]
    shown = frame.sample(n=MAX_SCATTER_POINTS, random_state=0).sort_index() if len(frame) > MAX_SCATTER_POINTS else frame
    shown = shown.assign(**{c: shown[c].map(_round) for c in shown.columns if c == "x" or c.startswith("v")})
    _, x_title = _titles(study.ds, "bound_test")
    charts = []
    for name, (field, note) in described.items():
        long_name, y_title = _titles(study.ds, name)
        pearson, spearman, count = _correlations(frame["x"].to_numpy(), frame[field].to_numpy())
        subtitle = [f"Pearson r = {_r(pearson)}, Spearman ρ = {_r(spearman)} (n = {count}, all cells)"]
        per_label = []
        for label in study.labels:
            part = frame[frame["label"] == label]
            p, s, _ = _correlations(part["x"].to_numpy(), part[field].to_numpy())
            per_label.append(f"{label}: r = {_r(p)}, ρ = {_r(s)}")
        if len(study.labels) > 1:
            subtitle += ["   ".join(per_label[i:i + 2]) for i in range(0, len(per_label), 2)]
        if len(shown) < len(frame):
            subtitle.append(f"{len(shown)} of {len(frame)} points drawn")
        chart = alt.Chart(shown).mark_circle(size=22, opacity=0.55).encode(
            x=alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False)),
            y=alt.Y(f"{field}:Q", title=y_title + note, scale=alt.Scale(zero=False)),
            color=_colour(study),
            tooltip=["label:N", "seed:Q", "step:Q", alt.Tooltip("x:Q", format=".4f", title="bound_test"),
                     alt.Tooltip(f"{field}:Q", format=".4f", title=name)],
        ).properties(width=WIDTH, height=HEIGHT, title=alt.Title(f"{long_name}{note} vs held-out bound", subtitle=subtitle))
        charts.append((name, chart))
    return charts


def _round(value: float) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(f"{float(value):.5g}")


def _r(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f}"


# ----------------------------------------------------------------------------- page

@functools.lru_cache(maxsize=1)
def _vega_bundle() -> str:
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())
    # A literal "</script" would end the inline script early; vl-convert's bundle has none today.
    return re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)


def _script_json(payload: object) -> str:
    """JSON that is safe inside <script>: no '<', '>' or '&' can close the element."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


class _Charts:
    """Collects chart specs; datasets shared by several charts are stored once."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.datasets: dict[str, object] = {}

    def add(self, chart: alt.TopLevelMixin, caption: str = "") -> str:
        spec = chart.to_dict()
        datasets = spec.pop("datasets", {})
        self.datasets.update(datasets)
        chart_id = f"chart-{len(self.items)}"
        self.items.append({"id": chart_id, "spec": spec, "datasets": sorted(datasets)})
        caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
        return f'<figure><div class="chart" id="{chart_id}"></div>{caption_html}</figure>'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _human_duration(seconds: object) -> str:
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if not np.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes:02d} min"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _seed_text(seeds: str) -> str:
    """ "0,1,2,...,19" -> "0–19" when the seeds are consecutive integers; otherwise as given."""
    try:
        values = [int(v) for v in seeds.split(",")]
    except ValueError:
        return seeds
    if len(values) > 3 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}–{values[-1]}"
    return seeds


def _header(study: _Study) -> str:
    ds = study.ds
    name = _attr(ds, "study", "unnamed study")
    title = _attr(ds, "title") or name
    sha = _attr(ds, "dataset_sha256")
    dataset = _attr(ds, "dataset", "—") + (f" (sha256 {sha[:12]}…)" if sha else "")
    n_seeds = ds.sizes.get("seed", 1)
    seeds = _seed_text(_attr(ds, "seeds") or (",".join(str(s) for s in ds["seed"].values) if "seed" in ds.dims else "—"))
    rows = [
        ("preset", _attr(ds, "preset", "—")),
        ("dataset", dataset),
        ("seeds", f"{seeds} ({n_seeds} run{'s' if n_seeds != 1 else ''} per cell)"),
        ("grid", " × ".join(f"{d} ({ds.sizes[d]})" for d in study.grid) or "—"),
        ("steps", f"{len(study.steps)} evaluations, {int(study.steps.min())} to {int(study.steps.max())}"),
        ("device", _attr(ds, "device", "—")),
        ("total wall time", _human_duration(ds.attrs.get("total_wall_time"))),
        ("eval batch size", _attr(ds, "eval_batch_size", "—")),
        ("probe / torch", f"{_attr(ds, 'probe_version', '—')} / {_attr(ds, 'torch_version', '—')}"),
        ("created", _attr(ds, "created", "—")),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    parts = [f"<h1>{_e(title)}</h1>"]
    figure = f" · paper {study.paper['figure']}" if study.paper else ""
    parts.append(f'<p class="meta">study <code>{_e(name)}</code>{_e(figure)} · Tschannen et al., ICLR 2020</p>')
    entry = reference.PAPER.get(name)
    if entry:
        parts.append(f'<p class="takeaway"><strong>{_e(entry["figure"])}.</strong> {_e(entry["takeaway"])}</p>')
    parts.append(_verdict_note(ds))
    preset = _attr(ds, "preset")
    if preset != "paper":
        parts.append(
            f'<div class="callout warn"><strong>Reduced preset “{_e(preset or "unknown")}”.</strong> This run uses '
            "fewer steps, seeds or data than the paper's protocol; its numbers are not comparable 1:1 with the paper's.</div>"
        )
    failed = _failures(study)
    if failed:
        parts.append(f'<div class="callout bad"><strong>{len(failed)} run(s) did not finish cleanly</strong>; '
                     'see <a href="#status">run status</a>. Their values are NaN from the failure on and are left out of means.</div>')
    parts.append(f'<table class="meta-table">{table}</table>')
    settings = _attr(ds, "settings_json")
    if settings:
        try:
            settings = json.dumps(json.loads(settings), indent=2, sort_keys=True)
        except ValueError:
            pass
        parts.append(f"<details><summary>study settings</summary><pre>{_e(settings)}</pre></details>")
    return "<header>" + "".join(parts) + "</header>"


def _verdict_note(ds: xr.Dataset) -> str:
    """The study's verdict on this run (`probe.verdict`), or nothing for a result of no known study."""
    from probe.report_index import BADGES, judge  # studies import probe.report's neighbours: import late
    from probe.study import list_studies

    study = {s.name: s for s in list_studies()}.get(_attr(ds, "study"))
    if study is None or study.verdict is None:
        return ""
    verdict = judge(study, ds)
    fg, bg = BADGES[verdict.outcome]
    items = "".join(f"<li>{_e(line)}</li>" for line in verdict.evidence)
    return (f'<div class="callout" style="background:{bg};border-color:{fg}"><p><strong>This run: the claim '
            f"{_e(verdict.outcome)}.</strong> {_e(verdict.claim)}.</p><ul>{items}</ul>"
            + (f"<p>{_e(verdict.paper[0].upper() + verdict.paper[1:])}.</p>" if verdict.paper else "")
            + f"<p class=\"hint\">Decided by: {_e(verdict.decided_by)}.</p></div>")


def _paper_note(study: _Study) -> str:
    if study.paper is None:
        return f'<p class="callout">{_e(study.paper_reason)}</p>'
    entry = study.paper
    baselines = "; ".join(f"{k.replace('_', ' ')} ≈ {v['value']:g} [{v['tag']}] ({v['about']})" for k, v in entry["baselines"].items())
    notes = "".join(f"<li>{_e(n)}</li>" for n in entry["notes"])
    return (
        '<div class="callout paper"><p><strong>◆ Paper values</strong> (Tschannen et al. 2020, '
        f"{_e(entry['figure'])}) are drawn as diamonds on dashed lines in each grid cell's colour, ranges as "
        "thick vertical bars. Tags: [F] read off the figures by eye (about ±0.005 accuracy, ±0.2 nats), "
        "[P] stated in the text, [C] in the notebook's code.</p>"
        f"<p>Baselines: {_e(baselines)}.</p><ul>{notes}</ul></div>"
    )


def _fmt(mean: float, sd: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "—"
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {sd:.3f}"


def _paper_at(study: _Study, key: str, label_index: int, step: int) -> str:
    points, bands = _paper_points(study, key)
    label = study.labels[label_index]
    value = next((f"{p['value']:g}" for p in points if p["label"] == label and p["step"] == step), "")
    band = next((b["range"] for b in bands if b["label"] == label and b["step"] == step), "")
    text = f"{value} ({band})" if value and band else value or band
    tag = study.paper.get("tags", {}).get(key, "") if study.paper else ""
    return f"{text} [{tag}]" if text else ""


def _summary_table(study: _Study) -> str:
    first, last = int(study.steps[0]), int(study.steps[-1])
    with_paper = study.paper is not None
    head = ["variable", "grid cell", f"step {first}", f"step {last}"]
    if with_paper:
        head = head[:3] + [f"paper @ {first}"] + head[3:] + [f"paper @ {last}"]
    body = []
    for name in study.variables:
        values = _arrange(study, name)
        rows = [(name, "", values)]
        if values.ndim == 4:
            q = np.asarray(study.ds["quantile"].values, dtype=float)
            picks = sorted({int(np.argmin(np.abs(q - t))) for t in (0.5, 1.0)})
            stat = {v: k for k, v in reference.QUANTILE_STATS.items()}
            rows = [(f"{name}:{stat.get(float(q[k]), '')}" if float(q[k]) in stat else "", f" (p{q[k] * 100:g})", values[:, k]) for k in picks]
        for key, suffix, array in rows:
            mean, sd, n = _seed_stats(array)
            for i, label in enumerate(study.labels):
                cells = [f"<code>{_e(name)}</code>{_e(suffix)}", _e(label), _e(_fmt(mean[i, 0], sd[i, 0], n[i, 0]))]
                if with_paper:
                    cells.append(_e(_paper_at(study, key, i, first)))
                cells.append(_e(_fmt(mean[i, -1], sd[i, -1], n[i, -1])))
                if with_paper:
                    cells.append(_e(_paper_at(study, key, i, last)))
                body.append("<tr>" + "".join(f'<td class="{"num" if j >= 2 else ""}">{c}</td>' for j, c in enumerate(cells)) + "</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (f'<section><h2>First and last evaluation</h2><p class="hint">Mean ± sample sd over seeds; '
            f'paper values only where the paper reports the same step.</p>'
            f'<div class="table-wrap"><table class="data"><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table></div></section>')


def _failures(study: _Study) -> list[tuple[str, str, str]]:
    if "status" not in study.ds:
        return []
    status = _arrange(study, "status", dtype=object)  # (label, seed)
    seeds = [str(s) for s in study.ds["seed"].values] if "seed" in study.ds.dims else ["0"]
    out = []
    for label, row in zip(study.labels, status.reshape(len(study.labels), -1)):
        for seed, value in zip(seeds, row):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text != "ok":
                out.append((label, seed, text))
    return out


def _status_table(study: _Study) -> str:
    failed = _failures(study)
    if not failed:
        return ""
    rows = "".join(f"<tr><td>{_e(l)}</td><td>{_e(s)}</td><td>{_e(t)}</td></tr>" for l, s, t in failed)
    return (f'<section id="status"><h2>Run status</h2><p class="hint">Runs whose status is not “ok”.</p>'
            f'<table class="data"><thead><tr><th>grid cell</th><th>seed</th><th>status</th></tr></thead><tbody>{rows}</tbody></table></section>')


def _render(study: _Study) -> str:
    charts = _Charts()
    figures = []
    for name in study.variables:
        long_name, _ = _titles(study.ds, name)
        if "quantile" in study.ds[name].dims:
            figures += [charts.add(c) for _, c in _quantile_charts(study, name)]
        else:
            chart = _line_chart(study, name)
            if chart is None:
                figures.append(f'<figure class="empty"><p><code>{_e(name)}</code>: every value is NaN.</p></figure>')
            else:
                figures.append(charts.add(chart))
    correlation = [charts.add(c) for _, c in _correlation_charts(study)]
    end_charts, with_paper = _endpoint_charts(study)
    endpoints = [charts.add(c) for c in end_charts]
    sections = [
        _header(study),
        _paper_note(study),
    ]
    if endpoints and with_paper:
        sections.append(
            '<section><h2>End of training: ours beside the paper</h2><p class="hint">Our last evaluation '
            "against the paper's last reported value for the same grid cell. A reduced preset stops earlier "
            f'than the paper\'s runs: read the gap as how far the short run got.</p><div class="grid">'
            f'{"".join(endpoints)}</div></section>')
    elif endpoints:
        sections.append(
            '<section><h2>End of training, per grid cell</h2><p class="hint">Every quantity at the last '
            "evaluation, mean ± 1 sd over seeds: where the cells share a bound value, what differs is what "
            f'the bound does not measure.</p><div class="grid">{"".join(endpoints)}</div></section>')
    sections += [
        f'<section><h2>Training curves</h2><div class="grid">{"".join(figures)}</div></section>',
    ]
    if correlation:
        sections.append(
            '<section><h2>Does the bound track the representation?</h2><p class="hint">Each point is one '
            "evaluation (one grid cell, seed and step). If maximising the bound were what improves the "
            "representation, every variable would rise with it the same way in every cell.</p>"
            f'<div class="grid">{"".join(correlation)}</div></section>'
        )
    sections += [_summary_table(study), _status_table(study)]
    if study.skipped:
        sections.append(f'<p class="hint">Not plotted (dims the report does not draw): {_e(", ".join(study.skipped))}.</p>')
    payload = {"config": VEGA_CONFIG, "datasets": charts.datasets, "charts": charts.items}
    title = _attr(study.ds, "title") or _attr(study.ds, "study", "probe report")
    return _PAGE.format(
        title=_e(title), css=_CSS, bundle=_vega_bundle(), payload=_script_json(payload),
        body="\n".join(s for s in sections if s), footer=_e(f"probe report · {reference.CITATION} · {_attr(study.ds, 'probe_version', '')}"),
    )


_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --border:#d1d9e0; --accent:#0969da; --panel:#fff; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif; }
main { max-width:1480px; margin:0 auto; padding:28px 32px 48px; }
h1 { font-size:1.7em; margin:0 0 4px; line-height:1.25; }
h2 { font-size:1.2em; margin:32px 0 8px; padding-bottom:4px; border-bottom:1px solid var(--border); }
code { font:0.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:#eff2f5; padding:1px 4px; border-radius:4px; }
.meta { color:var(--muted); margin:0 0 12px; }
.takeaway { font-size:1.05em; max-width:960px; border-left:4px solid var(--accent); padding:4px 0 4px 12px; margin:12px 0; }
.callout { background:var(--panel); border:1px solid var(--border); border-radius:8px; padding:10px 14px; margin:12px 0; max-width:960px; }
.callout p { margin:4px 0; }
.callout ul { margin:4px 0 2px; padding-left:20px; color:var(--muted); font-size:0.92em; }
.callout.warn { background:#fff8c5; border-color:#d4a72c; }
.callout.bad { background:#ffebe9; border-color:#ff8182; }
.callout.paper { background:#ddf4ff; border-color:#54aeff; }
table { border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { padding:4px 12px; border-bottom:1px solid var(--border); text-align:left; vertical-align:top; }
.meta-table { background:var(--panel); border:1px solid var(--border); border-radius:8px; margin:12px 0; font-size:0.93em; }
.meta-table th { color:var(--muted); font-weight:500; white-space:nowrap; }
table.data { background:var(--panel); border:1px solid var(--border); font-size:0.9em; }
table.data thead th { background:#eff2f5; position:sticky; top:0; }
table.data tbody tr:hover { background:#f6f8fa; }
td.num { text-align:right; white-space:nowrap; }
.table-wrap { overflow-x:auto; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); }
pre { background:var(--panel); border:1px solid var(--border); border-radius:8px; padding:10px; overflow:auto; max-height:360px; font-size:0.85em; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(480px,1fr)); gap:18px; }
figure { margin:0; background:var(--panel); border:1px solid var(--border); border-radius:8px; padding:14px 14px 8px; overflow-x:auto; }
figure.empty { color:var(--muted); }
figcaption { color:var(--muted); font-size:0.85em; margin-top:4px; }
.hint { color:var(--muted); font-size:0.92em; max-width:960px; }
footer { color:var(--muted); font-size:0.85em; margin-top:40px; }
.vega-embed { width:100%; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<script>
{bundle}
</script>
</head>
<body>
<main>
{body}
<footer>{footer}</footer>
</main>
<script type="application/json" id="probe-charts">{payload}</script>
<script>
(function () {{
  var payload = JSON.parse(document.getElementById("probe-charts").textContent);
  var options = {{mode: "vega-lite", renderer: "svg", config: payload.config,
    actions: {{export: true, source: false, compiled: false, editor: false}}}};
  payload.charts.forEach(function (item) {{
    var spec = Object.assign({{}}, item.spec, {{datasets: {{}}}});
    item.datasets.forEach(function (name) {{ spec.datasets[name] = payload.datasets[name]; }});
    vegaEmbed("#" + item.id, spec, options).catch(function (err) {{
      document.getElementById(item.id).textContent = "This chart could not be drawn: " + err;
    }});
  }});
}})();
</script>
</body>
</html>
"""
