"""How an MI estimate is scored against a known truth, and the by-family table of issue 19.

One rule for the mi-ground-truth study, its report page and bench/mi_ground_truth.py:

- solved: Î within a factor of the truth either way (|ln(Î / I)| < ln factor), the factor
  1.5, or 1.25 for the families where issue 19 asks more (discrete and mixed pairs, the
  sign-mixing copula traps); a negative, zero or non-finite Î never is;
- reliable and wrong: marked reliable but not solved, the failure that matters most;
- flagged: not solved, and not marked reliable (the estimator said so);
- covered: the reported interval holds the truth, allowing two standard errors of a Monte
  Carlo truth; coverage is counted among the reliable results only.

`family_table` takes one record per (task, n, seed) cell as dicts with the keys `task`,
`family`, `estimate`, `truth`, `truth_se`, `reliable` (1/0), `lower`, `upper` and optionally `n`.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

SOLVED_FACTOR = 1.5
STRICT_FACTOR = 1.25
STRICT_FAMILIES = ("discrete", "mixed", "sign-mixing")
COLUMNS = ("family", "tasks", "cells", "solved", "flagged", "reliable and wrong", "reliable", "coverage")


def factor(family: str) -> float:
    """The factor within which an estimate of a task of `family` counts as solved."""
    return STRICT_FACTOR if family in STRICT_FAMILIES else SOLVED_FACTOR


def solved(estimate, truth, family: str | None = None, *, within: float | None = None) -> np.ndarray:
    """|ln(Î / I)| < ln factor, elementwise; False for a negative, zero or non-finite Î (or I)."""
    limit = within if within is not None else (SOLVED_FACTOR if family is None else factor(family))
    est, true = np.asarray(estimate, dtype=float), np.asarray(truth, dtype=float)
    ok = np.isfinite(est) & np.isfinite(true) & (est > 0) & (true > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ok & (np.abs(np.log(np.where(ok, est / np.where(ok, true, 1.0), 1.0))) < math.log(limit))


def covered(lower, upper, truth, truth_se=0.0) -> np.ndarray:
    """lower - 2 se <= I <= upper + 2 se elementwise (se: the truth's own Monte Carlo error)."""
    lo, hi, true = (np.asarray(v, dtype=float) for v in (lower, upper, truth))
    slack = 2.0 * np.asarray(truth_se, dtype=float)
    with np.errstate(invalid="ignore"):
        return (lo - slack <= true) & (true <= hi + slack)


def score(record: dict) -> dict:
    """The record with `solved`, `flagged`, `reliable_wrong` and `covered` (NaN when not reliable) added."""
    ok = bool(solved(record["estimate"], record["truth"], record["family"]))
    reliable = record["reliable"] == 1
    cover = bool(covered(record["lower"], record["upper"], record["truth"], record.get("truth_se", 0.0)))
    return {**record, "solved": ok, "flagged": (not ok) and not reliable, "reliable_wrong": reliable and not ok,
            "covered": cover if reliable else math.nan}


def family_table(records: list[dict]) -> list[dict]:
    """One row per family (then "all"): tasks, cells, solved, flagged and reliable-and-wrong cells,
    the reliable share, and coverage among reliable cells (with how many it is of)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["family"]].append(score(record))
    rows = []
    for family in [*sorted(groups), "all"]:
        cells = [c for g in groups.values() for c in g] if family == "all" else groups[family]
        reliable = [c for c in cells if c["reliable"] == 1]
        rows.append({
            "family": family, "tasks": len({c["task"] for c in cells}), "cells": len(cells),
            "solved": sum(c["solved"] for c in cells), "flagged": sum(c["flagged"] for c in cells),
            "reliable and wrong": sum(c["reliable_wrong"] for c in cells), "reliable": len(reliable),
            "coverage": (sum(c["covered"] for c in reliable) / len(reliable)) if reliable else math.nan,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """The family table as markdown: counts as "k / cells", coverage as a share of the reliable."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows:
        coverage = f"{r['coverage']:.0%} of {r['reliable']}" if r["reliable"] else "—"
        cells = [r["family"], str(r["tasks"]), str(r["cells"])] + [
            f"{r[key]} / {r['cells']}" for key in ("solved", "flagged", "reliable and wrong", "reliable")] + [coverage]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
