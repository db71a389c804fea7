"""mi_estimate: known answers (Gaussians, closed form), invariance, candidate choice, verdicts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

from probe.analyzers.mi_estimate import gaussian_copula_mi, mi_estimate, normal_scores
from probe.errors import InputTypeError, InputValueError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine
    yield
    torch.set_num_threads(previous)


def gaussian_pairs(n: int, d: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) noise: I(x; y) = -d/2 ln(1 - rho^2) nats."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y, -d / 2 * math.log(1 - rho**2)


def student_pairs(n: int, d: int, dof: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multivariate Student-t with identity dispersion split d + d: uncorrelated, yet dependent."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2 * d)) / np.sqrt(rng.chisquare(dof, (n, 1)) / dof)
    return z[:, :d], z[:, d:]


def test_two_dimensional_gaussian_is_recovered_with_an_interval_around_it():
    x, y, truth = gaussian_pairs(3000, 1, 0.8, seed=0)  # 0.51 nats
    ds = mi_estimate(x, y)
    lower, upper = ds.mutual_information_ci.sel(interval="lower").item(), ds.mutual_information_ci.sel(
        interval="upper").item()
    assert ds.mutual_information.item() == pytest.approx(truth, abs=0.05)
    assert lower <= ds.mutual_information.item() <= upper and lower < truth < upper + 0.02
    assert ds.reliable.item() == 1 and ds.unreliable_reason.item() == ""
    assert ds.method.item() in ("ksg", "gaussian_copula")
    assert ds.candidate.values.tolist() == ["gaussian_copula", "ksg"]  # one column each: no radial candidate
    assert ds.attrs["ci_method"].startswith("percentile bootstrap")


def test_gaussian_copula_matches_the_closed_form_in_ten_dimensions():
    x, y, truth = gaussian_pairs(4000, 5, 0.6, seed=1)  # 1.12 nats; too many dimensions for KSG at n = 4,000
    ds = mi_estimate(x, y, neural=False)
    assert ds.method.item() == "gaussian_copula" and ds.reliable.item() == 1
    assert ds.mutual_information.item() == pytest.approx(truth, abs=0.05)
    assert "ksg" not in ds.candidate.values  # not run above ksg_max_dims(n)
    assert gaussian_copula_mi(normal_scores(x), normal_scores(y)) == pytest.approx(truth, abs=0.05)


def test_the_wishart_correction_removes_the_bias_of_independent_gaussians():
    rng = np.random.default_rng(2)
    values = [gaussian_copula_mi(rng.standard_normal((500, 10)), rng.standard_normal((500, 10))) for _ in range(20)]
    assert abs(np.mean(values)) < 0.01  # uncorrected: d_x d_y / 2n = 0.1 nats


def test_monotone_maps_of_each_column_change_nothing():
    x, y, _ = gaussian_pairs(1000, 2, 0.7, seed=3)
    plain = mi_estimate(x, y, neural=False)
    warped = mi_estimate(np.exp(x), np.sign(y) * np.abs(y) ** 3 + 5.0, neural=False)
    xr.testing.assert_identical(plain, warped)


def test_student_t_dependence_is_found_by_the_radial_bound_and_refutes_the_gaussian_estimate():
    x, y = student_pairs(4000, 3, 2, seed=4)  # 0.291 nats, all of it in the shared scale
    ds = mi_estimate(x, y, neural=False)
    assert ds.method.item() == "ksg_radial" and ds.reliable.item() == 1
    assert ds.mutual_information.item() == pytest.approx(0.291, rel=0.2)
    gaussian = ds.sel(candidate="gaussian_copula")
    assert gaussian.candidate_reliable.item() == 0 and ds.candidate_is_bound.sel(candidate="ksg_radial").item() == 1
    assert gaussian.candidate_estimate.item() < 0.05


def test_independent_variables_are_never_reported_reliable():
    rng = np.random.default_rng(5)
    ds = mi_estimate(rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2)), neural=False)
    assert ds.reliable.item() == 0 and ds.unreliable_reason.item().startswith("no candidate is reliable")
    assert ds.mutual_information.item() < 0.1


def test_a_tiny_sample_is_flagged_with_its_reason():
    x, y, _ = gaussian_pairs(25, 1, 0.5, seed=6)
    ds = mi_estimate(x, y)
    assert ds.reliable.item() == 0 and ds.unreliable_reason.item() != ""
    assert all(ds.candidate_reason.values[ds.candidate_reliable.values == 0] != "")


def test_no_negative_or_non_finite_value_is_marked_reliable():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((300, 2))
        ds = mi_estimate(x, rng.standard_normal((300, 1)) + 0.05 * x[:, :1], seed=seed, neural=False)
        value = ds.mutual_information.item()
        assert not ds.reliable.item() or (math.isfinite(value) and value > 0)
        for c in ds.candidate.values:
            if ds.candidate_reliable.sel(candidate=c).item():
                assert ds.candidate_estimate.sel(candidate=c).item() >= 0


def test_the_critic_candidate_runs_by_shape_and_is_a_bound():
    x, y, truth = gaussian_pairs(600, 2, 0.8, seed=7)  # 4 dimensions > ksg_max_dims(600) = 3: a critic is trained
    ds = mi_estimate(x, y, critic_steps=60)
    assert "infonce" in ds.candidate.values and ds.candidate_is_bound.sel(candidate="infonce").item() == 1
    assert ds.candidate_estimate.sel(candidate="infonce").item() < truth + 0.15
    assert ds.attrs["critic_steps"] == 60
    assert "infonce" not in mi_estimate(x, y, neural=False).candidate.values


@pytest.mark.slow
def test_with_its_default_critic_a_gaussian_in_ten_dimensions_is_recovered():
    x, y, truth = gaussian_pairs(5000, 5, 0.6, seed=10)
    ds = mi_estimate(x, y)
    assert ds.reliable.item() == 1 and ds.mutual_information.item() == pytest.approx(truth, abs=0.06)
    assert ds.candidate_reliable.sel(candidate="infonce").item() in (0, 1)
    assert ds.candidate_estimate.sel(candidate="infonce").item() < truth + 0.1


def test_same_seed_same_dataset_and_it_survives_netcdf(tmp_path):
    x, y, _ = gaussian_pairs(600, 2, 0.6, seed=8)
    before = x.copy()
    first, again = mi_estimate(x, y, seed=2, neural=False), mi_estimate(x, y, seed=2, neural=False)
    xr.testing.assert_identical(first, again)
    np.testing.assert_array_equal(x, before)
    path = tmp_path / "mi.nc"
    first.to_netcdf(path, engine="netcdf4")
    with xr.open_dataset(path, engine="netcdf4") as back:
        xr.testing.assert_identical(first, back.load())
    other = mi_estimate(x, y, seed=3, neural=False).mutual_information_ci.values
    assert other.tolist() != first.mutual_information_ci.values.tolist()


def test_errors_name_the_input_the_problem_and_the_fix():
    x, y, _ = gaussian_pairs(100, 2, 0.5, seed=9)
    with pytest.raises(InputValueError, match="mi_estimate: every column of y is constant"):
        mi_estimate(x, np.ones((100, 2)))
    with pytest.raises(InputValueError, match="mi_estimate: x has 10 sample"):
        mi_estimate(x[:10], y[:10])
    with pytest.raises(InputValueError, match="k is 60 for n = 100 rows; k < n / 2"):
        mi_estimate(x, y, k=60)
    with pytest.raises(InputTypeError, match="neural is 'yes'"):
        mi_estimate(x, y, neural="yes")
    with pytest.raises(InputValueError, match="n_bootstrap is 0"):
        mi_estimate(x, y, n_bootstrap=0)
    with pytest.raises(InputValueError, match="x has 100 rows but y has 99"):
        mi_estimate(x, y[:99])
    with pytest.raises(InputValueError, match="NaN"):
        mi_estimate(np.where(x > 2, np.nan, x), y)
