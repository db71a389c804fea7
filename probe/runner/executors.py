"""Where the cells of a study run: in this process, in a pool of processes, or on a dask cluster.

Every executor runs one task per group of cells (`probe.runner.groups`: the cells a study trains
together as one ensemble; one cell a group with `--no-ensemble` or for a study that builds no
members): `run_group_job`, or `run_cell_job` for a group of one. The task is small (the study's
functions, its settings, paths): the worker loads the data itself, once per worker process
(`worker_data` caches it at module level), trains under a mid-cell (group) checkpoint plan,
writes each cell's result file atomically and returns the paths. The parent only assembles the
files, so a worker that dies costs at most its own group, which resumes from its checkpoint:

- `local`: a loop in this process, with a progress bar over training steps;
- `processes`: `concurrent.futures.ProcessPoolExecutor` (spawn), torch threads = cores // workers.
  Python ends the whole pool when one worker dies, so the groups running beside it restart
  too (from their checkpoints); only the group whose worker died counts a retry, and after
  `retries` of them its cells are recorded as failed while the others go on;
- `dask`: `dask.distributed` on the cluster at `--scheduler ADDRESS`, or on a LocalCluster;
  every group is submitted with `retries`, and the scheduler reruns a group whose worker died.

With fewer groups than workers, the pool and dask split groups (`spread_groups`) so that every
worker has work; the progress bar of both counts cells.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from probe.devices import cores, resolve_device, set_threads
from probe.errors import InputValueError, unknown_name
from probe.runner.cells import CellJob, run_cell_job
from probe.runner.groups import group_attempts, group_jobs, group_name, run_group_job, spread_groups
from probe.runner.options import EXECUTORS
from probe.runner.preflight import Preflight, preflight, split_to_fit
from probe.runner.progress import Projection, StepClock, bar_options, clock_text, eval_schedule, refine_at, refined_text
from probe.training.parent_watch import exit_with_parent
from probe.training.probe_pool import AUTO_MIN_ROWS, auto_probe_workers, background_probes

# tqdm's r_bar without its {remaining}: the ETA (StepClock's, evaluations included) is in the postfix.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"

RETRIES = 2


# ---------------------------------------------------------------------------- the executors

def run_cells(executor: str, jobs: list[CellJob], *, data: Any, steps_per_cell: int, workers: int | None = None,
              scheduler: str | None = None, threads: int | None = None, retries: int | None = None,
              progress: bool = True, log: Callable[[str], None] = print, baseline_fits: int = 0,
              started_at: float | None = None) -> dict[str, str]:
    """Run every job on `executor`; return {cell file: reason} for cells that could not finish.

    `threads`: torch threads per worker process (default cores // workers); `retries`: how
    often a group whose worker died is resubmitted (default `RETRIES`). On this machine (local,
    processes) groups are first split to fit the memory budget (`probe.runner.preflight`).
    `baseline_fits` (paper probes the run makes after its cells) and `started_at` (the
    command's start) go into the projected wall time.
    """
    check_executor(executor, scheduler, workers)
    retries = RETRIES if retries is None else retries
    if not jobs:
        return {}
    groups = group_jobs(jobs, ensemble=jobs[0].options.ensemble)
    extra = dict(baseline_fits=baseline_fits, started_at=started_at, log=log)
    if executor == "local":
        flight = preflight(groups, data, pool_workers=local_probe_workers(jobs[0].options))
        groups = with_projection(split_to_fit(groups, flight), 1, flight, **extra)
        with local_background_probes(jobs[0].options):
            run_local(groups, data, steps_per_cell=steps_per_cell, progress=progress, log=log)
        return {}
    workers = workers or cores()
    if executor == "processes":
        groups = spread_groups(groups, workers)
        flight = preflight(groups, data, parallel=min(workers, len(groups)))
        groups = split_to_fit(groups, flight)
        return run_processes(with_projection(groups, min(workers, len(groups)), flight, **extra), workers=workers,
                             threads=threads, retries=retries, progress=progress, log=log)
    return run_dask(groups, scheduler=scheduler, workers=workers, threads=threads, retries=retries,
                    progress=progress, log=log, extra=extra)


def with_projection(groups: list[list[CellJob]], parallel: int, flight: Preflight | None = None, *,
                    baseline_fits: int = 0, started_at: float | None = None,
                    log: Callable[[str], None] = print) -> list[list[CellJob]]:
    """The groups, the first job of the first carrying the run's `Projection` (checked after its
    first steps, or at its group's timed start): `parallel` groups at a time. With an early
    timing (`flight.early`, one member timed before any group was built) the projection is
    checked here first, and a CPU run over the limit stops before its first group is built."""
    if not groups:
        return groups
    first = groups[0][0]
    options = first.options
    hint = "--preset quick (minutes on a laptop)" if options.preset == "paper" else \
        "fewer cells (e.g. --seeds 1) or --preset smoke"
    sizes = tuple(len(group) for group in groups)
    projection = Projection(cells=len(groups), parallel=parallel, yes=options.yes, command_hint=hint,
                            total_cells=sum(sizes), unit_sizes=sizes,
                            memory_text=flight.memory_text(groups) if flight is not None else "",
                            baseline_fits=baseline_fits, started_at=started_at)
    if flight is not None and flight.early is not None:
        clock = StepClock(int(first.settings.steps), eval_schedule(first.settings))
        clock.record_start(flight.early)
        projection.check(clock, on_cpu=True, label="one member alone, before any group was built", log=log,
                         in_progress=False)
    return [[dataclasses.replace(first, projection=projection), *groups[0][1:]], *groups[1:]]


def local_background_probes(options: Any):
    """The local executor's probe pool: --probe-workers for every fit, or by default the free
    cores for fits large enough to pay for a worker (`AUTO_MIN_ROWS`)."""
    return background_probes(local_probe_workers(options), 0 if options.probe_workers is not None else AUTO_MIN_ROWS)


def local_probe_workers(options: Any) -> int:
    """--probe-workers, or by default the cores that training in this process leaves free."""
    if options.probe_workers is not None:
        return options.probe_workers
    import torch

    on_cuda = resolve_device(options.device).type == "cuda"
    return auto_probe_workers(torch.get_num_threads(), cores(), on_cuda)


def check_executor(executor: str, scheduler: str | None, workers: int | None) -> None:
    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, list(EXECUTORS))
    if scheduler is not None and executor != "dask":
        raise InputValueError(f"--scheduler {scheduler} applies to the dask executor; add --executor dask.")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputValueError(f"--workers is {workers!r}; at least 1 worker is required.")


def run_local(groups: list[list[CellJob]], data: Any, *, steps_per_cell: int, progress: bool,
              log: Callable[[str], None]) -> None:
    """In this process, one group of cells after another, with a progress bar over training
    steps of all cells.

    The bar's ETA is `StepClock`'s: steps and evaluations timed apart, none before a few steps.
    """
    if not groups:
        return
    jobs = [job for group in groups for job in group]
    bar = tqdm(total=len(jobs) * steps_per_cell, unit="step", disable=not progress, bar_format=BAR_FORMAT,
               **bar_options())
    say = (lambda message: tqdm.write(message, file=sys.stderr)) if progress else log  # noqa: E731
    clock = StepClock(steps_per_cell, eval_schedule(jobs[0].settings))
    projection = jobs[0].projection
    end_s = (lambda: clock.end_s(projection.baseline_fits)) if projection is not None else (lambda: 0.0)  # noqa: E731
    for index, group in enumerate(groups):
        size = len(group)
        label = group[0].cell.label if size == 1 else f"{size} cells together ({group[0].cell.label}, ...)"
        done_before = bar.n
        clock.start_cell()
        bar.set_postfix_str(f"{_eta(clock, len(groups) - index - 1, end_s())}, {label}", refresh=False)
        shown = {"at": 0.0, "last": ""}

        def on_step(step: int, last: dict, done_before: int = done_before, label: str = label, size: int = size,
                    cells_after: int = len(groups) - index - 1, shown: dict = shown) -> None:
            clock.tick(step)
            if last and step % 50 == 0:
                accuracy = last.get("probe_accuracy")  # absent while the probe pool fits it
                shown["last"] = (f" | bound {last.get('bound_test', float('nan')):.2f}"
                                 + (f" acc {accuracy:.3f}" if accuracy is not None else ""))
            now = time.monotonic()
            if now - shown["at"] > 0.5:  # the median over 200 steps is cheap, but not free every step
                shown["at"] = now
                bar.set_postfix_str(f"{_eta(clock, cells_after, end_s())}, {label}{shown['last']}", refresh=False)
            bar.update(done_before + step * size - bar.n)

        try:
            written = [run_cell_job(group[0], data, on_step, log=say, on_timed=clock.record_start)] if size == 1 else \
                run_group_job(group, data, on_step, log=say, on_timed=clock.record_start)
        except BaseException:
            bar.close()  # before the caller's message (Ctrl-C, a too-long run), not after it
            raise
        bar.update(done_before + steps_per_cell * size - bar.n)
        if projection is not None and clock.one_step_cells and index + 1 == refine_at(len(groups)):
            say(refined_text(clock, projection, index + 1, len(groups), end_s()))
        for job, (_, status) in zip(group, written):
            if status != "ok":
                say(f"  {job.cell.label}: {status}; the other cells go on.")
    bar.close()


def _eta(clock: StepClock, cells_after: int, end_s: float = 0.0) -> str:
    eta = clock.eta_s(cells_after, end_s)
    return f"ETA {clock_text(eta)}" if eta is not None else clock.not_ready_text


# processes ------------------------------------------------------------------

_RUNNING: Path | None = None  # attempts file of the group this pool worker is running


def _init_worker(threads: int, parent: int) -> None:
    set_threads(threads)
    signal.signal(signal.SIGTERM, _on_sigterm)
    exit_with_parent(parent)  # a killed run takes its workers with it


def _on_sigterm(signum: int, frame: Any) -> None:
    # The pool ends every worker when one dies: say that this group was not the one that failed.
    if _RUNNING is not None:
        with contextlib.suppress(OSError), open(_RUNNING, "a") as f:
            f.write("terminated\n")
    os._exit(128 + signum)


def _run_in_pool(blob: bytes) -> list[tuple[Path, str]]:
    import cloudpickle

    global _RUNNING
    group: list[CellJob] = cloudpickle.loads(blob)
    attempts = group_attempts(group)
    with open(attempts, "a") as f:
        f.write(f"start {os.getpid()}\n")
    _RUNNING = attempts
    try:
        written = _run_group(group)
        attempts.unlink(missing_ok=True)
        return written
    finally:
        _RUNNING = None


def _run_group(group: list[CellJob]) -> list[tuple[Path, str]]:
    return [run_cell_job(group[0])] if len(group) == 1 else run_group_job(group)


def _crashes(group: list[CellJob]) -> int:
    """Attempts at this group that ended with its own worker dying (not ended by the pool)."""
    try:
        lines = group_attempts(group).read_text().split()
    except FileNotFoundError:
        return 0
    return lines.count("start") - lines.count("terminated")


def run_processes(groups: list[list[CellJob]], *, workers: int, threads: int | None, retries: int, progress: bool,
                  log: Callable[[str], None]) -> dict[str, str]:
    """A spawn-context process pool, one group a task; a broken pool is restarted and the
    unfinished groups resubmitted."""
    import cloudpickle  # pickles the study's functions even when they are closures

    remaining = {group_name(group): group for group in groups}
    for group in groups:
        group_attempts(group).unlink(missing_ok=True)
    threads = threads or max(1, cores() // workers)
    failed: dict[str, str] = {}
    bar = tqdm(total=sum(len(group) for group in groups), unit="cell", disable=not progress, **bar_options())
    while remaining:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(remaining)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads, os.getpid()))
        broken = False
        try:
            futures = {pool.submit(_run_in_pool, cloudpickle.dumps(group)): name for name, group in remaining.items()}
            for future in as_completed(futures):
                name = futures[future]
                try:
                    written = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                group = remaining.pop(name)
                bar.update(len(group))
                _say_statuses(group, [status for _, status in written], log)
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)
        if broken:
            _after_crash(remaining, failed, retries, bar, log)
    bar.close()
    return failed


def _say_statuses(group: list[CellJob], statuses: list[str], log: Callable[[str], None]) -> None:
    for job, status in zip(group, statuses):
        if status != "ok":
            log(f"  {job.cell.label}: {status}; the other cells go on.")


def _what(group: list[CellJob]) -> str:
    return group[0].cell.label if len(group) == 1 else \
        f"the {len(group)} cells trained together ({', '.join(job.cell.label for job in group)})"


def _after_crash(remaining: dict[str, list[CellJob]], failed: dict[str, str], retries: int, bar: tqdm,
                 log: Callable[[str], None]) -> None:
    for name, group in list(remaining.items()):
        if all(job.result_path.exists() for job in group):  # finished just as the pool broke
            del remaining[name]
            bar.update(len(group))
            continue
        crashes = _crashes(group)
        if crashes > retries:
            for job in group:
                failed[job.cell.filename()] = f"failed: its worker died {crashes} time(s)"
            del remaining[name]
            bar.update(len(group))
            log(f"  {_what(group)}: its worker died {crashes} time(s); recorded as failed, the other cells go on.")
        elif crashes:
            log(f"  {_what(group)}: its worker died; retry {crashes} of {retries} (from its last checkpoint).")


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (their checkpoints are atomic)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()


# dask -----------------------------------------------------------------------

def _run_on_dask(group: list[CellJob], threads_by_host: dict[str, int], threads: int | None) -> list[tuple[Path, str]]:
    from distributed import get_worker

    worker = get_worker()
    host = worker.address.split("://")[-1].rsplit(":", 1)[0]
    slots = threads_by_host.get(host) or worker.state.nthreads
    set_threads(threads or max(1, cores() // slots))
    return _run_group(group)


def run_dask(groups: list[list[CellJob]], *, scheduler: str | None, workers: int, threads: int | None, retries: int,
             progress: bool, log: Callable[[str], None], extra: dict | None = None) -> dict[str, str]:
    """Submit every group to a dask cluster (or a LocalCluster of `workers` single-thread processes)."""
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
        from distributed.scheduler import KilledWorker
    except ImportError as err:  # pragma: no cover - a dependency
        raise InputValueError("--executor dask needs dask.distributed: pip install 'dask[distributed]'.") from err

    failed: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as err:
                raise InputValueError(f"--scheduler {scheduler}: cannot reach a dask scheduler there ({err}). "
                                      "Start one with `dask scheduler` and pass the address it prints.") from None
        else:
            # ERROR: a worker slow to exit at shutdown on a busy machine is not worth a warning.
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       host="127.0.0.1", dashboard_address=None,
                                                       silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        threads_by_host = _slots_by_host(client)
        slots = max(sum(threads_by_host.values()), 1)
        groups = spread_groups(groups, slots)
        groups = with_projection(groups, min(slots, len(groups)), **{**(extra or {}), "log": log})
        futures = {client.submit(_run_on_dask, group, threads_by_host, threads, key=f"{group[0].run_key}-{name}",
                                 retries=retries, pure=False): group
                   for name, group in ((group_name(group), group) for group in groups)}
        bar = tqdm(total=sum(len(group) for group in groups), unit="cell", disable=not progress, **bar_options())
        for future in dask_completed(futures):
            group = futures[future]
            bar.update(len(group))
            if future.status == "error":
                err = future.exception()
                if not isinstance(err, KilledWorker):
                    client.cancel(list(futures))
                    raise err
                for job in group:
                    failed[job.cell.filename()] = "failed: its worker died repeatedly (dask KilledWorker)"
                log(f"  {_what(group)}: its worker died repeatedly; recorded as failed, the other cells go on.")
                continue
            _say_statuses(group, [status for _, status in future.result()], log)
        bar.close()
    return failed


def _slots_by_host(client: Any) -> dict[str, int]:
    """Threads of all workers per host: a worker then uses cores // slots torch threads."""
    slots: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = address.split("://")[-1].rsplit(":", 1)[0]
        slots[host] = slots.get(host, 0) + int(info.get("nthreads", 1))
    return slots
