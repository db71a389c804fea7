"""The shared percentile bootstrap: coverage and width against the normal closed form, seeding,
order-statistic bounds, input errors, and the netCDF-safe `<var>_ci` variable."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from probe.analyzers._bootstrap import (
    CI_METHOD,
    bootstrap_ci,
    bootstrap_replicates,
    check_ci_level,
    check_n_bootstrap,
    ci_variable,
)
from probe.errors import InputTypeError, InputValueError


def test_interval_of_a_normal_mean_covers_about_95_percent_with_the_closed_form_width():
    # Mean of n N(0, 1) samples: the 95% interval is about mean +- 1.96 / sqrt(n).
    n, draws = 100, 200
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for draw in range(draws):
        x = rng.standard_normal(n)
        lower, upper = bootstrap_ci(lambda rows, x=x: x[rows].mean(), n, n_bootstrap=400, seed=draw)
        covered += lower <= 0.0 <= upper
        widths.append(upper - lower)
    assert 0.90 <= covered / draws <= 0.99
    assert np.mean(widths) == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.08)


def test_level_sets_the_width():
    x = np.random.default_rng(1).standard_normal(400)
    narrow = bootstrap_ci(lambda rows: x[rows].mean(), x.size, n_bootstrap=2000, seed=0, level=0.5)
    wide = bootstrap_ci(lambda rows: x[rows].mean(), x.size, n_bootstrap=2000, seed=0, level=0.95)
    # Normal quantiles: z_0.75 / z_0.975 = 0.674 / 1.960.
    assert (narrow[1] - narrow[0]) / (wide[1] - wide[0]) == pytest.approx(0.674 / 1.960, rel=0.1)


def test_same_seed_same_interval_and_another_seed_another():
    x = np.random.default_rng(2).standard_normal(50)
    first = bootstrap_ci(lambda rows: x[rows].mean(), x.size, n_bootstrap=100, seed=7)
    assert bootstrap_ci(lambda rows: x[rows].mean(), x.size, n_bootstrap=100, seed=7) == first
    assert bootstrap_ci(lambda rows: x[rows].mean(), x.size, n_bootstrap=100, seed=8) != first


def test_rows_are_drawn_with_replacement_over_the_given_range():
    seen = []
    bootstrap_replicates(lambda rows: seen.append(rows.copy()) or 0.0, 30, n_bootstrap=20, seed=0)
    rows = np.concatenate(seen)
    assert len(seen) == 20 and all(r.shape == (30,) for r in seen)
    assert rows.min() >= 0 and rows.max() <= 29
    assert any(np.unique(r).size < 30 for r in seen)  # repeats occur


def test_bounds_are_order_statistics_of_the_replicates():
    x = np.arange(10.0)
    reps = bootstrap_replicates(lambda rows: x[rows].mean(), 10, n_bootstrap=41, seed=3)
    lower, upper = bootstrap_ci(lambda rows: x[rows].mean(), 10, n_bootstrap=41, seed=3, level=0.9)
    ordered = np.sort(reps)
    assert lower == ordered[2] and upper == ordered[38]  # floor(0.05 * 40), ceil(0.95 * 40)


def test_vector_statistic_gives_elementwise_bounds():
    x = np.random.default_rng(4).standard_normal((80, 3)) + np.array([0.0, 5.0, -5.0])
    lower, upper = bootstrap_ci(lambda rows: x[rows].mean(axis=0), 80, n_bootstrap=300, seed=0)
    assert lower.shape == upper.shape == (3,)
    assert np.all(lower <= x.mean(axis=0)) and np.all(x.mean(axis=0) <= upper)
    for j in range(3):
        single = bootstrap_ci(lambda rows, j=j: x[rows, j].mean(), 80, n_bootstrap=300, seed=0)
        assert single == pytest.approx((lower[j], upper[j]), rel=1e-12)


def test_infinite_replicates_give_infinite_bounds_not_nan():
    x = np.array([1.0, 2.0, np.inf])
    lower, upper = bootstrap_ci(lambda rows: x[rows].max(), 3, n_bootstrap=200, seed=0)
    assert np.isfinite(lower) and upper == np.inf


def test_nan_statistic_is_an_error():
    x = np.array([1.0, np.nan, 2.0])
    with pytest.raises(InputValueError, match="NaN on .* resamples"):
        bootstrap_ci(lambda rows: x[rows].mean(), 3, n_bootstrap=50, seed=0)


@pytest.mark.parametrize("value, error, fragment", [
    (-1, InputValueError, "n_bootstrap is -1; a value >= 0"),
    (1.5, InputTypeError, "must be an integer, got float"),
    (True, InputTypeError, "got bool"),
    ("100", InputTypeError, "got str"),
])
def test_bad_n_bootstrap_is_refused_with_the_caller_named(value, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        check_n_bootstrap(value, "some_analyzer")
    assert str(info.value).startswith("some_analyzer: ")


def test_n_bootstrap_zero_and_numpy_ints_are_accepted():
    assert check_n_bootstrap(0, "x") == 0 and check_n_bootstrap(np.int64(5), "x") == 5


@pytest.mark.parametrize("value, error", [(0.0, InputValueError), (1.0, InputValueError),
                                          (95, InputValueError), ("0.95", InputTypeError)])
def test_bad_ci_level_is_refused(value, error):
    with pytest.raises(error, match="^geometry: ci_level"):
        check_ci_level(value, "geometry")


def test_empty_rows_or_no_resamples_are_refused():
    with pytest.raises(InputValueError, match="n_rows is 0"):
        bootstrap_ci(lambda rows: 0.0, 0, n_bootstrap=10, seed=0)
    with pytest.raises(InputValueError, match="n_bootstrap is 0"):
        bootstrap_ci(lambda rows: 0.0, 5, n_bootstrap=0, seed=0)


def test_ci_variable_is_labelled_and_survives_netcdf(tmp_path):
    scalar = ci_variable(0.1, 0.3, "probe accuracy", "1", level=0.95, n_bootstrap=200)
    assert scalar.dims == ("interval",) and list(scalar["interval"].values) == ["lower", "upper"]
    assert scalar.attrs == {"long_name": "95% confidence interval of the probe accuracy", "units": "1",
                            "level": 0.95, "n_bootstrap": 200, "method": CI_METHOD}
    vector = ci_variable([0.0, 0.1], [0.2, 0.3], "violation fraction", "1", level=0.9, n_bootstrap=50,
                         dims="alpha", coords={"alpha": np.array([0.0, 0.5])})
    assert vector.dims == ("alpha", "interval") and vector.sel(interval="upper").values.tolist() == [0.2, 0.3]
    ds = xr.Dataset({"accuracy_ci": scalar, "violation_fraction_ci": vector})
    ds.to_netcdf(tmp_path / "ci.nc", engine="netcdf4")
    with xr.open_dataset(tmp_path / "ci.nc", engine="netcdf4") as back:
        xr.testing.assert_identical(ds, back.load())


def test_ci_variable_refuses_dims_that_do_not_match():
    with pytest.raises(InputValueError, match="^ci_variable: lower has shape"):
        ci_variable([0.0, 0.1], [0.2, 0.3], "x", "1", level=0.95, n_bootstrap=10)


def test_estimate_recentres_the_replicates_on_it_and_keeps_their_spread():
    # The max of n rows is biased low on redrawn rows; recentred, the interval holds the max.
    x = np.random.default_rng(5).standard_normal(50)
    plain = bootstrap_ci(lambda rows: x[rows].max(), 50, n_bootstrap=200, seed=0)
    reps = bootstrap_replicates(lambda rows: x[rows].max(), 50, n_bootstrap=200, seed=0)
    lower, upper = bootstrap_ci(lambda rows: x[rows].max(), 50, n_bootstrap=200, seed=0, estimate=x.max())
    shift = x.max() - np.median(reps)
    assert (lower, upper) == pytest.approx((plain[0] + shift, plain[1] + shift), rel=1e-12)
    assert lower <= x.max() <= upper


def test_recentring_an_infinite_median_leaves_the_replicates_alone():
    x = np.array([np.inf, np.inf, 1.0])
    assert bootstrap_ci(lambda rows: x[rows].max(), 3, n_bootstrap=50, seed=0, estimate=np.inf) == \
        bootstrap_ci(lambda rows: x[rows].max(), 3, n_bootstrap=50, seed=0)


def test_ci_variable_method_names_what_was_redrawn():
    ci = ci_variable(0.0, 1.0, "x", "1", level=0.9, n_bootstrap=5, resampled="anchor rows", recentred=True)
    assert ci.attrs["method"] == "percentile bootstrap over anchor rows, replicates recentred on the estimate"
    assert ci.attrs["long_name"] == "90% confidence interval of the x"
