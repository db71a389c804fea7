"""Before any group is built: a run's memory budget, the groups split to fit it, and for a big
first group an early answer on the wall time.

One member of the study is built once (as the first pending cell would build it) and:
- `probe.training.memory.project_memory` projects a group's peak memory from it; groups are
  split into near-equal parts that fit the budget (`--max-memory`, default 3/4 of the memory
  available when the run starts, the GPU's on CUDA; shared by the groups that run at once).
  A single member over the budget stops the run here, with the budget and the fix;
- when building the first group alone would take long (its members times this one's build
  time over `EARLY_ABOVE_S`), on a CPU without --yes: this member trains a few dry steps and
  makes its first evaluation (`train_members` reports them and is stopped there), and the run's
  wall time is projected from them, each group's step as its members' one-member steps (on a
  CPU a model that slow to build gains little from the ensemble), before the group is built.
  The paper preset on a CPU stops here within a minute instead of after its 40 step-0
  evaluations.

Nothing here changes a number of the run: the global random state is restored and the member
built here is thrown away.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Iterator

from probe.devices import resolve_device
from probe.errors import InputValueError
from probe.runner.cells import CellJob, tf32_mode
from probe.runner.groups import even_parts
from probe.training.checkpoint import global_rng_state, set_global_rng_state
from probe.training.memory import MemoryProjection, available_bytes, project_memory
from probe.training.timing import TimedStart, reporting_start

BUDGET_SHARE = 0.75      # of the memory available at the start, by default
EARLY_ABOVE_S = 10.0     # project from one member when building the first group would take longer


@dataclasses.dataclass(frozen=True)
class Preflight:
    """What the runner knows before building a group: a memory projection per kind of group
    (`projections`, by `kind`; empty when the study builds no members), the budget per group,
    and the early timing (None when not made)."""

    projections: dict[tuple, MemoryProjection]
    budget: int
    budget_source: str
    early: TimedStart | None = None

    def projection(self, group: list[CellJob]) -> MemoryProjection | None:
        return self.projections.get(kind(group))

    def members_within(self, group: list[CellJob]) -> int | None:
        projection = self.projection(group)
        return None if projection is None else projection.members_within(self.budget)

    def memory_text(self, groups: list[list[CellJob]]) -> str:
        """'memory: about 6.2 GiB per group of 10 members, budget 18 GiB (3/4 of the memory
        available)', for the group of the largest projected peak."""
        peaks = [(p.peak(len(g)), len(g)) for g in groups if (p := self.projection(g)) is not None]
        if not peaks:
            return ""
        peak, members = max(peaks)
        what = f"per group of {members} members" if members > 1 else "for one member"
        if len({k for k in map(kind, groups)}) > 1:
            what += " (the largest of the run's groups)"
        return f"memory: about {human_bytes(peak)} {what}, budget {human_bytes(self.budget)} ({self.budget_source})"


def kind(group: list[CellJob]) -> tuple:
    """The grid ids a group's cells share (all but the study's member axes and the seed): one
    architecture, so one projection."""
    job = group[0]
    return tuple((k, str(v)) for k, v in job.cell.ids.items() if k not in job.study.member_axes)


def human_bytes(n: float) -> str:
    """'6.2 GiB', '850 MiB'."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def preflight(groups: list[list[CellJob]], data: Any, *, parallel: int = 1, pool_workers: int = 0) -> Preflight:
    """The memory projections for `groups` (one member built per kind of group, as its first job
    would build it) and the budget a group gets when `parallel` groups run at once
    (`pool_workers`: the probe pool's processes); the early timing when the first group is big."""
    options = groups[0][0].options
    device = resolve_device(options.device)
    if options.max_memory is not None:
        total, source = int(options.max_memory), "--max-memory"
    else:
        total, source = int(BUDGET_SHARE * available_bytes(device)), \
            "3/4 of the GPU's free memory" if device.type == "cuda" else "3/4 of the memory available"
    if parallel > 1:
        source += f", shared by {parallel} groups at once"
    budget = total // max(parallel, 1)
    first = groups[0][0]
    if first.study.member is None:  # a study with its own step loop: nothing to build a member from
        return Preflight({}, budget, source)
    resuming = any(Path(first.cells_dir).glob("*.ckpt.pt"))  # a resumed group loads its checkpoint too
    per_member_lr = any("lr" in axis or "learning_rate" in axis for axis in first.study.member_axes)
    projections: dict[tuple, MemoryProjection] = {}
    early = None
    with preserved_random_state(), tf32_mode(options.tf32):  # built and timed as the run will train them
        for group in groups:
            if kind(group) in projections:
                continue
            job = group[0]
            started = time.perf_counter()
            member = job.study.member(job.settings, job.cell.ids, job.cell.seed, data)
            build_s = time.perf_counter() - started
            projection = project_memory(member.triple, data, member.config, device, resuming=resuming,
                                        pool_workers=pool_workers, per_member_lr=per_member_lr)
            projections[kind(group)] = projection
            big = len(group) * build_s > EARLY_ABOVE_S
            if group is groups[0] and big and device.type == "cpu" and not options.yes \
                    and projection.members_within(budget) >= 1:
                early = _time_one_member(member, job, data, device, build_s)
            del member
    return Preflight(projections, budget, source, early)


def split_to_fit(groups: list[list[CellJob]], flight: Preflight) -> list[list[CellJob]]:
    """Each group split into near-equal parts of at most the members that fit the budget, in order;
    a member that does not fit alone stops the run (before anything is trained)."""
    out = []
    for group in groups:
        most = flight.members_within(group)
        if most is None:
            out.append(group)
            continue
        if most < 1:
            job = group[0]
            raise InputValueError(
                f"run-study: one member of {job.study.name} [{job.options.preset}] ({job.cell.label}) needs about "
                f"{human_bytes(flight.projection(group).peak(1))} while training, over the budget of "
                f"{human_bytes(flight.budget)} ({flight.budget_source}); it cannot fit. Give it more with --max-memory "
                "SIZE if the machine has it, run a smaller preset (--preset quick), or use a machine (or GPU) with "
                "more memory.")
        out += even_parts(group, math.ceil(len(group) / most))
    return out


class _Started(Exception):
    def __init__(self, timed: TimedStart):
        self.timed = timed


def _time_one_member(member, job: CellJob, data: Any, device, build_s: float) -> TimedStart:
    """A few dry steps and the first evaluation of `member` alone (then stopped), as a TimedStart
    whose setup is this member's build."""
    from probe.training.members import train_members

    def stop(timed: TimedStart) -> None:
        raise _Started(dataclasses.replace(timed, setup_s=build_s))

    try:
        with reporting_start(stop):
            train_members([member.triple], data, [member.config], [job.cell.seed], device=device)
    except _Started as started:
        return started.timed
    raise RuntimeError("train_members finished without reporting its start")  # pragma: no cover


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """The global random generators (torch, numpy, random) as they were before the block."""
    saved = global_rng_state()
    try:
        yield
    finally:
        set_global_rng_state(saved)
