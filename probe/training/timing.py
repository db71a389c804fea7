"""What a training loop measures at its start, for the runner's projection of the wall time.

The runner projects a run's wall time from its first cell (probe.runner.progress). A loop
reports, once, through `report_start`, what it measured before training: one update (a dry
step of a whole group, `probe.training.members`), the first evaluation of one member, and of
that, V-information's C search (later evaluations skip it), the probe fit and the wait for
the probe pool. The runner listens with `reporting_start(callback)`; outside it, loops skip
the measuring (`wants_start`) and report nothing. A context variable, so that every study's
`run_cell` reaches its loop without a new argument.
"""
from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class TimedStart:
    """Seconds measured at the start of one cell or group of `members`, before its training steps.

    `step_s`: one update of all members (NaN when the loop did not time one: its steps are timed
    as they come); `first_eval_s`: the first evaluation of one member, of which `search_s` was
    V-information's C search and `probe_s` the linear probe fitted inline; `pool_s`: the wait
    for that member's probe fit in the probe pool (worker start-up included) and `pool_fit_s`
    the fit itself, in one of the pool's `pool_workers`; `setup_s`: building the models and the
    rest before the first evaluation, but for the dry steps (only a group that is listened to makes
    them: the units after it do not).
    """

    members: int
    first_eval_s: float
    step_s: float = math.nan
    search_s: float = 0.0
    probe_s: float = 0.0
    pool_s: float = 0.0
    pool_fit_s: float = 0.0
    pool_workers: int = 0
    setup_s: float = 0.0

    @property
    def later_eval_s(self) -> float:
        """One member's later evaluation: as the first, without the C search, which only the first makes."""
        return max(self.first_eval_s - self.search_s, 0.0)


_LISTENER: ContextVar[Callable[[TimedStart], None] | None] = ContextVar("timed_start_listener", default=None)


@contextlib.contextmanager
def reporting_start(callback: Callable[[TimedStart], None]) -> Iterator[None]:
    """Loops started inside this block report their `TimedStart` to `callback` (once each)."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def wants_start() -> bool:
    """Whether someone listens: a loop measures its start (e.g. dry steps) only then."""
    return _LISTENER.get() is not None


def report_start(timed: TimedStart) -> None:
    listener = _LISTENER.get()
    if listener is not None:
        listener(timed)
