"""mi_bounds and ksg_mi on correlated Gaussians, whose MI has a closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probe.analyzers import ksg_mi, mi_bounds
from probe.errors import InputValueError, UnknownNameError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: thread pools fighting slow tests 10-50x
    yield
    torch.set_num_threads(previous)


def gaussian_pairs(n: int, d: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) noise: I(x; y) = -d/2 ln(1 - rho^2) nats."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y, -d / 2 * math.log(1 - rho**2)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ksg_is_within_a_tenth_of_a_nat_for_two_dimensions(rho):
    x, y, truth = gaussian_pairs(2000, 2, rho, seed=0)
    ds = ksg_mi(x, y)
    assert ds.mutual_information.item() == pytest.approx(truth, abs=0.1)
    assert ds.mutual_information_bits.item() == pytest.approx(ds.mutual_information.item() / math.log(2))


def test_ksg_of_independent_variables_is_about_zero():
    x, y, _ = gaussian_pairs(2000, 2, 0.0, seed=1)
    assert abs(ksg_mi(x, y).mutual_information.item()) < 0.05


def test_ksg_ignores_scaling_and_ties_from_repeated_values():
    x, y, truth = gaussian_pairs(2000, 1, 0.8, seed=2)
    scaled = ksg_mi(1e4 * x, y).mutual_information.item()
    assert scaled == pytest.approx(ksg_mi(x, y).mutual_information.item(), abs=1e-6)
    rounded = ksg_mi(np.round(x, 1), np.round(y, 1)).mutual_information.item()  # many exact ties
    assert rounded == pytest.approx(truth, abs=0.15)


def test_ksg_refuses_high_dimensions_with_a_hint():
    x = np.random.default_rng(3).standard_normal((100, 392))
    with pytest.raises(InputValueError, match=r"392 \+ 392 = 784 dimensions .* use mi_bounds"):
        ksg_mi(x, x)
    assert np.isfinite(ksg_mi(x[:, :15], x[:, 15:30], max_dims=30).mutual_information.item())
    with pytest.raises(InputValueError, match="k is 100 but there are only 100 samples"):
        ksg_mi(x[:, :1], x[:, 1:2], k=100)


def test_infonce_is_near_the_truth_when_the_truth_is_far_below_log_k():
    x, y, truth = gaussian_pairs(4000, 2, 0.5, seed=4)  # 0.29 nats << log 64 = 4.16
    ds = mi_bounds(x, y, estimators=["infonce"], steps=300, lr=1e-2, batch_size=64)
    bound = ds.bound.sel(estimator="infonce").item()
    noise = 2 * ds.bound_std.sel(estimator="infonce").item() / math.sqrt(ds.attrs["n_eval_batches"])
    assert bound <= truth + noise + 0.02
    assert bound == pytest.approx(truth, abs=0.08)


def test_infonce_never_exceeds_log_batch_size():
    x, y, truth = gaussian_pairs(2000, 5, 0.999, seed=5)  # 15.5 nats >> log 16 = 2.77
    ds = mi_bounds(x, y, estimators=["infonce"], steps=200, lr=1e-2, batch_size=16)
    cap = ds.infonce_cap.item()
    assert cap == pytest.approx(math.log(16)) and ds.attrs["batch_size"] == 16 and truth > cap
    assert ds.bound.item() <= cap and ds.train_bound.item() <= cap
    assert ds.bound.item() > 0.5 * cap  # far from zero: the cap, not the critic, binds


def test_one_critic_per_estimator_with_a_training_curve():
    x, y, _ = gaussian_pairs(600, 2, 0.7, seed=6)
    ds = mi_bounds(x, y, estimators=("infonce", "nwj", "js"), critic="separable", steps=40, batch_size=32)
    assert ds["estimator"].values.tolist() == ["infonce", "nwj", "js"]
    assert ds.train_objective.dims == ("estimator", "step") and ds["step"].values[-1] == 40
    assert ds.sizes["step"] == 20 and ds.diverged.values.tolist() == [0, 0, 0]
    assert ds.attrs["n_test"] == 120 and ds.attrs["n_eval_batches"] == 3


def test_parameter_free_critic_is_evaluated_without_training():
    x, y, _ = gaussian_pairs(300, 3, 0.9, seed=7)
    ds = mi_bounds(x, y, estimators=["infonce"], critic="inner_product", steps=5, batch_size=20)
    assert 0 < ds.bound.item() <= math.log(20)


def test_errors_name_the_problem():
    x, y, _ = gaussian_pairs(100, 2, 0.5, seed=8)
    with pytest.raises(UnknownNameError, match="Did you mean 'infonce'"):
        mi_bounds(x, y, estimators=["infoNCE"])
    with pytest.raises(UnknownNameError, match="Unknown critic"):
        mi_bounds(x, y, critic="bilinar")
    with pytest.raises(InputValueError, match="training split has 80 pair.* at least batch_size=128"):
        mi_bounds(x, y)
    with pytest.raises(InputValueError, match="held-out split has 20 pair.* at least batch_size=32"):
        mi_bounds(x, y, batch_size=32)
    with pytest.raises(InputValueError, match="lists a name twice"):
        mi_bounds(x, y, estimators=["nwj", "nwj"], batch_size=8)
    with pytest.raises(InputValueError, match="test_fraction is 1.5"):
        mi_bounds(x, y, test_fraction=1.5)


def test_a_diverging_critic_is_flagged_not_hidden():
    x, _, _ = gaussian_pairs(400, 30, 0.0, seed=9)
    y = x + 0.05 * np.random.default_rng(10).standard_normal(x.shape)
    ds = mi_bounds(x, y, estimators=["nwj", "infonce"], steps=30, lr=1.0, batch_size=32)
    assert ds.diverged.values.tolist() == [1, 0]
    assert ds.steps_completed.values.tolist()[1] == 30 and ds.steps_completed.values[0] < 30
    assert not np.isnan(ds.bound.values).any() and not np.isnan(ds.bound_std.values).any()
    assert np.isnan(ds.train_objective.sel(estimator="nwj").values[-1])  # after the divergence: no objective
