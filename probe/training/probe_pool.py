"""The paper-protocol probe fitted in worker processes while training goes on.

The paper's probe is scikit-learn's SAGA (tol 0.1, `probe.analyzers.linear`): CPU-only, and at
60,000 rows 2.5-4 s a fit, one fit per member per evaluation. Inside `background_probes(n)`,
an `Evaluator` (or adversarial-encoder's evaluation) hands each fit to a pool of n processes and returns its record at once, with the
probe's entries to come; training resumes while the pool fits. `Evaluator.settle` writes them
into the record (via `ProbeFits`): at the member's next evaluation, before a checkpoint and at the end of a run,
so a saved record is always complete and at most one fit per member is in flight (its
embeddings are what it holds in memory).

The fit is the same function on the same arrays with the same seed, so its numbers are those of
the inline fit (tests/test_probe_pool.py). If a worker dies, the fit is redone inline.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from typing import Iterator

import numpy as np

# At most this many probe processes: a SAGA fit is one thread, and every process holds a
# member's training embeddings (60,000 x 392 float32 = 94 MB) while it fits.
MAX_PROBE_WORKERS = 4
# By default a pool takes only fits of at least this many training rows: below it a SAGA fit
# takes well under a second, less than starting a worker process (~3 s: it imports torch).
AUTO_MIN_ROWS = 10_000

_POOL: ContextVar["ProbePool | None"] = ContextVar("probe_pool", default=None)


def fit_probe(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
              protocol: str, seed: int, device=None) -> dict[str, float]:
    """The linear probe's two numbers an evaluation records (what the pool's workers run;
    `device` matters to the converged protocol only, which never goes to the pool)."""
    from probe import analyzers

    probe = analyzers.linear_probe(z_train, y_train, z_test, y_test, protocol=protocol, seed=seed, device=device)
    return {"probe_accuracy": float(probe["accuracy"]), "probe_cross_entropy": float(probe["cross_entropy"])}


def _timed_fit(*args) -> tuple[dict[str, float], float]:
    """`fit_probe` in a worker, with its seconds (the runner's projection; never in a record)."""
    started = time.perf_counter()
    return fit_probe(*args), time.perf_counter() - started


def _init_worker(parent: int) -> None:
    from probe.devices import set_threads
    from probe.training.parent_watch import exit_with_parent

    set_threads(1)  # SAGA is single-threaded; BLAS threads would only compete with training
    exit_with_parent(parent)  # a killed run takes its probe workers (and so the resource tracker) with it


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the pool starts workers: Ctrl-C reaches the whole process group, and
    the parent alone should answer it (it ends the pool) rather than every worker with a
    traceback. An ignored signal stays ignored across exec; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class PendingProbe:
    """One fit handed to the pool: its future (of the record and the fit's seconds, `_timed_fit`),
    and its inputs in case the worker dies. `fit_s`: the fit's seconds, once `result` returned."""

    def __init__(self, future: Future, args: tuple):
        self.future, self.args = future, args
        self.fit_s = math.nan

    def result(self) -> dict[str, float]:
        try:
            record, self.fit_s = self.future.result()
        except BrokenProcessPool:  # a worker died (e.g. out of memory): fit here instead
            record, self.fit_s = _timed_fit(*self.args)
        return record


class ProbePool:
    """`workers` spawned processes (spawn: a forked torch process can deadlock in OpenMP), started
    at the first fit; it takes the fits of evaluators with at least `min_rows` training rows."""

    def __init__(self, workers: int, min_rows: int = 0):
        self.workers, self.min_rows = workers, min_rows
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, *args) -> PendingProbe:
        try:
            with _sigint_ignored():  # the workers it starts inherit it from their first instruction
                return PendingProbe(self._executor.submit(_timed_fit, *args), args)
        except BrokenProcessPool:
            done: Future = Future()
            done.set_result(_timed_fit(*args))
            return PendingProbe(done, args)

    def close(self, cancel: bool = False) -> None:
        self._executor.shutdown(wait=not cancel, cancel_futures=cancel)


@contextlib.contextmanager
def background_probes(workers: int, min_rows: int = 0) -> Iterator[ProbePool | None]:
    """Fit the paper-protocol probes of the evaluators made inside this block, on at least
    `min_rows` training rows, in `workers` processes; 0 fits them inline, in the evaluation."""
    if workers < 0:
        raise ValueError(f"background_probes: workers is {workers}; give 0 (inline) or more.")
    pool = ProbePool(workers, min_rows) if workers else None
    token = _POOL.set(pool)
    try:
        yield pool
    except BaseException:
        if pool is not None:
            pool.close(cancel=True)
            pool = None
        raise
    finally:
        _POOL.reset(token)
        if pool is not None:
            pool.close()


def current_probe_pool() -> ProbePool | None:
    return _POOL.get()


class ProbeFits:
    """One evaluator's probe fits: in the enclosing pool when it takes them, else inline.

    `fit_into(record, ...)` writes probe_accuracy and probe_cross_entropy into `record`, now or at
    the next `settle()`; each call first settles the previous fit, so at most one is in flight.
    """

    def __init__(self, n_train: int, protocol: str):
        pool = current_probe_pool()
        self.protocol = protocol
        self.pool = pool if pool is not None and protocol == "paper" and n_train >= pool.min_rows else None
        self._pending: list[tuple[dict, PendingProbe]] = []
        self.last_fit_s = math.nan  # seconds of the last fit, inline or in the pool (once settled)

    def fit_into(self, record: dict, z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray,
                 y_test: np.ndarray, seed: int, device=None) -> None:
        self.settle()
        args = (z_train, y_train, z_test, y_test, self.protocol, seed)
        if self.pool is not None:
            self._pending.append((record, self.pool.submit(*args)))
        else:
            started = time.perf_counter()
            record.update(fit_probe(*args, device))
            self.last_fit_s = time.perf_counter() - started

    def settle(self) -> None:
        """Write every fit still in the pool into its record (blocks until they are done)."""
        pending, self._pending = self._pending, []
        for record, fit in pending:
            record.update(fit.result())
            self.last_fit_s = fit.fit_s


def settle(evaluators) -> None:
    """Settle the probe fits of every evaluator that has them (before records are saved or read)."""
    for evaluator in evaluators:
        if hasattr(evaluator, "settle"):
            evaluator.settle()


def auto_probe_workers(training_threads: int, cores: int, on_cuda: bool) -> int:
    """The default pool size: the cores training leaves free (on CUDA, all but one), at most
    `MAX_PROBE_WORKERS`; 0 (inline) when training uses every core."""
    spare = cores - 1 if on_cuda else cores - training_threads
    return max(0, min(MAX_PROBE_WORKERS, spare))
