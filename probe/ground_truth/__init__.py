"""Ground-truth mutual-information tasks: joint distributions whose MI is known in closed form.

A numpy/scipy port of the v1 task list of Czyż, Grabowski, Vogt, Beerenwinkel & Marx, "Beyond
Normal: On the Evaluation of Mutual Information Estimators" (NeurIPS 2023): 40 tasks from 1 × 1
to 50 × 50 dimensions (Gaussian, Student-t, additive uniform noise, and their images under
MI-preserving maps), each with `mutual_information` in nats and a seeded `sample(n, seed)`.

    >>> from probe.ground_truth import get_task
    >>> x, y = get_task("1v1-normal-0.75").sample(1000, seed=0)
"""
from probe.ground_truth.tasks import TASKS, Task, get_task, list_tasks

__all__ = ["TASKS", "Task", "get_task", "list_tasks"]
