"""MI estimators on the 40 ground-truth tasks of bmi v1 (probe.ground_truth), N = 5,000 seeded.

    python bench/mi_ground_truth.py                      # every task, every estimator (about an hour on 2 cores)
    python bench/mi_ground_truth.py --quick              # ksg_mi and mi_estimate without a critic (about a minute)
    python bench/mi_ground_truth.py --tasks student,spiral --out runs/bench-mi

Columns: `today_*` are mi_bounds as of commit 3ab67d7 (bilinear critic, 2,000 steps, lr 1e-3,
the last step reported, no validation split; the module is read from git so its code is exact),
`new_*` are mi_bounds with its current defaults (one call for both estimators), `ksg` is
ksg_mi with its defaults (it refuses more than 20 joint dimensions), `mi_estimate` is
probe.analyzers.mi_estimate. Each cell prints Î/I; `?` marks a result its estimator flagged
unreliable, `x` one that raised. Solved: |ln(Î/I)| < ln 1.5; a negative or non-finite value is
unsolved. Below the table: solved counts, how many unsolved results were flagged, how many
flagged-reliable results were wrong, and the seconds per task: CPU seconds of this
one-threaded process (what one dedicated core would take) and wall-clock seconds (which on a
shared machine also count the time other jobs held the core).

With --out DIR each task's results go to DIR/<task>.json as soon as they are measured, and a
rerun skips tasks already there (so an interrupted sweep resumes).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import probe  # noqa: E402,F401  (sets passive OpenMP waiting, see probe/__init__.py)
from probe.analyzers import ksg_mi, mi_bounds  # noqa: E402
from probe.analyzers.mi_estimate import mi_estimate  # noqa: E402
from probe.ground_truth import list_tasks  # noqa: E402

TODAY_COMMIT = "3ab67d7"
SOLVED_RATIO = 1.5
COLUMNS = ("today_infonce", "today_nwj", "new_infonce", "new_nwj", "ksg", "mi_estimate")
QUICK_COLUMNS = ("ksg", "mi_estimate")


def load_todays_mi_bounds():
    """mi_bounds exactly as committed at TODAY_COMMIT (read with git show, imported from a temp file)."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{TODAY_COMMIT}:probe/analyzers/bounds.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "bounds_3ab67d7.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("bounds_3ab67d7", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mi_bounds


def _cell(value: float, reliable: int | None, seconds: tuple[float, float], error: str = "") -> dict:
    return {"value": float(value), "reliable": reliable, "seconds": seconds[0], "cpu_seconds": seconds[1],
            "error": error}


def _timed(function):
    """(result or None, (wall seconds, CPU seconds of this process), error text)."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result, error = function(), ""
    except Exception as err:  # a refused or failed cell is recorded, not fatal (bmi's rule)
        result, error = None, f"{type(err).__name__}: {err}"
    return result, (time.perf_counter() - start, time.process_time() - cpu), error


def _half(seconds: tuple[float, float]) -> tuple[float, float]:
    return seconds[0] / 2, seconds[1] / 2


def run_task(task, columns: tuple[str, ...], n: int, seed: int, todays, quick: bool) -> dict:
    x, y = task.sample(n, seed)
    cells: dict[str, dict] = {}
    if "today_infonce" in columns:
        ds, seconds, error = _timed(lambda: todays(x, y, estimators=("infonce", "nwj"), seed=seed))
        for name in ("infonce", "nwj"):
            value = math.nan if ds is None else ds.bound.sel(estimator=name).item()
            cells[f"today_{name}"] = _cell(value, None, _half(seconds), error)
    if "new_infonce" in columns:
        ds, seconds, error = _timed(lambda: mi_bounds(x, y, estimators=("infonce", "nwj"), seed=seed))
        for name in ("infonce", "nwj"):
            value, reliable = (math.nan, 0) if ds is None else (ds.bound.sel(estimator=name).item(),
                                                                 int(ds.reliable.sel(estimator=name).item()))
            cells[f"new_{name}"] = _cell(value, reliable, _half(seconds), error)
    if "ksg" in columns:
        ds, seconds, error = _timed(lambda: ksg_mi(x, y, seed=seed))
        cells["ksg"] = _cell(math.nan if ds is None else ds.mutual_information.item(),
                             0 if ds is None else int(ds.reliable.item()), seconds, error)
    if "mi_estimate" in columns:
        ds, seconds, error = _timed(lambda: mi_estimate(x, y, seed=seed, neural=False if quick else None))
        cell = _cell(math.nan if ds is None else ds.mutual_information.item(),
                     0 if ds is None else int(ds.reliable.item()), seconds, error)
        if ds is not None:
            cell.update(method=str(ds.method.item()), reason=str(ds.unreliable_reason.item()),
                        ci=[float(v) for v in ds.mutual_information_ci.values])
        cells["mi_estimate"] = cell
    return {"task": task.name, "dims": task.dim_x + task.dim_y, "truth": task.mutual_information, "n": n,
            "seed": seed, "cells": cells}


def solved(value: float, truth: float) -> bool:
    return math.isfinite(value) and value > 0 and abs(math.log(value / truth)) < math.log(SOLVED_RATIO)


def _show(cell: dict, truth: float) -> str:
    if cell["error"]:
        return "x"
    ratio = cell["value"] / truth
    text = f"{ratio:.2f}" if math.isfinite(ratio) and abs(ratio) < 1e3 else f"{ratio:.0e}"
    return text + ("?" if cell["reliable"] == 0 else "")


def print_report(results: list[dict], columns: tuple[str, ...]) -> None:
    width = max(len(r["task"]) for r in results)
    print(f"{'task':{width}s} dims  I/nats " + " ".join(f"{c:>13s}" for c in columns) + " cpu s")
    for r in results:
        cells = r["cells"]
        seconds = sum(cells[c]["cpu_seconds"] for c in columns if c in cells)
        print(f"{r['task']:{width}s} {r['dims']:4d} {r['truth']:7.3f} "
              + " ".join(f"{_show(cells[c], r['truth']) if c in cells else '-':>13s}" for c in columns)
              + f" {seconds:7.1f}")
    print()
    print(f"{'':{width}s} {'':12s} " + " ".join(f"{c:>13s}" for c in columns))
    rows = {
        "solved": lambda c, r: solved(c["value"], r["truth"]),
        "flagged unsolved": lambda c, r: not solved(c["value"], r["truth"]) and c["reliable"] == 0,
        "reliable, wrong": lambda c, r: not solved(c["value"], r["truth"]) and c["reliable"] == 1,
        "neg/non-finite reliable": lambda c, r: c["reliable"] == 1 and not (math.isfinite(c["value"])
                                                                             and c["value"] >= 0),
    }
    for label, test in rows.items():
        counts = [sum(test(r["cells"][c], r) for r in results if c in r["cells"]) for c in columns]
        print(f"{label:{width}s} {'':12s} " + " ".join(f"{f'{k}/{len(results)}':>13s}" for k in counts))
    for label, key, reduce in (("median CPU s/task", "cpu_seconds", np.median), ("max CPU s/task", "cpu_seconds", np.max),
                               ("max wall s/task", "seconds", np.max)):
        values = [reduce([r["cells"][c][key] for r in results if c in r["cells"]]) for c in columns]
        print(f"{label:{width}s} {'':12s} " + " ".join(f"{v:13.1f}" for v in values))
    print("\ncells: estimate / true MI; ? = flagged unreliable by the estimator; x = raised (see --out files)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="", help="comma-separated substrings of task names (default: all 40)")
    parser.add_argument("--quick", action="store_true", help="only ksg_mi and mi_estimate without a critic")
    parser.add_argument("--n", type=int, default=5000, help="samples per task (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="folder for one JSON per task (resumable)")
    parser.add_argument("--shard", default="1/1", help="I/M: run only every M-th task from the I-th (parallel sweeps)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wanted = [w for w in args.tasks.split(",") if w]
    tasks = [t for t in list_tasks() if not wanted or any(w in t.name for w in wanted)]
    if not tasks:
        print(f"mi_ground_truth: no task matches --tasks {args.tasks!r}; see probe.ground_truth.list_tasks().")
        return 2
    shard, shards = (int(v) for v in args.shard.split("/"))
    tasks = tasks[shard - 1::shards]
    columns = QUICK_COLUMNS if args.quick else COLUMNS
    todays = None if args.quick else load_todays_mi_bounds()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    results = []
    for task in tasks:
        path = out / f"{task.name}{'-quick' if args.quick else ''}.json" if out else None
        if path and path.exists():
            results.append(json.loads(path.read_text()))
            continue
        result = run_task(task, columns, args.n, args.seed, todays, args.quick)
        if path:
            path.write_text(json.dumps(result, indent=1))
        print(f"{task.name}: " + ", ".join(f"{c} {_show(result['cells'][c], result['truth'])}" for c in columns)
              + f" ({sum(cell['seconds'] for cell in result['cells'].values()):.0f} s)", file=sys.stderr, flush=True)
        results.append(result)
    print(f"N = {args.n}, seed {args.seed}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print_report(results, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
