"""Does a study's effect hold elsewhere? One preset run over datasets × views, finished runs reused.

Each condition (a dataset and a way of cutting its images into two views) is an ordinary run of
the study (`probe.runner.run.run`), so it lands in its own run folder, keyed by its settings and
the dataset's checksum, and a rerun reuses every cell that finished. A condition that cannot run
(a split into unequal views, a dataset that is not there) is recorded with its reason and the
others go on. The page (`probe.report.robustness`) puts the verdicts side by side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from probe.data.registry import describe_datasets
from probe.data.views import VIEWS
from probe.errors import ProbeError
from probe.runner.options import RunOptions
from probe.runner.progress import RunTooLong
from probe.runner.run import run
from probe.study import Study


@dataclass(frozen=True)
class Condition:
    """One dataset (a registry name, or an IDX/CIFAR folder) and one views split."""

    views: str
    dataset: str | None = None
    data_dir: str | None = None

    @property
    def data_label(self) -> str:
        return self.dataset or f"folder:{Path(self.data_dir).name}"


@dataclass
class Outcome:
    condition: Condition
    results: Path | None = None     # results.nc, None when the condition could not run
    error: str = ""                 # why it could not run
    wall_s: float = 0.0             # this command's wall time on it (near 0 for a reused run)
    extra: dict = field(default_factory=dict)


def offline_datasets() -> list[str]:
    """The registry's datasets usable without a download: digits and every one already cached."""
    return [d["name"] for d in describe_datasets() if d["cached"]]


def conditions(datasets: list[str], data_dirs: list[str], views: list[str] | None = None) -> list[Condition]:
    """Every dataset (names first, then folders) × every views split (default: all three)."""
    splits = list(views or VIEWS)
    data = [(name, None) for name in datasets] + [(None, folder) for folder in data_dirs]
    if not data:
        data = [(name, None) for name in offline_datasets()]
    return [Condition(v, d, f) for d, f in data for v in splits]


def run_robustness(study: Study, options: RunOptions, grid: list[Condition], *,
                   log: Callable[[str], None] = print) -> list[Outcome]:
    """Run `study` under `options` once per condition; return what each gave (in the grid's order).

    A condition projected too long for a CPU (`RunTooLong`) stops the whole command, as run-study
    does; any other user-facing error is kept to its condition.
    """
    outcomes = []
    for i, condition in enumerate(grid, 1):
        log(f"[{i}/{len(grid)}] {study.name} on {condition.data_label}, {condition.views} views")
        started = time.perf_counter()
        try:
            path = run(study, options.replace(dataset=condition.dataset, data_dir=condition.data_dir,
                                              views=condition.views), log=log)
        except RunTooLong:
            raise
        except ProbeError as err:
            log(f"  could not run: {err}")
            outcomes.append(Outcome(condition, error=str(err), wall_s=time.perf_counter() - started))
            continue
        outcomes.append(Outcome(condition, path, wall_s=time.perf_counter() - started))
    return outcomes
