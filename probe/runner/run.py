"""Run (or resume) a study: every cell of its grid on an executor, then one results file.

The runner loads the data once, runs every cell on an executor (`probe.runner.executors`:
this process, a process pool or a dask cluster), each cell writing its result atomically to
`cells/` (keyed by its ids and a hash of the settings, so a rerun of the same command skips
finished cells and a changed setting never reuses stale ones; a killed cell resumes from its
mid-cell checkpoint), then assembles the study's Dataset and saves `results.nc`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import platform
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

import probe
from probe.data import PairData, load_image_pairs
from probe.devices import resolve_device, torch_build
from probe.errors import InputValueError
from probe.io import atomic_write_text
from probe.results import CellResult, cell_dataset, combine_cells, load_dataset, save_dataset
from probe.runner import executors
from probe.runner.cells import CellJob
from probe.runner.options import RunOptions
from probe.runner.progress import run_started_at
from probe.study import Cell, Study, apply_overrides, settings_json
from probe.training.config import TrainConfig
from probe.training.evaluation import pixel_probe_accuracy


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `message` says what was saved and how to resume."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def run_study(study: Study, preset: str = "quick", *, log: Callable[[str], None] = print, **options: Any) -> Path:
    """Run (or resume) every cell of `study` under `preset`; return the path of results.nc.

    `options` are the fields of `RunOptions` (dataset, data_dir, seeds, steps, device, out,
    executor, workers, threads, checkpoint_every, save_embeddings, set_values, ...).
    """
    return run(study, RunOptions(preset=preset, **options), log=log)


def run_settings(study: Study, options: RunOptions) -> Any:
    """The preset's settings with --seeds, --steps and every --set applied (checked before any training)."""
    settings = study.settings(options.preset)
    overrides: dict[str, Any] = {}
    seeds = options.seed_tuple()
    if seeds is not None:
        overrides["seeds"] = seeds
    if options.steps is not None:
        overrides["steps"] = options.steps
    if options.views is not None:
        if not hasattr(settings, "views"):
            raise InputValueError(f"--views {options.views}: {study.name} trains on pairs that are not two views of "
                                  "an image (its data are synthetic), so there is nothing to split. Leave --views out.")
        overrides["views"] = options.views
    return apply_overrides(dataclasses.replace(settings, **overrides), options.set_values)


def run(study: Study, options: RunOptions, *, log: Callable[[str], None] = print) -> Path:
    """`run_study` with its options as one object (what the command line builds)."""
    started_at = run_started_at()  # the projected wall time counts the command's start-up too
    settings = run_settings(study, options)
    executors.check_executor(options.executor, options.scheduler, options.workers)
    # Dask workers resolve the device themselves: the cluster may have GPUs this machine lacks.
    torch_device = None if options.executor == "dask" and options.device in ("auto", "cpu", "cuda") \
        else resolve_device(options.device)

    data, info = (study.load_data or load_image_pairs)(settings, options.dataset, options.data_dir)
    # TF32 changes the numbers: such a run never reuses (or resumes) the cells of an fp32 one.
    tf32 = "-tf32" if options.tf32 else ""
    key = hashlib.sha256((settings_json(settings) + info.get("dataset_sha256", "") + tf32).encode()).hexdigest()[:10]
    run_dir = Path(options.out) / study.name / f"{options.preset}-{_slug(info['dataset'])}-{key}{tf32}"
    cells_dir = run_dir / "cells"
    try:
        cells_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "settings.json", settings_json(settings) + "\n")
    except OSError as err:
        raise InputValueError(
            f"--out {options.out}: cannot write to {run_dir} ({err.strerror or err}). "
            "Choose a writable folder with --out DIR."
        ) from err

    grid = study.grid(settings)
    cells = [Cell(dict(zip(grid, combo)), seed)
             for combo in itertools.product(*grid.values()) for seed in settings.seeds]
    embeddings = str((run_dir / "embeddings").resolve()) if options.save_embeddings else None
    jobs = [CellJob(study, settings, options, info.get("dataset_sha256", ""), str(cells_dir.resolve()), key, cell,
                    embeddings) for cell in cells]
    pending = [job for job in jobs if not job.result_path.exists()]
    if settings.steps <= 1:  # one-step cells differ in cost by task: a seeded order makes the first ones a fair sample
        pending = [pending[i] for i in random.Random(key).sample(range(len(pending)), len(pending))]
    for job in jobs:
        if job.result_path.exists():  # killed between writing the result and removing the checkpoint
            job.checkpoint_path.unlink(missing_ok=True)
    resuming = sum(job.checkpoint_path.exists() for job in pending)
    groups_resuming = len(list(cells_dir.glob("group-*.ckpt.pt")))  # groups of cells trained together
    where = f"on {torch_device}" if options.executor == "local" else \
        f"via {options.executor}" + (f" at {options.scheduler}" if options.scheduler else "")
    log(f"{study.name} [{options.preset}] on {info['dataset']} ({info.get('n_train', '?')} train / "
        f"{info.get('n_test', '?')} test), {len(cells)} cells {where}; {len(cells) - len(pending)} already done"
        + (f", {resuming} resuming mid-cell" if resuming else "")
        + (f", {groups_resuming} group(s) resuming mid-run" if groups_resuming else "") + f" -> {run_dir}")

    try:
        failed = executors.run_cells(options.executor, pending, data=data, steps_per_cell=settings.steps,
                                     workers=options.workers, scheduler=options.scheduler, threads=options.threads,
                                     progress=options.progress, log=log, started_at=started_at,
                                     baseline_fits=len(settings.seeds) if isinstance(data, PairData) else 0)
    except KeyboardInterrupt:
        raise RunInterrupted(_saved_so_far(jobs, cells_dir)) from None
    parts = [_failed_cell(job.cell, failed[job.cell.filename()], study.variables) if job.cell.filename() in failed
             else load_dataset(job.result_path) for job in jobs]
    total_wall = float(sum(p.attrs.get("cell_wall_time", 0.0) for p in parts))
    devices = sorted({p.attrs["device"] for p in parts if "device" in p.attrs})
    results = combine_cells(parts, study.variables)
    results = _add_baseline(results, data, settings)
    results.attrs = _run_attrs(study, options.preset, settings, info, ", ".join(devices) or str(torch_device),
                               total_wall)
    results.attrs.update(executor=options.executor, tf32=int(options.tf32), stream_seeds_json=_stream_seeds(parts))
    return save_dataset(results, run_dir / "results.nc")


def _saved_so_far(jobs: list[CellJob], cells_dir: Path) -> str:
    """What an interrupted run leaves behind, and that rerunning the command resumes it."""
    done = sum(job.result_path.exists() for job in jobs)
    checkpoints = [job.cell.label for job in jobs if job.checkpoint_path.exists() and not job.result_path.exists()]
    every = jobs[0].checkpoint_every if jobs else None
    cadence = "--checkpoint-every 0: none are saved" if every == 0 else \
        f"one every {every or TrainConfig.checkpoint_every:,} training steps"
    lines = [f"Interrupted. Saved in {cells_dir}: {done} of {len(jobs)} cell(s) finished"]
    if checkpoints:
        lines.append(f"mid-cell checkpoint(s) of {', '.join(checkpoints)} ({cadence}): a rerun resumes from there")
    else:
        lines.append(f"no mid-cell checkpoint ({cadence}): the cell in progress starts again")
    lines.append("Rerun the same command to resume; finished cells are not run again.")
    return "; ".join(lines[:2]) + ".\n" + lines[2]


def _add_baseline(results: xr.Dataset, data: Any, settings: Any) -> xr.Dataset:
    if not isinstance(data, PairData):
        return results

    noise = getattr(settings, "noise_std", 0.0)
    values = [pixel_probe_accuracy(data, seed, noise) for seed in results["seed"].values]
    results["pixel_probe_accuracy"] = (("seed",), np.asarray(values))
    results["pixel_probe_accuracy"].attrs.update(long_name="linear-probe test accuracy on raw pixels", units="1")
    return results


def _failed_cell(cell: Cell, reason: str, variables: dict) -> xr.Dataset:
    """A cell that could not finish (its worker kept dying): only its status, NaN elsewhere once
    combined. No file is written, so a rerun tries it again."""
    return cell_dataset(CellResult(steps=np.zeros(0, dtype=np.int64), status=reason), {**cell.ids, "seed": cell.seed},
                        variables)


def _stream_seeds(parts: list[xr.Dataset]) -> str:
    """{seed: {stream: stream seed}} over the cells, from their `seed_<stream>` attrs, as JSON."""
    seeds: dict[str, dict[str, int]] = {}
    for part in parts:
        streams = {k[len("seed_"):]: int(v) for k, v in part.attrs.items() if k.startswith("seed_")}
        seeds.setdefault(str(int(part["seed"].values[0])), {}).update(streams)
    return json.dumps(seeds, sort_keys=True)


def _run_attrs(study: Study, preset: str, settings: Any, info: dict, device: str, total_wall: float) -> dict:
    return {
        "study": study.name,
        "title": study.title,
        "figure": study.figure,
        "study_origin": study.origin,
        "preset": preset,
        "dataset": info["dataset"],
        "dataset_sha256": info.get("dataset_sha256", ""),
        "dataset_source": info.get("dataset_source", ""),
        **({"views": info["views"], "views_partition": info.get("views_partition", "")} if "views" in info else {}),
        "seeds": ",".join(str(s) for s in settings.seeds),
        "eval_batch_size": int(getattr(settings, "batch_size", 0)),
        "device": device,
        "probe_version": probe.__version__,
        **torch_build(),
        "python_version": platform.python_version(),
        "total_wall_time": total_wall,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings_json": settings_json(settings),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)
