"""How long a run will take: timing steps and evaluations, the ETA, and the long-run gate.

tqdm's own ETA divides the steps left by the mean rate so far, so the first one comes from a
first step that holds the model's setup and the step-0 evaluation (11 h from a 4.6 s step),
and later ones leave out the evaluations still to come (5:54 left when 7:40 remained).
`StepClock` times training steps and evaluations apart: its ETA is the steps left times the
median step plus the evaluations left times the mean evaluation, and it gives none until a
few steps were timed. `Projection` uses the same clock on the first cell of a run to print the
projected wall time and, on a CPU, to stop a run of more than `ASK_ABOVE_S` unless `--yes`.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from probe.errors import InputValueError

ASK_ABOVE_S = 3 * 3600.0   # a CPU run projected longer than this stops unless --yes
MIN_TIMED_STEPS = 5        # no ETA before this many plain steps were timed
MIN_TIMED_CELLS = 3        # ... or, for cells of one step each, this many cells
# The projection waits for this many steps or this many seconds of them, whichever comes first: the first
# few steps of a process are slower (allocations, thread pools waking up) and would inflate it.
PROJECTION_STEPS, PROJECTION_SECONDS = 20, 10.0
# After the last cell, the command judges the run and renders its page: seconds measured for the
# quick presets' pages on the shared 2-core machine (bench/projection.py prints them with the rest).
REPORT_S = 8.0


class RunTooLong(InputValueError):
    """The projected wall time on a CPU is over `ASK_ABOVE_S` and `--yes` was not given."""


def eval_schedule(settings: Any) -> frozenset[int]:
    """The steps a cell evaluates at (0, eval_every, ..., steps), as `TrainConfig.eval_steps`;
    just {0} for studies without `eval_every` (their per-step cost includes what they measure)."""
    steps = int(settings.steps)
    every = getattr(settings, "eval_every", None)
    if not every:
        return frozenset({0})
    return frozenset(range(0, steps + 1, int(every))) | {steps}


@dataclass
class StepClock:
    """Times the `on_step` calls of the cells this process runs (one cell, or group, at a time).

    The first interval of a cell (setup and the step-0 evaluations) is its start-up; an interval
    ending at or just after an evaluation step and over twice the median step is an evaluation
    (minus one step); every other interval is a step. A loop that reports its start
    (`probe.training.timing.TimedStart`, through `record_start`) gives the clock its first
    evaluation, its later ones (the first without V-information's C search), the probe pool's
    share and, for a group, one timed update, before any step is taken: the projection then
    needs no steps, and evaluations not yet timed are no longer counted as long as the start-up.
    """

    steps: int
    eval_at: frozenset[int]
    min_steps: int = MIN_TIMED_STEPS
    _steps: deque = field(default_factory=lambda: deque(maxlen=200))
    _evals: deque = field(default_factory=lambda: deque(maxlen=5))
    _startups: deque = field(default_factory=lambda: deque(maxlen=5))
    _last: float = 0.0
    step: int = 0
    _first: bool = True
    # One-step cells (e.g. one MI estimate each) have no steps to time: the ETA is the cells left
    # times the mean of every cell so far (their costs differ too much for a short window).
    _cell_total: float = 0.0
    _cell_count: int = 0
    start: Any = None  # the last TimedStart reported, for the cell (or group) it describes

    def start_cell(self, now: float | None = None) -> None:
        self._last, self.step, self._first = time.perf_counter() if now is None else now, 0, True

    def record_start(self, timed: Any) -> None:
        """What the cell in progress measured before its steps (a `TimedStart`)."""
        self.start = timed

    def tick(self, step: int, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        dt, self._last = now - self._last, now
        if self._first:
            self._startups.append(dt)
            self._cell_total, self._cell_count = self._cell_total + dt, self._cell_count + 1
            self._first = False
        elif step <= self.step:  # a cell with several training calls started its next one
            pass
        elif (step in self.eval_at or step - 1 in self.eval_at) and self._steps \
                and dt > 2 * statistics.median(self._steps):
            self._evals.append(max(dt - statistics.median(self._steps), 0.0))
        else:
            self._steps.append(dt / (step - self.step))
        self.step = step

    @property
    def one_step_cells(self) -> bool:
        return self.steps <= 1

    @property
    def _start_timed_a_step(self) -> bool:
        return self.start is not None and math.isfinite(self.start.step_s)

    @property
    def ready(self) -> bool:
        if self.one_step_cells:
            return self._cell_count >= MIN_TIMED_CELLS
        return (len(self._steps) >= self.min_steps and bool(self._startups)) or self._start_timed_a_step

    @property
    def projection_ready(self) -> bool:
        if self.one_step_cells or not self._start_timed_a_step:
            return self.ready and (len(self._steps) >= PROJECTION_STEPS or sum(self._steps) >= PROJECTION_SECONDS)
        return True  # a group timed its update and its first evaluation before its steps

    @property
    def cells_timed(self) -> int:
        return self._cell_count

    @property
    def not_ready_text(self) -> str:
        """What the ETA waits for, for a progress bar."""
        if self.one_step_cells:
            return f"ETA after {MIN_TIMED_CELLS} cells"
        return f"ETA after {self.min_steps} timed steps"

    @property
    def evals_timed(self) -> int:
        return len(self._evals)

    @property
    def timed_steps(self) -> int:
        return len(self._steps)

    @property
    def step_s(self) -> float:
        if self._steps:
            return statistics.median(self._steps)
        return self.start.step_s if self._start_timed_a_step else math.nan

    @property
    def startup_s(self) -> float:
        if self._startups:
            return statistics.fmean(self._startups)
        if self.start is not None:  # the cell's setup, its dry steps and its step-0 evaluations
            return self.start.setup_s + self.start.members * self.start.first_eval_s
        return math.nan

    @property
    def eval_s(self) -> float:
        """Mean of the recent evaluations; before the first one, the reported start's later
        evaluations (and the wait for the probe pool), else the start-up (an upper bound)."""
        if self._evals:
            return statistics.fmean(self._evals)
        if self.start is not None:
            return self.start.members * self.start.later_eval_s + self.pool_wait_s()
        return self.startup_s

    def pool_wait_s(self) -> float:
        """Seconds an evaluation waits for the probe pool: the members' fits queue on its workers
        while training goes on, and the next evaluation waits for what they have not done."""
        start = self.start
        if start is None or not start.pool_fit_s or not start.pool_workers:
            return 0.0
        every = min((s for s in self.eval_at if s > 0), default=self.steps)
        meanwhile = every * self.step_s + start.members * start.later_eval_s
        return max(0.0, start.members * start.pool_fit_s / start.pool_workers - meanwhile)

    def cell_s(self) -> float:
        """A whole cell: start-up (with its first step), the other steps, every evaluation after step 0."""
        if self.one_step_cells:
            return self._cell_total / self._cell_count if self._cell_count else math.nan
        return self.startup_s + max(self.steps - 1, 0) * self.step_s + (len(self.eval_at) - 1) * self.eval_s

    def cell_left_s(self) -> float:
        """What the cell in progress still needs: its steps and evaluations after `step` (and,
        while its step-0 evaluations run, the ones after the reported first)."""
        if self.one_step_cells:
            return 0.0 if self.step >= self.steps else self.cell_s()
        evals_left = sum(1 for s in self.eval_at if s > self.step)
        left = max(self.steps - self.step, 0) * self.step_s + evals_left * self.eval_s
        if self._first and self.start is not None:  # in the start-up: the other step-0 evaluations
            left += (self.start.members - 1) * self.start.first_eval_s
        return left

    def end_s(self, baseline_fits: int = 0, report: bool = True) -> float:
        """After the last cell: the probe pool's last fits, the pixel-probe baseline (one paper
        probe per seed, timed as the cell's), the verdict and the page (`REPORT_S`)."""
        start = self.start
        pool = start.members * start.pool_fit_s / max(start.pool_workers, 1) if start is not None else 0.0
        fit = (start.probe_s or start.pool_fit_s) if start is not None else 0.0
        return pool + baseline_fits * (fit if math.isfinite(fit) else 0.0) + (REPORT_S if report else 0.0)

    def eta_s(self, cells_after: int, end_s: float = 0.0) -> float | None:
        """Seconds until the run ends (this cell, then `cells_after` more, then `end_s`), or None before `ready`."""
        if not self.ready:
            return None
        return self.cell_left_s() + cells_after * self.cell_s() + end_s


def clock_text(seconds: float) -> str:
    """h:mm:ss (or m:ss) for a progress bar."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def human_seconds(seconds: float, fine: bool = False) -> str:
    """'40 s', '3 min 19 s', '12 min', '2.7 h', '2,993 h (125 days)'; `fine`: '194 ms', '2.1 s' below 10 s."""
    if fine and seconds < 1:
        return f"{seconds * 1e3:,.0f} ms"
    if fine and seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 10 * 60:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes} min {secs} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours:,.0f} h ({hours / 24:,.0f} days)"


@dataclass(frozen=True)
class Projection:
    """Set on the first pending cell of a run: project the run's wall time from its first steps.

    `cells` pending units (cells, or groups of `unit_sizes` cells trained together) run
    `parallel` at a time; `yes` is `--yes`. The projection is the whole command's: the time
    since `started_at` (epoch seconds; the process's start for a command line), what the unit
    in progress still needs, the units after it (scaled by their sizes), and the end
    (`StepClock.end_s`: `baseline_fits` pixel probes and the page). Picklable: on the process
    and dask executors the worker running that cell checks it, and the error reaches the parent.
    """

    cells: int                      # units run one after another (cells, or groups trained together)
    parallel: int = 1
    yes: bool = False
    command_hint: str = "--preset quick (minutes on a laptop)"
    total_cells: int | None = None  # the run's cells when `cells` counts groups of them
    unit_sizes: tuple[int, ...] = ()  # cells per unit, in run order
    memory_text: str = ""           # the memory projection, printed with the time's
    baseline_fits: int = 0
    started_at: float | None = None

    def _sizes(self) -> tuple[int, ...]:
        return self.unit_sizes or (1,) * self.cells

    def seconds(self, clock: StepClock, *, in_progress: bool = True) -> float:
        """The run's wall time. `in_progress`: the clock is timing the first unit now (else it
        holds one member's start and every unit is still to come)."""
        sizes = self._sizes()
        timed = (clock.start.members if clock.start is not None else sizes[0]) or 1
        later = sizes[1:] if in_progress else sizes
        rest = sum(clock.cell_s() * size / timed for size in later) / max(self.parallel, 1)
        now = clock.cell_left_s() if in_progress else 0.0
        elapsed = time.time() - self.started_at if self.started_at is not None else 0.0
        return elapsed + now + rest + clock.end_s(self.baseline_fits)

    def check(self, clock: StepClock, on_cpu: bool, label: str, log: Callable[[str], None] | None = None, *,
              in_progress: bool = True) -> None:
        """Log the projection; raise `RunTooLong` on a CPU above `ASK_ABOVE_S` without --yes."""
        total = self.seconds(clock, in_progress=in_progress)
        if clock.one_step_cells:
            text = (f"projected wall time: about {human_seconds(total)} for {self._what()}{self._parallel()} "
                    f"({clock.cell_s():,.1f} s a cell, timed on {label})")
            return self._decide(text, total, on_cpu, log, f"{clock.cell_s():,.1f} s a cell")
        per = "" if in_progress else " a member"  # one member timed alone: a group's step is its members' steps
        steps = f"{clock.steps:,} steps at {human_seconds(clock.step_s, fine=True)}{per}"
        text = (f"projected wall time: about {human_seconds(total)} for {self._what()}{self._parallel()} "
                f"({steps}{self._evaluations(clock)}{self._so_far()}; timed on {self._timed_on(clock, label)})")
        self._decide(text, total, on_cpu, log, steps + ("" if per else " a step"))

    def _evaluations(self, clock: StepClock) -> str:
        evals = len(clock.eval_at) - 1
        if clock.start is not None:
            start = clock.start
            per = "" if start.members == 1 else " a member"
            later = f", {evals} later ones at {human_seconds(start.later_eval_s, fine=True)}{per}" if evals else ""
            return f", the first evaluation {human_seconds(start.first_eval_s, fine=True)}{per}{later}"
        if not evals:
            return ""
        if clock.evals_timed:
            return f", {evals} evaluations at {clock.eval_s:,.1f} s"
        # none timed yet: the start-up holds the step-0 evaluation, so it bounds one from above
        return f", {evals} evaluations counted as long as the start-up ({clock.startup_s:,.1f} s)"

    def _so_far(self) -> str:
        return f", {human_seconds(time.time() - self.started_at)} so far" if self.started_at is not None else ""

    @staticmethod
    def _timed_on(clock: StepClock, label: str) -> str:
        if clock.start is not None and math.isfinite(clock.start.step_s) and not clock.timed_steps:
            members = clock.start.members
            return f"{label}, before training" if members == 1 else f"{members} members before training ({label})"
        return f"the first {clock.timed_steps} steps of {label}"

    def _parallel(self) -> str:
        return f", {self.parallel} at a time" if self.parallel > 1 else ""

    def _decide(self, text: str, total: float, on_cpu: bool, log: Callable[[str], None] | None, timing: str) -> None:
        say = log or _stderr
        say(text)
        if self.memory_text:
            say(self.memory_text)
        if on_cpu and total > ASK_ABOVE_S and not self.yes:
            memory = f"; {self.memory_text}" if self.memory_text else ""
            raise RunTooLong(
                f"run-study: the projected wall time on this CPU is about {human_seconds(total)} "
                f"({self._what()}, {timing}{memory}); that is "
                f"over the {human_seconds(ASK_ABOVE_S)} a CPU run may take without asking. Try {self.command_hint}, "
                "run on a machine with a GPU (--device cuda), or pass --yes to go on anyway (every finished "
                "cell is kept, so the run can be stopped and resumed)."
            )

    def _what(self) -> str:
        if self.total_cells is None or self.total_cells == self.cells:
            return f"{self.cells} cell(s)"
        return f"{self.total_cells} cells in {self.cells} group(s) trained together"


def run_started_at(young_s: float = 300.0) -> float:
    """When the command began (epoch seconds): the process's start if it started less than
    `young_s` ago (a command line: its imports and data loading count), else now (a long-lived
    Python session calling `run_study`)."""
    now = time.time()
    try:
        import psutil

        born = psutil.Process().create_time()
    except Exception:  # psutil comes with dask.distributed; without it, time from here
        return now
    return born if 0 <= now - born < young_s else now


REFINE_AFTER = 0.1  # one-step cells: project again once this share of them (at least 10) is timed


def refine_at(cells: int) -> int | None:
    """After how many one-step cells the run projects its time again (None: too few to bother).
    The first projection of such a run rests on its first cell alone, and cells differ: the
    ground-truth suite's first cell projected 2 min for a 13-min run."""
    at = max(10, math.ceil(REFINE_AFTER * cells))
    return at if 2 * at <= cells else None


def refined_text(clock: StepClock, projection: Projection, done: int, cells: int, end_s: float) -> str:
    """'projected wall time after 63 of 630 cells: about 14 min (1.3 s a cell on average)'."""
    elapsed = time.time() - projection.started_at if projection.started_at is not None else 0.0
    left = (cells - done) * clock.cell_s() / max(projection.parallel, 1) + end_s
    return (f"projected wall time after {done:,} of {cells:,} cells: about {human_seconds(elapsed + left)} "
            f"({clock.cell_s():,.1f} s a cell on average)")


LOG_BAR_INTERVAL_S = 30.0  # a bar written to a file (nohup, CI) redraws this seldom: a log line, not a flood


def bar_options() -> dict:
    """tqdm's settings for a run's bar on stderr: redrawn as it goes on a terminal, every
    `LOG_BAR_INTERVAL_S` seconds into a file or pipe (a quick start under nohup wrote 800
    redraws into its log)."""
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return {"desc": "cells", "file": sys.stderr, "dynamic_ncols": True,
            "mininterval": 0.1 if tty else LOG_BAR_INTERVAL_S}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Gate:
    """An `on_step` that also times the cell and checks `projection` once the clock is ready:
    at the cell's reported start (`timed`, a `TimedStart` of a group that timed its update), after
    its first steps, or, for a cell too short to get there, when the cell ends (`finish`).
    `on_timed` also hears the start (the progress bar's clock)."""

    def __init__(self, on_step: Callable[[int, dict], None] | None, projection: Projection | None, clock: StepClock,
                 on_cpu: bool, label: str, log: Callable[[str], None] | None = None,
                 on_timed: Callable[[Any], None] | None = None):
        self.inner, self.projection, self.clock = on_step, projection, clock
        self.on_cpu, self.label, self.log, self.on_timed = on_cpu, label, log, on_timed
        self.checked = projection is None
        clock.start_cell()

    @property
    def on_step(self) -> Callable[[int, dict], None] | None:
        return self.inner if self.projection is None else self._hook

    @property
    def listening(self) -> bool:
        """Whether the cell's loop should measure and report its start (`probe.training.timing`):
        for the run's projection only (the first unit), since a group's dry steps cost a few seconds."""
        return self.projection is not None

    def timed(self, start: Any) -> None:
        self.clock.record_start(start)
        if self.on_timed is not None:
            self.on_timed(start)
        if not self.checked and self.clock.projection_ready:
            self._check()

    def _hook(self, step: int, last: dict) -> None:
        self.clock.tick(step)
        if not self.checked and self.clock.projection_ready:
            self._check()
        if self.inner is not None:
            self.inner(step, last)

    def finish(self) -> None:
        # A one-step cell is timed whole once it ends: the first cell is all the projection gets.
        if not self.checked and (self.clock.ready or (self.clock.one_step_cells and self.clock.cells_timed)):
            self._check()

    def _check(self) -> None:
        self.checked = True
        self.projection.check(self.clock, self.on_cpu, self.label, self.log)
