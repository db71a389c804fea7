"""The robustness page: one study's verdict on every dataset × views it was run on.

Rows are conditions (dataset, views), columns the verdict, the numbers that decide it (as the
verdict states them, intervals included), how the run was made and a link to its own page. It
answers "does the effect hold elsewhere?" for one preset, at a glance.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from probe import reference
from probe.report.html import CSS, human_duration, seed_text, write_page
from probe.report.html import badge as _badge
from probe.report.html import escape as _e
from probe.results import load_dataset
from probe.verdict import Verdict


@dataclass(frozen=True)
class Row:
    dataset: str
    views: str
    verdict: Verdict | None      # None: the condition could not run
    error: str = ""
    page: Path | None = None     # the run's own report page
    results: Path | None = None
    wall_s: float = 0.0


def rows_from(outcomes, judge, write_report) -> list[Row]:
    """Rows for `probe.runner.robustness.Outcome`s: each run judged (`judge(ds) -> Verdict`) and its
    own page written beside its results (`write_report(ds, path, verdict=...)`)."""
    rows = []
    for outcome in outcomes:
        condition = outcome.condition
        if outcome.results is None:
            rows.append(Row(condition.data_label, condition.views, None, outcome.error, wall_s=outcome.wall_s))
            continue
        ds = load_dataset(outcome.results)
        verdict = judge(ds)
        page = write_report(ds, outcome.results.parent / "report.html", verdict=verdict)
        rows.append(Row(str(ds.attrs.get("dataset", condition.data_label)), str(ds.attrs.get("views", condition.views)),
                        verdict, page=page, results=outcome.results,
                        wall_s=float(ds.attrs.get("total_wall_time", 0.0))))
    return rows


def _link(target: Path | None, page: Path) -> str:
    """A relative link to the run's page when it lies under the page's folder (so the two travel
    together); otherwise the run's folder as text, which a copied page cannot follow."""
    if target is None:
        return ""
    href = os.path.relpath(target.resolve(), page.resolve().parent)
    if href.startswith(".."):
        return f'<span class="muted">run: <code>{_e(target.parent.name)}</code></span>'
    return f'<a href="{_e(href)}">report page</a>'


def _row(row: Row, page: Path) -> str:
    head = f"<td><strong>{_e(row.dataset)}</strong></td><td class=\"nowrap\" data-label=\"views:\">{_e(row.views)}</td>"
    if row.verdict is None:
        return f"{head}<td>{_badge('not run')}</td><td colspan=\"2\" class=\"muted\">{_e(row.error)}</td>"
    evidence = "".join(f"<li>{_e(line)}</li>" for line in row.verdict.evidence)
    made = f"{human_duration(row.wall_s)} of cell time"
    return (f"{head}<td>{_badge(row.verdict.outcome)}</td><td><ul class=\"evidence\">{evidence}</ul></td>"
            f"<td>{_link(row.page, page)}<br><span class=\"muted\">{_e(made)}</span></td>")


def robustness_page(study: str, preset: str, seeds: str, rows: list[Row], page: Path, command: str) -> str:
    """The page's HTML for `rows` of one study and preset (its claim taken from the first verdict)."""
    claim = next((r.verdict.claim for r in rows if r.verdict is not None and r.verdict.claim != "—"), "")
    counts: dict[str, int] = {}
    for row in rows:
        outcome = row.verdict.outcome if row.verdict is not None else "not run"
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = " · ".join(f"{_badge(k)} {n}" for k, n in sorted(counts.items()))
    body = "".join(f"<tr>{_row(row, page)}</tr>" for row in rows)
    paper = reference.PAPER.get(study)
    where = f"{paper['figure']} of Tschannen et al. (ICLR 2020) was measured on MNIST top/bottom halves" if paper \
        else "the study's own claim"
    written = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    html = f"""<header><h1>Does it hold elsewhere? <code>{_e(study)}</code> across datasets and views</h1>
<p class="meta">preset <code>{_e(preset)}</code> · seeds {_e(seed_text(seeds))} · {len(rows)} conditions ·
written {_e(written)} · <code>{_e(command)}</code></p>
<p class="claim">Claim: “{_e(claim)}”.</p>
<p class="takeaway">One row per dataset × views, each an ordinary run of the same preset: the verdict, and the
numbers that decide it as the verdict states them (with their intervals). {_e(where)}; a row that does not hold
is a result about that choice of data and views, not a failed run. Presets were not tuned per row.</p>
<p>{summary}</p></header>
<section><div class="table-wrap"><table class="data index stack">
<thead><tr><th>dataset</th><th>views</th><th>verdict</th><th>deciding numbers</th><th>run</th></tr></thead>
<tbody>{body}</tbody></table></div></section>"""
    css = CSS + """
.badge { display:inline-block; padding:1px 8px; border:1px solid; border-radius:12px; font-size:0.85em;
  font-weight:600; white-space:nowrap; }
.muted { color:var(--muted); font-size:0.9em; }
ul.evidence { margin:0; padding-left:18px; font-size:0.92em; }
table.index td { padding:8px 12px; }
.nowrap { white-space:nowrap; }
.table-wrap { overflow-x:auto; }
"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>probe: {_e(study)} across datasets and views</title><style>{css}</style></head>
<body><main>{html}<footer>probe robustness · {_e(reference.CITATION)}</footer></main></body>
</html>
"""


def write_robustness(path: Path, *args, **kwargs) -> Path:
    """Write `robustness_page(...)` to `path` atomically; return the path."""
    write_page(path, robustness_page(*args, page=path, **kwargs))
    return path
