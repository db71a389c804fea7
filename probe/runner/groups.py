"""Cells trained together: the pending cells of a study that differ only in its member axes.

A study that builds its cells as members (`Study.member`, `Study.member_axes`, see
`probe.training.members`) has every group of cells that share an architecture and a step loop
(same grid ids but for the member axes, e.g. the seeds and estimators of one critic) trained
as one ensemble. Each member still gets its own cell file, written when the group finishes,
with the same variables, attrs and stream seeds as when trained alone; a killed group resumes
from its group checkpoint. A study with its own step loop trains such a group in its
`Study.run_members` instead, under the same group checkpoint plan.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any, Callable

from probe.devices import resolve_device
from probe.embeddings import saving_embeddings
from probe.runner.cells import CellJob, _warm_up, listening, run_cell_job, tf32_mode, worker_data, write_cell
from probe.runner.progress import Gate, StepClock, eval_schedule
from probe.training.checkpoint import checkpointing
from probe.training.members import train_members
from probe.training.streams import recording_streams

# Members per ensemble: the paper's 20 seeds x 2 estimators fit; more would only cost memory.
MAX_MEMBERS = 64


def group_jobs(jobs: list[CellJob], *, ensemble: bool = True, max_members: int = MAX_MEMBERS) -> list[list[CellJob]]:
    """The jobs in groups trained together (in the jobs' order); one job a group when the study
    builds no members or `ensemble` is off."""
    if not jobs or not ensemble or not trains_together(jobs[0].study):
        return [[job] for job in jobs]
    axes = set(jobs[0].study.member_axes)
    groups: dict[tuple, list[CellJob]] = {}
    for job in jobs:
        key = tuple((k, str(v)) for k, v in job.cell.ids.items() if k not in axes)
        groups.setdefault(key, []).append(job)
    return [members[i:i + max_members] for members in groups.values() for i in range(0, len(members), max_members)]


def trains_together(study) -> bool:
    """Whether the runner may hand this study's cells to it in groups."""
    return study.member is not None or study.run_members is not None


def spread_groups(groups: list[list[CellJob]], slots: int) -> list[list[CellJob]]:
    """The groups split into near-equal parts until there are `slots` of them (or every part is one
    cell), each split where it leaves the largest part smallest; in the jobs' order.

    Why: a pool of 2 workers given one group of 40 cells would leave one worker idle the whole
    run; two groups of 20 run at once, each still an ensemble. Splitting only up to `slots`
    keeps as many members per ensemble as the workers allow (its per-step speed-up), and a
    part's cells are those of one group, so they still share a step loop.
    """
    parts = [1] * len(groups)
    while sum(parts) < slots:
        # The group whose parts are largest, among those with cells to spare.
        spare = [i for i, g in enumerate(groups) if parts[i] < len(g)]
        if not spare:
            break
        i = max(spare, key=lambda i: (-(-len(groups[i]) // parts[i]), -i))
        parts[i] += 1
    return [part for group, n in zip(groups, parts) for part in even_parts(group, n)]


def even_parts(group: list, n: int) -> list[list]:
    """`group` cut into `n` consecutive parts whose sizes differ by at most one, the larger first."""
    size, extra = divmod(len(group), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (k < extra)
        out.append(group[start:end])
        start = end
    return out


def group_name(group: list[CellJob]) -> str:
    """A name for the group's files: its one cell's file name, else a hash of its cells' names."""
    if len(group) == 1:
        return group[0].cell.filename()
    names = "|".join(job.cell.filename() for job in group)
    return f"group-{hashlib.sha256(names.encode()).hexdigest()[:12]}"


def group_checkpoint(group: list[CellJob]) -> Path:
    if len(group) == 1:
        return group[0].checkpoint_path
    return Path(group[0].cells_dir) / f"{group_name(group)}.ckpt.pt"


def group_attempts(group: list[CellJob]) -> Path:
    """Where the process executor counts the group's starts and ends (its crashes): the cell's own
    attempts file for a group of one."""
    if len(group) == 1:
        return group[0].attempts_path
    return Path(group[0].cells_dir) / f".{group_name(group)}.attempts"


def run_group_job(group: list[CellJob], data: Any = None, on_step: Callable[[int, dict], None] | None = None,
                  log: Callable[[str], None] | None = None, on_timed: Callable[[Any], None] | None = None
                  ) -> list[tuple[Path, str]]:
    """Train the group's cells as one ensemble and write each cell's file; [(path, status)]."""
    if len(group) == 1:
        return [run_cell_job(group[0], data, on_step, log=log, on_timed=on_timed)]
    first = group[0]
    data = worker_data(first) if data is None else data
    device = resolve_device(first.options.device)
    _warm_up()
    gate = Gate(on_step, first.projection, StepClock(int(first.settings.steps), eval_schedule(first.settings)),
                device.type == "cpu", f"{len(group)} cells trained together", log, on_timed)
    started = time.perf_counter()
    streams: list[dict[str, int]] = [{} for _ in group]

    def member_context(m: int) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(recording_streams(streams[m]))
        job = group[m]
        if job.embeddings_dir:
            stack.enter_context(saving_embeddings(Path(job.embeddings_dir) / Path(job.cell.filename()).stem))
        return stack

    path = group_checkpoint(group)
    with checkpointing(path, f"{first.run_key}/{path.name}", first.checkpoint_every) as plan, \
            tf32_mode(first.options.tf32), listening(gate):
        results = _train_group(group, data, device, gate.on_step, member_context, streams)
    wall = time.perf_counter() - started
    written = []
    for job, result, recorded in zip(group, results, streams):
        # The group's time, shared: total_wall_time still adds up.
        path_written = write_cell(job, result, recorded, wall=wall / len(group), resumed_from=plan.resumed_from,
                                  device=device, trained_with_members=len(group))
        written.append((path_written, result.status))
    path.unlink(missing_ok=True)
    gate.finish()
    return written


def _train_group(group: list[CellJob], data: Any, device, on_step, member_context, streams) -> list:
    """One result per cell of the group: by `train_members` from the study's members, or by the
    study's own `run_members` loop."""
    study, first = group[0].study, group[0]
    if study.member is None:
        results = study.run_members(first.settings, [job.cell.ids for job in group], [job.cell.seed for job in group],
                                    data, device, on_step, member_context)
        if len(results) != len(group):
            raise RuntimeError(f"{study.name}: run_members returned {len(results)} results for {len(group)} cells")
        return list(results)
    members = []
    for job, recorded in zip(group, streams):
        with recording_streams(recorded):
            members.append(study.member(job.settings, job.cell.ids, job.cell.seed, data))
    results = train_members([m.triple for m in members], data, [m.config for m in members],
                            [job.cell.seed for job in group], device=device, on_step=on_step,
                            member_context=member_context)
    return [m.finish(r) if m.finish is not None else r for m, r in zip(members, results)]
