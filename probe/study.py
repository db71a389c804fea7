"""Run a study: a grid of cells (estimator × ... × seed), each a training run.

A study module in `studies/` declares a `Study`: settings presets (frozen dataclasses), the
grid as readable ids, and `run_cell`. The runner loads the data once, runs every cell on an
executor (`probe.executors`: this process, a process pool or a dask cluster), each cell
writing its result atomically to `cells/` (keyed by its ids and a hash of the settings, so a
rerun of the same command skips finished cells and a changed setting never reuses stale
ones; a killed cell resumes from its mid-cell checkpoint, `probe.checkpoint`), then
assembles the study's Dataset and saves `results.nc`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib
import itertools
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import xarray as xr

import probe
from probe.errors import InputValueError, unknown_name
from probe.results import cell_dataset, combine_cells, load_dataset, save_dataset
from probe.training import CellResult, PairData

STUDY_MODULES = ("invertible_encoders", "estimator_validation", "adversarial_encoder", "hard_to_invert", "critic_capacity", "encoder_architecture", "noniid_negatives", "matched_targets")


@dataclass(frozen=True)
class Cell:
    ids: dict[str, Any]      # grid ids, e.g. {"estimator": "nwj"}
    seed: int

    @property
    def label(self) -> str:
        return " · ".join(str(v) for v in self.ids.values()) + f" · seed {self.seed}"

    def filename(self) -> str:
        parts = [f"{k}={v}" for k, v in self.ids.items()] + [f"seed={self.seed}"]
        return "_".join(parts).replace("/", "-") + ".nc"


@dataclass(frozen=True)
class Study:
    name: str                   # "invertible-encoders"
    title: str
    figure: str                 # "Fig. 1a/b"
    description: str            # one line for `probe list-studies`
    presets: dict[str, Any]     # preset name -> settings dataclass
    grid: Callable[[Any], dict[str, list]]
    run_cell: Callable[..., CellResult]
    load_data: Callable[[Any, str | None, str | None], tuple[Any, dict]] | None = None
    # Did a run show the paper's effect? `results Dataset -> probe.verdict.Verdict`, for the index page.
    verdict: Callable[[xr.Dataset], Any] | None = None

    def settings(self, preset: str) -> Any:
        if preset not in self.presets:
            raise unknown_name("preset", preset, list(self.presets))
        return self.presets[preset]


def list_studies() -> list[Study]:
    return [importlib.import_module(f"studies.{m}").STUDY for m in STUDY_MODULES]


def find_study(name: str) -> Study:
    studies = {s.name: s for s in list_studies()}
    key = name.replace("_", "-")
    if key not in studies:
        raise unknown_name("study", name, list(studies))
    return studies[key]


def apply_overrides(settings: Any, values: dict[str, str]) -> Any:
    """Settings with `--set KEY=VALUE` applied, each VALUE parsed to the field's current type
    (tuples as comma-separated lists); names and estimator/critic ids are checked here, before
    any training starts."""
    from probe.critics import CRITICS
    from probe.estimators import get_estimator

    fields = {f.name for f in dataclasses.fields(settings)}
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise unknown_name("setting", key, sorted(fields))
        current = getattr(settings, key)
        try:
            parsed[key] = _parse_like(current, raw)
        except ValueError:
            raise InputValueError(
                f"--set {key}={raw}: cannot be read as {type(current).__name__} (current value {current!r})."
            ) from None
    settings = dataclasses.replace(settings, **parsed)
    for name in getattr(settings, "estimators", ()):
        get_estimator(name)
    for name in getattr(settings, "critics", ()) or ((settings.critic,) if hasattr(settings, "critic") else ()):
        if name not in CRITICS:
            raise unknown_name("critic", name, list(CRITICS))
    return settings


def _parse_like(current: Any, raw: str) -> Any:
    if isinstance(current, tuple):
        items = [v.strip() for v in raw.split(",") if v.strip()]
        if not items:
            raise ValueError(raw)
        kind = type(current[0]) if current else str
        return tuple(_parse_like(kind(), v) if kind is not str else v for v in items)
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float) or current is None:
        return None if raw.lower() == "none" else float(raw)
    return raw


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputValueError("--device cuda was requested but no CUDA device is available; use --device cpu or auto.")
    if device not in ("cpu", "cuda"):
        raise InputValueError(f"--device is {device!r}; choose cpu, cuda or auto.")
    return torch.device(device)


def settings_json(settings: Any) -> str:
    return json.dumps(dataclasses.asdict(settings), sort_keys=True, default=str)


def load_image_pairs(settings: Any, dataset: str | None, data_dir: str | None) -> tuple[PairData, dict]:
    """The default data of a study: top/bottom halves of an image dataset."""
    from probe.data import load_dataset as load_images, split_views

    images = load_images(dataset or settings.dataset, data_dir)
    train1, train2 = split_views(images.train.images)
    test1, test2 = split_views(images.test.images)
    h, w = images.image_shape
    data = PairData(train1, train2, test1, test2, images.train.labels, images.test.labels, (h // 2, w))
    info = {"dataset": images.name, "dataset_sha256": images.sha256, "dataset_source": images.source,
            "n_train": len(train1), "n_test": len(test1)}
    return data, info


def run_study(study: Study, preset: str = "paper", *, dataset: str | None = None, data_dir: str | None = None,
              seeds: int | tuple[int, ...] | None = None, steps: int | None = None, device: str = "auto",
              out: str | Path = "runs", progress: bool = True, set_values: dict[str, str] | None = None,
              executor: str = "local", scheduler: str | None = None, workers: int | None = None,
              threads: int | None = None, checkpoint_every: int | None = None, save_embeddings: bool = False,
              log: Callable[[str], None] = print) -> Path:
    """Run (or resume) every cell of `study` under `preset`; return the path of results.nc.

    `executor` is where the cells run (`probe.executors`: local, processes or dask at
    `scheduler`, with `workers` worker processes of `threads` torch threads each; the local
    executor uses this process's threads). Training calls save a mid-cell checkpoint every
    `checkpoint_every` updates (None: TrainConfig's default; 0: none).
    """
    settings = study.settings(preset)
    overrides: dict[str, Any] = {}
    if seeds is not None:
        overrides["seeds"] = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
        if not overrides["seeds"]:
            raise InputValueError("--seeds is 0; at least one seed is required.")
    if steps is not None:
        if steps < 1:
            raise InputValueError(f"--steps is {steps}; at least 1 training step is required.")
        overrides["steps"] = steps
    settings = apply_overrides(dataclasses.replace(settings, **overrides), set_values or {})
    if checkpoint_every is not None and checkpoint_every < 0:
        raise InputValueError(f"--checkpoint-every is {checkpoint_every}; give a number of steps, or 0 for none.")
    from probe import executors

    executors.check_executor(executor, scheduler, workers)
    # Dask workers resolve the device themselves: the cluster may have GPUs this machine lacks.
    torch_device = None if executor == "dask" and device in ("auto", "cpu", "cuda") else resolve_device(device)

    data, info = (study.load_data or load_image_pairs)(settings, dataset, data_dir)
    key = hashlib.sha256((settings_json(settings) + info.get("dataset_sha256", "")).encode()).hexdigest()[:10]
    run_dir = Path(out) / study.name / f"{preset}-{_slug(info['dataset'])}-{key}"
    cells_dir = run_dir / "cells"
    try:
        cells_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "settings.json").write_text(settings_json(settings) + "\n")
    except OSError as err:
        raise InputValueError(
            f"--out {out}: cannot write to {run_dir} ({err.strerror or err}). Choose a writable folder with --out DIR."
        ) from err

    grid = study.grid(settings)
    cells = [Cell(dict(zip(grid, combo)), seed)
             for combo in itertools.product(*grid.values()) for seed in settings.seeds]
    jobs = [executors.CellJob(study.run_cell, study.load_data or load_image_pairs, settings, dataset,
                              str(Path(data_dir).resolve()) if data_dir else None, info.get("dataset_sha256", ""),
                              device, str(cells_dir.resolve()), key, cell, checkpoint_every,
                              str((run_dir / "embeddings").resolve()) if save_embeddings else None)
            for cell in cells]
    pending = [job for job in jobs if not job.result_path.exists()]
    for job in jobs:
        if job.result_path.exists():  # killed between writing the result and removing the checkpoint
            job.checkpoint_path.unlink(missing_ok=True)
    resuming = sum(job.checkpoint_path.exists() for job in pending)
    where = f"on {torch_device}" if executor == "local" else f"via {executor}" + (f" at {scheduler}" if scheduler else "")
    log(f"{study.name} [{preset}] on {info['dataset']} ({info.get('n_train', '?')} train / {info.get('n_test', '?')} test), "
        f"{len(cells)} cells {where}; {len(cells) - len(pending)} already done"
        + (f", {resuming} resuming mid-cell" if resuming else "") + f" -> {run_dir}")

    failed = executors.run_cells(executor, pending, data=data, steps_per_cell=settings.steps, workers=workers,
                                 scheduler=scheduler, threads=threads, progress=progress, log=log)
    parts = [_failed_cell(job.cell, failed[job.cell.filename()]) if job.cell.filename() in failed
             else load_dataset(job.result_path) for job in jobs]
    total_wall = float(sum(p.attrs.get("cell_wall_time", 0.0) for p in parts))
    devices = sorted({p.attrs["device"] for p in parts if "device" in p.attrs})
    results = combine_cells(parts)
    results = _add_baseline(results, data, settings)
    results.attrs = _run_attrs(study, preset, settings, info, ", ".join(devices) or str(torch_device), total_wall)
    results.attrs.update(executor=executor, stream_seeds_json=_stream_seeds(parts))
    path = save_dataset(results, run_dir / "results.nc")
    log(f"results: {path}\nreport:  probe report {path}")
    return path


def _add_baseline(results: xr.Dataset, data: Any, settings: Any) -> xr.Dataset:
    if not isinstance(data, PairData):
        return results
    from probe.training import pixel_probe_accuracy

    noise = getattr(settings, "noise_std", 0.0)
    values = [pixel_probe_accuracy(data, seed, noise) for seed in results["seed"].values]
    results["pixel_probe_accuracy"] = (("seed",), np.asarray(values))
    results["pixel_probe_accuracy"].attrs.update(long_name="linear-probe test accuracy on raw pixels", units="1")
    return results


def _failed_cell(cell: Cell, reason: str) -> xr.Dataset:
    """A cell that could not finish (its worker kept dying): only its status, NaN elsewhere once
    combined. No file is written, so a rerun tries it again."""
    return cell_dataset(CellResult(steps=np.zeros(0, dtype=np.int64), status=reason), {**cell.ids, "seed": cell.seed})


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
        "preset": preset,
        "dataset": info["dataset"],
        "dataset_sha256": info.get("dataset_sha256", ""),
        "dataset_source": info.get("dataset_source", ""),
        "seeds": ",".join(str(s) for s in settings.seeds),
        "eval_batch_size": int(getattr(settings, "batch_size", 0)),
        "device": device,
        "probe_version": probe.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "total_wall_time": total_wall,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings_json": settings_json(settings),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)
