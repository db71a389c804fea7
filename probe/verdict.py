"""Did a run show the paper's effect? One line per study, decided by numbers in its results.

Each study module defines `verdict(ds) -> Verdict`: the paper's qualitative claim, whether our
run showed it, the numbers that decide it (means ± sd over seeds at the first and last
evaluation) and the chart of the study's report page that shows it. The thresholds are stated
in each claim so a reader can disagree with them; a run whose variables are missing or all
non-finite is "undecided", never "held".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import xarray as xr

HELD, PARTLY, NOT_HELD, UNDECIDED = "held", "partly held", "did not hold", "undecided"


@dataclass(frozen=True)
class Verdict:
    claim: str                 # the paper's claim, with the threshold that decides it
    outcome: str               # HELD, PARTLY, NOT_HELD or UNDECIDED
    evidence: tuple[str, ...]  # the deciding numbers, one line per grid cell, mean ± sd over seeds
    decided_by: str            # the chart (variable over step) on the study's report page that shows it
    paper: str = ""            # what the paper reported for the same quantities (docs/reference.md)


def outcome(*parts: bool) -> str:
    """HELD when every part held, NOT_HELD when none did, PARTLY otherwise."""
    if all(parts):
        return HELD
    return NOT_HELD if not any(parts) else PARTLY


def at_step(ds: xr.Dataset, name: str, which: str = "last", **sel) -> np.ndarray:
    """Per-seed values of `name` at the first or last evaluation (NaN for a run that diverged).

    `sel` picks grid coordinates; a `quantile` dimension, if any, must be selected too.
    """
    if name not in ds:
        raise KeyError(name)
    var = ds[name].sel(**sel) if sel else ds[name]
    if "step" in var.dims:
        var = var.isel(step=0 if which == "first" else -1)
    values = np.asarray(var.values, dtype=float)
    return values.reshape(-1)


def mean_sd(values: np.ndarray) -> tuple[float, float, int]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    sd = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), sd, int(finite.size)


def mean(values: np.ndarray) -> float:
    return mean_sd(values)[0]


def fmt(values: np.ndarray, digits: int = 3) -> str:
    """'0.812 ± 0.004' over the finite seeds; '0.812' for one seed; 'n/a' for none."""
    m, sd, n = mean_sd(values)
    if n == 0:
        return "n/a"
    return f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def undecided(claim: str, reason: str, decided_by: str) -> Verdict:
    return Verdict(claim=claim, outcome=UNDECIDED, evidence=(reason,), decided_by=decided_by)


# L_t = |I_EST - t| on held-out pairs at the last evaluation, at most this (nats): the bound "matched" t.
MATCH_TOLERANCE = 0.5


def end_gap(ds: xr.Dataset, **sel) -> float:
    """Mean over the finite seeds of `target_gap` (L_t on held-out pairs) at the last evaluation;
    +inf where no seed has a finite value (a diverged or missing run never counts as matched)."""
    m = mean(at_step(ds, "target_gap", **sel))
    return m if np.isfinite(m) else float("inf")


def median_quantile(ds: xr.Dataset) -> float:
    """The `quantile` coordinate closest to the median, the lower of two equally close ones (0.4 on
    the paper's 0, 0.2, ..., 1 grid, which has no 0.5), as the report's tables pick it."""
    q = np.asarray(ds["quantile"].values, dtype=float)
    return float(q[np.argmin(np.abs(q - 0.5))])


def judge(study, ds: xr.Dataset) -> Verdict:
    """`study.verdict(ds)`, or undecided (with the reason) if the study has none or it cannot decide.

    Called once per page, by whoever writes it (`probe run-study`, `probe report`), and handed to
    the page: the report never has to import the studies. A variant of another study (origin
    "variant") may reuse that study's verdict, but not the paper's numbers it quotes: those are
    the reference of the original experiment, not of the variant.
    """
    if getattr(study, "verdict", None) is None:
        return undecided("—", "this study declares no verdict", "—")
    try:
        verdict = study.verdict(ds)
    except (KeyError, ValueError, IndexError) as err:  # a partial or foreign result: say what is missing
        return undecided("—", f"could not be decided from this result ({type(err).__name__}: {err})", "—")
    if getattr(study, "origin", "paper") == "variant" and verdict.paper:
        verdict = dataclasses.replace(verdict, paper="")
    return verdict
