"""How long the `paper` preset of every study takes on this machine, from a few timed steps.

For each study the cells that cost differently (encoder families, critics, data sizes; not
estimators, targets or seeds, which only change a loss) run `--steps` steps of the paper
preset's exact models, with evaluations (the paper's full protocol: linear probe, and where the
preset asks for them V-information, triplet margins, Jacobians) at the first and last step.
The median step-to-step interval is the step time; what the run took beyond its steps and its
set-up is the cost of one evaluation. Evaluations are timed in full for a study's first cell
kind only; the other kinds run without the analyzers (V-information, triplet margins,
Jacobians: CPU-bound fits that dominate an evaluation and do not depend on the encoder's
kind much) and are charged the first kind's evaluation time. The projection multiplies these out over the preset's
grid, seeds, steps and evaluations:

    total = sum over cells (steps x step time + evaluations x evaluation time)

Evaluation cost grows with the training-set size (the linear probe and V-information fit on
every training image): on the 4,000-image mnist-5k folder it is a lower bound for MNIST's 60k.

Prints one JSON line per timed cell kind, then a markdown table.

Usage: python bench/paper_presets.py [--device cuda] [--steps 40] [--data-dir DIR] [--studies a,b]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

import probe  # noqa: F401  (before torch: sets passive OpenMP waiting, see probe/__init__.py)
from probe.data import load_image_pairs
from probe.devices import resolve_device
from studies import list_studies

# Grid dims that change only the loss or the data's parameters, not the cost of a step.
COST_FREE_DIMS = ("estimator", "target", "negatives", "lr_source", "transform")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_cell(study, settings, ids, data, device, steps: int) -> dict:
    """Run one cell for `steps` steps (evaluations at 0 and `steps`) and split its wall time."""
    fields = {f.name for f in dataclasses.fields(settings)}
    short = {"steps": steps}
    if "eval_every" in fields:
        short["eval_every"] = steps
    if "record_every" in fields:
        short["record_every"] = min(settings.record_every, steps)
    if "warmup_steps" in fields:
        short["warmup_steps"] = min(settings.warmup_steps, steps)
    stamps: list[float] = []
    sync(device)
    start = time.perf_counter()
    study.run_cell(dataclasses.replace(settings, **short), ids, settings.seeds[0], data, device,
                   on_step=lambda step, last: stamps.append(time.perf_counter()))
    sync(device)
    total = time.perf_counter() - start
    gaps = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    step_s = statistics.median(gaps) if gaps else float("nan")
    n_evals = 2 if "eval_every" in fields else 0
    # before the first step: set-up + the step-0 evaluation; the last gap holds the final evaluation.
    eval_s = max(0.0, (total - steps * step_s) / n_evals) if n_evals else 0.0
    return {"step_s": step_s, "eval_s": eval_s, "wall_s": total}


def projection(settings, grid: dict, timings: dict[tuple, dict]) -> float:
    """Seconds for the whole preset: every cell of the grid, every seed."""
    fields = {f.name for f in dataclasses.fields(settings)}
    evals = settings.steps // settings.eval_every + 1 if "eval_every" in fields else 0
    total = 0.0
    dims = list(grid)
    for values in itertools.product(*grid.values()):
        key = tuple((d, v) for d, v in zip(dims, values) if d not in COST_FREE_DIMS)
        t = timings[key]
        total += len(settings.seeds) * (settings.steps * t["step_s"] + evals * t["eval_s"])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per cell kind")
    parser.add_argument("--data-dir", default="../shared/data/mnist-5k", help="MNIST IDX folder (mnist-5k)")
    parser.add_argument("--studies", default=None, help="comma-separated study names (default: all)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    wanted = set(args.studies.split(",")) if args.studies else None
    rows = []
    for study in list_studies():
        if wanted and study.name not in wanted:
            continue
        settings = study.settings("paper")
        grid = study.grid(settings)
        if study.load_data is not None:
            data, info = study.load_data(settings, None, None)
        else:
            data, info = load_image_pairs(settings, None, args.data_dir)
        kinds = {}
        for values in itertools.product(*grid.values()):
            ids = dict(zip(grid, values))
            key = tuple((d, v) for d, v in ids.items() if d not in COST_FREE_DIMS)
            kinds.setdefault(key, ids)
        timings = {}
        fields = {f.name for f in dataclasses.fields(settings)}
        light = dataclasses.replace(settings, **{k: v for k, v in (("analyzers", False), ("jacobian_inputs", 0))
                                                 if k in fields})
        for i, (key, ids) in enumerate(kinds.items()):
            t = time_cell(study, settings if i == 0 else light, ids, data, device, args.steps)
            if i:
                t["eval_s"] = timings[next(iter(timings))]["eval_s"]  # charged the full evaluation
            timings[key] = t
            row = {"study": study.name, "cell": dict(key) or "all", "device": str(device),
                   "dataset": info.get("dataset"), **{k: round(v, 5) for k, v in t.items()}}
            print(json.dumps(row), flush=True)
            rows.append(row)
        hours = projection(settings, grid, timings) / 3600
        n_cells = len(list(itertools.product(*grid.values()))) * len(settings.seeds)
        rows.append({"study": study.name, "projected_hours": round(hours, 2), "runs": n_cells,
                     "device": str(device), "dataset": info.get("dataset")})
        print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n`paper` presets on {name}, {args.steps} timed steps per cell kind:\n")
    print("| study | cell | step (ms) | evaluation (s) |")
    print("|---|---|---|---|")
    for row in rows:
        if "step_s" in row:
            cell = ", ".join(f"{k}={v}" for k, v in row["cell"].items()) if isinstance(row["cell"], dict) else "all"
            print(f"| {row['study']} | {cell} | {row['step_s'] * 1e3:.1f} | {row['eval_s']:.2f} |")
    print("\n| study | runs (cells x seeds) | projected total (h) |")
    print("|---|---|---|")
    for row in rows:
        if "projected_hours" in row:
            print(f"| {row['study']} | {row['runs']} | {row['projected_hours']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
