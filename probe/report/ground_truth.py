"""The page of a ground-truth result (`probe run-study mi-ground-truth`): estimators against known MI.

A result with a `task` dimension holds one estimate per (task, estimator, n_pairs, seed), not a
curve over training steps, so its page shows, instead of curves:

- the by-family table of each half (tuning: set mi_estimate's limits; scoring: judged) and each
  n: tasks, solved, flagged, reliable and wrong, reliable, and coverage of the truth by the
  interval among the reliable cells (`probe.ground_truth.scoring`, the study's own rule);

- at the largest n, a tasks × estimators heatmap of Î / I (mean estimate over seeds over the true MI), a
  diverging colour on a log scale around 1, unsolved cells crossed out and negative or
  non-finite means in grey;
- the number of tasks each estimator solves (|ln(Î / I)| < ln 1.5 in more than half the seeds,
  the study's `solved` variable), and per estimator how often its own `reliable` flag was
  given to a wrong, negative or non-finite estimate;
- Î against I, one panel per estimator, every seed a point, with the line y = x and the
  band of a factor 1.5 either way; an estimate that came with a confidence interval
  (`estimate_ci`, mi_estimate's) carries it as a vertical bar.

Numpy, pandas and Altair only: the report imports neither torch nor the studies (tasks are
put in the suite's order with `probe.ground_truth`, which is numpy-only). A result from before
`n_pairs` existed (one N, in `step`) is drawn the same way.
"""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from probe import reference
from probe.ground_truth.scoring import COLUMNS, cells_by_task, dataset_records, factor, family_table
from probe.ground_truth.suite import HALVES, suite
from probe.report.html import CSS, PAGE, VEGA_CONFIG, Charts, escape, script_json, vega_bundle
from probe.report.intervals import bounds, error_bars, interval_name, interval_text

FACTOR = 1.5                       # solved: within a factor 1.5 of the truth (1.25 for some families: scoring)
RATIO_DOMAIN = (0.25, 4.0)         # the heatmap's colours saturate a factor 4 from the truth
ESTIMATOR_ORDER = ("mi_estimate", "ksg", "infonce", "nwj", "dv", "smile")
CELL_W, CELL_H = 64, 17


def _last(da: xr.DataArray) -> xr.DataArray:
    """The cells at the largest n_pairs (a result is normalised by `cells_by_task` first)."""
    return da.isel(n_pairs=-1) if "n_pairs" in da.dims else da


def _values(ds: xr.Dataset, name: str, task: str, estimator: str) -> np.ndarray:
    if name not in ds:
        return np.full(ds.sizes.get("seed", 1), np.nan)
    return np.asarray(_last(ds[name]).sel(task=task, estimator=estimator).values, dtype=float).reshape(-1)


def _text(ds: xr.Dataset, name: str, task: str, estimator: str) -> list[str]:
    if name not in ds:
        return []
    values = np.asarray(_last(ds[name]).sel(task=task, estimator=estimator).values, dtype=object).reshape(-1)
    return [str(v) for v in values if isinstance(v, str) and v]


def orders(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    """Tasks in bmi's v1 order (unknown names last), estimators mi_estimate, ksg, bounds, others."""
    tasks = [str(t) for t in ds["task"].values]
    known = [t for t in suite() if t in tasks]
    estimators = [str(e) for e in ds["estimator"].values]
    return (known + sorted(t for t in tasks if t not in known),
            [e for e in ESTIMATOR_ORDER if e in estimators] + sorted(e for e in estimators if e not in ESTIMATOR_ORDER))


def cell_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (task, estimator): truth, mean Î over seeds, Î / I, seeds solved, task solved,
    seeds marked reliable, and the reasons given."""
    tasks, estimators = orders(ds)
    n_seeds = ds.sizes.get("seed", 1)
    rows = []
    for task in tasks:
        truth = float(np.nanmax(_values(ds, "true_mi", task, estimators[0])))
        dims = ""
        if "dim_x" in ds and np.isfinite(_values(ds, "dim_x", task, estimators[0])).any():
            dims = (f"{int(np.nanmax(_values(ds, 'dim_x', task, estimators[0])))} × "
                    f"{int(np.nanmax(_values(ds, 'dim_y', task, estimators[0])))}")
        for est in estimators:
            values = _values(ds, "estimate", task, est)
            finite = values[np.isfinite(values)]
            mean = float(finite.mean()) if finite.size else math.nan
            solved = np.nan_to_num(_values(ds, "solved", task, est), nan=0.0)
            reliable = _values(ds, "reliable", task, est)
            reasons = sorted(set(_text(ds, "unreliable_reason", task, est)))
            rows.append({
                "task": task, "row": f"{task} ({dims})" if dims else task, "estimator": est, "true_mi": truth,
                "estimate": mean, "ratio": mean / truth if truth > 0 else math.nan,
                "seeds_solved": int(solved.sum()), "seeds": n_seeds, "solved": bool(solved.sum() > n_seeds / 2),
                "seeds_reliable": int((reliable == 1).sum()), "has_verdict": bool(np.isfinite(reliable).any()),
                "reason": "; ".join(reasons)[:300],
            })
    return pd.DataFrame(rows)


def _round(value: float) -> float | None:
    return float(f"{value:.4g}") if value is not None and np.isfinite(value) else None


def heatmap(table: pd.DataFrame, tasks: list[str], estimators: list[str]) -> alt.LayerChart:
    """Tasks × estimators, coloured by Î / I on a log scale around 1; unsolved cells crossed out."""
    frame = table.assign(
        ratio=table["ratio"].map(_round), estimate=table["estimate"].map(_round),
        shown=[f"{r:.2f}" if np.isfinite(r) else "n/a" for r in table["ratio"]],
        positive=[bool(np.isfinite(r) and r > 0) for r in table["ratio"]],
        mark=["" if s else "✗" for s in table["solved"]],
        dark=[bool(np.isfinite(r) and r > 0 and abs(math.log(r)) > math.log(2.5)) for r in table["ratio"]],
        solved_text=[f"{a} of {b} seeds" for a, b in zip(table["seeds_solved"], table["seeds"])])
    rows = [frame.loc[frame["task"] == t, "row"].iloc[0] for t in tasks]
    x = alt.X("estimator:N", sort=estimators, title=None, axis=alt.Axis(orient="top", labelAngle=0))
    y = alt.Y("row:N", sort=rows, title=None, axis=alt.Axis(labelLimit=320))
    tip = [alt.Tooltip("task:N"), alt.Tooltip("estimator:N"), alt.Tooltip("true_mi:Q", format=".3f", title="true MI"),
           alt.Tooltip("estimate:Q", format=".3f", title="mean Î (nats)"), alt.Tooltip("shown:N", title="Î / I"),
           alt.Tooltip("solved_text:N", title="solved"), alt.Tooltip("reason:N", title="unreliable because")]
    colour = alt.Color("ratio:Q", title="Î / I", scale=alt.Scale(type="log", domain=list(RATIO_DOMAIN), domainMid=1,
                                                                 scheme="redblue", reverse=True, clamp=True),
                       legend=alt.Legend(orient="right", direction="vertical", values=[0.25, 0.5, 2 / 3, 1, 1.5, 2, 4],
                                         format=".2~f", gradientLength=220))
    ink = alt.condition("datum.dark", alt.value("white"), alt.value("#1f2328"))  # legible on saturated cells
    base = alt.Chart(frame)
    layers = [
        base.transform_filter("datum.positive").mark_rect(stroke="white", strokeWidth=1).encode(
            x=x, y=y, color=colour, tooltip=tip),
        base.transform_filter("!datum.positive").mark_rect(color="#d0d7de", stroke="white", strokeWidth=1).encode(
            x=x, y=y, tooltip=tip),
        base.mark_text(fontSize=10, dx=-6).encode(x=x, y=y, text="shown:N", tooltip=tip, color=ink),
        base.mark_text(fontSize=11, dx=22, fontWeight=700).encode(x=x, y=y, text="mark:N", color=ink),
    ]
    return alt.layer(*layers).properties(
        width=CELL_W * len(estimators), height=CELL_H * len(tasks),
        title=alt.Title("Î / I per task and estimator", subtitle=[
            "mean estimate over seeds over the true MI: blue under, red over, white exact",
            f"log colour scale, saturated beyond ×{RATIO_DOMAIN[1]:g}; grey: mean Î negative or non-finite",
            f"✗ not solved (|ln Î/I| ≥ ln {FACTOR:g} in half the seeds or more)"]))


def solved_chart(table: pd.DataFrame, estimators: list[str], n_tasks: int) -> alt.LayerChart:
    counts = table.groupby("estimator")["solved"].sum().reindex(estimators).fillna(0).astype(int)
    frame = pd.DataFrame({"estimator": estimators, "solved": counts.values,
                          "text": [f"{c} / {n_tasks}" for c in counts.values]})
    y = alt.Y("estimator:N", sort=estimators, title=None)
    x = alt.X("solved:Q", title="tasks solved (within ×1.5 in most seeds)", scale=alt.Scale(domain=[0, n_tasks]))
    bars = alt.Chart(frame).mark_bar(color="#4c78a8").encode(x=x, y=y, tooltip=["estimator:N", "text:N"])
    labels = alt.Chart(frame).mark_text(align="left", dx=4, fontSize=11).encode(x=x, y=y, text="text:N")
    return alt.layer(bars, labels).properties(width=360, height=24 * len(estimators),
                                             title=alt.Title("Tasks solved per estimator", subtitle=f"of {n_tasks}"))


def scatter_charts(ds: xr.Dataset, estimators: list[str]) -> list[alt.LayerChart]:
    """Î against I, one panel per estimator, every (task, seed) a point; y = x and the ×1.5 band."""
    estimate, truth = _last(ds["estimate"]), _last(ds["true_mi"])
    top = float(np.nanmax(np.asarray(truth.values, dtype=float))) * FACTOR * 1.1
    line = pd.DataFrame({"true_mi": np.linspace(0, top / FACTOR / 1.1 * 1.05, 50)})
    line = line.assign(lo=line["true_mi"] / FACTOR, hi=line["true_mi"] * FACTOR)
    ci_variable = interval_name(ds, "estimate")
    ci = None if ci_variable is None else [_last(end) for end in bounds(ds[ci_variable])]
    ci_text = "" if ci_variable is None else interval_text(ds[ci_variable])
    charts = []
    for est in estimators:
        frame = pd.DataFrame({
            "task": np.repeat([str(t) for t in ds["task"].values], ds.sizes.get("seed", 1)),
            "estimate": np.asarray(estimate.sel(estimator=est).transpose("task", ...).values, dtype=float).reshape(-1),
            "true_mi": np.asarray(truth.sel(estimator=est).transpose("task", ...).values, dtype=float).reshape(-1),
            "solved": np.asarray(_last(ds["solved"]).sel(estimator=est).transpose("task", ...).values,
                                 dtype=float).reshape(-1) == 1,
        })
        ends = [np.asarray(end.sel(estimator=est).transpose("task", ...).values, dtype=float).reshape(-1)
                for end in ci or ()]
        with_ci = frame.assign(ci_lo=ends[0], ci_hi=ends[1]) if ends else frame.assign(ci_lo=np.nan, ci_hi=np.nan)
        missing = int((~np.isfinite(frame["estimate"])).sum())
        frame = frame[np.isfinite(frame["estimate"])]
        off = int(((frame["estimate"] > top) | (frame["estimate"] < -0.5)).sum())
        frame = frame.assign(estimate=frame["estimate"].map(_round), outcome=np.where(frame["solved"], "solved", "not"))
        x = alt.X("true_mi:Q", title="true MI (nats)", scale=alt.Scale(domain=[0, top]))
        scale = alt.Scale(domain=[-0.5, top], clamp=True)
        y = alt.Y("estimate:Q", title="Î (nats)", scale=scale)
        band = alt.Chart(line).mark_area(opacity=0.15, color="#54a24b").encode(
            x=x, y=alt.Y("lo:Q", title="Î (nats)", scale=scale), y2="hi:Q")
        diagonal = alt.Chart(line).mark_line(color="#1f2328", strokeDash=[4, 3], strokeWidth=1).encode(
            x=x, y=alt.Y("true_mi:Q", title="Î (nats)", scale=scale))
        points = alt.Chart(frame).mark_circle(size=30, opacity=0.75).encode(
            x=x, y=y, color=alt.Color("outcome:N", scale=alt.Scale(domain=["solved", "not"], range=["#1a7f37", "#cf222e"]),
                                      legend=alt.Legend(title=None)),
            tooltip=["task:N", alt.Tooltip("true_mi:Q", format=".3f"), alt.Tooltip("estimate:Q", format=".3f")])
        notes = [f"{len(frame)} estimates (task × seed); green band: within ×{FACTOR:g}"]
        if missing or off:
            notes.append(f"{missing} non-finite left out, {off} outside the axes drawn at the edge")
        layers = [band, diagonal, points]
        bars = with_ci[np.isfinite(with_ci[["estimate", "ci_lo", "ci_hi"]]).all(axis=1)]
        if len(bars):  # only estimators that give an interval (mi_estimate); drawn under the points
            bars = bars.assign(**{c: bars[c].map(_round) for c in ("estimate", "ci_lo", "ci_hi")}, interval=ci_text)
            layers.insert(2, error_bars(bars, across=x, horizontal=False, title="Î (nats)", scale=scale,
                                        extra_tooltip=["task:N", alt.Tooltip("estimate:Q", format=".3f")]))
            notes.append(f"bars: {ci_text}")
        charts.append(alt.layer(*layers).properties(
            width=300, height=240, title=alt.Title(est, subtitle=notes)))
    return charts


def _reliability_table(table: pd.DataFrame, ds: xr.Dataset, estimators: list[str]) -> str:
    """Per estimator, over all cells: solved, marked reliable, and reliable-but-wrong."""
    rows = []
    for est in estimators:
        values = np.asarray(_last(ds["estimate"]).sel(estimator=est).values, dtype=float).reshape(-1)
        solved = np.asarray(_last(ds["solved"]).sel(estimator=est).values, dtype=float).reshape(-1) == 1
        reliable = np.asarray(_last(ds["reliable"]).sel(estimator=est).values, dtype=float).reshape(-1) \
            if "reliable" in ds else np.full(values.shape, np.nan)
        flagged = reliable == 1
        has = np.isfinite(reliable).any()
        bad = flagged & ~(np.isfinite(values) & (values >= 0))
        cells = [f"<code>{escape(est)}</code>",
                 f"{int(table.loc[table['estimator'] == est, 'solved'].sum())} / {table['task'].nunique()}",
                 f"{int(solved.sum())} / {values.size}",
                 f"{int(flagged.sum())}" if has else "—",
                 f"{int((flagged & solved).sum())} / {int(flagged.sum())}" if has and flagged.any() else "—",
                 f"{int((flagged & ~solved).sum())}" if has else "—",
                 f"{int(bad.sum())}" if has else "—"]
        rows.append("<tr>" + "".join(f'<td class="{"num" if i else ""}">{c}</td>' for i, c in enumerate(cells)) + "</tr>")
    head = ("estimator", "tasks solved", "cells solved", "cells marked reliable", "solved among reliable",
            "reliable but not solved", "reliable yet negative or non-finite")
    return ('<div class="table-wrap"><table class="data"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _ratio_table(table: pd.DataFrame, tasks: list[str], estimators: list[str]) -> str:
    body = []
    for task in tasks:
        part = table[table["task"] == task].set_index("estimator")
        cells = [f"<td>{escape(part['row'].iloc[0])}</td>", f'<td class="num">{part["true_mi"].iloc[0]:.3f}</td>']
        for est in estimators:
            r, ok = part.loc[est, "ratio"], part.loc[est, "solved"]
            text = f"{r:.2f}" if np.isfinite(r) else "n/a"
            cells.append(f'<td class="num" title="{escape(part.loc[est, "reason"])}">{escape(text)}{"" if ok else " ✗"}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in ("task", "true MI (nats)", *estimators))
    return (f'<details><summary>the same numbers as a table</summary><div class="table-wrap"><table class="data">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div></details>")


def _family_table_html(rows: list[dict]) -> str:
    body = []
    for r in rows:
        coverage = f"{r['coverage']:.0%} of {r['reliable']}" if r["reliable"] else "—"
        cells = [escape(r["family"]), r["tasks"], r["cells"],
                 *(f"{r[k]} / {r['cells']}" for k in ("solved", "flagged", "reliable and wrong", "reliable")), coverage]
        strong = ' style="font-weight:600"' if r["family"] == "all" else ""
        body.append(f"<tr{strong}>" + "".join(f'<td class="{"num" if i else ""}">{c}</td>' for i, c in enumerate(cells))
                    + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in COLUMNS)
    return (f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def family_section(ds: xr.Dataset, estimator: str = "mi_estimate") -> str:
    """The by-family tables of `estimator` for each half and each n (empty if it was not run)."""
    if estimator not in [str(e) for e in ds["estimator"].values]:
        return ""
    blocks = []
    for half in (*HALVES, "—"):
        cells = dataset_records(ds, estimator, half)
        for n in sorted({c["n"] for c in cells}):
            title = "no split recorded" if half == "—" else f"{half} half" + (" (judged)" if half == "scoring" else
                                                                               " (set the limits)")
            blocks.append(f"<h3>{escape(title)}, n = {n:,}</h3>"
                          + _family_table_html(family_table([c for c in cells if c["n"] == n])))
    strict = sorted({f for f in ds["family"].values.ravel() if isinstance(f, str) and factor(f) != FACTOR})
    return ('<section><h2>By family: solved, flagged, reliable and wrong, coverage</h2><p class="hint">'
            f"<code>{escape(estimator)}</code> over every (task, seed) cell. Solved: within ×{FACTOR:g} of the truth"
            + (f" (×1.25 for {escape(', '.join(strict))})" if strict else "")
            + "; flagged: not solved and marked unreliable (a lower bound reported as such counts here); "
            "reliable and wrong: marked reliable yet not solved; coverage: the share of reliable cells whose 95 % "
            "interval holds the truth (within two standard errors of a Monte-Carlo truth). The scoring half took no "
            f"part in setting the estimator's limits.</p>{''.join(blocks)}</section>")


def ground_truth_section(ds: xr.Dataset, charts: Charts) -> str:
    """The page's body for a ground-truth result: by-family tables, heatmap, solved counts,
    reliability, scatters (the charts at the largest n)."""
    ds = cells_by_task(ds)
    tasks, estimators = orders(ds)
    table = cell_table(ds)
    n = f"{int(ds['n_pairs'].values[-1]):,}"
    parts = [
        family_section(ds),
        '<section><h2>Estimates against the truth</h2><p class="hint">'
        f"Each cell samples n = {escape(n)} pairs (the largest n run) from a task with known MI (bmi v1 and "
        "issue 19's families) and runs one estimator on them. A task is solved when Î is within its factor of I "
        "in more than half of its seeds; a negative or non-finite Î never is.</p>"
        f"{charts.add(heatmap(table, tasks, estimators))}{_ratio_table(table, tasks, estimators)}</section>",
        '<section><h2>Solved, and does each estimator know when it is wrong?</h2><p class="hint">Over every (task, seed) cell: '
        "how often each estimator's own <code>reliable</code> flag was given, and given to an estimate that "
        "missed the truth or was negative or non-finite (— where the estimator gives no flag)."
        f'</p><div class="grid">{charts.add(solved_chart(table, estimators, len(tasks)))}</div>'
        f"{_reliability_table(table, ds, estimators)}</section>",
        '<section><h2>Estimate vs truth</h2><p class="hint">Every (task, seed) estimate; dashed: y = x; green band: '
        f'within ×{FACTOR:g}; vertical bars: the estimator\'s confidence interval, where it gives one.</p>'
        '<div class="grid">'
        + "".join(charts.add(c) for c in scatter_charts(ds, estimators)) + "</div></section>",
    ]
    return "".join(p for p in parts if p)


def ground_truth_page(ds: xr.Dataset, header: str, status: str) -> str:
    """The whole HTML page: the study page's `header` and `status` sections around this module's."""
    charts = Charts()
    body = "\n".join(s for s in (header, ground_truth_section(ds, charts), status) if s)
    payload = {"config": VEGA_CONFIG, "datasets": charts.datasets, "charts": charts.items}
    title = str(ds.attrs.get("title") or ds.attrs.get("study") or "probe report")
    return PAGE.format(title=escape(title), css=CSS, bundle=vega_bundle(), payload=script_json(payload), body=body,
                       footer=escape(f"probe report · Czyż et al., NeurIPS 2023 · {reference.CITATION} · "
                                     f"{ds.attrs.get('probe_version', '')}"))
