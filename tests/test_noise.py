"""View noise as training and evaluation draw it (probe.training.noise): `add_view_noise` on the
training batches, `noisy_numpy` on the fixed evaluation inputs. Coupled noise (paper, Fig. 2) is
one vector added to both views; uncoupled noise is drawn per view."""
import numpy as np
import pytest
import torch

from probe.training.noise import add_view_noise, noisy_numpy

STD = 0.05


def views(n=4096, d1=6, d2=6):
    x1 = torch.linspace(-1, 1, n * d1).reshape(n, d1)
    x2 = torch.linspace(2, 3, n * d2).reshape(n, d2)
    return x1, x2


@pytest.mark.parametrize("coupled", [True, False])
def test_add_view_noise_keeps_shapes_dtype_and_leaves_inputs_alone(coupled):
    x1, x2 = views()
    before = x1.clone(), x2.clone()
    y1, y2 = add_view_noise(x1, x2, STD, coupled, torch.Generator().manual_seed(0))
    assert y1.shape == x1.shape and y2.shape == x2.shape
    assert y1.dtype == x1.dtype == y2.dtype
    torch.testing.assert_close(x1, before[0], rtol=0, atol=0)
    torch.testing.assert_close(x2, before[1], rtol=0, atol=0)


def test_coupled_noise_is_one_vector_on_both_views():
    x1, x2 = views()
    y1, y2 = add_view_noise(x1, x2, STD, True, torch.Generator().manual_seed(0))
    n1, n2 = y1 - x1, y2 - x2
    torch.testing.assert_close(n1, n2, rtol=0, atol=1e-6)  # only the float32 round-off of x + n - x
    assert float(n1.abs().max()) > 0


def test_uncoupled_noise_differs_between_views_and_is_independent():
    x1, x2 = views()
    y1, y2 = add_view_noise(x1, x2, STD, False, torch.Generator().manual_seed(0))
    n1, n2 = (y1 - x1).double().ravel(), (y2 - x2).double().ravel()
    assert float((n1 - n2).abs().max()) > STD  # not the same vector
    # 24,576 pairs: the correlation of independent draws is within a few 1/sqrt(n) of 0.
    assert abs(float(torch.corrcoef(torch.stack([n1, n2]))[0, 1])) < 0.03


@pytest.mark.parametrize("coupled", [True, False])
def test_noise_has_the_requested_std_and_zero_mean(coupled):
    x1, x2 = views()
    y1, y2 = add_view_noise(x1, x2, STD, coupled, torch.Generator().manual_seed(1))
    for noise in (y1 - x1, y2 - x2):
        # 24,576 draws: the sample sd is within 2% of 0.05 and the mean within 4 standard errors of 0.
        assert float(noise.std()) == pytest.approx(STD, rel=0.02)
        assert abs(float(noise.mean())) < 4 * STD / np.sqrt(noise.numel())


def test_views_of_different_widths_get_noise_of_their_own_shape_when_uncoupled():
    x1, x2 = views(n=8, d1=3, d2=5)
    y1, y2 = add_view_noise(x1, x2, STD, False, torch.Generator().manual_seed(0))
    assert y1.shape == (8, 3) and y2.shape == (8, 5)


@pytest.mark.parametrize("coupled", [True, False])
def test_add_view_noise_is_deterministic_per_generator(coupled):
    x1, x2 = views(n=64)
    a = add_view_noise(x1, x2, STD, coupled, torch.Generator().manual_seed(7))
    b = add_view_noise(x1, x2, STD, coupled, torch.Generator().manual_seed(7))
    c = add_view_noise(x1, x2, STD, coupled, torch.Generator().manual_seed(8))
    for u, w in zip(a, b):
        torch.testing.assert_close(u, w, rtol=0, atol=0)
    assert not torch.equal(a[0], c[0])
    # The generator advances: two draws from one generator differ (every batch gets fresh noise).
    gen = torch.Generator().manual_seed(7)
    first, second = add_view_noise(x1, x2, STD, coupled, gen), add_view_noise(x1, x2, STD, coupled, gen)
    assert not torch.equal(first[0], second[0])


@pytest.mark.parametrize("std", [0.0, -1.0])
def test_add_view_noise_with_std_0_returns_the_inputs_and_draws_nothing(std):
    x1, x2 = views(n=16)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    y1, y2 = add_view_noise(x1, x2, std, True, gen)
    assert y1 is x1 and y2 is x2
    assert torch.equal(gen.get_state(), state)


# noisy_numpy: the evaluation's fixed noisy inputs.

def arrays(n=4096, d=6):
    a = np.linspace(-1, 1, n * d, dtype=np.float32).reshape(n, d)
    return a, a[::-1].copy() + 2


@pytest.mark.parametrize("coupled", [True, False])
def test_noisy_numpy_shapes_dtype_std_and_coupling(coupled):
    a, b = arrays()
    before = a.copy(), b.copy()
    ya, yb = noisy_numpy(a, b, STD, coupled, np.random.default_rng(0))
    assert ya.shape == a.shape and yb.shape == b.shape and ya.dtype == yb.dtype == np.float32
    np.testing.assert_array_equal(a, before[0])
    np.testing.assert_array_equal(b, before[1])
    na, nb = (ya - a).astype(np.float64), (yb - b).astype(np.float64)
    assert na.std() == pytest.approx(STD, rel=0.02) and nb.std() == pytest.approx(STD, rel=0.02)
    if coupled:
        np.testing.assert_allclose(na, nb, rtol=0, atol=1e-6)
    else:
        assert np.abs(na - nb).max() > STD
        assert abs(np.corrcoef(na.ravel(), nb.ravel())[0, 1]) < 0.03


def test_noisy_numpy_is_deterministic_per_generator_and_std_0_is_the_identity():
    a, b = arrays(n=32)
    x = noisy_numpy(a, b, STD, False, np.random.default_rng(5))
    y = noisy_numpy(a, b, STD, False, np.random.default_rng(5))
    z = noisy_numpy(a, b, STD, False, np.random.default_rng(6))
    np.testing.assert_array_equal(x[0], y[0])
    np.testing.assert_array_equal(x[1], y[1])
    assert not np.array_equal(x[0], z[0])
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    same = noisy_numpy(a, b, 0.0, True, rng)
    assert same[0] is a and same[1] is b and rng.bit_generator.state == state
