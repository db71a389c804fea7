"""mi_estimate on the extended ground-truth suite (issue 19): a table by family, per half and per n.

    python bench/mi_ground_truth.py --half tuning --n 500,2000,5000 --seeds 0,1,2 --out runs/bench-gt
    python bench/mi_ground_truth.py --half scoring --images          # the half the claims rest on
    python bench/mi_ground_truth.py --half bmi --n 5000 --seeds 0     # bmi's 40 tasks only
    python bench/mi_ground_truth.py --tasks x-mixture,binary --n 2000 --neural off
    python bench/mi_ground_truth.py --half fresh --n 500,2000,5000 --seeds 0,1   # never seen in development

Each cell draws n pairs from one task of `probe.ground_truth.suite` with its seed, runs
`mi_estimate` on them (one thread) and scores it with `probe.ground_truth.scoring`: solved
within x1.5 (x1.25 for discrete, mixed and sign-mixing tasks), flagged (unsolved and marked
unreliable), reliable and wrong, and coverage of the truth by the interval among reliable cells.
The halves are those of `probe.ground_truth.suite.split` with SPLIT_SEED: every limit of
mi_estimate was set on the tuning half (see probe/analyzers/_reliability.py).

`--half fresh` scores a third set, written after every limit was set and run once: tasks of the
same families with parameters that appear in neither half (other dimensions, correlations,
crossovers, separations), so nothing about them informed mi_estimate.

With --out DIR every cell goes to DIR/<task>_n<n>_s<seed>.json as soon as it is measured, and a
rerun skips cells already there (so an interrupted sweep resumes, and --report only prints).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

import probe  # noqa: E402,F401  (sets passive OpenMP waiting, see probe/__init__.py)
from probe.analyzers import _reliability as limits  # noqa: E402
from probe.analyzers.mi_estimate import mi_estimate  # noqa: E402
from probe.ground_truth import TASKS  # noqa: E402
from probe.ground_truth.scoring import family_table, format_table, score  # noqa: E402
from probe.ground_truth.suite import SPLIT_SEED, split, suite  # noqa: E402


def run_cell(task, n: int, seed: int, neural: bool | None) -> dict:
    x, y = task.sample(n, seed)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        ds, error = mi_estimate(x, y, seed=seed, neural=neural), ""
    except Exception as err:  # a crash is recorded, not fatal: it is what the table must show
        ds, error = None, f"{type(err).__name__}: {err}"
    record = {"task": task.name, "family": task.family, "n": n, "seed": seed, "dims": task.dim_x + task.dim_y,
              "truth": task.mutual_information, "truth_se": task.mutual_information_se,
              "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "error": error}
    if ds is None:
        return {**record, "estimate": math.nan, "reliable": 0, "lower": math.nan, "upper": math.nan,
                "kind": "error", "method": "", "reason": error}
    lower, upper = (float(v) for v in ds.mutual_information_ci.values)
    return {**record, "estimate": float(ds.mutual_information), "reliable": int(ds.reliable), "lower": lower,
            "upper": upper, "kind": str(ds.kind.item()), "method": str(ds.method.item()),
            "reason": str(ds.unreliable_reason.item()),
            "shape": ds.scores_shape.values.tolist(), "conditional_z": float(ds.copula_conditional_z),
            "mixture_shape": ds.mixture_shape.values.tolist() if "mixture_shape" in ds else [],
            "candidates": {str(c): {"value": float(ds.candidate_estimate.sel(candidate=c)),
                                    "se": float(ds.candidate_se.sel(candidate=c)),
                                    "ci": [float(v) for v in ds.candidate_ci.sel(candidate=c).values],
                                    "kind": str(ds.candidate_kind.sel(candidate=c).item()),
                                    "reason": str(ds.candidate_reason.sel(candidate=c).item())[:200]}
                           for c in ds.candidate.values}}


def fresh_tasks() -> list:
    """The fresh set (see the module docstring): every name differs from the suite's."""
    from probe.ground_truth import tasks as t
    from probe.ground_truth.discrete import binary_symmetric, categorical_gaussian, random_channel, symmetric_channel
    from probe.ground_truth.mixtures import sign_mixing, x_mixture

    return [t.bivariate_normal(0.5), t.bivariate_normal(0.9), t.additive_noise(0.3),
            t.multinormal_dense(4, 4, 0.3), t.multinormal_dense(6, 2, 0.5), t.multinormal_sparse(4, 4, 2, 1.5),
            t.student_identity(4, 2, 4), t.student_identity(2, 4, 5),
            t.asinh(t.multinormal_dense(3, 3, 0.5)), t.half_cube(t.multinormal_sparse(4, 4, 2, 2.0)),
            t.normal_cdf(t.bivariate_normal(0.6)), t.wiggly(t.multinormal_dense(2, 2, 0.4)),
            x_mixture(4, 0.7), x_mixture(8, 0.85), sign_mixing(2, 0.7, 0.2), sign_mixing(4, 0.85, 0.15),
            binary_symmetric(0.15), symmetric_channel(6, 0.25), random_channel(4, 6, seed=7),
            categorical_gaussian(5, 3, 2.5), categorical_gaussian(6, 2, 1.0)]


def _line(r: dict) -> str:
    s = score(r)
    mark = "ok" if s["solved"] else ("flag" if s["flagged"] else "WRONG")
    cover = "" if r["reliable"] != 1 else (" covers" if s["covered"] else " MISSES")
    kind = "≥ " if r["kind"] == "lower_bound" else ""
    return (f"{r['task']:42s} n={r['n']:<5d} s{r['seed']} I={r['truth']:7.3f} {kind}{r['estimate']:7.3f} "
            f"[{r['lower']:.3f}, {r['upper']:.3f}] {r['method']:16s} {mark:5s}{cover} {r['seconds']:6.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", default="all", choices=("tuning", "scoring", "all", "bmi", "fresh"))
    parser.add_argument("--tasks", default="", help="comma-separated substrings of task names")
    parser.add_argument("--n", default="5000", help="comma-separated sample sizes (default 5000)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--neural", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--images", action="store_true", help="add the image tasks (mnist-5k, Fashion-MNIST if present)")
    parser.add_argument("--out", default="", help="folder for one JSON per cell (resumable)")
    parser.add_argument("--shard", default="1/1", help="I/M: run only every M-th cell from the I-th")
    parser.add_argument("--report", action="store_true", help="only print what --out holds for these cells")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="override a limit of probe.analyzers._reliability (tuning sweeps on the tuning half)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for item in args.limit:
        name, value = item.split("=")
        if not hasattr(limits, name):
            parser.error(f"--limit {item}: probe.analyzers._reliability has no {name}")
        setattr(limits, name, type(getattr(limits, name))(value))
    tasks = suite(None if args.images else ())
    halves = split(tasks, SPLIT_SEED)
    if args.half == "fresh":
        fresh = {task.name: task for task in fresh_tasks()}
        assert not set(fresh) & set(tasks), f"fresh tasks also in the suite: {set(fresh) & set(tasks)}"
        tasks, halves = fresh, dict.fromkeys(fresh, "fresh")
    wanted = [w for w in args.tasks.split(",") if w]
    chosen = [t for t in tasks.values() if (args.half == "all" or halves[t.name] == args.half
                                            or (args.half == "bmi" and t.name in TASKS))
              and (not wanted or any(w in t.name for w in wanted))]
    cells = [(t, int(n), int(s)) for n in args.n.split(",") for t in chosen for s in args.seeds.split(",")]
    shard, shards = (int(v) for v in args.shard.split("/"))
    cells = cells[shard - 1::shards]
    neural = {"auto": None, "on": True, "off": False}[args.neural]
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    records, start = [], time.perf_counter()
    for task, n, seed in cells:
        path = out / f"{task.name}_n{n}_s{seed}.json" if out else None
        if path and path.exists():
            records.append(json.loads(path.read_text()))
            continue
        if args.report:
            continue
        record = run_cell(task, n, seed, neural)
        if path:
            path.write_text(json.dumps(record, indent=1))
        print(_line(record), file=sys.stderr, flush=True)
        records.append(record)
    print(f"{len(records)} cells, half {args.half} (split seed {SPLIT_SEED}), neural {args.neural}, "
          f"limits {' '.join(args.limit) or 'as committed'}; "
          f"{time.perf_counter() - start:.0f} s wall here; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores\n")
    for r in sorted(records, key=lambda r: (r["family"], r["task"], r["n"], r["seed"])):
        print(_line(r))
    for n in sorted({r["n"] for r in records}):
        print(f"\nn = {n}\n" + format_table(family_table([r for r in records if r["n"] == n])))
    if len({r["n"] for r in records}) > 1:
        print("\nall n\n" + format_table(family_table(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
