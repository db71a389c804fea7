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
`family`, `estimate`, `truth`, `truth_se`, `reliable` (1/0), `lower`, `upper` and optionally `n`;
`dataset_records` reads them from a mi-ground-truth results Dataset.
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


def cells_by_task(ds):
    """A mi-ground-truth Dataset with dims (task, estimator, n_pairs, seed): the last `step` taken, and a
    result from before `n_pairs` existed (n = its step) given that dimension; `family` and `half`
    filled from the suite where the result lacks them."""
    from probe.ground_truth.suite import suite

    if "step" in ds.dims:
        n = ds["step"].values[-1]
        ds = ds.isel(step=-1, drop=True)
        if "n_pairs" not in ds.dims:
            ds = ds.expand_dims(n_pairs=[int(n)])
    known = suite()
    for name, default in (("family", lambda t: known[t].family if t in known else "other"), ("half", lambda t: "—")):
        if name not in ds:
            ds[name] = ("task", np.array([default(str(t)) for t in ds["task"].values], dtype=object))
    return ds


def task_halves(ds) -> dict[str, str]:
    """{task: its half} of a mi-ground-truth Dataset, read from any of its cells that has one."""
    ds = cells_by_task(ds)
    out = {}
    for task in ds["task"].values:
        values = [str(v) for v in np.asarray(ds["half"].sel(task=task).values, dtype=object).ravel()
                  if isinstance(v, str) and v]
        out[str(task)] = values[0] if values else "—"
    return out


def dataset_records(ds, estimator: str = "mi_estimate", half: str | None = None) -> list[dict]:
    """One record (see the module docstring) per finished (task, n, seed) cell of `estimator` in `half`
    (None: both) of a mi-ground-truth results Dataset."""
    halves = task_halves(ds)
    ds = cells_by_task(ds).sel(estimator=estimator).transpose("task", "n_pairs", "seed", ...)
    arrays = {name: np.asarray(ds[name].values, dtype=float) for name in ("estimate", "true_mi", "reliable")}
    arrays["true_mi_se"] = np.asarray(ds["true_mi_se"].values, dtype=float) if "true_mi_se" in ds \
        else np.zeros_like(arrays["estimate"])
    ci = np.asarray(ds["estimate_ci"].transpose("task", "n_pairs", "seed", "interval").values, dtype=float) \
        if "estimate_ci" in ds else np.full((*arrays["estimate"].shape, 2), np.nan)
    ok = (np.asarray(ds["status"].values, dtype=object) == "ok") if "status" in ds else np.ones(ci.shape[:3], bool)
    family = np.asarray(ds["family"].values, dtype=object)
    out = []
    for i, task in enumerate(str(t) for t in ds["task"].values):
        if half is not None and halves[task] != half:
            continue
        names = [f for f in np.atleast_1d(np.asarray(family[i], dtype=object)).ravel() if isinstance(f, str) and f]
        for j, n in enumerate(int(v) for v in ds["n_pairs"].values):
            for k, seed in enumerate(int(v) for v in ds["seed"].values):
                if not ok[i, j, k] or not np.isfinite(arrays["true_mi"][i, j, k]):
                    continue
                out.append({"task": task, "family": names[0] if names else "other", "half": halves[task], "n": n,
                            "seed": seed, "estimate": float(arrays["estimate"][i, j, k]),
                            "truth": float(arrays["true_mi"][i, j, k]), "truth_se": float(arrays["true_mi_se"][i, j, k]),
                            "reliable": int(arrays["reliable"][i, j, k] == 1), "lower": float(ci[i, j, k, 0]),
                            "upper": float(ci[i, j, k, 1])})
    return out


def format_table(rows: list[dict]) -> str:
    """The family table as markdown: counts as "k / cells", coverage as a share of the reliable."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in rows:
        coverage = f"{r['coverage']:.0%} of {r['reliable']}" if r["reliable"] else "—"
        cells = [r["family"], str(r["tasks"]), str(r["cells"])] + [
            f"{r[key]} / {r['cells']}" for key in ("solved", "flagged", "reliable and wrong", "reliable")] + [coverage]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
