"""Running studies: the options, one cell on any worker, the executors, and a whole run.

- `options`: `RunOptions`, what `probe run-study` takes besides the study's name;
- `cells`: `CellJob` and `run_cell_job`, one cell on any worker;
- `executors`: this process, a pool of processes, or a dask cluster;
- `progress`: timing steps and evaluations apart: the ETA, the projected wall time, the CPU gate;
- `run`: `run_study` / `run`, a whole study from the preset to `results.nc`.
"""
from probe.runner.options import EXECUTORS, RunOptions
from probe.runner.progress import RunTooLong
from probe.runner.run import RunInterrupted, run, run_settings, run_study

__all__ = ["EXECUTORS", "RunInterrupted", "RunOptions", "RunTooLong", "run", "run_settings", "run_study"]
