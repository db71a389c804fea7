"""mi_bounds on correlated Gaussians, whose MI has a closed form: values, the three-way split,
validation-selected critics and the reliability verdicts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probe.analyzers import mi_bounds
from probe.analyzers._reliability import bound_verdict
from probe.analyzers.bounds import default_settings, three_way_split
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


def test_infonce_is_near_the_truth_when_the_truth_is_far_below_log_k():
    x, y, truth = gaussian_pairs(4000, 2, 0.5, seed=4)  # 0.29 nats << log 64 = 4.16
    ds = mi_bounds(x, y, estimators=["infonce"], critic="bilinear", steps=300, lr=1e-2, batch_size=64)
    bound = ds.bound.sel(estimator="infonce").item()
    noise = 2 * ds.bound_std.sel(estimator="infonce").item() / math.sqrt(ds.attrs["n_eval_batches"])
    assert bound <= truth + noise + 0.02
    assert bound == pytest.approx(truth, abs=0.08)


def test_infonce_never_exceeds_log_batch_size():
    x, y, truth = gaussian_pairs(2000, 40, 0.999, seed=5)  # 124 nats >> log 16 = 2.77
    ds = mi_bounds(x, y, estimators=["infonce"], critic="bilinear", steps=200, lr=1e-2, batch_size=16)
    cap = ds.infonce_cap.item()
    assert cap == pytest.approx(math.log(16)) and ds.attrs["batch_size"] == 16 and truth > cap
    assert ds.bound.item() <= cap and ds.train_bound.item() <= cap
    assert ds.bound.item() > cap - 0.1  # the cap, not the critic, binds ...
    assert ds.reliable.item() == 0 and "InfoNCE within 0.1 nats of its cap ln K = 2.773" in ds.unreliable_reason.item()


def test_one_critic_per_estimator_with_a_training_curve():
    x, y, _ = gaussian_pairs(600, 2, 0.7, seed=6)
    ds = mi_bounds(x, y, estimators=("infonce", "nwj", "js"), critic="separable", hidden=16, steps=40, batch_size=32,
                   patience=100)
    assert ds["estimator"].values.tolist() == ["infonce", "nwj", "js"]
    assert ds.train_objective.dims == ("estimator", "step") and ds["step"].values[-1] == 40
    assert ds.sizes["step"] == 20 and ds.diverged.values.tolist() == [0, 0, 0]
    assert ds.steps_completed.values.tolist() == [40, 40, 40]
    assert ds.attrs["n_test"] == 120 and ds.attrs["n_validation"] == 120 and ds.attrs["n_eval_batches"] == 3


def test_parameter_free_critic_is_evaluated_without_training():
    x, y, _ = gaussian_pairs(300, 3, 0.9, seed=7)
    ds = mi_bounds(x, y, estimators=["infonce"], critic="inner_product", steps=5, batch_size=20)
    assert 0 < ds.bound.item() <= math.log(20)
    assert ds.best_step.item() == 0 and ds.steps_completed.item() == 0


def test_errors_name_the_problem():
    x, y, _ = gaussian_pairs(100, 2, 0.5, seed=8)
    with pytest.raises(UnknownNameError, match="Did you mean 'infonce'"):
        mi_bounds(x, y, estimators=["infoNCE"])
    with pytest.raises(UnknownNameError, match="Unknown critic"):
        mi_bounds(x, y, critic="bilinar")
    with pytest.raises(InputValueError, match="training split has 60 pair.* at least batch_size=128"):
        mi_bounds(x, y, batch_size=128)
    with pytest.raises(InputValueError, match="validation split has 20 pair.* at least batch_size=32"):
        mi_bounds(x, y, batch_size=32)
    with pytest.raises(InputValueError, match="sum to 1; they must leave training rows"):
        mi_bounds(x, y, test_fraction=0.5, validation_fraction=0.5)
    with pytest.raises(InputValueError, match="hidden=16 was given for the 'bilinear' critic"):
        mi_bounds(x, y, critic="bilinear", hidden=16)
    with pytest.raises(InputValueError, match="lists a name twice"):
        mi_bounds(x, y, estimators=["nwj", "nwj"], batch_size=8)
    with pytest.raises(InputValueError, match="test_fraction is 1.5"):
        mi_bounds(x, y, test_fraction=1.5)


def test_a_diverging_critic_is_flagged_not_hidden():
    x, _, _ = gaussian_pairs(400, 30, 0.0, seed=9)
    y = x + 0.05 * np.random.default_rng(10).standard_normal(x.shape)
    ds = mi_bounds(x, y, estimators=["nwj", "infonce"], critic="bilinear", steps=30, lr=1.0, batch_size=32,
                   patience=100)
    assert ds.diverged.values.tolist() == [1, 0]
    assert ds.steps_completed.values.tolist()[1] == 30 and ds.steps_completed.values[0] < 30
    assert not np.isnan(ds.bound.values).any() and not np.isnan(ds.bound_std.values).any()
    assert np.isnan(ds.train_objective.sel(estimator="nwj").values[-1])  # after the divergence: no objective
    assert ds.reliable.sel(estimator="nwj").item() == 0
    assert ds.unreliable_reason.sel(estimator="nwj").item().startswith("diverged")


def test_validation_and_test_rows_are_disjoint_and_cover_the_data():
    tr, va, te = three_way_split(1000, 0.2, 0.15, seed=11)
    assert (tr.size, va.size, te.size) == (650, 150, 200)
    assert not set(tr) & set(va) and not set(tr) & set(te) and not set(va) & set(te)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(1000))
    x, y, _ = gaussian_pairs(400, 2, 0.6, seed=12)
    ds = mi_bounds(x, y, estimators=["infonce"], critic="bilinear", steps=20, batch_size=16, test_fraction=0.25,
                   validation_fraction=0.2, seed=13)
    tr, va, te = three_way_split(400, 0.25, 0.2, seed=13)
    np.testing.assert_array_equal(np.flatnonzero(ds.split.values == 1), va)  # selection rows ...
    np.testing.assert_array_equal(np.flatnonzero(ds.split.values == 2), te)  # ... are never reported rows
    assert (ds.split.values == 0).sum() == ds.attrs["n_train"] == tr.size


def _padded_with_noise(n_noise: int) -> tuple[np.ndarray, np.ndarray]:
    """One informative pair (rho 0.9, 0.83 nats) beside n_noise independent columns per view, 600 rows."""
    rng = np.random.default_rng(14)
    x, y, _ = gaussian_pairs(600, 1, 0.9, seed=15)
    return np.hstack([x, rng.standard_normal((600, n_noise))]), np.hstack([y, rng.standard_normal((600, n_noise))])


def test_the_reported_critic_is_the_best_on_validation_and_training_stops_early():
    kwargs = {"estimators": ["infonce"], "hidden": 64, "steps": 400, "batch_size": 32, "lr": 3e-3, "eval_every": 10,
              "patience": 5}
    ds = mi_bounds(*_padded_with_noise(3), **kwargs)  # 360 training rows: a 64-unit critic overfits fast
    best, done = ds.best_step.item(), ds.steps_completed.item()
    assert 0 < best < done < 400 and done - best == 50  # five checks of 10 steps without improvement
    assert ds.validation_bound.item() > 0.2 and ds.reliable.item() == 1
    noisier = mi_bounds(*_padded_with_noise(10), **kwargs)  # the best critic still fits noise
    assert noisier.reliable.item() == 0 and noisier.unreliable_reason.item().startswith("train/test gap 0.")


def test_same_seed_same_output_other_seed_other_split():
    x, y, _ = gaussian_pairs(500, 2, 0.7, seed=16)
    kwargs = {"estimators": ["infonce", "nwj"], "hidden": 8, "steps": 30, "batch_size": 32}
    first, again, other = mi_bounds(x, y, seed=4, **kwargs), mi_bounds(x, y, seed=4, **kwargs), mi_bounds(
        x, y, seed=5, **kwargs)
    assert first.identical(again)
    assert not np.array_equal(first.split.values, other.split.values)
    assert not np.array_equal(first.bound.values, other.bound.values)


def test_default_settings_follow_the_data_shape():
    big, small = default_settings(3000, 1000, 25, 25), default_settings(60, 20, 1, 1)
    assert big["batch_size"] == 128 and big["hidden"] == 128 and 1000 <= big["steps"] <= 6000
    assert small["batch_size"] == 8 and small["hidden"] == 64 and small["steps"] == 1000
    ds = mi_bounds(*gaussian_pairs(200, 1, 0.5, seed=17)[:2], estimators=["infonce"], steps=10)
    assert ds.attrs["batch_size"] == 8 and ds.attrs["hidden"] == 64  # 40 held-out rows: batches of 8


def test_a_tiny_sample_is_flagged_unreliable_and_a_large_one_is_not():
    x, y, truth = gaussian_pairs(3000, 1, 0.6, seed=18)
    kwargs = {"estimators": ["infonce"], "critic": "bilinear", "steps": 200, "lr": 1e-2}
    large = mi_bounds(x, y, batch_size=64, **kwargs)
    assert large.reliable.item() == 1 and large.unreliable_reason.item() == ""
    assert large.bound.item() == pytest.approx(truth, abs=0.06)
    tiny = mi_bounds(x[:60], y[:60], batch_size=4, **kwargs)  # 3 test batches of 4 pairs
    assert tiny.reliable.item() == 0 and tiny.unreliable_reason.item() != ""


@pytest.mark.parametrize("case, expected", [
    ({"bound": math.inf, "nonfinite": 1}, "non-finite: 1 of 8"),
    ({"diverged": 1}, "diverged"),
    ({"bound": -0.4}, "negative held-out bound (-0.4 nats)"),
    ({"bound": 4.80, "train_bound": 4.80}, "InfoNCE within 0.1 nats of its cap ln K = 4.852"),
    ({"train_bound": 2.8}, "train/test gap 1.80 nats"),
    ({"spread": 2.0}, "standard error 0.707 nats over 25% of the bound"),
    ({"n_batches": 1}, "one test batch"),
    ({}, ""),
])
def test_bound_verdict_names_each_failure(case, expected):
    values = {"bound": 1.0, "spread": 0.1, "n_batches": 8, "nonfinite": 0, "train_bound": 1.1, "diverged": 0,
              "cap": math.log(128), **case}
    reason = bound_verdict("infonce", **values)
    assert reason.startswith(expected) if expected else reason == ""
    if not case:  # the cap is InfoNCE's alone
        assert bound_verdict("nwj", **{**values, "bound": 4.8, "train_bound": 4.8}) == ""


@pytest.mark.slow
def test_default_settings_recover_a_gaussian_mi():
    x, y, truth = gaussian_pairs(5000, 2, 0.8, seed=19)  # 1.02 nats
    ds = mi_bounds(x, y)
    assert ds.reliable.values.tolist() == [1, 1]
    assert np.all(np.abs(ds.bound.values - truth) < 0.12) and np.all(ds.bound.values < truth + 0.05)


def test_batches_are_drawn_at_random_so_sorted_rows_give_the_same_bound():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 2))
    y = 0.8 * x + 0.6 * rng.standard_normal((2000, 2))
    order = np.argsort(x[:, 0])  # sorted rows: consecutive batches would hold near neighbours only
    kwargs = {"estimators": ["infonce"], "steps": 300, "seed": 0}
    plain = mi_bounds(x, y, **kwargs).bound.item()
    sorted_rows = mi_bounds(x[order], y[order], **kwargs).bound.item()
    assert plain > 0.5 and sorted_rows == pytest.approx(plain, rel=0.2)  # before: x4 apart


def test_the_bound_spread_is_the_sample_standard_deviation_over_batches():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((600, 1))
    ds = mi_bounds(x, x + rng.standard_normal((600, 1)), estimators=["infonce"], steps=20, batch_size=16, seed=1)
    assert ds.attrs["n_eval_batches"] > 2 and ds.bound_std.item() > 0
    assert "ddof 1" in ds.bound_std.attrs["long_name"]
