"""The contract every analyzer in probe.analyzers.ANALYZERS keeps.

Bad inputs raise the documented ProbeError subclass with a message naming the analyzer and
the input; inputs are never mutated; a non-contiguous input gives the same answer as a
contiguous one; the same seed gives an identical Dataset; the Dataset survives a netCDF
round trip unchanged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
import xarray as xr
from analyzer_specs import Spec, analyzer_specs, missing_specs
from threadpoolctl import threadpool_limits

import probe.validation
from probe.analyzers import ANALYZERS, get_analyzer
from probe.errors import InputTypeError, InputValueError, ProbeError, UnknownNameError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine is shared: BLAS and torch thread pools fighting over 2 cores run 10-50x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


SPECS = analyzer_specs()
ARRAY_CASES = [(spec_id, name) for spec_id, spec in SPECS.items() for name in spec.arrays]
LABEL_CASES = [(spec_id, name) for spec_id, spec in SPECS.items() for name in spec.labels]
PAIR_CASES = [(spec_id, pair) for spec_id, spec in SPECS.items() for pair in spec.pairs]
SEEDED = [spec_id for spec_id, spec in SPECS.items() if spec.takes("seed")]


def _raises(spec: Spec, error: type[ProbeError], input_name: str, **replace) -> str:
    with pytest.raises(error) as info:
        spec.call(**replace)
    message = str(info.value)
    assert message.startswith(f"{spec.analyzer}: "), message
    assert input_name in message, message
    return message


def test_every_analyzer_has_a_contract_spec():
    assert not missing_specs(), (
        f"{missing_specs()} need a model, so no spec can be derived from their registry Entry: write one in "
        "tests/analyzer_specs.py's _overrides")
    assert {spec.analyzer for spec in SPECS.values()} == set(ANALYZERS)


def test_unknown_analyzer_suggests_the_closest_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'linear_probe'"):
        get_analyzer("linear_prob")


@pytest.mark.parametrize("spec_id", SPECS)
def test_valid_input_gives_labelled_dataset(spec_id):
    spec = SPECS[spec_id]
    ds = spec.call()
    assert isinstance(ds, xr.Dataset) and ds.attrs["analyzer"] == spec.analyzer and ds.data_vars
    for name, variable in ds.data_vars.items():
        assert name == name.lower() and " " not in name
        assert variable.attrs["long_name"] and variable.attrs["units"] in {"nats", "bits", "1"}, name
    for value in ds.attrs.values():
        assert isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool)


@pytest.mark.parametrize("spec_id", SPECS)
def test_same_seed_gives_identical_output_and_inputs_are_not_mutated(spec_id):
    spec = SPECS[spec_id]
    before = {k: v.copy() for k, v in {**spec.arrays, **spec.labels}.items()}
    seed = {"seed": 3} if spec.takes("seed") else {}
    first, second = spec.call(**seed), spec.call(**seed)
    xr.testing.assert_identical(first, second)
    for key, value in {**spec.arrays, **spec.labels}.items():
        np.testing.assert_array_equal(value, before[key])
        assert value.dtype == before[key].dtype


@pytest.mark.parametrize("spec_id", SPECS)
def test_netcdf_round_trip_is_identical(spec_id, tmp_path):
    ds = SPECS[spec_id].call()
    path = tmp_path / f"{spec_id}.nc"
    ds.to_netcdf(path, engine="netcdf4")
    with xr.open_dataset(path, engine="netcdf4") as back:
        xr.testing.assert_identical(ds, back.load())


@pytest.mark.parametrize("spec_id,name", ARRAY_CASES)
def test_non_contiguous_and_float16_inputs_work(spec_id, name):
    spec = SPECS[spec_id]
    reference = spec.call()
    array = spec.arrays[name]
    wide = np.repeat(array, 2, axis=1)  # every column twice: [:, ::2] is a strided view of `array`
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous
    xr.testing.assert_identical(spec.call(**{name: strided}), reference)
    xr.testing.assert_identical(spec.call(**{name: np.asfortranarray(array)}), reference)
    # Documented: float16 (like every real dtype) is upcast to float64 by probe.validation.check_array.
    assert isinstance(spec.call(**{name: array.astype(np.float16)}), xr.Dataset)


BAD_VALUES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], type[ProbeError], str]] = {
    "nan": (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 1, np.nan, a), InputValueError, "NaN"),
    "inf": (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 1, np.inf, a), InputValueError, "infinite"),
    "one_dimensional": (lambda a: a[:, 0].copy(), InputValueError, "1-D"),
    "object_dtype": (lambda a: a.astype(object), InputTypeError, "dtype object"),
    "string_dtype": (lambda a: a.astype(str), InputTypeError, "dtype <U"),
    "complex_dtype": (lambda a: a.astype(complex), InputTypeError, "complex"),
    "none": (lambda a: None, InputTypeError, "None"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
@pytest.mark.parametrize("spec_id,name", ARRAY_CASES)
def test_bad_array_raises_documented_error(spec_id, name, case):
    spec = SPECS[spec_id]
    corrupt, error, fragment = BAD_VALUES[case]
    if case == "none" and spec.optional(name):
        pytest.skip(f"{name} is optional (its default is None)")
    message = _raises(spec, error, name, **{name: corrupt(spec.arrays[name])})
    assert fragment in message


@pytest.mark.parametrize("spec_id,name", ARRAY_CASES)
def test_too_few_samples_raises(spec_id, name):
    spec = SPECS[spec_id]
    minimum = 1 if name.startswith("test_") else spec.min_samples
    too_few = spec.arrays[name][: minimum - 1]
    replace = {name: too_few}
    for group in spec.groups:  # keep partners the same length so the sample-count check is what fires
        if name in group:
            for partner in group:
                replace[partner] = {**spec.arrays, **spec.labels}[partner][: minimum - 1]
    with pytest.raises(InputValueError) as info:
        spec.call(**replace)
    assert f"{spec.analyzer}: " in str(info.value) and "sample(s)" in str(info.value)


@pytest.mark.parametrize("spec_id,name", ARRAY_CASES)
def test_huge_input_is_refused(spec_id, name, monkeypatch):
    spec = SPECS[spec_id]
    limit = max(a.size for a in spec.arrays.values())
    widened = np.tile(spec.arrays[name], (1, limit // spec.arrays[name].size + 1))  # the only input above the limit
    monkeypatch.setattr(probe.validation, "MAX_ELEMENTS", limit)
    assert "elements" in _raises(spec, InputValueError, name, **{name: widened})


@pytest.mark.parametrize("spec_id,pair", PAIR_CASES)
def test_mismatched_lengths_raise(spec_id, pair):
    spec = SPECS[spec_id]
    name = pair[1]
    shorter = {**spec.arrays, **spec.labels}[name][:-1]
    message = _raises(spec, InputValueError, name, **{name: shorter})
    assert "rows" in message or "length" in message


@pytest.mark.parametrize("spec_id,name", LABEL_CASES)
def test_bad_labels_raise(spec_id, name):
    spec = SPECS[spec_id]
    labels = spec.labels[name]
    if not name.startswith("test_"):  # a held-out set may hold a single class; a training set may not
        assert "1 class(es)" in _raises(spec, InputValueError, name, **{name: np.zeros_like(labels)})
    with_nan = labels.astype(float)
    with_nan[0] = np.nan
    _raises(spec, InputValueError, name, **{name: with_nan})
    _raises(spec, InputValueError, name, **{name: labels.reshape(-1, 1)})


@pytest.mark.parametrize("spec_id,name", LABEL_CASES)
def test_string_labels_give_the_same_answer_as_integer_codes(spec_id, name):
    spec = SPECS[spec_id]
    # Train and test labels must share one type, so both are converted together.
    replace = {key: np.array([f"class_{v}" for v in value]) for key, value in spec.labels.items()}
    xr.testing.assert_identical(spec.call(**replace), spec.call())


@pytest.mark.parametrize("spec_id", SEEDED)
def test_bad_seed_raises(spec_id):
    spec = SPECS[spec_id]
    _raises(spec, InputValueError, "seed", seed=-1)
    _raises(spec, InputTypeError, "seed", seed=1.5)


# ----------------------------------------------------------------------------- BLAS threads

def _blas_threads_inside():
    from threadpoolctl import threadpool_info

    from probe.analyzers._common import capped_blas_threads

    return capped_blas_threads(lambda: max(i["num_threads"] for i in threadpool_info()))()


@pytest.mark.parametrize("cores, expected", [(2, 1), (8, 2), (16, 4), (64, 4)])
def test_sklearn_fits_use_a_quarter_of_the_cores_at_most_4(monkeypatch, cores, expected):
    monkeypatch.setattr("probe.devices.cores", lambda: cores)  # the cores this process may use
    with threadpool_limits(64):
        assert _blas_threads_inside() == expected


def test_a_lower_thread_limit_in_force_is_never_raised(monkeypatch):
    monkeypatch.setattr("probe.devices.cores", lambda: 64)
    with threadpool_limits(1):
        assert _blas_threads_inside() == 1


def test_capped_analyzers_keep_their_signature_and_docs():
    import inspect

    from probe import analyzers

    for function in (analyzers.v_information, analyzers.linear_probe):
        assert function.__doc__ and function.__name__ in ("v_information", "linear_probe")
        assert "seed" in inspect.signature(function).parameters


# ----------------------------------------------------------------------------- bootstrap intervals

# spec id -> the variables that get a `<var>_ci` with n_bootstrap > 0: each Entry's `intervals`, held
# to the same contract below (checked on the specs that give every input the entry names).
CI_VARIABLES: dict[str, tuple[str, ...]] = {spec_id: spec.intervals for spec_id, spec in SPECS.items()
                                            if spec.intervals and spec.takes("n_bootstrap")}
N_BOOTSTRAP = 50


@pytest.mark.parametrize("spec_id", CI_VARIABLES)
def test_every_interval_is_labelled_and_holds_its_value(spec_id):
    ds = SPECS[spec_id].call(n_bootstrap=N_BOOTSTRAP)
    expected = {f"{name}_ci" for name in CI_VARIABLES[spec_id]}
    assert {name for name in ds.data_vars if name.endswith("_ci")} == expected
    for name in CI_VARIABLES[spec_id]:
        value, ci = ds[name], ds[f"{name}_ci"]
        assert ci.dims == (*value.dims, "interval") and ci["interval"].values.tolist() == ["lower", "upper"]
        assert np.isfinite(ci.values).all(), name
        lower, upper = ci.sel(interval="lower", drop=True), ci.sel(interval="upper", drop=True)
        assert bool((lower <= value).all()) and bool((value <= upper).all()), (name, ci.values, value.values)
        assert ci.attrs["units"] == value.attrs["units"] and ci.attrs["long_name"]
        assert ci.attrs["level"] == 0.95 and ci.attrs["n_bootstrap"] == N_BOOTSTRAP
        assert ci.attrs["method"].startswith("percentile bootstrap over"), ci.attrs["method"]


@pytest.mark.parametrize("spec_id", CI_VARIABLES)
def test_intervals_survive_netcdf_and_the_same_seed_gives_the_same_interval(spec_id, tmp_path):
    spec = SPECS[spec_id]
    ds = spec.call(n_bootstrap=N_BOOTSTRAP, seed=3)
    xr.testing.assert_identical(ds, spec.call(n_bootstrap=N_BOOTSTRAP, seed=3))
    other = spec.call(n_bootstrap=N_BOOTSTRAP, seed=4)
    assert any(not np.array_equal(ds[f"{name}_ci"].values, other[f"{name}_ci"].values)
               for name in CI_VARIABLES[spec_id])
    ds.to_netcdf(tmp_path / "ci.nc", engine="netcdf4")
    with xr.open_dataset(tmp_path / "ci.nc", engine="netcdf4") as back:
        xr.testing.assert_identical(ds, back.load())


@pytest.mark.parametrize("spec_id", CI_VARIABLES)
def test_no_bootstrap_is_the_default_output_and_a_lower_level_is_narrower(spec_id):
    spec = SPECS[spec_id]
    xr.testing.assert_identical(spec.call(n_bootstrap=0), spec.call())
    wide, narrow = spec.call(n_bootstrap=N_BOOTSTRAP), spec.call(n_bootstrap=N_BOOTSTRAP, ci_level=0.5)
    for name in CI_VARIABLES[spec_id]:
        assert bool((wide[f"{name}_ci"].sel(interval="lower") <= narrow[f"{name}_ci"].sel(interval="lower")).all())
        assert bool((narrow[f"{name}_ci"].sel(interval="upper") <= wide[f"{name}_ci"].sel(interval="upper")).all())


@pytest.mark.parametrize("spec_id", CI_VARIABLES)
def test_bad_n_bootstrap_or_ci_level_raises(spec_id):
    spec = SPECS[spec_id]
    _raises(spec, InputValueError, "n_bootstrap", n_bootstrap=-1)
    _raises(spec, InputTypeError, "n_bootstrap", n_bootstrap=1.5)
    _raises(spec, InputValueError, "ci_level", n_bootstrap=10, ci_level=1.5)
