"""An index of a runs folder: every study's report page and one verdict line per study.

`write_index(runs_dir, out_dir)` finds every `results.nc` under `runs_dir` (as `probe run-study`
lays them out), writes each one's report page into `out_dir`, and writes `out_dir/index.html`:
one row per study in the paper's order, saying whether the run showed the paper's effect
(`probe.verdict`), the numbers that decide it, the chart that shows it, and which preset,
dataset and seeds made it. Studies with no result get a row with the command that makes one.
"""
from __future__ import annotations

import datetime as dt
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from probe import reference
from probe import verdict as verdicts
from probe.errors import DataUnavailableError, InputValueError
from probe.report.html import CSS, file_name, human_duration, seed_text, write_page
from probe.report.html import badge as _badge
from probe.report.html import escape as _e
from probe.report.page import write_report
from probe.results import load_dataset
from probe.study import Study

CALLER = "probe report --all"


@dataclass
class Entry:
    study: Study
    results: Path
    page: Path
    ds: xr.Dataset
    verdict: verdicts.Verdict


def find_results(runs_dir: str | os.PathLike) -> list[Path]:
    """Every `results.nc` under `runs_dir`, newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise DataUnavailableError(
            f"{CALLER}: '{root}' is not a folder. Give the folder `probe run-study --out` wrote to (default: runs)."
        )
    found = sorted(root.rglob("results.nc"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise DataUnavailableError(
            f"{CALLER}: no results.nc under '{root}'. Run a study first, e.g. "
            "`probe run-study invertible-encoders --preset quick --out runs`."
        )
    return found


def write_index(runs_dir: str | os.PathLike, studies: list[Study], out_dir: str | os.PathLike = "reports",
                written: list[Path] | None = None, *, gallery: bool = False) -> Path:
    """Write every study's page and `index.html` into `out_dir`; return the index's path.

    `studies` is the catalogue (`studies.list_studies()`): the index has one row per run, the
    studies in its order and each study's runs fullest first (seeds × training steps), so the
    page named after the study is its fullest run and a smoke run never takes that name. Each
    page opens with that study's verdict on the run. `written`, when given, receives the pages.
    A study with no run gets a row with the command that makes one; with `gallery` (the committed
    pages of reports/gallery) it is listed as missing from the gallery.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputValueError(f"{CALLER}: --out '{out}' is a file; with --all it must be a folder.")
    out.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in studies}
    entries: dict[str, list[Entry]] = {}
    unreadable: list[str] = []
    loaded = []
    for path in find_results(runs_dir):
        try:
            ds = load_dataset(path, caller=CALLER)
        except Exception as err:  # a truncated or foreign file: list it, do not stop the index
            unreadable.append(f"{path} ({type(err).__name__})")
            continue
        study = by_name.get(str(ds.attrs.get("study", "")))
        if study is None:
            unreadable.append(f"{path} (not a probe study result)")
            continue
        loaded.append((study, path, ds))
    loaded.sort(key=lambda item: -_run_size(item[2]))  # stable: the newest first among runs of one size
    for study, path, ds in loaded:
        same = entries.setdefault(study.name, [])
        preset = file_name(ds.attrs.get("preset", ""), "run")
        name = study.name if not same else f"{study.name}-{preset}-{len(same)}"
        verdict = verdicts.judge(study, ds)
        page = write_report(ds, out / f"{name}.html", verdict=verdict)
        same.append(Entry(study, path, page, ds, verdict))
        if written is not None:
            written.append(page)
    index = out / "index.html"
    written_here = {e.page.name for found in entries.values() for e in found}
    others = _other_pages(out, written_here) if gallery else []
    write_page(index, _render(list(by_name.values()), entries, unreadable, Path(runs_dir), gallery, others))
    return index


def _run_size(ds: xr.Dataset) -> int:
    """Seeds × training steps: how much a run measured."""
    steps = int(ds["step"].values.max()) if "step" in ds.coords and ds.sizes.get("step") else 1
    return ds.sizes.get("seed", 1) * max(steps, 1)


def _make_command(study: Study, runs_dir: Path, images: str | None) -> tuple[str, str]:
    """The run-study line that fills a study's empty row, and a note: an image study runs on the
    folder the other runs used; a study on synthetic data is the same whatever the images."""
    if "quick" in study.presets and not hasattr(study.settings("quick"), "views"):
        note = " Its data are synthetic, so its page does not depend on this gallery's images." if images else ""
        return f"probe run-study {study.name} --preset quick --out {runs_dir}", note
    return f"probe run-study {study.name} --preset quick{' ' + images if images else ''} --out {runs_dir}", ""


def _images(entries: dict[str, list[Entry]]) -> str | None:
    """`--data-dir DIR` (or `--dataset NAME`) when every image run in the folder used that one dataset."""
    used = set()
    for found in entries.values():
        for entry in found:
            attrs = entry.ds.attrs
            if attrs.get("views"):  # only image studies record their views
                folder = str(attrs.get("dataset", "")).startswith("folder:") and attrs.get("dataset_source")
                used.add(f"--data-dir {attrs['dataset_source']}" if folder else f"--dataset {attrs.get('dataset', '')}")
    return used.pop() if len(used) == 1 else None


def _row(study: Study, entry: Entry | None, runs_dir: Path, gallery: bool, images: str | None = None) -> str:
    head = (f'<td><strong>{_e(study.name)}</strong><br><span class="muted">{_e(study.figure)}</span></td>')
    if entry is None:
        command, note = _make_command(study, runs_dir, images)
        state, then = ("missing", f", then <code>{_e(f'probe report --gallery {runs_dir}')}</code>") if gallery \
            else ("not run", "")
        return (f"<tr>{head}<td>{_badge(state)}</td><td colspan=\"3\" class=\"muted\">{_e(study.description)} "
                f"Make it with <code>{_e(command)}</code>{then}.{_e(note)}</td></tr>")
    ds, v = entry.ds, entry.verdict
    views = f" · {ds.attrs['views']} views" if ds.attrs.get("views") else ""
    made = (f"preset <code>{_e(ds.attrs.get('preset', '?'))}</code> · {_e(ds.attrs.get('dataset', '?'))}{_e(views)} · seeds "
            f"{_e(seed_text(str(ds.attrs.get('seeds', '?'))))} · {_e(ds.attrs.get('device', '?'))} · "
            f"{_e(human_duration(ds.attrs.get('total_wall_time')))} of cell time")
    evidence = "".join(f"<li>{_e(part)}</li>" for part in v.evidence)
    paper = f'<p class="paper">{_e(v.paper)}</p>' if v.paper else ""
    reason = f'<br><span class="muted">{_e(v.reason)}</span>' if v.reason else ""
    return (f"<tr>{head}<td>{_badge(v.outcome)}{reason}</td>"
            f"<td>{_e(v.claim)}<ul class=\"evidence\">{evidence}</ul>{paper}</td>"
            f"<td class=\"muted\" data-label=\"decided by:\">{_e(v.decided_by)}</td>"
            f"<td><a href=\"{_e(entry.page.name)}\">report page</a><br><span class=\"muted\">{made}</span></td></tr>")


def _other_pages(out: Path, written: set[str]) -> list[tuple[str, str]]:
    """(link, title) of the gallery's pages that are no study run's: robustness tables beside the
    index and the indexes of sub-galleries (another dataset's), so the index reaches every page."""
    found = [p for p in sorted(out.glob("*.html")) if p.name not in written and p.name != "index.html"]
    found += sorted(out.glob("*/index.html"))
    pages = []
    for path in found:
        title = re.search(r"<title>(.*?)</title>", path.read_text(encoding="utf-8"), re.S)
        text = html.unescape(title.group(1).strip()) if title else path.stem  # escaped again when written
        if path.parent != out:  # another gallery's index: its folder tells it apart from this one
            text = f"{path.parent.name}/ — {text}"
        pages.append((path.relative_to(out).as_posix(), text))
    return pages


def _render(studies: list[Study], entries: dict[str, list[Entry]], unreadable: list[str], runs_dir: Path,
            gallery: bool, others: list[tuple[str, str]] = ()) -> str:
    rows, images = [], _images(entries)
    for study in studies:
        found = entries.get(study.name) or [None]
        rows += [_row(study, entry, runs_dir, gallery, images) for entry in found]
    counts = {}
    for found in entries.values():
        for entry in found:
            counts[entry.verdict.outcome] = counts.get(entry.verdict.outcome, 0) + 1
    summary = " · ".join(f"{_badge(k)} {n}" for k, n in sorted(counts.items()))
    skipped = ""
    if unreadable:
        skipped = ('<div class="callout bad"><strong>Skipped</strong><ul>'
                   + "".join(f"<li>{_e(s)}</li>" for s in unreadable) + "</ul></div>")
    body = f"""<header><h1>What probe reproduces</h1>
<p class="meta">Tschannen et al., <em>On Mutual Information Maximization for Representation Learning</em>,
ICLR 2020 · runs from <code>{_e(runs_dir)}</code> · written {_e(dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))}</p>
<p class="takeaway">One row per study: its claim (the paper's, for the paper's experiments) with the threshold that decides it, whether this run
showed it, the numbers that decide it (mean ± sd over seeds at the last evaluation unless stated) and the chart
on the study's page that shows it. A reduced preset can miss an effect the paper's protocol shows: the verdict
is about this run, not about the paper.</p>
<p>{summary}</p>{skipped}</header>
<section><div class="table-wrap"><table class="data index stack">
<thead><tr><th>study</th><th>verdict</th><th>claim and evidence</th><th>decided by</th><th>run</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div></section>"""
    if others:
        body += ('<section><h2>More in this gallery</h2><ul>'
                 + "".join(f'<li><a href="{_e(link)}">{_e(title)}</a></li>' for link, title in others) + "</ul></section>")
    css = CSS + """
.badge { display:inline-block; padding:1px 8px; border:1px solid; border-radius:12px; font-size:0.85em;
  font-weight:600; white-space:nowrap; }
.muted { color:var(--muted); font-size:0.9em; }
ul.evidence { margin:4px 0 0; padding-left:18px; color:var(--muted); font-size:0.92em; }
p.paper { margin:4px 0 0; font-size:0.88em; color:#0550ae; }
table.index td { padding:10px 12px; }
"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>probe: what it reproduces</title><style>{css}</style></head>
<body><main>{body}<footer>probe report --all · {_e(reference.CITATION)}</footer></main></body>
</html>
"""

