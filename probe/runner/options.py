"""How to run a study: one options object from the command line (or Python) to the runner."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from probe.errors import InputValueError

EXECUTORS = ("local", "processes", "dask")
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: str | int, *, name: str = "--max-memory") -> int:
    """Bytes from '8GiB', '8 GB', '512MiB', '1.5g' or a number of bytes (G = 10^9, GiB = 2^30)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputValueError(f"{name} is {value!r}; give a size such as 8GiB, 512MiB or 16GB.")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits):]
        try:
            number = float(digits)
        except ValueError:
            number = math.nan
        if unit not in _UNITS or not math.isfinite(number):
            raise InputValueError(f"{name} is {value!r}; give a size such as 8GiB, 512MiB or 16GB "
                                  "(GiB = 2^30 bytes, GB = 10^9).")
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise InputValueError(f"{name} is {value!r}; a positive size is required, e.g. 8GiB.")
    return size


@dataclass(frozen=True)
class RunOptions:
    """Everything `probe run-study` takes besides the study's name.

    `seeds` is a count (3 -> 0, 1, 2) or the seeds themselves; `steps` overrides the preset's
    training steps; `set_values` are `--set KEY=VALUE` overrides, parsed against the preset.
    `executor` is where cells run (local, processes, dask at `scheduler`) with `workers`
    processes of `threads` torch threads each. `checkpoint_every`: updates between mid-cell
    checkpoints (None: TrainConfig's default; 0: none). `yes`: go on with a CPU run projected
    longer than `probe.runner.progress.ASK_ABOVE_S` (the default stops it before it starts).
    """

    preset: str = "quick"
    dataset: str | None = None
    data_dir: str | None = None
    seeds: int | tuple[int, ...] | None = None
    steps: int | None = None
    device: str = "auto"
    out: str | Path = "runs"
    progress: bool = True
    set_values: dict[str, str] = field(default_factory=dict)
    executor: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    checkpoint_every: int | None = None
    save_embeddings: bool = False
    yes: bool = False
    # Train the cells a study groups (Study.member_axes: seeds, estimators, targets) as one
    # vectorised ensemble (probe.training.members); False trains one cell after another.
    ensemble: bool = True
    # Allow TF32 matmuls and convolutions on CUDA (Ampere or newer: faster, numbers change slightly);
    # False runs them in IEEE fp32, for fidelity. A run with it goes to its own run folder.
    tf32: bool = False
    # Processes that fit the paper's SAGA probe while training goes on (probe.training.probe_pool),
    # local executor only; None: the cores training leaves free, at most 4; 0: fitted inline.
    probe_workers: int | None = None
    # How an image becomes two views (probe.data.views: top-bottom, left-right, random-split[:SEED]);
    # None: the preset's (top-bottom, the paper's, unless the preset says otherwise).
    views: str | None = None
    # The memory a group of cells trained together may take ('8GiB' or bytes; probe.runner.budget):
    # groups are split to fit it. None: 3/4 of the memory available when the run starts (on
    # CUDA, of the GPU's free memory).
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise InputValueError(f"--steps is {self.steps}; at least 1 training step is required.")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise InputValueError(
                f"--checkpoint-every is {self.checkpoint_every}; give a number of steps, or 0 for none.")
        if self.probe_workers is not None and self.probe_workers < 0:
            raise InputValueError(f"--probe-workers is {self.probe_workers}; give 0 (fit inline) or more processes.")
        if self.probe_workers and self.executor != "local":
            raise InputValueError(
                f"--probe-workers {self.probe_workers} applies to the local executor; with --executor "
                f"{self.executor} every worker fits its probes inline. Drop --probe-workers, or use --executor local.")
        if self.dataset is not None and self.data_dir is not None and self.dataset.strip().lower() != "cifar10":
            # load_dataset reads whatever the folder holds; a dataset name beside it would be silently ignored.
            raise InputValueError(
                f"--dataset {self.dataset} and --data-dir {self.data_dir} both choose the data; with --data-dir the "
                "folder's files are the data and --dataset is not used (only --dataset cifar10 means something "
                f"there: insist on CIFAR-10 files). Pass one of them: --data-dir {self.data_dir}, or --dataset "
                f"{self.dataset}.")
        if self.views is not None:
            from probe.data.views import parse_views

            parse_views(self.views, "--views")
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", parse_size(self.max_memory))
        if self.data_dir is not None:  # workers may start in another folder
            object.__setattr__(self, "data_dir", str(Path(self.data_dir).resolve()))

    def seed_tuple(self) -> tuple[int, ...] | None:
        if self.seeds is None:
            return None
        seeds = tuple(range(self.seeds)) if isinstance(self.seeds, int) else tuple(self.seeds)
        if not seeds:
            given = self.seeds if isinstance(self.seeds, int) else "an empty list"
            raise InputValueError(f"--seeds is {given}; at least one seed is required.")
        return seeds

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)
