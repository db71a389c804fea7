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
