"""The executors: a process pool and a dask cluster give exactly the numbers of the in-process
loop, and a worker that dies mid-cell costs only that cell, which resumes from its checkpoint."""
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import probe.runner.executors as executors
import studies.invertible_encoders as invertible
from probe.cli import main
from probe.errors import InputValueError, UnknownNameError
from probe.results import load_dataset
from probe.runner import run_study
from studies import find_study

distributed = pytest.importorskip("distributed")

STUDY = find_study("invertible-encoders")
SMOKE = invertible.PRESETS["smoke"]  # 2 cells (infonce, nwj); run here for 10 steps, evaluated at 0 and 10


@dataclass(frozen=True)
class CrashSettings(invertible.Settings):
    crash_dir: str = ""          # holds attempts.log and the marker of the one crash
    crash_estimator: str = "nwj"
    crash_at: int = 7            # the step at which that cell's worker dies (checkpoints every 5)
    crash_always: bool = False   # die on every attempt, not only the first


def crashing_run_cell(settings, ids, seed, data, device, on_step=None):
    """The smoke cell, whose worker process dies (os._exit) mid-cell on its first attempt."""
    folder = Path(settings.crash_dir)
    with open(folder / "attempts.log", "a") as f:
        f.write(f"{ids['estimator']}\n")

    def hook(step, last):
        if ids["estimator"] == settings.crash_estimator and step == settings.crash_at \
                and (settings.crash_always or not (folder / "crashed").exists()):
            (folder / "crashed").touch()
            os._exit(3)
        if on_step is not None:
            on_step(step, last)

    return invertible.run_cell(settings, ids, seed, data, device, hook)


def crash_study(folder: Path, **crash):
    fields = {f.name: getattr(SMOKE, f.name) for f in dataclasses.fields(SMOKE)}
    return dataclasses.replace(STUDY, presets={"smoke": CrashSettings(**fields, crash_dir=str(folder), **crash)},
                               run_cell=crashing_run_cell)


def numeric(ds: xr.Dataset) -> xr.Dataset:
    names = [n for n, v in ds.data_vars.items() if v.dtype.kind in "fiu" and n != "wall_time"]
    return ds[names].drop_attrs(deep=False)


def run(study=STUDY, **kwargs):
    logs = []
    path = run_study(study, "smoke", steps=10, progress=False, log=logs.append, **kwargs)
    return load_dataset(path), path, logs


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    # Cell by cell, as the process and dask executors run them: the same numbers to the bit.
    ds, _, _ = run(out=tmp_path_factory.mktemp("local"), ensemble=False)
    return numeric(ds)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


def test_dask_equals_local(local, cluster, tmp_path):
    ds, path, _ = run(out=tmp_path, executor="dask", scheduler=cluster.scheduler_address)
    xr.testing.assert_identical(numeric(ds), local)
    assert ds.attrs["executor"] == "dask" and (ds["status"] == "ok").all()
    assert not list((path.parent / "cells").glob("*.ckpt.pt"))


def test_processes_equal_local(local, tmp_path):
    ds, _, _ = run(out=tmp_path, executor="processes", workers=2)
    xr.testing.assert_identical(numeric(ds), local)


def test_dask_worker_dying_mid_cell_costs_only_that_cell(local, cluster, tmp_path):
    ds, path, _ = run(crash_study(tmp_path), out=tmp_path / "runs", executor="dask",
                      scheduler=cluster.scheduler_address, checkpoint_every=5)
    assert (tmp_path / "crashed").exists()
    attempts = (tmp_path / "attempts.log").read_text().split()
    assert sorted(attempts) == ["infonce", "nwj", "nwj"]  # only the crashed cell ran again
    resumed = load_dataset(path.parent / "cells" / "estimator=nwj_seed=0.nc").attrs["resumed_from_step"]
    assert resumed == 5  # from its last checkpoint before step 7
    xr.testing.assert_identical(numeric(ds), local)


def test_processes_worker_dying_mid_cell_is_retried(local, tmp_path):
    ds, path, logs = run(crash_study(tmp_path), out=tmp_path / "runs", executor="processes", workers=2,
                         checkpoint_every=5)
    assert (tmp_path / "crashed").exists()
    retries = [m for m in logs if "its worker died" in m]
    assert len(retries) == 1 and "nwj" in retries[0] and "retry 1 of 2" in retries[0], logs
    resumed = load_dataset(path.parent / "cells" / "estimator=nwj_seed=0.nc").attrs["resumed_from_step"]
    assert resumed == 5
    xr.testing.assert_identical(numeric(ds), local)


def test_executor_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'dask'"):
        run(out=tmp_path, executor="dusk")
    with pytest.raises(InputValueError, match="--scheduler tcp://x:1 applies to the dask executor"):
        run(out=tmp_path, executor="processes", scheduler="tcp://x:1")
    with pytest.raises(InputValueError, match="--workers is 0"):
        run(out=tmp_path, executor="processes", workers=0)


@pytest.mark.slow
def test_cell_whose_worker_keeps_dying_is_recorded_and_rerun(local, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "RETRIES", 1)
    study = crash_study(tmp_path, crash_always=True)
    ds, path, logs = run(study, out=tmp_path / "runs", executor="processes", workers=2, checkpoint_every=5)
    assert str(ds["status"].sel(estimator="nwj", seed=0).values) == "failed: its worker died 2 time(s)"
    assert np.isnan(ds["bound_test"].sel(estimator="nwj")).all()
    xr.testing.assert_identical(numeric(ds).sel(estimator=["infonce"]), local.sel(estimator=["infonce"]))
    assert not (path.parent / "cells" / "estimator=nwj_seed=0.nc").exists()  # so a rerun tries it again
    fixed = dataclasses.replace(study, run_cell=STUDY.run_cell)
    ds, _, logs = run(fixed, out=tmp_path / "runs", checkpoint_every=5)
    assert "1 already done, 1 resuming mid-cell" in logs[0]
    xr.testing.assert_identical(numeric(ds), local)


def test_cli_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["run-study", "--help"])
    for text in ("--executor", "--scheduler", "--workers", "--checkpoint-every"):
        assert text in result.output
    result = runner.invoke(main, ["run-study", "invertible-encoders", "--preset", "smoke", "--out", str(tmp_path),
                                  "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code != 0 and "applies to the dask executor" in result.output
    assert "Traceback" not in result.output
