"""One self-contained HTML page per study result.

`write_report(results)` reads a study result (an `xarray.Dataset` or its netCDF file: variables
over (grid dims..., seed, step), see `probe.results`) and writes a page that opens offline.

The page shows, for each variable over `step`, the mean over seeds with a ±1 sd band (sample sd,
ddof=1, as the curves of Tschannen et al. 2020), one colour per grid cell (with one seed, the run's
own confidence interval `<name>_ci` where it has one); percentile bands for
variables over `quantile` (the paper's Fig. 2); the paper's values beside ours where they are
comparable (`probe.reference`); how each variable co-varies with the held-out bound; a table of
first and last values; and the runs that did not finish cleanly. The study's verdict on the run
is judged by the caller (`probe.verdict.judge`) and handed in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from probe import reference
from probe.report.arrange import StudyView, arrange, attr, describe, load_results, paper_points, seed_stats, titles
from probe.report.charts import correlation_charts, endpoint_charts, line_chart, quantile_charts
from probe.report.ground_truth import ground_truth_page
from probe.report.html import (
    BADGES,
    CSS,
    PAGE,
    VEGA_CONFIG,
    Charts,
    escape,
    file_name,
    human_duration,
    script_json,
    seed_text,
    vega_bundle,
    write_page,
)
from probe.verdict import HELD, Verdict


def write_report(results: xr.Dataset | str | os.PathLike, out: str | os.PathLike | None = None, *,
                 verdict: Verdict | None = None) -> Path:
    """Write the HTML page of a study result and return its path.

    `results` is an `xarray.Dataset` or the path of its netCDF file. `out` defaults to
    `reports/<study>.html` under the current directory; an existing directory gets
    `<study>.html` inside it. `verdict` (`probe.verdict.judge(study, ds)`) opens the page when
    given. The file is written to a temporary name first, then moved into place, so a reader
    never sees half a page.
    """
    ds, source = load_results(results)
    study = describe(ds, source)
    page = _render(study, verdict)
    path = _out_path(out, study)
    write_page(path, page)
    return path


def _out_path(out: str | os.PathLike | None, study: StudyView) -> Path:
    name = file_name(attr(study.ds, "study"), "report")
    if out is None:
        return Path.cwd() / "reports" / f"{name}.html"
    path = Path(out)
    return path / f"{name}.html" if path.is_dir() else path


def heading(title: str, verdict: Verdict | None) -> tuple[str, str]:
    """The page's heading and the paper's claim to show under it.

    A study's title states the paper's finding ("Bijective encoders: the bound and the accuracy
    rise while ..."). Only a run whose verdict held may carry it as its heading; otherwise the
    heading is the topic before the colon and the rest is shown as the paper's claim.
    """
    topic, colon, claim = title.partition(":")
    if (verdict is not None and verdict.outcome == HELD) or not colon or not claim.strip():
        return title, ""
    return topic.strip(), claim.strip()


def _header(study: StudyView, verdict: Verdict | None) -> str:
    ds = study.ds
    name = attr(ds, "study", "unnamed study")
    title, claim = heading(attr(ds, "title") or name, verdict)
    sha = attr(ds, "dataset_sha256")
    dataset = attr(ds, "dataset", "—") + (f" (sha256 {sha[:12]}…)" if sha else "")
    n_seeds = ds.sizes.get("seed", 1)
    seeds = seed_text(attr(ds, "seeds") or (",".join(str(s) for s in ds["seed"].values) if "seed" in ds.dims else "—"))
    rows = [
        ("preset", attr(ds, "preset", "—")),
        ("dataset", dataset),
        *([("views", views_text(ds))] if attr(ds, "views") else []),
        ("seeds", f"{seeds} ({n_seeds} run{'s' if n_seeds != 1 else ''} per cell)"),
        ("grid", " × ".join(f"{d} ({ds.sizes[d]})" for d in study.varying) or "one cell"),
        *([("same in every cell", ", ".join(f"{d} = {v}" for d, v in study.fixed.items()))] if study.fixed else []),
        ("steps", f"{len(study.steps)} evaluations, {int(study.steps.min())} to {int(study.steps.max())}"),
        ("device", attr(ds, "device", "—")),
        ("wall time, summed over cells", human_duration(ds.attrs.get("total_wall_time"))),
        ("eval batch size", attr(ds, "eval_batch_size", "—")),
        ("probe / torch", f"{attr(ds, 'probe_version', '—')} / {attr(ds, 'torch_version', '—')}"
                          + (f" ({attr(ds, 'torch_build')} build)" if attr(ds, "torch_build") else "")),
        ("created", attr(ds, "created", "—")),
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    parts = [f"<h1>{escape(title)}</h1>"]
    origin = study_origin(ds)
    if claim:
        outcome = verdict.label if verdict is not None else "not judged"
        owner = "The paper's claim" if origin == "paper" else "This study's claim"
        parts.append(f'<p class="claim">{owner}: “{escape(claim)}”. This run: {escape(outcome)}.</p>')
    if origin == "paper":
        figure = f" · paper {study.paper['figure']}" if study.paper else ""
        source = f"{figure} · Tschannen et al., ICLR 2020"
    else:
        source = (f" · {attr(ds, 'figure')}" if attr(ds, "figure") else "") + (
            " · a variant of another study: its claim is its own, and the paper's numbers are not its reference"
            if origin == "variant" else "")
    parts.append(f'<p class="meta">study <code>{escape(name)}</code>{escape(source)}</p>')
    entry = reference.PAPER.get(name)
    if entry:
        parts.append(f'<p class="takeaway"><strong>{escape(entry["figure"])}.</strong> {escape(entry["takeaway"])}</p>')
    parts.append(_verdict_note(verdict))
    preset = attr(ds, "preset")
    if preset != "paper":
        parts.append(
            f'<div class="callout warn"><strong>Reduced preset “{escape(preset or "unknown")}”.</strong> This run uses '
            "fewer steps, seeds or data than the paper's protocol; its numbers are not comparable 1:1 with the paper's.</div>"
        )
    failed = _failures(study)
    if failed:
        parts.append(f'<div class="callout bad"><strong>{len(failed)} run(s) did not finish cleanly</strong>; '
                     'see <a href="#status">run status</a>. Their values are NaN from the failure on and are left out of means.</div>')
    parts.append(f'<table class="meta-table">{table}</table>')
    settings = attr(ds, "settings_json")
    if settings:
        try:
            settings = json.dumps(json.loads(settings), indent=2, sort_keys=True)
        except ValueError:
            pass
        parts.append(f"<details><summary>study settings</summary><pre>{escape(settings)}</pre></details>")
    return "<header>" + "".join(parts) + "</header>"


def views_text(ds: xr.Dataset) -> str:
    """'top-bottom (the paper's halves)', 'left-right', 'random-split:0 (pixel partition 3fa2...)'."""
    views = attr(ds, "views")
    if views == "top-bottom":
        return "top-bottom (the paper's halves)"
    partition = attr(ds, "views_partition")
    return views + (f" (pixel partition {partition})" if partition else "")


def study_origin(ds: xr.Dataset) -> str:
    """The run's `study_origin` attr ("paper", "own", "variant"); for a file written before it was
    recorded, "paper" for the studies the paper's numbers are kept for, else "own"."""
    return attr(ds, "study_origin") or ("paper" if attr(ds, "study") in reference.PAPER else "own")


def _verdict_note(verdict: Verdict | None) -> str:
    """The study's verdict on this run, or nothing when none was handed in."""
    if verdict is None:
        return ""
    fg, bg = BADGES[verdict.outcome]
    items = "".join(f"<li>{escape(line)}</li>" for line in verdict.evidence)
    said = verdict.label if verdict.reason else f"the claim {verdict.outcome}"
    return (f'<div class="callout" style="background:{bg};border-color:{fg}"><p><strong>This run: '
            f"{escape(said)}.</strong> {escape(verdict.claim)}.</p><ul>{items}</ul>"
            + (f"<p>{escape(verdict.paper[0].upper() + verdict.paper[1:])}.</p>" if verdict.paper else "")
            + f"<p class=\"hint\">Decided by: {escape(verdict.decided_by)}.</p></div>")


def _paper_note(study: StudyView) -> str:
    if study.paper is None:
        return f'<p class="callout">{escape(study.paper_reason)}</p>'
    entry = study.paper
    baselines = "; ".join(f"{k.replace('_', ' ')} ≈ {v['value']:g} [{v['tag']}] ({v['about']})" for k, v in entry["baselines"].items())
    notes = "".join(f"<li>{escape(n)}</li>" for n in entry["notes"])
    return (
        '<div class="callout paper"><p><strong>◆ Paper values</strong> (Tschannen et al. 2020, '
        f"{escape(entry['figure'])}) are drawn as diamonds on dashed lines in each grid cell's colour, ranges as "
        "thick vertical bars. Tags: [F] read off the figures by eye (about ±0.005 accuracy, ±0.2 nats), "
        "[P] stated in the text, [C] in the notebook's code; each value with its figure and source is listed in "
        "<code>docs/reference.md</code> of the probe repository.</p>"
        f"<p>Baselines: {escape(baselines)}.</p><ul>{notes}</ul></div>"
    )


def _fmt(mean: float, sd: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "—"
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {sd:.3f}"


def _paper_at(study: StudyView, key: str, label_index: int, step: int) -> str:
    points, bands = paper_points(study, key)
    label = study.labels[label_index]
    value = next((f"{p['value']:g}" for p in points if p["label"] == label and p["step"] == step), "")
    band = next((b["range"] for b in bands if b["label"] == label and b["step"] == step), "")
    text = f"{value} ({band})" if value and band else value or band
    tag = study.paper.get("tags", {}).get(key, "") if study.paper else ""
    return f"{text} [{tag}]" if text else ""


def _summary_table(study: StudyView) -> str:
    first, last = int(study.steps[0]), int(study.steps[-1])
    with_paper = study.paper is not None
    head = ["variable", "units", "grid cell", f"step {first}", f"step {last}"]
    if with_paper:
        head = head[:4] + [f"paper @ {first}"] + head[4:] + [f"paper @ {last}"]
    rows = []
    for name in study.variables:
        values = arrange(study, name)
        units = str(study.ds[name].attrs.get("units", "")).strip()
        units = "dimensionless" if units == "1" else units or "—"
        series = [(name, "", values)]
        if values.ndim == 4:
            q = np.asarray(study.ds["quantile"].values, dtype=float)
            picks = sorted({int(np.argmin(np.abs(q - t))) for t in (0.5, 1.0)})
            stat = {v: k for k, v in reference.QUANTILE_STATS.items()}
            series = [(f"{name}:{stat.get(float(q[k]), '')}" if float(q[k]) in stat else "", f" (p{q[k] * 100:g})", values[:, k]) for k in picks]
        for key, suffix, array in series:
            mean, sd, n = seed_stats(array)
            for i, label in enumerate(study.labels):
                cells = [(name, suffix), units, label, _fmt(mean[i, 0], sd[i, 0], n[i, 0])]
                if with_paper:
                    cells.append(_paper_at(study, key, i, first))
                cells.append(_fmt(mean[i, -1], sd[i, -1], n[i, -1]))
                if with_paper:
                    cells.append(_paper_at(study, key, i, last))
                rows.append(cells)
    # A column with nothing in it (the paper reports no value at a short run's last step) is dropped.
    keep = [j for j in range(len(head)) if j < 3 or any(row[j] not in ("", "—") for row in rows)]
    if len(study.labels) == 1:
        keep = [j for j in keep if j != 2]
    body = []
    for row in rows:
        cells = []
        for j in keep:
            if j == 0:
                cells.append(f"<td><code>{escape(row[0][0])}</code>{escape(row[0][1])}</td>")
            else:
                cells.append(f'<td class="{"num" if j >= 3 else ""}">{escape(row[j])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{escape(head[j])}</th>" for j in keep)
    dropped = [head[j] for j in range(len(head)) if j >= 3 and j not in keep]
    hint = ("Mean ± sample sd over seeds, in the units of each row; paper values only where the paper reports "
            "the same step" + (f" (none at {', '.join(h.removeprefix('paper @ ') for h in dropped)}: see the chart of "
                               "end points above)" if dropped else "") + ".")
    return (f'<section><h2>First and last evaluation</h2><p class="hint">{escape(hint)}</p>'
            f'<div class="table-wrap"><table class="data"><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table></div></section>')


def _failures(study: StudyView) -> list[tuple[str, str, str]]:
    if "status" not in study.ds:
        return []
    status = arrange(study, "status", dtype=object)  # (label, seed)
    seeds = [str(s) for s in study.ds["seed"].values] if "seed" in study.ds.dims else ["0"]
    out = []
    for label, row in zip(study.labels, status.reshape(len(study.labels), -1)):
        for seed, value in zip(seeds, row):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text != "ok":
                out.append((label, seed, text))
    return out


def _status_table(study: StudyView) -> str:
    failed = _failures(study)
    if not failed:
        return ""
    rows = "".join(f"<tr><td>{escape(label)}</td><td>{escape(s)}</td><td>{escape(t)}</td></tr>" for label, s, t in failed)
    return (f'<section id="status"><h2>Run status</h2><p class="hint">Runs whose status is not “ok”.</p>'
            f'<table class="data"><thead><tr><th>grid cell</th><th>seed</th><th>status</th></tr></thead><tbody>{rows}</tbody></table></section>')


def _constants_note(study: StudyView) -> str:
    """One line for the variables with a single value everywhere, instead of a flat chart each."""
    if not study.constant:
        return ""
    items = "; ".join(f"<code>{escape(n)}</code> ({escape(titles(study.ds, n)[0])}) = {v:g}"
                      for n, v in study.constant.items())
    return f'<p class="hint">The same in every cell, seed and step, so not drawn: {items}.</p>'


def _render(study: StudyView, verdict: Verdict | None) -> str:
    if "task" in study.ds.dims:  # a ground-truth result: one estimate per cell, not curves (mi-ground-truth)
        return ground_truth_page(study.ds, _header(study, verdict), _status_table(study))
    charts = Charts()
    figures = []
    for name in study.variables:
        long_name, _ = titles(study.ds, name)
        if "quantile" in study.ds[name].dims:
            figures += [charts.add(c) for _, c in quantile_charts(study, name)]
        else:
            chart = line_chart(study, name)
            if chart is None:
                figures.append(f'<figure class="empty"><p><code>{escape(name)}</code>: every value is NaN.</p></figure>')
            else:
                figures.append(charts.add(chart))
    correlation = [charts.add(c) for _, c in correlation_charts(study)]
    end_charts, with_paper = endpoint_charts(study)
    endpoints = [charts.add(c) for c in end_charts]
    sections = [
        _header(study, verdict),
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
        f'<section><h2>Training curves</h2>{_constants_note(study)}<div class="grid">{"".join(figures)}</div></section>',
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
        sections.append(f'<p class="hint">Not plotted (dims the report does not draw): {escape(", ".join(study.skipped))}.</p>')
    payload = {"config": VEGA_CONFIG, "datasets": charts.datasets, "charts": charts.items}
    title, _ = heading(attr(study.ds, "title") or attr(study.ds, "study", "probe report"), verdict)
    return PAGE.format(
        title=escape(title), css=CSS, bundle=vega_bundle(), payload=script_json(payload),
        body="\n".join(s for s in sections if s), footer=escape(f"probe report · {reference.CITATION} · {attr(study.ds, 'probe_version', '')}"),
    )
