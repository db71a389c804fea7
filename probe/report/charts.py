"""The Altair charts of a study page: curves over steps with ±1 sd bands, percentile bands, end
points beside the paper's, and each variable against the held-out bound. Where each cell ran one
seed and a variable came with its own confidence interval (`<name>_ci`), the curve carries it as
a band and the end point as a bar (`probe.report.intervals`).
"""
from __future__ import annotations

import textwrap

import altair as alt
import numpy as np
import pandas as pd

from probe import reference
from probe.report.arrange import (
    LAST,
    NOT_CORRELATED,
    PAPER_NAME,
    StudyView,
    arrange,
    correlations,
    fmt_r,
    interval_rows,
    paper_points,
    pixel_accuracy,
    robust_range,
    round5,
    seed_stats,
    titles,
)
from probe.report.intervals import LOWER, UPPER, band, error_bars

WIDTH, HEIGHT = 420, 240
TITLE_CHARS = 56           # a chart title longer than this (14 px bold over WIDTH) wraps onto more lines
SUBTITLE_CHARS = 76        # a subtitle line longer than this (11 px over WIDTH) wraps
AXIS_TITLE_CHARS = 40      # a y-axis title longer than this (11 px along HEIGHT) wraps
MAX_OFF_SCALE_LISTED = 3   # off-scale points named in a chart's note; the rest are counted
MAX_ENDPOINT_CELLS = 12    # end-of-training dot plots without paper values: more rows stop being a glance
MAX_SCATTER_POINTS = 3000  # the correlation uses every point; the plot thins to keep pages small


PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
    "#ff9da6", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
)


def wrap(text: str, width: int) -> str | list[str]:
    """`text` as one line, or as lines of at most `width` characters (Vega draws a list as lines)."""
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [text]
    return lines[0] if len(lines) == 1 else lines


def _lines(text: str) -> list[str]:
    """`text` as the subtitle lines it wraps onto."""
    lines = wrap(text, SUBTITLE_CHARS)
    return lines if isinstance(lines, list) else [lines]


def _title(text: str, subtitle: str | list[str]) -> alt.Title:
    return alt.Title(wrap(text, TITLE_CHARS), subtitle=subtitle)


def _palette(study: StudyView) -> list[str]:
    return (list(PALETTE) * (len(study.labels) // len(PALETTE) + 1))[: len(study.labels)]


def _colour(study: StudyView) -> alt.Color:
    # Every layer carries the same legend: Vega-Lite merges them, but a null on any layer hides it.
    return alt.Color(
        "label:N",
        scale=alt.Scale(domain=study.labels, range=_palette(study)),
        legend=(alt.Legend(title=" · ".join(study.varying), symbolOpacity=1, symbolType="circle")
                if len(study.labels) > 1 else None),
    )


def _clipped(layers: list[alt.Chart]) -> list[alt.Chart]:
    """The layers with `clip=True` on their marks: nothing is drawn past an explicit axis domain."""
    out = []
    for layer in layers:
        mark = layer.mark.to_dict() if hasattr(layer.mark, "to_dict") else {"type": layer.mark}
        layer = layer.copy(deep=False)
        layer.mark = alt.MarkDef(**{**mark, "clip": True})
        out.append(layer)
    return out


def _off_scale(rows: list[dict], field: str, domain: tuple[float, float], what: str) -> tuple[list[dict], str]:
    """The rows whose `field` lies outside `domain`, pinned to its edge, and a note naming them."""
    lo, hi = domain
    outside = [r for r in rows if r.get(field) is not None and not lo <= r[field] <= hi]
    pinned = [{**r, "edge": lo if r[field] < lo else hi, "side": "below" if r[field] < lo else "above",
               "true_value": r[field]} for r in outside]
    named = [what.format(**r) for r in outside[:MAX_OFF_SCALE_LISTED]]
    more = len(outside) - len(named)
    note = "; ".join(named) + (f"; and {more} more" if more > 0 else "")
    return pinned, note


def _edge_markers(pinned: list[dict], x: alt.X, y_title: str | list[str], study: StudyView) -> list[alt.Chart]:
    """Triangles at the axis edge where a value is off-scale, its true value in the tooltip."""
    if not pinned:
        return []
    return [alt.Chart(pd.DataFrame(pinned)).mark_point(filled=True, size=90, opacity=1, stroke="#1f2328",
                                                      strokeWidth=0.8).encode(
        x=x, y=alt.Y("edge:Q", title=y_title), color=_colour(study),
        shape=alt.Shape("side:N", scale=alt.Scale(domain=["below", "above"], range=["triangle-down", "triangle-up"]),
                        legend=None),
        tooltip=["label:N", "step:Q", alt.Tooltip("true_value:Q", format=".4g", title="value (off-scale)")])]


def _paper_layers(study: StudyView, key: str, y_title: str, *, label: str | None = None,
                  colour: str | None = None, connect: bool = True) -> list[alt.Chart]:
    """Paper values (diamonds, dashed) and ranges (thick rules) for paper variable `key`.

    With `label`, only that grid cell's values, drawn in `colour` (the per-cell quantile charts).
    Values past our last step are left to the table: they would squash a short run's curves.
    """
    points, bands = _paper_in_view(study, key, label)
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


def _paper_in_view(study: StudyView, key: str, label: str | None = None) -> tuple[list[dict], list[dict]]:
    """The paper's points and ranges for `key` up to our last step (for `label` only, if given)."""
    max_step = float(study.steps.max()) * 1.05
    points, bands = paper_points(study, key)
    return ([p for p in points if p["step"] <= max_step and label in (None, p["label"])],
            [b for b in bands if b["step"] <= max_step and label in (None, b["label"])])


def _paper_extent(study: StudyView, keys: list[str], label: str | None = None) -> list[float]:
    """Every paper value and range end that a chart of `keys` draws: they stay in view."""
    values: list[float] = []
    for key in keys:
        points, bands = _paper_in_view(study, key, label)
        values += [p["value"] for p in points] + [v for b in bands for v in (b["lo"], b["hi"])]
    return values


def _rule(value: float, text: str, y_title: str) -> list[alt.Chart]:
    frame = pd.DataFrame([{"value": value, "text": text}])
    rule = alt.Chart(frame).mark_rule(strokeDash=[6, 4], color="#6e7781", strokeWidth=1.3).encode(
        y=alt.Y("value:Q", title=y_title), tooltip=[alt.Tooltip("text:N", title="baseline"), alt.Tooltip("value:Q", format=".4f")])
    label = alt.Chart(frame).mark_text(align="right", baseline="bottom", dx=-4, dy=-3, color="#57606a", fontSize=11).encode(
        x=alt.value(WIDTH), y=alt.Y("value:Q", title=y_title), text="text:N")
    return [rule, label]


def line_chart(study: StudyView, name: str) -> alt.LayerChart | None:
    mean, sd, n = seed_stats(arrange(study, name))
    long_name, axis_title = titles(study.ds, name)
    y_title = wrap(axis_title, AXIS_TITLE_CHARS)
    rows = [
        {"label": label, "step": int(step), "mean": round5(m), "sd": round5(s), "n": int(k),
         "lo": round5(m - s), "hi": round5(m + s)}
        for label, ms, ss, ks in zip(study.labels, mean, sd, n)
        for step, m, s, k in zip(study.steps, ms, ss, ks) if k > 0
    ]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    banded = frame[frame["n"] >= 2]
    intervals, interval = interval_rows(study, name)  # one seed: the run's own interval, if it has one
    ends = pd.DataFrame(intervals, columns=["label", "step", LOWER, UPPER, "interval"])
    pixels = pixel_accuracy(study.ds)
    rules = []
    if name == "probe_accuracy" and pixels is not None:
        rules.append((pixels, f"pixels {pixels:.3f}"))
    if study.paper and name.startswith("bound") and "true_mi" in study.paper["baselines"]:
        rules.append((study.paper["baselines"]["true_mi"]["value"], "true MI (paper)"))
    # Each point's band ends: its ±1 sd (two or more seeds) or its own interval (one seed), aligned with it.
    spans = frame[["label", "step", "mean"]].merge(ends[["label", "step", LOWER, UPPER]], on=["label", "step"],
                                                   how="left")
    own = frame["n"].to_numpy() >= 2
    lows = np.where(own, frame["lo"], spans[LOWER].fillna(spans["mean"])).astype(float)
    highs = np.where(own, frame["hi"], spans[UPPER].fillna(spans["mean"])).astype(float)
    domain = robust_range(frame["mean"].to_numpy(float), lows, highs,
                          keep=np.asarray(_paper_extent(study, [name]) + [v for v, _ in rules], dtype=float))
    scale = alt.Scale(zero=False) if domain is None else alt.Scale(zero=False, domain=list(domain), nice=False)
    x = alt.X("step:Q", title="training step", axis=alt.Axis(format="~s"))
    y = alt.Y("mean:Q", title=y_title, scale=scale)
    tooltip = ["label:N", "step:Q", alt.Tooltip("mean:Q", format=".4f", title=f"mean {long_name}"),
               alt.Tooltip("sd:Q", format=".4f", title="sd over seeds"), alt.Tooltip("n:Q", title="seeds")]
    layers = []
    if len(banded):
        layers.append(alt.Chart(banded).mark_area(opacity=0.16).encode(
            x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", color=_colour(study), detail="label:N"))
    if intervals:
        layers.append(band(ends, x=x, title=y_title, colour=_colour(study)))
    layers.append(alt.Chart(frame).mark_line(strokeWidth=2).encode(x=x, y=y, color=_colour(study)))
    layers.append(alt.Chart(frame).mark_circle(size=26, opacity=1).encode(x=x, y=y, color=_colour(study), tooltip=tooltip))
    layers += _paper_layers(study, name, y_title)
    for value, text in rules:
        layers += _rule(value, text, y_title)
    seeds = int(n.max())
    subtitle = [f"{name} · mean ± 1 sd over {seeds} seeds" if seeds > 1 else f"{name} · one seed"]
    subtitle += _lines(f"band: {interval}") if intervals else []
    if domain is not None:
        pinned, note = _off_scale(rows, "mean", domain, "{label} at step {step:,} ({mean:.4g})")
        bands_cut = int(((banded["lo"] < domain[0]) | (banded["hi"] > domain[1])).sum())
        subtitle.append("▲▼ off-scale: " + (note or "no mean") + (f"; {bands_cut} sd band(s) cut at the axis" if bands_cut else ""))
        layers = _clipped(layers) + _edge_markers(pinned, x, y_title, study)
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=_title(long_name, subtitle))


def endpoint_charts(study: StudyView) -> tuple[list[alt.LayerChart], bool]:
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


def _endpoint_chart(study: StudyView, key: str, with_paper: bool) -> alt.LayerChart | None:
    name, _, stat = key.partition(":")
    last = int(study.steps[-1])
    values = arrange(study, name)
    if values.ndim == 4:
        if stat not in reference.QUANTILE_STATS:
            return None
        q = np.asarray(study.ds["quantile"].values, dtype=float)
        pick = int(np.argmin(np.abs(q - reference.QUANTILE_STATS[stat])))
        stat = f"p{q[pick] * 100:g}"
        values = values[:, pick]
    mean, sd, n = seed_stats(values)
    points, bands = paper_points(study, key) if with_paper else ([], [])
    ours, paper = [], []
    for i, label in enumerate(study.labels):
        mine = [p for p in points if p["label"] == label]
        ranges = [b for b in bands if b["label"] == label]
        if (with_paper and not (mine or ranges)) or n[i, -1] == 0:
            continue
        m, s = float(mean[i, -1]), float(sd[i, -1]) if n[i, -1] > 1 else 0.0
        ours.append({"label": label, "value": round5(m), "lo": round5(m - s), "hi": round5(m + s),
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
    long_name, title = titles(study.ds, name)
    frame = pd.DataFrame(ours)
    rows, interval = interval_rows(study, name)  # one seed: the run's own interval at the last step
    ends = pd.DataFrame([r for r in rows if r["step"] == last and r["label"] in set(frame["label"])],
                        columns=["label", "step", LOWER, UPPER, "interval"])
    extent = [v for row in paper for v in (row["value"], row.get("lo"), row.get("hi")) if v is not None]
    extent += [*ends[LOWER], *ends[UPPER]]  # a single run's interval is its error bar: kept whole in view
    domain = robust_range(frame["value"].to_numpy(float), frame["lo"].to_numpy(float), frame["hi"].to_numpy(float),
                          keep=np.asarray(extent, dtype=float))
    scale = alt.Scale(zero=False) if domain is None else alt.Scale(zero=False, domain=list(domain), nice=False)
    x_title = wrap(title + (f" ({stat})" if stat else ""), AXIS_TITLE_CHARS + 8)
    x = alt.X("value:Q", title=x_title, scale=scale)
    y = alt.Y("label:N", title=None, sort=study.labels)
    tip = ["label:N", "source:N", alt.Tooltip("value:Q", format=".4f")]
    layers = [
        alt.Chart(frame).mark_rule(strokeWidth=2).encode(x="lo:Q", x2="hi:Q", y=y, color=_colour(study)),
        alt.Chart(frame).mark_circle(size=70, opacity=1).encode(
            x=x, y=y, color=_colour(study), tooltip=tip + [alt.Tooltip("n:Q", title="seeds")]),
    ]
    if len(ends):
        layers.insert(1, error_bars(ends, across=y, horizontal=True, title=x_title, colour=_colour(study), scale=scale))
    if paper:
        pframe = pd.DataFrame(paper)
        if "lo" in pframe:
            ranged = pframe.dropna(subset=["lo"])
            if len(ranged):
                layers.append(alt.Chart(ranged).mark_rule(strokeWidth=6, opacity=0.3, color="#59636e")
                              .encode(x="lo:Q", x2="hi:Q", y=y))
        layers.append(alt.Chart(pframe).mark_point(shape="diamond", filled=True, size=110, color="#1f2328",
                                                   opacity=0.85).encode(x=x, y=y, tooltip=tip + ["tag:N"]))
    spread = "" if len(ends) else ", ± 1 sd"
    subtitle = [f"{name}: ours (circle{spread}) at step {last}" + ("; paper (◆) at its last step" if with_paper else "")]
    subtitle += _lines(f"bar: {interval}") if len(ends) else []
    if domain is not None:
        _, note = _off_scale(ours, "value", domain, "{label} ({value:.4g})")
        cut = int(((frame["lo"] < domain[0]) | (frame["hi"] > domain[1])).sum())
        subtitle.append("off-scale: " + (note or "no mean") + (f"; {cut} sd bar(s) cut at the axis" if cut else ""))
        layers = _clipped(layers)
    return alt.layer(*layers).properties(
        width=WIDTH - 120, height=max(60, 26 * len(ours)),  # leaves room for the cell labels
        title=_title(long_name + (f", {stat}" if stat else ""), subtitle))


def quantile_charts(study: StudyView, name: str) -> list[tuple[str, alt.LayerChart]]:
    """The paper's Fig. 2 view: nested percentile bands over steps, one chart per grid cell."""
    quantiles = [float(q) for q in study.ds["quantile"].values]
    order = np.argsort(quantiles)
    quantiles = [quantiles[i] for i in order]
    mean, _, n = seed_stats(arrange(study, name)[:, order])  # (label, quantile, step)
    long_name, axis_title = titles(study.ds, name)
    y_title = wrap(axis_title, AXIS_TITLE_CHARS)
    pairs = [(i, len(quantiles) - 1 - i) for i in range(len(quantiles) // 2)]
    names = [f"{quantiles[lo] * 100:g}–{quantiles[hi] * 100:g} %" for lo, hi in pairs]
    # Ordinal, sorted outer to inner: Vega-Lite warns about opacity on an unsorted nominal field.
    opacity = alt.Opacity("band:O", sort=names,
                          scale=alt.Scale(domain=names, range=list(np.linspace(0.14, 0.5, len(names)).round(2))),
                          legend=alt.Legend(title="percentiles over inputs"))
    charts = []
    for index, label in enumerate(study.labels):
        colour = _palette(study)[index]
        bands = [{"band": names[b], "step": int(s), "lo": round5(mean[index, lo, t]), "hi": round5(mean[index, hi, t])}
                 for b, (lo, hi) in enumerate(pairs) for t, s in enumerate(study.steps) if n[index, lo, t] and n[index, hi, t]]
        lines = [{"quantile": f"{q * 100:g} %", "step": int(s), "value": round5(mean[index, qi, t])}
                 for qi, q in enumerate(quantiles) for t, s in enumerate(study.steps) if n[index, qi, t]]
        if not lines:
            continue
        x = alt.X("step:Q", title="training step", axis=alt.Axis(format="~s"))
        values = np.asarray([row["value"] for row in lines], dtype=float)
        keep = [v for stat in reference.QUANTILE_STATS for v in _paper_extent(study, [f"{name}:{stat}"], label)]
        domain = robust_range(values, keep=np.asarray(keep, dtype=float))
        scale = alt.Scale(zero=False) if domain is None else alt.Scale(zero=False, domain=list(domain), nice=False)
        layers = [
            alt.Chart(pd.DataFrame(bands)).mark_area(color=colour).encode(x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", opacity=opacity),
            alt.Chart(pd.DataFrame(lines)).mark_line(color=colour, strokeWidth=0.8, opacity=0.8, point=alt.OverlayMarkDef(size=14, color=colour)).encode(
                x=x, y=alt.Y("value:Q", title=y_title, scale=scale), detail="quantile:N",
                tooltip=[alt.Tooltip("quantile:N", title="percentile"), "step:Q", alt.Tooltip("value:Q", format=".3f", title=long_name)]),
        ]
        for stat in reference.QUANTILE_STATS:
            layers += _paper_layers(study, f"{name}:{stat}", y_title, label=label, colour=colour, connect=False)
        seeds = study.ds.sizes.get("seed", 1)
        pooled = "seed" not in study.ds[name].dims
        over = (f"pooled over {seeds} seed{'s' * (seeds != 1)} × inputs" if pooled else
                f"percentiles over inputs, mean over {int(n.max())} seed{'s' * (int(n.max()) != 1)}")
        subtitle = [f"{name} · {over}"]
        if domain is not None:
            outside = int(((values < domain[0]) | (values > domain[1])).sum())
            subtitle.append(f"off-scale: {outside} percentile value(s) beyond the axis, cut")
            layers = _clipped(layers)
        title = _title(f"{long_name} · {label}" if len(study.labels) > 1 else long_name, subtitle)
        charts.append((label, alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=title)))
    return charts


def correlation_charts(study: StudyView) -> list[tuple[str, alt.Chart]]:
    """Each other variable against the held-out bound, over steps and seeds (flattened)."""
    if "bound_test" not in study.variables:
        return []
    others = [n for n in study.variables if n not in NOT_CORRELATED]
    if not others:
        return []
    bound = arrange(study, "bound_test")  # (label, seed, step)
    label_idx, seed_idx, step_idx = np.indices(bound.shape)
    columns = {"label": np.asarray(study.labels, dtype=object)[label_idx.ravel()],
               "seed": np.asarray(study.ds["seed"].values if "seed" in study.ds.dims else [0])[seed_idx.ravel()],
               "step": study.steps[step_idx.ravel()], "x": bound.ravel()}
    described = {}
    for i, name in enumerate(others):
        values = arrange(study, name)
        note = ""
        if values.ndim == 4:  # quantile variables: the percentile nearest the median
            q = np.asarray(study.ds["quantile"].values, dtype=float)
            k = int(np.argmin(np.abs(q - 0.5)))
            values, note = values[:, k], f" (percentile {q[k] * 100:g})"
        if values.shape != bound.shape:  # pooled over seeds (no seed axis): no point per seed to pair up
            continue
        columns[f"v{i}"] = values.ravel()
        described[name] = (f"v{i}", note)
    frame = pd.DataFrame(columns)
    frame = frame[np.isfinite(frame["x"])]
    shown = frame.sample(n=MAX_SCATTER_POINTS, random_state=0).sort_index() if len(frame) > MAX_SCATTER_POINTS else frame
    shown = shown.assign(**{c: shown[c].map(round5) for c in shown.columns if c == "x" or c.startswith("v")})
    _, x_title = titles(study.ds, "bound_test")
    x_domain = robust_range(frame["x"].to_numpy(float))
    charts = []
    for name, (field, note) in described.items():
        long_name, y_title = titles(study.ds, name)
        pearson, spearman, count = correlations(frame["x"].to_numpy(), frame[field].to_numpy())
        subtitle = [f"all cells: Pearson r = {fmt_r(pearson)}, Spearman ρ = {fmt_r(spearman)} (n = {count})"]
        if len(study.labels) > 1:
            for label in study.labels:  # one line per cell
                part = frame[frame["label"] == label]
                p, s, k = correlations(part["x"].to_numpy(), part[field].to_numpy())
                subtitle.append(f"{label}: r = {fmt_r(p)}, ρ = {fmt_r(s)} (n = {k})")
        if len(shown) < len(frame):
            subtitle.append(f"{len(shown)} of {len(frame)} points drawn")
        y_domain = robust_range(frame[field].to_numpy(float))
        outside = 0
        for column, domain in (("x", x_domain), (field, y_domain)):
            if domain is not None:
                values = frame[column].to_numpy(float)
                outside += int(((values < domain[0]) | (values > domain[1])).sum())
        if outside:
            subtitle.append(f"off-scale: {outside} point coordinate(s) beyond an axis, drawn at its edge")

        def scale(domain: tuple[float, float] | None) -> alt.Scale:
            return alt.Scale(zero=False) if domain is None else alt.Scale(zero=False, domain=list(domain), nice=False, clamp=True)

        chart = alt.Chart(shown).mark_circle(size=22, opacity=0.55).encode(
            x=alt.X("x:Q", title=x_title, scale=scale(x_domain)),
            y=alt.Y(f"{field}:Q", title=wrap(y_title + note, AXIS_TITLE_CHARS), scale=scale(y_domain)),
            color=_colour(study),
            tooltip=["label:N", "seed:Q", "step:Q", alt.Tooltip("x:Q", format=".4f", title="bound_test"),
                     alt.Tooltip(f"{field}:Q", format=".4f", title=name)],
        ).properties(width=WIDTH, height=HEIGHT, title=_title(f"{long_name}{note} vs held-out bound", subtitle))
        charts.append((name, chart))
    return charts
