"""The executors: a process pool and a dask cluster give the numbers of the in-process loop
(exactly, cell by cell; to float rounding, for cells trained together as one ensemble), and a
worker that dies mid-cell costs only its cell or group, which resumes from its checkpoint."""
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
from probe.runner.groups import spread_groups
from probe.training.members import train_members
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


def crashing_run_members(settings, ids_list, seeds, data, device, on_step, member_context):
    """The smoke cells trained together (as the runner's groups train them), whose worker dies
    mid-group on the first attempt of a group holding the crash estimator."""
    folder = Path(settings.crash_dir)
    estimators = [ids["estimator"] for ids in ids_list]
    with open(folder / "attempts.log", "a") as f:
        f.write("+".join(estimators) + "\n")
    doomed = settings.crash_estimator in estimators

    def hook(step, last):
        if doomed and step == settings.crash_at and (settings.crash_always or not (folder / "crashed").exists()):
            (folder / "crashed").touch()
            os._exit(3)
        if on_step is not None:
            on_step(step, last)

    members = []
    for m, (ids, seed) in enumerate(zip(ids_list, seeds)):
        with member_context(m):
            members.append(invertible.build_member(settings, ids, seed, data))
    return train_members([m.triple for m in members], data, [m.config for m in members], seeds, device=device,
                         on_step=hook, member_context=member_context)


def crash_study(folder: Path, *, together: bool = False, **crash):
    """The smoke study whose worker dies mid-cell: in `run_cell` (cells alone), or with `together`
    in `run_members` (groups of cells trained as one ensemble)."""
    fields = {f.name: getattr(SMOKE, f.name) for f in dataclasses.fields(SMOKE)}
    presets = {"smoke": CrashSettings(**fields, crash_dir=str(folder), **crash)}
    if together:
        return dataclasses.replace(STUDY, presets=presets, member=None, run_members=crashing_run_members)
    return dataclasses.replace(STUDY, presets=presets, run_cell=crashing_run_cell)


def numeric(ds: xr.Dataset) -> xr.Dataset:
    names = [n for n, v in ds.data_vars.items() if v.dtype.kind in "fiu" and n != "wall_time"]
    return ds[names].drop_attrs(deep=False)


def run(study=STUDY, **kwargs):
    logs = []
    path = run_study(study, "smoke", steps=10, progress=False, log=logs.append, **kwargs)
    return load_dataset(path), path, logs


def assert_close(ds: xr.Dataset, alone: xr.Dataset) -> None:
    """Cells trained together against the same cells trained alone: equal to float rounding
    (tests/test_members.py's tolerances; a held-out example or two may flip a probe's answer)."""
    ds = numeric(ds)
    assert sorted(ds.data_vars) == sorted(alone.data_vars)
    for name in ds.data_vars:
        a, b = ds[name].values, alone[name].values
        if name.endswith("accuracy"):
            assert np.nanmax(np.abs(a - b)) <= 0.02, name
        else:
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3, err_msg=name)


def members_of(path: Path) -> list:
    """Each cell file's `trained_with_members` (None: trained alone)."""
    return [load_dataset(p).attrs.get("trained_with_members") for p in sorted((path.parent / "cells").glob("*.nc"))]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    # Cell by cell, as the process and dask executors run them with --no-ensemble: the same numbers to the bit.
    ds, _, _ = run(out=tmp_path_factory.mktemp("local"), ensemble=False)
    return numeric(ds)


@pytest.fixture(scope="module")
def local_two_seeds(tmp_path_factory):
    # 2 estimators x 2 seeds, cell by cell: one group of 4, which 2 workers split into two groups of 2.
    ds, _, _ = run(out=tmp_path_factory.mktemp("local2"), ensemble=False, seeds=2)
    return numeric(ds)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


def test_dask_trains_groups_and_equals_local(local_two_seeds, cluster, tmp_path):
    ds, path, _ = run(out=tmp_path, executor="dask", scheduler=cluster.scheduler_address, seeds=2)
    assert_close(ds, local_two_seeds)
    assert ds.attrs["executor"] == "dask" and (ds["status"] == "ok").all()
    assert members_of(path) == [2, 2, 2, 2]  # one group of 4, split so both workers train one
    assert not list((path.parent / "cells").glob("*.ckpt.pt"))


def test_dask_without_ensemble_runs_cells_alone_to_the_bit(local, cluster, tmp_path):
    ds, path, _ = run(out=tmp_path, executor="dask", scheduler=cluster.scheduler_address, ensemble=False)
    xr.testing.assert_identical(numeric(ds), local)
    assert members_of(path) == [None, None]


def test_processes_train_groups_and_equal_local(local_two_seeds, tmp_path):
    ds, path, _ = run(out=tmp_path, executor="processes", workers=2, seeds=2)
    assert_close(ds, local_two_seeds)
    assert members_of(path) == [2, 2, 2, 2]
    assert not list((path.parent / "cells").glob(".*.attempts"))


def test_processes_without_ensemble_run_cells_alone_to_the_bit(local, tmp_path):
    ds, path, _ = run(out=tmp_path, executor="processes", workers=2, ensemble=False)
    xr.testing.assert_identical(numeric(ds), local)
    assert members_of(path) == [None, None]


def test_dask_worker_dying_mid_cell_costs_only_that_cell(local, cluster, tmp_path):
    ds, path, _ = run(crash_study(tmp_path), out=tmp_path / "runs", executor="dask",
                      scheduler=cluster.scheduler_address, checkpoint_every=5, ensemble=False)
    assert (tmp_path / "crashed").exists()
    attempts = (tmp_path / "attempts.log").read_text().split()
    assert sorted(attempts) == ["infonce", "nwj", "nwj"]  # only the crashed cell ran again
    resumed = load_dataset(path.parent / "cells" / "estimator=nwj_seed=0.nc").attrs["resumed_from_step"]
    assert resumed == 5  # from its last checkpoint before step 7
    xr.testing.assert_identical(numeric(ds), local)


def test_processes_worker_dying_mid_cell_is_retried(local, tmp_path):
    ds, path, logs = run(crash_study(tmp_path), out=tmp_path / "runs", executor="processes", workers=2,
                         checkpoint_every=5, ensemble=False)
    assert (tmp_path / "crashed").exists()
    retries = [m for m in logs if "its worker died" in m]
    assert len(retries) == 1 and "nwj" in retries[0] and "retry 1 of 2" in retries[0], logs
    resumed = load_dataset(path.parent / "cells" / "estimator=nwj_seed=0.nc").attrs["resumed_from_step"]
    assert resumed == 5
    xr.testing.assert_identical(numeric(ds), local)


def test_dask_worker_dying_mid_group_costs_only_that_group(local_two_seeds, cluster, tmp_path):
    ds, path, _ = run(crash_study(tmp_path, together=True), out=tmp_path / "runs", executor="dask",
                      scheduler=cluster.scheduler_address, checkpoint_every=5, seeds=2)
    assert (tmp_path / "crashed").exists()
    attempts = (tmp_path / "attempts.log").read_text().split()
    assert sorted(attempts) == ["infonce+infonce", "nwj+nwj", "nwj+nwj"]  # only the crashed group ran again
    cells = {p.name: load_dataset(p).attrs for p in (path.parent / "cells").glob("*.nc")}
    assert {n: a["resumed_from_step"] for n, a in cells.items() if "nwj" in n} == \
        {"estimator=nwj_seed=0.nc": 5, "estimator=nwj_seed=1.nc": 5}  # from the group's checkpoint before step 7
    assert {a["trained_with_members"] for a in cells.values()} == {2}
    assert_close(ds, local_two_seeds)


def test_processes_worker_dying_mid_group_is_retried(local, tmp_path):
    ds, path, logs = run(crash_study(tmp_path, together=True), out=tmp_path / "runs", executor="processes",
                         workers=1, checkpoint_every=5)
    retries = [m for m in logs if "its worker died" in m]
    assert len(retries) == 1 and "the 2 cells trained together" in retries[0] and "retry 1 of 2" in retries[0], logs
    assert (tmp_path / "attempts.log").read_text().split() == ["infonce+nwj"] * 2
    for name in ("estimator=infonce_seed=0.nc", "estimator=nwj_seed=0.nc"):
        attrs = load_dataset(path.parent / "cells" / name).attrs
        assert attrs["resumed_from_step"] == 5 and attrs["trained_with_members"] == 2
    assert_close(ds, local)


@pytest.mark.slow
def test_group_whose_worker_keeps_dying_is_recorded_and_the_others_go_on(local_two_seeds, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "RETRIES", 1)
    study = crash_study(tmp_path, together=True, crash_always=True)
    ds, path, logs = run(study, out=tmp_path / "runs", executor="processes", workers=2, checkpoint_every=5, seeds=2)
    assert (ds["status"].sel(estimator="nwj").values == "failed: its worker died 2 time(s)").all()
    assert np.isnan(ds["bound_test"].sel(estimator="nwj")).all()
    assert (ds["status"].sel(estimator="infonce").values == "ok").all()
    assert_close(ds.sel(estimator=["infonce"]), local_two_seeds.sel(estimator=["infonce"]))
    assert sorted(p.name for p in (path.parent / "cells").glob("*.nc")) == \
        ["estimator=infonce_seed=0.nc", "estimator=infonce_seed=1.nc"]  # so a rerun tries the nwj group again


def test_groups_are_split_only_until_every_worker_has_one():
    big = list(range(40))
    assert [len(g) for g in spread_groups([big], 3)] == [14, 13, 13]
    assert sum(spread_groups([big], 3), []) == big  # in the jobs' order, every cell once
    assert spread_groups([big], 1) == [big]
    assert [len(g) for g in spread_groups([big[:5], big[5:6]], 4)] == [2, 2, 1, 1]
    assert spread_groups([big[:2], big[2:3]], 8) == [[0], [1], [2]]  # no more parts than cells
    assert [len(g) for g in spread_groups([big[:10], big[10:30]], 3)] == [10, 10, 10]


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
    ds, path, logs = run(study, out=tmp_path / "runs", executor="processes", workers=2, checkpoint_every=5,
                         ensemble=False)
    assert str(ds["status"].sel(estimator="nwj", seed=0).values) == "failed: its worker died 2 time(s)"
    assert np.isnan(ds["bound_test"].sel(estimator="nwj")).all()
    xr.testing.assert_identical(numeric(ds).sel(estimator=["infonce"]), local.sel(estimator=["infonce"]))
    assert not (path.parent / "cells" / "estimator=nwj_seed=0.nc").exists()  # so a rerun tries it again
    fixed = dataclasses.replace(study, run_cell=STUDY.run_cell)
    ds, _, logs = run(fixed, out=tmp_path / "runs", checkpoint_every=5, ensemble=False)
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
