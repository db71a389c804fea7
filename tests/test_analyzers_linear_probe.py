"""linear_probe: the paper's protocol exactly, the converged variant, folds and held-out sets."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler
from threadpoolctl import threadpool_limits

from probe.analyzers import linear_probe
from probe.errors import InputValueError, UnknownNameError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(1):  # shared 2-core machine: BLAS threads fighting slow tests 10x
        yield


def _blobs(n=300, d=6, n_classes=4, spread=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    return rng.standard_normal((n_classes, d))[y] * spread + rng.standard_normal((n, d)), y


def test_paper_protocol_matches_a_direct_sklearn_call():
    z, y = _blobs()
    ds = linear_probe(z[:200], y[:200], z[200:], y[200:], seed=7)
    scaler = MinMaxScaler().fit(z[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(solver="saga", tol=0.1, C=10, random_state=7).fit(scaler.transform(z[:200]), y[:200])
    proba = model.predict_proba(scaler.transform(z[200:]))
    assert ds.accuracy.item() == np.mean(model.predict(scaler.transform(z[200:])) == y[200:])
    assert ds.cross_entropy.item() == pytest.approx(-np.mean(np.log(proba[np.arange(100), y[200:]])), rel=1e-12)
    assert ds.n_iter.item() == model.n_iter_.max() <= 100
    assert ds.cross_entropy.attrs["units"] == "nats" and ds.attrs["protocol"] == "paper"


def test_paper_protocol_silences_its_convergence_warning():
    z, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear_probe(z, y)


def test_converged_protocol_separates_separable_classes():
    z, y = _blobs(spread=20.0)
    ds = linear_probe(z, y, protocol="converged")
    assert ds.accuracy.item() == 1.0 and ds.cross_entropy.item() < 0.05
    assert ds.attrs["max_iter"] == 100 and "newton-cg" in ds.attrs["method"] and ds.n_iter.item() < 100


def test_folds_report_each_fold_and_their_mean():
    z, y = _blobs()
    ds = linear_probe(z, y, folds=3)
    assert ds.cv_accuracy.dims == ("fold",) and list(ds.fold.values) == [0, 1, 2]
    assert ds.accuracy.item() == pytest.approx(ds.cv_accuracy.mean().item())
    assert "3-fold" in ds.attrs["evaluation"]


def test_folds_with_a_test_set_report_both():
    z, y = _blobs()
    ds = linear_probe(z[:200], y[:200], z[200:], y[200:], folds=2)
    assert ds.sizes["fold"] == 2 and ds.attrs["evaluation"] == "held-out test set" and ds.attrs["n_test"] == 100


def test_without_test_set_a_seeded_stratified_split_is_used():
    z, y = _blobs(n=200)
    ds = linear_probe(z, y, test_fraction=0.25)
    assert (ds.attrs["n_train"], ds.attrs["n_test"]) == (150, 50)
    assert linear_probe(z, y, seed=1).attrs["n_test"] == 40


def test_string_labels_with_a_class_missing_from_the_test_set():
    z, y = _blobs()
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    keep = names[200:] != "dog"
    ds = linear_probe(z[:200], names[:200], z[200:][keep], names[200:][keep])
    assert 0.5 < ds.accuracy.item() <= 1.0


def test_errors_name_the_problem():
    z, y = _blobs()
    with pytest.raises(UnknownNameError, match="Did you mean 'paper'"):
        linear_probe(z, y, protocol="papr")
    with pytest.raises(InputValueError, match="test_z and test_y must be given together"):
        linear_probe(z, y, z)
    with pytest.raises(InputValueError, match="but test_z has 5"):
        linear_probe(z, y, z[:, :5], y)
    with pytest.raises(InputValueError, match="smallest class has 2 sample"):
        linear_probe(z[:8], y[:8], folds=3)
    with pytest.raises(InputValueError, match="folds is 1"):
        linear_probe(z, y, folds=1)


def test_converged_protocol_agrees_with_scikit_learns_lbfgs():
    z, y = _blobs(n=900, d=10, spread=0.8, seed=3)
    ds = linear_probe(z[:600], y[:600], z[600:], y[600:], protocol="converged", C=1.0)
    scaler = MinMaxScaler().fit(z[:600])
    model = LogisticRegression(C=1.0, tol=1e-6, max_iter=5000).fit(scaler.transform(z[:600]), y[:600])
    proba = model.predict_proba(scaler.transform(z[600:]))
    assert abs(ds.accuracy.item() - np.mean(proba.argmax(1) == y[600:])) <= 1e-3
    assert abs(ds.cross_entropy.item() + np.mean(np.log(proba[np.arange(300), y[600:]]))) <= 1e-3


@pytest.mark.parametrize("protocol", ["paper", "converged"])
def test_bootstrap_intervals_over_held_out_rows(protocol):
    z, y = _blobs()
    plain = linear_probe(z[:200], y[:200], z[200:], y[200:], protocol=protocol)
    ds = linear_probe(z[:200], y[:200], z[200:], y[200:], protocol=protocol, n_bootstrap=300)
    for name, units in (("accuracy", "1"), ("cross_entropy", "nats")):
        ci = ds[f"{name}_ci"]
        assert ci.dims == ("interval",) and ci["interval"].values.tolist() == ["lower", "upper"]
        assert ci.attrs["units"] == units and ci.attrs["method"].startswith("percentile bootstrap over")
        assert ci.sel(interval="lower") <= ds[name] <= ci.sel(interval="upper")
    assert ds.drop_vars(["accuracy_ci", "cross_entropy_ci", "interval"]).identical(plain)
    again = linear_probe(z[:200], y[:200], z[200:], y[200:], protocol=protocol, n_bootstrap=300)
    assert again.accuracy_ci.equals(ds.accuracy_ci)
    other_seed = linear_probe(z[:200], y[:200], z[200:], y[200:], protocol=protocol, n_bootstrap=300, seed=1)
    assert not np.array_equal(other_seed.cross_entropy_ci.values, ds.cross_entropy_ci.values)


def test_bootstrap_with_folds_resamples_the_pooled_out_of_fold_rows():
    z, y = _blobs()
    ds = linear_probe(z, y, folds=3, n_bootstrap=200)
    ci = ds.accuracy_ci
    assert ci.sel(interval="lower") <= ds.accuracy <= ci.sel(interval="upper")
    assert ci.sel(interval="upper") - ci.sel(interval="lower") < 0.2  # 300 pooled rows, not 100
    with pytest.raises(InputValueError, match="linear_probe: n_bootstrap is -2"):
        linear_probe(z, y, n_bootstrap=-2)
