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
    """Times the `on_step` calls of the cells this process runs (one cell at a time).

    The first interval of a cell (setup and the step-0 evaluation) is its start-up; an interval
    ending at or just after an evaluation step and over twice the median step is an evaluation
    (minus one step); every other interval is a step.
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

    def start_cell(self, now: float | None = None) -> None:
        self._last, self.step, self._first = time.perf_counter() if now is None else now, 0, True

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
    def ready(self) -> bool:
        if self.one_step_cells:
            return self._cell_count >= MIN_TIMED_CELLS
        return len(self._steps) >= self.min_steps and bool(self._startups)

    @property
    def projection_ready(self) -> bool:
        return self.ready and (len(self._steps) >= PROJECTION_STEPS or sum(self._steps) >= PROJECTION_SECONDS)

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
        return statistics.median(self._steps) if self._steps else math.nan

    @property
    def startup_s(self) -> float:
        return statistics.fmean(self._startups) if self._startups else math.nan

    @property
    def eval_s(self) -> float:
        """Mean of the recent evaluations; before the first one, the start-up (an upper bound)."""
        return statistics.fmean(self._evals) if self._evals else self.startup_s

    def cell_s(self) -> float:
        """A whole cell: start-up (with its first step), the other steps, every evaluation after step 0."""
        if self.one_step_cells:
            return self._cell_total / self._cell_count if self._cell_count else math.nan
        return self.startup_s + max(self.steps - 1, 0) * self.step_s + (len(self.eval_at) - 1) * self.eval_s

    def cell_left_s(self) -> float:
        """What the cell in progress still needs: its steps and evaluations after `step`."""
        if self.one_step_cells:
            return 0.0 if self.step >= self.steps else self.cell_s()
        evals_left = sum(1 for s in self.eval_at if s > self.step)
        return max(self.steps - self.step, 0) * self.step_s + evals_left * self.eval_s

    def eta_s(self, cells_after: int) -> float | None:
        """Seconds until the run ends (this cell, then `cells_after` more), or None before `ready`."""
        if not self.ready:
            return None
        return self.cell_left_s() + cells_after * self.cell_s()


def clock_text(seconds: float) -> str:
    """h:mm:ss (or m:ss) for a progress bar."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def human_seconds(seconds: float) -> str:
    """'40 s', '12 min', '2.7 h', '2,993 h (125 days)'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours:,.0f} h ({hours / 24:,.0f} days)"


@dataclass(frozen=True)
class Projection:
    """Set on the first pending cell of a run: project the run's wall time from its first steps.

    `cells` pending cells run `parallel` at a time; `yes` is `--yes`. Picklable: on the process
    and dask executors the worker running that cell checks it, and the error reaches the parent.
    """

    cells: int                      # units run one after another (cells, or groups trained together)
    parallel: int = 1
    yes: bool = False
    command_hint: str = "--preset quick (minutes on a laptop)"
    total_cells: int | None = None  # the run's cells when `cells` counts groups of them

    def seconds(self, clock: StepClock) -> float:
        return clock.cell_s() * math.ceil(self.cells / max(self.parallel, 1))

    def check(self, clock: StepClock, on_cpu: bool, label: str, log: Callable[[str], None] | None = None) -> None:
        """Log the projection; raise `RunTooLong` on a CPU above `ASK_ABOVE_S` without --yes."""
        total = self.seconds(clock)
        if clock.one_step_cells:
            text = (f"projected wall time: about {human_seconds(total)} for {self._what()}{self._parallel()} "
                    f"({clock.cell_s():,.1f} s a cell, timed on {label})")
            return self._decide(text, total, on_cpu, log, f"{clock.cell_s():,.1f} s a cell")
        evals = len(clock.eval_at) - 1
        parallel = self._parallel()
        if not evals:
            timed_evals = ""
        elif clock.evals_timed:
            timed_evals = f", {evals} evaluations at {clock.eval_s:,.1f} s"
        else:  # none timed yet: the start-up holds the step-0 evaluation, so it bounds one from above
            timed_evals = f", {evals} evaluations counted as long as the start-up"
        text = (f"projected wall time: about {human_seconds(total)} for {self._what()}{parallel} "
                f"({clock.steps:,} steps at {clock.step_s * 1e3:,.0f} ms{timed_evals}, {clock.startup_s:,.1f} s to "
                f"start; timed on the first {clock.timed_steps} steps of {label})")
        self._decide(text, total, on_cpu, log, f"{clock.steps:,} steps at {clock.step_s * 1e3:,.0f} ms a step")

    def _parallel(self) -> str:
        return f", {self.parallel} at a time" if self.parallel > 1 else ""

    def _decide(self, text: str, total: float, on_cpu: bool, log: Callable[[str], None] | None, timing: str) -> None:
        (log or _stderr)(text)
        if on_cpu and total > ASK_ABOVE_S and not self.yes:
            raise RunTooLong(
                f"run-study: the projected wall time on this CPU is about {human_seconds(total)} "
                f"({self._what()}, {timing}); that is "
                f"over the {human_seconds(ASK_ABOVE_S)} a CPU run may take without asking. Try {self.command_hint}, "
                "run on a machine with a GPU (--device cuda), or pass --yes to go on anyway (every finished "
                "cell is kept, so the run can be stopped and resumed)."
            )


    def _what(self) -> str:
        if self.total_cells is None or self.total_cells == self.cells:
            return f"{self.cells} cell(s)"
        return f"{self.total_cells} cells in {self.cells} group(s) trained together"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Gate:
    """An `on_step` that also times the cell and checks `projection` once the clock is ready
    (or, for a cell too short to get there, when the cell ends: `finish`)."""

    def __init__(self, on_step: Callable[[int, dict], None] | None, projection: Projection | None, clock: StepClock,
                 on_cpu: bool, label: str, log: Callable[[str], None] | None = None):
        self.inner, self.projection, self.clock = on_step, projection, clock
        self.on_cpu, self.label, self.log = on_cpu, label, log
        self.checked = projection is None
        clock.start_cell()

    @property
    def on_step(self) -> Callable[[int, dict], None] | None:
        return self.inner if self.projection is None else self._hook

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
