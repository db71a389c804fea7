"""The extended ground-truth suite of issue 19, and its tuning / scoring split.

`suite()` holds bmi's 40 v1 tasks and the families that broke `mi_estimate` when it had been
tuned on those 40 alone: zero-correlation Gaussian mixtures and sign-mixing pairs (Monte-Carlo
truth with its standard error), discrete channels (closed form), categorical-to-Gaussian mixed
pairs (Monte Carlo), and, for each image folder given, class-channel image pairs (closed form).

`split(tasks, seed)` deals every family's tasks, in an order drawn with `seed`, alternately to a
tuning half and a scoring half, so each family sits in both. Limits of an estimator are set
on the tuning half; the scoring half, which took no part in setting them, is what a claim rests
on. SPLIT_SEED is the one the mi-ground-truth study and bench/mi_ground_truth.py use.

    >>> from probe.ground_truth.suite import suite, split
    >>> halves = split(suite())            # {task name: "tuning" or "scoring"}
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probe.ground_truth.discrete import binary_symmetric, categorical_gaussian, random_channel, symmetric_channel
from probe.ground_truth.images import image_class_tasks
from probe.ground_truth.mixtures import sign_mixing, x_mixture
from probe.ground_truth.tasks import TASKS, Task

SPLIT_SEED = 19
HALVES = ("tuning", "scoring")
NEW_FAMILIES = ("mixture", "sign-mixing", "discrete", "mixed", "image")
# Image folders looked for by default (each only if present): the repository's mnist-5k and a
# system-wide Fashion-MNIST.
DEFAULT_IMAGE_FOLDERS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist-5k",
                         Path("/usr/share/datasets/fashion-mnist"))


def new_tasks() -> list[Task]:
    """The non-image families added by issue 19, in a fixed order."""
    mixtures = [x_mixture(1, 0.9), x_mixture(2, 0.8), x_mixture(3, 0.7), x_mixture(5, 0.8), x_mixture(10, 0.8),
                x_mixture(25, 0.6), x_mixture(2, 0.9, weight=0.75), x_mixture(5, 0.6, weight=0.8)]
    traps = [sign_mixing(1, 0.9, 0.1), sign_mixing(3, 0.9, 0.1), sign_mixing(2, 0.8, 0.3, per_pair=True),
             sign_mixing(1, 0.6, 0.5)]
    discrete = [binary_symmetric(0.1), binary_symmetric(0.01), binary_symmetric(0.25, bits=3),
                symmetric_channel(4, 0.3), symmetric_channel(10, 0.2), random_channel(5, 5, seed=1),
                random_channel(3, 8, seed=2), binary_symmetric(0.05, bits=2)]
    mixed = [categorical_gaussian(2, 1, 2.0), categorical_gaussian(4, 2, 2.0), categorical_gaussian(10, 1, 1.5),
             categorical_gaussian(3, 5, 3.0, sigma=0.5)]
    return mixtures + traps + discrete + mixed


def image_tasks(folders: tuple[str | os.PathLike, ...] | None = None) -> list[Task]:
    """Class-channel image tasks (β = 0, 0.2, 0.5) for each IDX folder present (default: DEFAULT_IMAGE_FOLDERS)."""
    found = []
    for folder in DEFAULT_IMAGE_FOLDERS if folders is None else folders:
        if Path(folder).is_dir():
            found += image_class_tasks(folder)
    return found


def suite(image_folders: tuple[str | os.PathLike, ...] | None = ()) -> dict[str, Task]:
    """bmi's 40 tasks, then `new_tasks()`, then image tasks for `image_folders` (None: the default
    folders that exist; the empty default: no images, which need data files)."""
    tasks = list(TASKS.values()) + new_tasks()
    if image_folders is None or image_folders:
        tasks += image_tasks(image_folders)
    return {task.name: task for task in tasks}


def split(tasks: dict[str, Task] | list[Task], seed: int = SPLIT_SEED) -> dict[str, str]:
    """{task name: "tuning" or "scoring"}: each family's tasks, sorted by name and shuffled with
    `seed` (and the family's name), dealt alternately, the first to tuning."""
    listed = list(tasks.values()) if isinstance(tasks, dict) else list(tasks)
    halves: dict[str, str] = {}
    for family in sorted({t.family for t in listed}):
        names = sorted(t.name for t in listed if t.family == family)
        rng = np.random.default_rng([seed, *family.encode()])
        for position, index in enumerate(rng.permutation(len(names))):
            halves[names[index]] = HALVES[position % 2]
    return {t.name: halves[t.name] for t in listed}
