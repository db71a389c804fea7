"""MI estimators against closed-form truths: the 40 tasks of the Beyond-Normal benchmark (bmi v1).

Czyż, Grabowski, Vogt, Beerenwinkel & Marx, "Beyond Normal: On the Evaluation of Mutual
Information Estimators" (NeurIPS 2023) give 40 joint distributions (X, Y) with a known I(X; Y):
Gaussians (dense and sparse, 1 × 1 to 50 × 50), Student-t, additive uniform noise, and their
images under MI-preserving maps (normal CDF, half-cube, asinh, wiggly, spiral, Swiss roll);
`probe.ground_truth` holds them. Each cell of this study draws N pairs from one task with its
seed (`task.sample(N, seed)`, the sampling seeds bmi uses), runs one estimator on them and
records the estimate Î (nats) beside the truth I, their ratio Î / I, whether the task is
*solved* (|ln(Î / I)| < ln 1.5, i.e. within a factor 1.5 either way; a negative or non-finite
Î never is), the estimator's own `reliable` flag and `unreliable_reason` where it gives one,
and the wall time. Every estimator of a (task, seed) sees the same N pairs.

Estimators: probe's `mi_estimate` (the one a user is pointed to), `ksg` (`ksg_mi`, KSG-1),
and the held-out variational bounds of `mi_bounds` (InfoNCE, NWJ, DV, SMILE), each with its
own critic trained, selected on validation pairs and reported on test pairs.

Why it is here: Tschannen et al. (ICLR 2020) argue that an MI *estimate* is a poor guide to a
representation; this study asks the prior question, whether the estimates probe reports are
right where the answer is known, and which estimator to believe where.

The task × estimator table of Î / I (mean over seeds) and the solved counts:

    python -m studies.mi_ground_truth runs/mi-ground-truth/.../results.nc
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from probe import analyzers
from probe.errors import InputValueError, unknown_name
from probe.ground_truth import TASKS, Task
from probe.results import CellResult
from probe.study import Study
from probe.training import note_seed
from probe.verdict import Verdict, outcome, undecided

DATASET = "bmi-v1"
SOLVED_FACTOR = 1.5          # solved: Î within a factor 1.5 of I, either way (|ln(Î / I)| < ln 1.5)
PASS_SHARE = 0.9             # the verdict: mi_estimate solves at least 90 % of the tasks run (36 of 40)
BOUNDS = ("infonce", "nwj", "dv", "smile")
ALL_TASKS = tuple(TASKS)     # bmi's v1 order


@dataclass(frozen=True)
class Settings:
    tasks: tuple[str, ...] = ALL_TASKS
    # Not called `estimators`: the runner checks that field against probe.estimators' bounds.
    mi_estimators: tuple[str, ...] = ("mi_estimate", "ksg", *BOUNDS)
    n_samples: int = 5_000                   # N pairs per cell (bmi v1: 5,000)
    critic: str = "separable"                # mi_bounds' critic for the variational bounds
    bound_steps: int = 0                     # the bounds' most Adam steps; 0: mi_bounds' shape-aware default
    ksg_neighbours: int = 3                  # k of KSG-1
    ksg_max_dims: int = 0                    # KSG refuses more joint dimensions (0: none refused, as bmi)
    steps: int = 1                           # one estimate per cell (the runner's progress counts cells)
    seeds: tuple[int, ...] = tuple(range(10))


PRESETS = {
    # bmi v1 (cbg-ethz/bmi, workflows/benchmark/v1/config.py): all 40 tasks, N = 5,000, sampling
    # seeds 0-9. bmi's own estimators differ (MLP critics 10-5, R's KSG with k = 5, ...); these
    # are probe's, with their defaults. Roughly 10 h on one core (from the per-cell times below).
    "paper": Settings(),
    # Reduced for 2 shared CPU cores, `--preset quick --seeds 3` in under 30 min on one thread;
    # all 40 tasks and N = 5,000 kept, so mi_estimate, the verdict's subject, is run exactly as
    # in `paper`. Measured per cell on one loaded core (N = 5,000):
    # - mi_estimate: 0.7-3 s up to 6 joint dims, 14-27 s above (it trains an InfoNCE critic
    #   there); 356 s for the 40 tasks, so ~18 min for 3 seeds: kept whole.
    # - ksg: refuses above 20 joint dims (ksg_mi's own default) instead of running there: one
    #   cell takes 68 s at 25 x 25 and over 3 min at 50 x 50, 7 tasks x 3 seeds ~ 30 min, and
    #   there it is known to fail (0.98 of 1.29 nats at dense 25 x 25). A refusal is an unsolved cell.
    # - bounds: InfoNCE only, at most 300 Adam steps (mi_bounds' default is 800-1,400 here):
    #   4-6 s a cell instead of 15-30 s, and InfoNCE's held-out bound moves little with it
    #   (0.376 vs 0.384, 0.945 vs 0.931, 0.756 vs 0.756 nats on 1 x 1, sparse 5 x 5, dense
    #   25 x 25). NWJ loses much more at 300 steps (0.37 vs 0.59 nats on dense 25 x 25), and
    #   NWJ, DV and SMILE at full length would add ~1 h each: they are left to `paper`.
    "quick": Settings(mi_estimators=("mi_estimate", "ksg", "infonce"), bound_steps=300, ksg_max_dims=20,
                      seeds=(0, 1, 2)),
    # Seconds: for tests and a first look. Three small tasks, N = 400 (mi_estimate trains no
    # critic below 500 pairs), bounds of 40 steps.
    "smoke": Settings(tasks=("1v1-normal-0.75", "1v1-additive-0.75", "multinormal-sparse-3-3-2-2.0"),
                      mi_estimators=("mi_estimate", "ksg", "infonce", "nwj"), n_samples=400, bound_steps=40,
                      seeds=(0,)),
}


# ---------------------------------------------------------------------------- data

def load_data(settings: Settings, dataset: str | None, data_dir: str | None) -> tuple[dict[str, Task], dict]:
    """The tasks of `settings` (each cell draws its own pairs); an image dataset is refused."""
    if dataset is not None or data_dir is not None:
        given = f"--dataset {dataset}" if dataset is not None else f"--data-dir {data_dir}"
        raise InputValueError(f"mi-ground-truth: {given} does not apply; this study draws pairs from the 40 "
                              "bmi-v1 tasks with closed-form MI. Leave out --dataset and --data-dir.")
    if settings.steps != 1:
        raise InputValueError(f"mi-ground-truth: --steps {settings.steps} does not apply; each cell makes one "
                              "estimate. Give the bounds' training budget with --set bound_steps=N.")
    for name in settings.tasks:
        if name not in TASKS:
            raise unknown_name("task", name, list(TASKS))
    for name in settings.mi_estimators:
        if name not in ESTIMATORS:
            raise unknown_name("estimator", name, list(ESTIMATORS))
    if settings.n_samples < 100:
        raise InputValueError(f"mi-ground-truth: n_samples is {settings.n_samples}; at least 100 pairs are "
                              "required (the bounds split them three ways). bmi v1 uses 5,000.")
    tasks = {name: TASKS[name] for name in settings.tasks}
    description = (f"{DATASET}: probe.ground_truth, N={settings.n_samples}, tasks="
                   + ";".join(f"{t.name}:{t.dim_x}x{t.dim_y}:{t.mutual_information!r}" for t in tasks.values()))
    info = {"dataset": DATASET, "dataset_sha256": hashlib.sha256(description.encode()).hexdigest(),
            "dataset_source": f"Czyż et al. 2023 (NeurIPS), bmi v1 tasks, {len(tasks)} of {len(TASKS)}, "
                              f"N = {settings.n_samples} pairs drawn per cell with its seed",
            "n_train": settings.n_samples, "n_test": "—"}
    return tasks, info


# ---------------------------------------------------------------------------- the estimators

@dataclass(frozen=True)
class Estimate:
    value: float                   # Î in nats
    reliable: float = math.nan     # 1/0 from the estimator, NaN where it gives no verdict
    reason: str = ""               # why it is unreliable ("" when reliable or no verdict)
    ci: tuple[float, float] = (math.nan, math.nan)
    method: str = ""


def _flag(ds, name: str = "reliable") -> float:
    return float(np.asarray(ds[name].values).reshape(-1)[0]) if name in ds else math.nan


def _text(ds, name: str = "unreliable_reason") -> str:
    return str(np.asarray(ds[name].values).reshape(-1)[0]) if name in ds else ""


def _mi_estimate(settings: Settings, x: np.ndarray, y: np.ndarray, seed: int) -> Estimate:
    from probe.analyzers.mi_estimate import mi_estimate

    ds = mi_estimate(x, y, seed=seed)
    ci = np.asarray(ds["mutual_information_ci"].values, dtype=float).reshape(-1) \
        if "mutual_information_ci" in ds else np.array([math.nan, math.nan])
    method = ds["method"].values.item() if "method" in ds else ds.attrs.get("method", "")
    return Estimate(float(ds["mutual_information"].values), _flag(ds), _text(ds), (float(ci[0]), float(ci[-1])),
                    str(method))


def _ksg(settings: Settings, x: np.ndarray, y: np.ndarray, seed: int) -> Estimate:
    # With ksg_max_dims = 0 KSG runs on every task, as in bmi: its high-dimensional bias is measured,
    # not refused, and its own `reliable` says where not to believe it. A refusal is an unsolved cell.
    cap = settings.ksg_max_dims or max(2, x.shape[1] + y.shape[1])
    ds = analyzers.ksg_mi(x, y, k=settings.ksg_neighbours, max_dims=cap, seed=seed)
    return Estimate(float(ds["mutual_information"].values), _flag(ds), _text(ds), method="KSG-1")


def _bound(name: str) -> Callable[[Settings, np.ndarray, np.ndarray, int], Estimate]:
    def run(settings: Settings, x: np.ndarray, y: np.ndarray, seed: int) -> Estimate:
        ds = analyzers.mi_bounds(x, y, estimators=(name,), critic=settings.critic,
                                 steps=settings.bound_steps or None, seed=seed)
        return Estimate(float(ds["bound"].values[0]), _flag(ds), _text(ds),
                        method=f"mi_bounds {name}, {settings.critic} critic")
    return run


ESTIMATORS: dict[str, Callable[[Settings, np.ndarray, np.ndarray, int], Estimate]] = {
    "mi_estimate": _mi_estimate,
    "ksg": _ksg,
    **{name: _bound(name) for name in BOUNDS},
}


def solved(estimate: Any, truth: Any) -> np.ndarray:
    """|ln(Î / I)| < ln 1.5, elementwise; False for a negative, zero or non-finite Î (or I)."""
    est, true = np.asarray(estimate, dtype=float), np.asarray(truth, dtype=float)
    ok = np.isfinite(est) & np.isfinite(true) & (est > 0) & (true > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ok & (np.abs(np.log(np.where(ok, est / np.where(ok, true, 1.0), 1.0))) < math.log(SOLVED_FACTOR))


# ---------------------------------------------------------------------------- one cell

def run_cell(settings: Settings, ids: dict, seed: int, data: dict[str, Task], device: Any,
             on_step=None) -> CellResult:
    """Draw N pairs from the cell's task with its seed, run its estimator once, compare with the truth."""
    task = data[ids["task"]]
    start = time.perf_counter()
    x, y = task.sample(settings.n_samples, note_seed("task_sample", seed))
    note_seed("estimator", seed)
    try:
        found = ESTIMATORS[ids["estimator"]](settings, x, y, seed)
    except InputValueError as err:  # an estimator that refuses these data: an unsolved cell, not a crash
        found = Estimate(math.nan, 0.0, f"refused: {err}")
    wall = time.perf_counter() - start
    truth = float(task.mutual_information)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = found.value / truth
    result = CellResult(steps=np.array([settings.n_samples]))
    result.coords["interval"] = np.array(["lower", "upper"])
    one = {"estimate": found.value, "true_mi": truth, "estimate_ratio": ratio,
           "solved": float(solved(found.value, truth)), "reliable": found.reliable, "wall_time": wall,
           "dim_x": float(task.dim_x), "dim_y": float(task.dim_y)}
    result.variables.update({name: (("step",), np.array([value], dtype=float)) for name, value in one.items()})
    result.variables["estimate_ci"] = (("step", "interval"), np.array([found.ci], dtype=float))
    result.variables["unreliable_reason"] = (("step",), np.array([found.reason], dtype=object))
    result.variables["method"] = (("step",), np.array([found.method or ids["estimator"]], dtype=object))
    if on_step is not None:
        on_step(1, {"bound_test": found.value})
    return result


# ---------------------------------------------------------------------------- summaries

def task_solved(ds) -> Any:
    """(task, estimator) 1/0: solved in more than half of the task's seeds (a seed whose cell did not
    finish counts as not solved)."""
    cells = (ds["solved"].isel(step=-1) if "step" in ds["solved"].dims else ds["solved"]).fillna(0)
    if "seed" not in cells.dims:
        return (cells > 0.5).astype(int)
    return (cells.sum("seed") > ds.sizes["seed"] / 2).astype(int)


def estimator_order(ds) -> list[str]:
    """The run's estimators in its settings' order (the Dataset's own order is alphabetical)."""
    names = [str(e) for e in ds["estimator"].values]
    try:
        listed = json.loads(ds.attrs.get("settings_json", "{}")).get("mi_estimators", [])
    except ValueError:
        listed = []
    return [e for e in listed if e in names] + [e for e in names if e not in listed]


def table(results: Any) -> str:
    """The task × estimator table of Î / I (mean over seeds; * marks a task not solved) as markdown,
    then the solved count per estimator. `results` is the Dataset or the path of its results.nc."""
    from probe.results import load_dataset

    ds = results if hasattr(results, "data_vars") else load_dataset(results, required=("estimate", "solved"))
    ratio = ds["estimate_ratio"].isel(step=-1).mean("seed")
    won = task_solved(ds)
    estimators = estimator_order(ds)
    order = [t for t in ALL_TASKS if t in ds["task"].values] + [str(t) for t in ds["task"].values if t not in TASKS]
    lines = ["| task | true MI | " + " | ".join(estimators) + " |", "|---|---:|" + "---:|" * len(estimators)]
    for task in order:
        truth = float(ds["true_mi"].sel(task=task).isel(step=-1).max())
        cells = []
        for est in estimators:
            value = float(ratio.sel(task=task, estimator=est))
            mark = "" if int(won.sel(task=task, estimator=est)) else "*"
            cells.append(f"{value:.2f}{mark}" if math.isfinite(value) else "—*")
        lines.append(f"| {task} | {truth:.3f} | " + " | ".join(cells) + " |")
    counts = [f"{int(won.sel(estimator=e).sum())}/{ds.sizes['task']}" for e in estimators]
    lines.append("| **solved** | | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def verdict(ds):
    """mi_estimate solves at least 90 % of the tasks and never calls a negative or non-finite value reliable."""
    claim = (f"probe's mi_estimate solves at least {PASS_SHARE:.0%} of the tasks (36 of 40; a task is solved when "
             f"Î is within a factor {SOLVED_FACTOR:g} of the true MI in more than half of its seeds) and marks no "
             "negative or non-finite estimate reliable")
    paper = ("Czyż et al. 2023: no estimator solves every task; KSG fails in high dimension, neural bounds on "
             "sparse and long-tailed tasks")
    decided_by = "the Î / I heatmap and the solved count per estimator"
    if "estimator" not in ds.dims or "mi_estimate" not in [str(e) for e in ds["estimator"].values] \
            or "solved" not in ds or "task" not in ds.dims:
        return undecided(claim, "needs mi_estimate cells over the tasks", decided_by)
    cells = ds.sel(estimator="mi_estimate").isel(step=-1)
    if "status" in cells and not (cells["status"] == "ok").any():
        return undecided(claim, "no mi_estimate cell finished", decided_by)
    won = task_solved(ds)
    n_tasks = ds.sizes["task"]
    need = math.ceil(PASS_SHARE * n_tasks - 1e-9)
    n_won = int(won.sel(estimator="mi_estimate").sum())
    est = np.asarray(cells["estimate"].values, dtype=float).reshape(-1)
    flagged = np.asarray(cells["reliable"].values, dtype=float).reshape(-1) == 1
    bad = int((flagged & ~(np.isfinite(est) & (est >= 0))).sum())
    counts = ", ".join(f"{e} {int(won.sel(estimator=e).sum())}" for e in estimator_order(ds))
    unsolved = [str(t) for t in ds["task"].values if not int(won.sel(estimator="mi_estimate", task=t))]
    evidence = (f"mi_estimate solved {n_won} of {n_tasks} tasks (needs {need})",
                f"negative or non-finite estimates marked reliable: {bad} of {est.size} cells",
                f"solved per estimator: {counts}",
                "mi_estimate did not solve: " + (", ".join(unsolved) if unsolved else "none"))
    return Verdict(claim, outcome(n_won >= need, bad == 0), evidence, decided_by, paper)


VARIABLES = {
    "estimate": ("MI estimate Î from N pairs", "nats"),
    "true_mi": ("true MI of the task (closed form)", "nats"),
    "estimate_ratio": ("Î / I: the estimate over the true MI", "1"),
    "solved": ("1 if |ln(Î / I)| < ln 1.5 (a negative or non-finite Î is not)", "1"),
    "reliable": ("the estimator's own verdict: 1 reliable, 0 not, NaN where it gives none", "1"),
    "unreliable_reason": ("why the estimator calls its estimate unreliable (empty when it does not)", ""),
    "method": ("what produced the estimate", ""),
    "estimate_ci": ("95 % interval of Î: mi_estimate's percentile bootstrap over rows, recentred on Î (NaN for the estimators that give none)", "nats"),
    "wall_time": ("wall time of sampling and estimating", "s"),
    "dim_x": ("dimension of X", "1"),
    "dim_y": ("dimension of Y", "1"),
}


STUDY = Study(
    name="mi-ground-truth",
    title="MI estimators on the 40 Beyond-Normal tasks with closed-form MI",
    figure="Czyż et al. 2023, bmi v1",
    description="mi_estimate, KSG, InfoNCE, NWJ, DV, SMILE on 40 tasks with known MI (1x1 to 50x50): solved within x1.5?",
    presets=PRESETS,
    grid=lambda s: {"task": list(s.tasks), "estimator": list(s.mi_estimators)},
    run_cell=run_cell,
    verdict=verdict,
    load_data=load_data,
    variables=VARIABLES,
    origin="own",
)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m studies.mi_ground_truth RESULTS.nc")
    print(table(sys.argv[1]))
