"""Ground-truth mutual-information tasks: joint distributions whose MI is known in closed form.

A numpy/scipy port of the v1 task list of Czyż, Grabowski, Vogt, Beerenwinkel & Marx, "Beyond
Normal: On the Evaluation of Mutual Information Estimators" (NeurIPS 2023): 40 tasks from 1 × 1
to 50 × 50 dimensions (Gaussian, Student-t, additive uniform noise, and their images under
MI-preserving maps), each with `mutual_information` in nats and a seeded `sample(n, seed)`.

    >>> from probe.ground_truth import get_task
    >>> x, y = get_task("1v1-normal-0.75").sample(1000, seed=0)

Beyond bmi (issue 19): `mixtures` (zero-correlation Gaussian mixtures, sign-mixing pairs; Monte
Carlo truth with its standard error), `discrete` (channels in closed form, categorical-to-Gaussian
pairs), `images` (class-channel pairs of real images), `suite` (all of them, and the seeded
tuning / scoring split) and `scoring` (solved, flagged, reliable and wrong, coverage).
"""
from probe.ground_truth.tasks import TASKS, Task, get_task, list_tasks

__all__ = ["TASKS", "Task", "get_task", "list_tasks"]
