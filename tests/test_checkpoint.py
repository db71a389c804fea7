"""Mid-cell checkpoints and determinism: a cell killed twice and resumed twice gives exactly the
numbers of an uninterrupted run; a checkpoint of other settings is never loaded; every random
stream of a cell is recorded in its attrs."""
import dataclasses
import json
import warnings

import pytest
import torch
import xarray as xr

import studies.invertible_encoders as invertible
from probe.errors import InputValueError
from probe.results import load_dataset
from probe.runner import run_study
from probe.training import TrainConfig, _stream_seed
from probe.training.checkpoint import TrainingCheckpoint, checkpointing
from studies import find_study

STUDY = find_study("invertible-encoders")
ONE_CELL = {"estimators": "nwj"}  # 1 cell of the smoke preset: 20 steps, evaluated at 0, 10, 20


class Killed(Exception):
    """Stands in for kill -9: the cell stops mid-training, nothing after the checkpoint is saved."""


def numeric(ds: xr.Dataset) -> xr.Dataset:
    names = [n for n, v in ds.data_vars.items() if v.dtype.kind in "fiu" and n != "wall_time"]
    return ds[names].drop_attrs(deep=False)


def killed_at(step: int) -> invertible.Study:
    def run_cell(settings, ids, seed, data, device, on_step=None):
        def hook(s, last):
            if s == step:
                raise Killed(f"killed at step {s}")
            if on_step is not None:
                on_step(s, last)
        return invertible.run_cell(settings, ids, seed, data, device, hook)

    return dataclasses.replace(STUDY, run_cell=run_cell)


def run(study=STUDY, **kwargs):
    logs = []
    path = run_study(study, "smoke", progress=False, set_values=ONE_CELL, log=logs.append, **kwargs)
    return path, logs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path, _ = run(out=tmp_path_factory.mktemp("whole"), checkpoint_every=5)
    return path, load_dataset(path)


def test_killed_twice_resumes_to_identical_numbers(uninterrupted, tmp_path):
    _, whole = uninterrupted
    with pytest.raises(Killed):
        run(killed_at(7), out=tmp_path, checkpoint_every=5)      # last checkpoint: step 5
    ckpt = next(tmp_path.rglob("*.ckpt.pt"))
    assert torch.load(ckpt, weights_only=True)["step"] == 5
    with pytest.raises(Killed):
        run(killed_at(17), out=tmp_path, checkpoint_every=5)     # resumes at 5, last checkpoint: 15
    assert torch.load(ckpt, weights_only=True)["step"] == 15
    path, logs = run(out=tmp_path, checkpoint_every=5)
    assert "0 already done, 1 resuming mid-cell" in logs[0]
    assert not ckpt.exists(), "the checkpoint is deleted once the cell's file is written"
    cell = load_dataset(next((path.parent / "cells").glob("*.nc")))
    assert cell.attrs["resumed_from_step"] == 15
    xr.testing.assert_identical(numeric(load_dataset(path)), numeric(whole))
    # Rerunning a finished run skips its cell.
    _, logs = run(out=tmp_path, checkpoint_every=5)
    assert "1 already done" in logs[0]


def test_checkpoint_of_other_settings_is_never_loaded(tmp_path):
    with pytest.raises(Killed):
        run(killed_at(12), out=tmp_path / "a", checkpoint_every=5)
    ckpt = next((tmp_path / "a").rglob("*.ckpt.pt"))
    # The same cell under another setting lives in another folder; plant the checkpoint there.
    path, _ = run(out=tmp_path / "b", steps=10, checkpoint_every=0)
    other = path.parent / "cells" / ckpt.name
    (path.parent / "cells" / ckpt.name.replace(".ckpt.pt", ".nc")).unlink()
    other.write_bytes(ckpt.read_bytes())
    with pytest.warns(UserWarning, match="written for another run"):
        path, logs = run(out=tmp_path / "b", steps=10, checkpoint_every=5)
    cell = load_dataset(next((path.parent / "cells").glob("*.nc")))
    assert cell.attrs["resumed_from_step"] == 0 and not other.exists()


def test_checkpoint_keys_calls_and_intervals(tmp_path):
    path = tmp_path / "c.ckpt.pt"
    with checkpointing(path, "run-a/cell.nc", every=5):
        first = TrainingCheckpoint.open("config", 1000)
        assert first.every == 5 and first.due(10, 20) and not first.due(20, 20) and not first.due(7, 20)
        first.save({"step": 10})
        later = TrainingCheckpoint.open("config", 1000)   # the cell's second training call
        later.save({"step": 3})
    with checkpointing(path, "run-a/cell.nc"):
        again = TrainingCheckpoint.open("config", 1000)   # the rerun's first call: call 1 owns the file
        assert again.every == 1000 and again.load() is None and not again.writable
        assert TrainingCheckpoint.open("config", 1000).load()["step"] == 3
    with checkpointing(path, "run-a/cell.nc"), pytest.warns(UserWarning, match="another training configuration"):
        TrainingCheckpoint.open("config", 1000)
        assert TrainingCheckpoint.open("other config", 1000).load() is None
    with checkpointing(path, "run-b/cell.nc"), pytest.warns(UserWarning, match="written for another run"):
        assert TrainingCheckpoint.open("config", 1000).load() is None
    with checkpointing(path, "run-a/cell.nc", every=0):
        assert TrainingCheckpoint.open("config", 1000) is None  # --checkpoint-every 0: none
    assert TrainingCheckpoint.open("config", 1000) is None      # outside the study runner
    path.write_bytes(b"not a checkpoint")
    with checkpointing(path, "run-a/cell.nc"), pytest.warns(UserWarning, match="unreadable"):
        assert TrainingCheckpoint.open("config", 1000).load() is None
    with pytest.raises(InputValueError, match="checkpoint_every is 0"):
        TrainConfig(estimator="nwj", steps=3, checkpoint_every=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with checkpointing(tmp_path / "none.pt", "run-a/cell.nc"):
            assert TrainingCheckpoint.open("config", 1000).load() is None


def test_same_seed_same_numbers_and_recorded_streams(uninterrupted, tmp_path):
    path, whole = uninterrupted
    again, _ = run(out=tmp_path)  # default checkpoint interval (none reached in 20 steps)
    xr.testing.assert_identical(numeric(load_dataset(again)), numeric(whole))
    cell = load_dataset(next((path.parent / "cells").glob("*.nc")))
    for stream in ("init", "batches", "train-noise", "eval-noise", "eval-train-batches"):
        assert cell.attrs[f"seed_{stream.replace('-', '_')}"] == _stream_seed(0, stream), stream
    assert cell.attrs["seed_probe"] == 0 and cell.attrs["seed_triplets"] == 0
    assert json.loads(whole.attrs["stream_seeds_json"])["0"]["init"] == _stream_seed(0, "init")
