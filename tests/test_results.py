"""Results: cells assemble into one labelled Dataset; netCDF round trip is identical; writes are atomic."""
import numpy as np
import pytest
import xarray as xr

from probe.errors import DataFormatError, DataUnavailableError
from probe.results import cell_dataset, combine_cells, load_dataset, save_dataset
from probe.training import CellResult


def fake_cell(estimator: str, seed: int, status: str = "ok") -> xr.Dataset:
    steps = np.array([0, 10, 20])
    result = CellResult(steps=steps, status=status)
    result.variables["bound_test"] = (("step",), np.array([-1.0, 2.0, 3.0]) + seed)
    result.variables["probe_accuracy"] = (("step",), np.array([0.8, 0.85, 0.9]))
    result.coords["quantile"] = np.array([0.0, 0.5, 1.0])
    result.variables["log_condition_number"] = (("step", "quantile"), np.arange(9.0).reshape(3, 3))
    return cell_dataset(result, {"estimator": estimator, "seed": seed})


def test_cells_combine_with_named_dims_and_units():
    ds = combine_cells([fake_cell(e, s) for e in ("infonce", "nwj") for s in (0, 1)])
    assert ds["bound_test"].dims == ("estimator", "seed", "step")
    assert list(ds["estimator"].values) == ["infonce", "nwj"]
    assert ds["bound_test"].sel(estimator="nwj", seed=1, step=20) == 4.0
    assert ds["bound_test"].attrs == {"long_name": "MI bound on held-out pairs", "units": "nats"}
    assert ds["status"].dims == ("estimator", "seed")


def test_netcdf_round_trip_is_identical(tmp_path):
    ds = combine_cells([fake_cell(e, s, "ok" if s else "non-finite loss at step 3") for e in ("infonce", "nwj")
                        for s in (0, 1)])
    ds.attrs.update(study="invertible-encoders", total_wall_time=1.5, seeds="0,1")
    path = save_dataset(ds, tmp_path / "results.nc")
    xr.testing.assert_identical(load_dataset(path), ds)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    ds = combine_cells([fake_cell("infonce", 0)])

    def crash(self, *args, **kwargs):
        open(args[0], "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(ds, tmp_path / "results.nc")
    assert list(tmp_path.iterdir()) == []


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataUnavailableError, match="No results file"):
        load_dataset(tmp_path / "missing.nc")
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not netcdf at all")
    with pytest.raises(DataFormatError, match="bad.nc"):
        load_dataset(bad)
    path = save_dataset(combine_cells([fake_cell("nwj", 0)]), tmp_path / "ok.nc")
    with pytest.raises(DataFormatError, match="missing variable"):
        load_dataset(path, required=("bound_train",))
