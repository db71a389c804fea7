"""The study runner end to end on the smoke preset: shape of the results, determinism,
resume, a diverging cell that does not stop the others, and the errors a user can hit."""
import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

import studies.invertible_encoders as invertible
from probe.errors import InputValueError, UnknownNameError
from probe.results import load_dataset
from probe.runner import run_study
from probe.training import TrainConfig
from studies import find_study, list_studies

STUDY = find_study("invertible-encoders")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    path = run_study(STUDY, "smoke", out=out, progress=False, log=lambda m: None)
    return out, path, load_dataset(path)


def test_results_shape_and_attrs(smoke_run):
    _, _, ds = smoke_run
    settings = invertible.PRESETS["smoke"]
    assert ds["bound_test"].dims == ("estimator", "seed", "step")
    assert list(ds["estimator"].values) == ["infonce", "nwj"]
    assert list(ds["step"].values) == list(range(0, settings.steps + 1, settings.eval_every))
    for name in ("bound_test", "bound_train", "probe_accuracy", "wall_time", "v_information",
                 "triplet_margin_mean", "log_condition_number", "pixel_probe_accuracy"):
        assert name in ds, name
        assert ds[name].attrs["units"] is not None and ds[name].attrs["long_name"]
    assert ds["log_condition_number"].dims == ("estimator", "seed", "step", "quantile")
    assert np.isfinite(ds["bound_test"]).all() and np.isfinite(ds["probe_accuracy"]).all()
    # InfoNCE on held-out batches of K = 128 can never exceed log 128.
    assert float(ds["bound_test"].sel(estimator="infonce").max()) <= np.log(ds.attrs["eval_batch_size"]) + 1e-6
    assert ds.attrs["preset"] == "smoke" and ds.attrs["dataset"] == "digits" and ds.attrs["seeds"] == "0"
    assert len(ds.attrs["dataset_sha256"]) == 64 and ds.attrs["eval_batch_size"] == 128
    assert (ds["status"] == "ok").all()


def test_training_raises_the_bound(smoke_run):
    _, _, ds = smoke_run
    bound = ds["bound_test"].mean("seed")
    assert (bound.isel(step=-1) > bound.isel(step=0)).all()


def test_rerun_resumes_and_reproduces(smoke_run):
    out, path, ds = smoke_run
    cells = sorted((path.parent / "cells").glob("*.nc"))
    assert len(cells) == 2
    cells[1].unlink()  # as if the run had been killed before this cell finished
    logs = []
    again = load_dataset(run_study(STUDY, "smoke", out=out, progress=False, log=logs.append))
    assert "1 already done" in logs[0]
    same = ["bound_test", "bound_train", "probe_accuracy", "v_information", "log_condition_number"]
    # Same seed -> the same numbers and variable attrs (run attrs such as `created` differ). The
    # cells were trained as one ensemble and the rerun trains the missing one alone: float32 sums
    # in another order, so equal to rounding (bit-identical resumes: tests/test_checkpoint.py).
    for name in same:
        assert again[name].attrs == ds[name].attrs
    xr.testing.assert_allclose(again[same].drop_vars("probe_accuracy"), ds[same].drop_vars("probe_accuracy"),
                               rtol=5e-3, atol=5e-3)
    assert float(abs(again["probe_accuracy"] - ds["probe_accuracy"]).max()) <= 0.02


def test_changed_setting_gets_a_new_run_folder(smoke_run, tmp_path):
    out, path, _ = smoke_run
    other = run_study(STUDY, "smoke", steps=10, out=out, progress=False, log=lambda m: None)
    assert other.parent != path.parent


def test_diverging_cell_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import probe.training.evaluation as evaluation
    import probe.training.loop as loop

    real = loop.get_estimator

    def poisoned(name):
        fn = real(name)
        if name != "nwj":
            return fn
        return lambda s: fn(s) * torch.tensor(float("nan"))

    monkeypatch.setattr(loop, "get_estimator", poisoned)
    monkeypatch.setattr(evaluation, "get_estimator", poisoned)
    # Cell by cell: the poisoned estimator is train_pair's (a diverging member of an ensemble:
    # tests/test_members.py).
    ds = load_dataset(run_study(STUDY, "smoke", out=tmp_path, progress=False, ensemble=False, log=lambda m: None))
    assert str(ds["status"].sel(estimator="nwj", seed=0).values).startswith("non-finite")
    assert str(ds["status"].sel(estimator="infonce", seed=0).values) == "ok"
    assert np.isfinite(ds["probe_accuracy"].sel(estimator="infonce")).all()


def test_user_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean 'invertible-encoders'"):
        find_study("invertible-encoder")
    with pytest.raises(UnknownNameError, match="preset"):
        run_study(STUDY, "quik", out=tmp_path, progress=False)
    with pytest.raises(InputValueError, match="--steps is 0"):
        run_study(STUDY, "smoke", steps=0, out=tmp_path, progress=False)
    with pytest.raises(InputValueError, match="steps is 0"):
        TrainConfig(estimator="nwj", steps=0)
    with pytest.raises(UnknownNameError, match="estimator"):
        TrainConfig(estimator="nwjj", steps=3)


def test_paper_preset_is_the_notebook_protocol():
    paper = invertible.PRESETS["paper"]
    assert dataclasses.asdict(paper) == dataclasses.asdict(invertible.Settings(
        estimators=("infonce", "nwj"), n_couplings=30, hidden=(512, 512), coupling="additive", init_std=1e-4,
        critic="bilinear", learning_rate=1e-4, batch_size=128, steps=20_000, eval_every=1_000,
        seeds=tuple(range(20)), dataset="mnist"))


def test_every_experiment_of_the_paper_is_a_study_of_the_paper():
    from probe.reference import PAPER

    by_name = {s.name: s for s in list_studies()}
    assert set(PAPER) <= set(by_name), "probe.reference keeps numbers for a study the catalogue lacks"
    assert all(by_name[name].origin == "paper" for name in PAPER)
