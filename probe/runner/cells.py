"""One cell of a study on any worker: the job that describes it, and running it.

A `CellJob` is small and picklable (the study, its settings, the run's options and paths): the
worker loads the data itself, once per worker process (`worker_data` caches it at module
level), runs the cell under a mid-cell checkpoint plan, writes the cell's result file
atomically and returns its path.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from probe.data import load_image_pairs
from probe.devices import device_label, resolve_device
from probe.embeddings import saving_embeddings
from probe.errors import InputValueError
from probe.results import cell_dataset, save_dataset
from probe.runner.options import RunOptions
from probe.runner.progress import Gate, Projection, StepClock, eval_schedule
from probe.study import Cell, Study, settings_json
from probe.training.checkpoint import checkpointing
from probe.training.streams import recording_streams
from probe.training.timing import reporting_start


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell and write its file (picklable, no data)."""

    study: Study
    settings: Any
    options: RunOptions         # data_dir absolute; device "auto" resolves on the worker
    dataset_sha256: str         # what the parent hashed; a worker with other data refuses to run
    cells_dir: str              # absolute; on a cluster it must be a folder every worker sees
    run_key: str                # the settings hash of the run folder
    cell: Cell
    embeddings_dir: str | None = None    # --save-embeddings: evaluated embeddings go here, per cell
    projection: Projection | None = None  # the run's first pending cell: project the wall time from it

    @property
    def checkpoint_every(self) -> int | None:
        return self.options.checkpoint_every  # None: each training call's own (TrainConfig.checkpoint_every)

    @property
    def result_path(self) -> Path:
        return Path(self.cells_dir) / self.cell.filename()

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.cells_dir) / self.cell.filename().replace(".nc", ".ckpt.pt")

    @property
    def attempts_path(self) -> Path:
        return Path(self.cells_dir) / f".{self.cell.filename()}.attempts"


_DATA: dict[tuple, Any] = {}
_DATA_LOCK = threading.Lock()


def worker_data(job: CellJob) -> Any:
    """The study's data, loaded once per worker process (and per run settings), then reused."""
    load_data = job.study.load_data or load_image_pairs
    key = (getattr(load_data, "__module__", ""), getattr(load_data, "__qualname__", repr(load_data)),
           settings_json(job.settings), job.options.dataset, job.options.data_dir)
    with _DATA_LOCK:
        if key not in _DATA:
            _DATA.clear()  # one run's data at a time: a long-lived dask worker serves many runs
            data, info = load_data(job.settings, job.options.dataset, job.options.data_dir)
            if info.get("dataset_sha256", "") != job.dataset_sha256:
                raise InputValueError(
                    f"worker: the data loaded here ({info.get('dataset')}, sha256 {info.get('dataset_sha256', '')[:12]}) "
                    f"differ from the parent's (sha256 {job.dataset_sha256[:12]}); every worker must see the same "
                    "--data-dir and data cache. Use a shared folder or PROBE_DATA_DIR on every machine.")
            _DATA[key] = data
        return _DATA[key]


def run_cell_job(job: CellJob, data: Any = None, on_step: Callable[[int, dict], None] | None = None,
                 log: Callable[[str], None] | None = None, on_timed: Callable[[Any], None] | None = None
                 ) -> tuple[Path, str]:
    """Run one cell (resuming its checkpoint), write its result file atomically; (path, status).

    A job with a `projection` logs the run's projected wall time after its first few steps (to
    `log`, else stderr) and raises `RunTooLong` there when a CPU run is over the limit.
    `on_timed` hears what the cell's loop measured at its start (`probe.training.timing`).
    """
    if data is None:
        data = worker_data(job)
    device = resolve_device(job.options.device)
    _warm_up()
    gate = Gate(on_step, job.projection, StepClock(int(job.settings.steps), eval_schedule(job.settings)),
                device.type == "cpu", job.cell.label, log, on_timed)
    started = time.perf_counter()
    with recording_streams() as streams, checkpointing(job.checkpoint_path, f"{job.run_key}/{job.cell.filename()}",
                                                      job.checkpoint_every) as plan, tf32_mode(job.options.tf32), \
            saving_embeddings(Path(job.embeddings_dir) / Path(job.cell.filename()).stem if job.embeddings_dir else None), \
            listening(gate):
        result = job.study.run_cell(job.settings, job.cell.ids, job.cell.seed, data, device, gate.on_step)
    path = write_cell(job, result, streams, wall=time.perf_counter() - started, resumed_from=plan.resumed_from,
                      device=device)
    job.attempts_path.unlink(missing_ok=True)
    gate.finish()  # a cell too short for the projection's timing: project from the whole (saved) cell
    return path, result.status


def listening(gate: Gate) -> contextlib.AbstractContextManager:
    """The loop inside reports its start to `gate` when the gate wants it (a projection, a bar)."""
    return reporting_start(gate.timed) if gate.listening else contextlib.nullcontext()


_WARM = False


def _warm_up() -> None:
    """Pay torch's one-time imports before the first cell's clock starts.

    The first `torch.optim.Adam` of a process imports torch._dynamo (3-13 s measured here); inside
    the first cell that time would count as its start-up, and the projection would multiply it by
    every evaluation of every cell. A zero tensor draws no random numbers: results do not change.
    """
    global _WARM
    if not _WARM:
        import torch

        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
        _WARM = True


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions on (`--tf32`) or off (IEEE fp32, also for
    convolutions, which torch runs in TF32 by default) while a cell trains; restored after.

    The flags touch only CUDA kernels, so on a CPU this changes no number. It sets torch's legacy
    flags, which either API reads back; setting the new ones (`fp32_precision`) would make the
    legacy ones unreadable (a RuntimeError) until restored. A caller who set the new ones makes
    the legacy ones unreadable here, so then the new ones are saved and set.
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        saved = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # torch >= 2.9, the caller used the new API
        saved = None
    if saved is not None:
        matmul.allow_tf32 = cudnn.allow_tf32 = bool(enabled)
    else:
        saved_new = (matmul.fp32_precision, cudnn.conv.fp32_precision)
        matmul.fp32_precision = cudnn.conv.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        if saved is not None:
            matmul.allow_tf32, cudnn.allow_tf32 = saved
        else:
            matmul.fp32_precision, cudnn.conv.fp32_precision = saved_new


def write_cell(job: CellJob, result, streams: dict[str, int], *, wall: float, resumed_from: int, device,
               **attrs) -> Path:
    """Write one cell's result file (its ids, variables, run attrs and stream seeds) and drop its
    mid-cell checkpoint; the path written."""
    ds = cell_dataset(result, {**job.cell.ids, "seed": job.cell.seed}, job.study.variables)
    ds.attrs.update({
        "cell_wall_time": wall,
        "resumed_from_step": resumed_from,
        "device": device_label(device),
        "run_key": job.run_key,
        "tf32": int(job.options.tf32),  # netCDF has no booleans
        **attrs,
        **{f"seed_{_attr_name(stream)}": seed for stream, seed in sorted(streams.items())},
    })
    path = save_dataset(ds, job.result_path)
    job.checkpoint_path.unlink(missing_ok=True)
    return path


def _attr_name(stream: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in stream)
