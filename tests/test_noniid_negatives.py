"""studies/noniid_negatives.py through the runner: its cells trained together (one vectorised
model of every estimator, sampling and seed) give the numbers, statuses and stream seeds of
each cell trained alone; a member that diverges is frozen while the others finish; a run
killed mid-cell, alone or in a group, resumes to exactly the numbers of an uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from interrupting import Killed, killed_at

import studies.noniid_negatives as noniid
from probe.results import load_dataset
from probe.runner import run_study

STUDY = noniid.STUDY
VARIABLES = ("bound_train", "bound_train_smoothed", "bound_test", "wall_time", "true_mi")


def run(out, study=STUDY, **options):
    return run_study(study, "smoke", seeds=2, out=out, progress=False, checkpoint_every=20, log=lambda m: None,
                     **options)




def numeric(ds: xr.Dataset) -> xr.Dataset:
    return ds[[n for n, v in ds.data_vars.items() if v.dtype.kind in "fiu" and n != "wall_time"]].drop_attrs(deep=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The smoke preset with 2 seeds, trained together and cell by cell."""
    out = tmp_path_factory.mktemp("runs")
    return {flag: run(out / str(flag), ensemble=flag) for flag in (True, False)}


def test_cells_trained_together_match_the_cells_alone(runs):
    together, alone = (load_dataset(runs[flag]) for flag in (True, False))
    grouped = [load_dataset(p).attrs["trained_with_members"] for p in runs[True].parent.glob("cells/*.nc")]
    assert grouped == [8] * 8  # every estimator, sampling and seed: one model
    for name in VARIABLES:  # today's dims and variables
        assert together[name].dims == alone[name].dims
        assert together[name].dims == (("estimator", "negatives", "seed", "step") if name != "true_mi"
                                       else ("estimator", "negatives", "seed"))
    assert (together["status"] == "ok").all() and (alone["status"] == "ok").all()
    for name in ("bound_train", "bound_train_smoothed", "bound_test"):
        np.testing.assert_allclose(together[name], alone[name], rtol=1e-3, atol=1e-4, err_msg=name)
        assert np.isfinite(together[name]).all()
    assert together.attrs["stream_seeds_json"] == alone.attrs["stream_seeds_json"]


def test_one_cell_is_the_cell_of_the_group(runs):
    settings = noniid.PRESETS["smoke"]
    data, _ = noniid.load_data(settings, None, None)
    ids = {"estimator": "nwj", "negatives": "noniid"}
    cell = noniid.run_cell(settings, ids, 1, data, torch.device("cpu"))
    together = load_dataset(runs[True])["bound_train"].sel(**ids, seed=1)
    np.testing.assert_allclose(cell.variables["bound_train"][1], together, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("ensemble", [True, False])
def test_a_diverging_member_is_frozen_while_the_others_finish(ensemble, tmp_path):
    # At learning rate 1, NWJ's e^(f - 1) overflows within a few steps; InfoNCE stays finite.
    ds = load_dataset(run(tmp_path, ensemble=ensemble, set_values={"learning_rate": "1.0"}))
    status = ds["status"]
    assert (status.sel(estimator="infonce") == "ok").all()
    assert all(str(s).startswith("non-finite estimate at step") for s in status.sel(estimator="nwj").values.ravel())
    assert np.isfinite(ds["bound_train"].sel(estimator="infonce")).all()
    assert np.isnan(ds["bound_train"].sel(estimator="nwj").isel(step=-1)).all()


@pytest.mark.parametrize("ensemble", [True, False])
def test_killed_mid_cell_resumes_to_identical_numbers(runs, ensemble, tmp_path):
    with pytest.raises(Killed):
        run(tmp_path, killed_at(STUDY, 30), ensemble=ensemble)  # last checkpoint: step 20
    checkpoints = list(tmp_path.rglob("*.ckpt.pt"))
    assert len(checkpoints) == 1 and torch.load(checkpoints[0], weights_only=True)["step"] == 20
    logs: list[str] = []
    path = run_study(STUDY, "smoke", seeds=2, out=tmp_path, progress=False, checkpoint_every=20, log=logs.append,
                     ensemble=ensemble)
    assert ("1 group(s) resuming mid-run" in logs[0]) == ensemble, logs[0]  # the runner says so before it starts
    assert not checkpoints[0].exists()
    resumed = [load_dataset(p).attrs["resumed_from_step"] for p in path.parent.glob("cells/*.nc")]
    assert sorted(resumed) == ([20] * 8 if ensemble else [0] * 7 + [20])  # the group, or the one cell killed
    xr.testing.assert_identical(numeric(load_dataset(path)), numeric(load_dataset(runs[ensemble])))
