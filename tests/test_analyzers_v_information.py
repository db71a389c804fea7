"""v_information: known answers, and the property MI lacks (it changes under bijections)."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from probe.analyzers import linear_probe, v_information
from probe.errors import InputValueError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(1):  # shared 2-core machine: BLAS threads fighting slow tests 10x
        yield


def _balanced(n=2000, n_classes=10, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % n_classes)


def scramble(z: np.ndarray, width: float, seed: int) -> np.ndarray:
    """A bijection of R applied to every column: cut the line into bins of `width` and send the
    bins covering the data to a random permutation of themselves (shifting each bin whole).
    Shannon MI with anything is unchanged; linear structure is destroyed."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(z)
    for j in range(z.shape[1]):
        q = np.floor(z[:, j] / width).astype(np.int64)
        lo, hi = q.min(), q.max()
        perm = lo + rng.permutation(hi - lo + 1)
        out[:, j] = z[:, j] + (perm[q - lo] - q) * width
    return out


def test_one_hot_code_gives_the_label_entropy():
    y = _balanced()
    ds = v_information(np.eye(10)[y], y)
    assert ds.v_information.item() == pytest.approx(np.log(10), abs=0.05)
    assert ds.marginal_entropy.item() == pytest.approx(np.log(10), abs=0.01)
    assert ds.v_information_bits.item() == pytest.approx(ds.v_information.item() / np.log(2))
    assert ds.v_information_bits.attrs["units"] == "bits" and ds.v_information.attrs["units"] == "nats"


def test_shuffled_labels_give_about_zero():
    rng = np.random.default_rng(1)
    y = _balanced()
    z = np.eye(10)[y] + 0.1 * rng.standard_normal((2000, 10))
    assert abs(v_information(z, rng.permutation(y)).v_information.item()) < 0.05


def test_independent_gaussians_give_about_zero_for_a_representation_target():
    rng = np.random.default_rng(2)
    ds = v_information(rng.standard_normal((2000, 6)), target=rng.standard_normal((2000, 4)))
    assert abs(ds.v_information.item()) < 0.05
    assert ds.v_information_per_feature.dims == ("feature",) and ds.sizes["feature"] == 4


def test_linear_gaussian_target_matches_the_closed_form():
    # t = W z + noise(sd s), z ~ N(0, I): each target feature alone has
    # I_V = 1/2 ln((|W_t|^2 + s^2) / s^2), and the features add.
    rng = np.random.default_rng(3)
    w, s = rng.standard_normal((5, 3)), 0.5
    z = rng.standard_normal((4000, 5))
    t = z @ w + s * rng.standard_normal((4000, 3))
    expected = 0.5 * np.log((np.sum(w**2, axis=0) + s**2) / s**2)
    ds = v_information(z, target=t)
    np.testing.assert_allclose(ds.v_information_per_feature.values, expected, rtol=0.03)
    assert ds.v_information.item() == pytest.approx(expected.sum(), rel=0.03)


def test_scramble_is_a_bijection():
    z = np.random.default_rng(4).standard_normal((500, 2))
    scrambled = scramble(z, 0.25, seed=5)
    assert np.unique(scrambled[:, 0]).size == 500
    # Same bins, permuted: sorting bin indices back recovers z exactly.
    q, q2 = np.floor(z / 0.25), np.floor(scrambled / 0.25)
    np.testing.assert_allclose(scrambled - q2 * 0.25, z - q * 0.25, atol=1e-12)


def test_v_information_drops_under_a_bijection_that_destroys_linear_structure():
    rng = np.random.default_rng(6)
    y = _balanced(n=2000, n_classes=5)
    z = rng.standard_normal((5, 4))[y] * 3 + rng.standard_normal((2000, 4))
    before = v_information(z, y).v_information.item()
    after = v_information(scramble(z, 0.25, seed=7), y).v_information.item()
    assert before > 1.0 and after < 0.3 * before
    # The linear probe sees the same loss; MI (a bijection) cannot.
    assert linear_probe(scramble(z, 0.25, seed=7), y).accuracy.item() < linear_probe(z, y).accuracy.item() - 0.3


def test_held_out_set_and_fixed_regularisation():
    rng = np.random.default_rng(8)
    y = _balanced(n=600, n_classes=3)
    z = np.eye(3)[y] * 2 + rng.standard_normal((600, 3))
    ds = v_information(z[:400], y[:400], test_z=z[400:], test_y=y[400:], C=1.0)
    assert ds.attrs["n_test"] == 200 and ds.attrs["C_selected"] == 1.0 and ds.converged.item() == 1
    assert 0.2 < ds.v_information.item() < np.log(3)


def test_errors_name_the_problem():
    z = np.random.default_rng(9).standard_normal((50, 3))
    y = np.arange(50) % 2
    with pytest.raises(InputValueError, match="exactly one of y .* got both"):
        v_information(z, y, target=z)
    with pytest.raises(InputValueError, match="got neither"):
        v_information(z)
    with pytest.raises(InputValueError, match="test_z and test_y must be given together"):
        v_information(z, y, test_z=z)
    with pytest.raises(InputValueError, match="but target has 49"):
        v_information(z, target=z[:49])
    with pytest.raises(InputValueError, match="v_information: C is -1"):
        v_information(z, y, C=-1)


# ----------------------------------------------------------------------------- against scikit-learn

def _sklearn_v_information(z, y, tz, ty, C):
    """The estimator written out with scikit-learn's L-BFGS (probe's implementation before the torch solver)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(z)
    model = LogisticRegression(C=C, tol=1e-6, max_iter=5000).fit(scaler.transform(z), y)
    p = model.predict_proba(scaler.transform(tz))[np.arange(ty.size), ty]
    prior = np.bincount(y)[ty] / y.size
    return float(np.mean(np.log(p) - np.log(prior)))


def test_agrees_with_scikit_learns_lbfgs_to_1e_3_nats():
    rng = np.random.default_rng(10)
    y = _balanced(n=1500, n_classes=4)
    z = rng.standard_normal((4, 8))[y] + 1.5 * rng.standard_normal((1500, 8))
    for C in (0.05, 1.0):
        ds = v_information(z[:1000], y[:1000], test_z=z[1000:], test_y=y[1000:], C=C)
        expected = _sklearn_v_information(z[:1000], y[:1000], z[1000:], y[1000:], C)
        assert abs(ds.v_information.item() - expected) <= 1e-3, (C, ds.v_information.item(), expected)


def test_digits_agree_with_scikit_learn_and_the_chosen_C_is_reusable():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    auto = v_information(images[:1300], labels[:1300], test_z=images[1300:], test_y=labels[1300:])
    chosen = auto.attrs["C_selected"]
    assert chosen in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0) and auto.converged.item() == 1
    again = v_information(images[:1300], labels[:1300], test_z=images[1300:], test_y=labels[1300:], C=chosen)
    assert again.v_information.item() == pytest.approx(auto.v_information.item(), abs=1e-4)
    expected = _sklearn_v_information(images[:1300], labels[:1300], images[1300:], labels[1300:], chosen)
    assert abs(again.v_information.item() - expected) <= 1e-3


# ----------------------------------------------------------------------------- bootstrap intervals

@pytest.mark.parametrize("mode", ["labels", "target"])
def test_bootstrap_interval_is_labelled_seeded_and_holds_the_value(mode):
    rng = np.random.default_rng(11)
    y = _balanced(n=600, n_classes=3)
    z = np.eye(3)[y] * 2 + rng.standard_normal((600, 3))
    kwargs = dict(y=y, C=1.0) if mode == "labels" else dict(target=z @ rng.standard_normal((3, 2)) + rng.standard_normal((600, 2)))
    plain = v_information(z, **kwargs)
    ds = v_information(z, **kwargs, n_bootstrap=200, seed=0)
    ci = ds.v_information_ci
    assert ci.dims == ("interval",) and ci["interval"].values.tolist() == ["lower", "upper"]
    assert ci.attrs["units"] == "nats" and ci.attrs["n_bootstrap"] == 200 and ci.attrs["level"] == 0.95
    assert ci.sel(interval="lower") <= ds.v_information <= ci.sel(interval="upper")
    xr_identical = ds.drop_vars(["v_information_ci", "interval"]).identical(plain)
    assert xr_identical  # n_bootstrap adds the interval and changes nothing else
    assert v_information(z, **kwargs, n_bootstrap=200, seed=0).v_information_ci.equals(ci)
    narrow = v_information(z, **kwargs, n_bootstrap=200, seed=0, ci_level=0.5).v_information_ci
    assert narrow.sel(interval="lower") >= ci.sel(interval="lower") and narrow.sel(interval="upper") <= ci.sel(interval="upper")


def test_bad_bootstrap_arguments_and_device_raise():
    from probe.errors import InputTypeError

    z = np.random.default_rng(12).standard_normal((50, 3))
    y = np.arange(50) % 2
    with pytest.raises(InputValueError, match="v_information: n_bootstrap is -1"):
        v_information(z, y, n_bootstrap=-1)
    with pytest.raises(InputTypeError, match="n_bootstrap must be an integer"):
        v_information(z, y, n_bootstrap=1.5)
    with pytest.raises(InputValueError, match="ci_level is 1.5"):
        v_information(z, y, n_bootstrap=10, ci_level=1.5)
    with pytest.raises(InputValueError, match="v_information: device is 'tpu'"):
        v_information(z, y, device="tpu")
