"""ksg_mi on correlated Gaussians (closed-form MI) and its reliability verdict."""
from __future__ import annotations

import math

import numpy as np
import pytest

from probe.analyzers import ksg_mi
from probe.analyzers._reliability import ksg_max_dims, ksg_verdict
from probe.errors import InputValueError


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
    assert ds.reliable.item() == 1 and ds.unreliable_reason.item() == ""
    assert 0 < ds.mutual_information_se.item() < 0.05


def test_ksg_of_independent_variables_is_about_zero_and_never_reliable_when_negative():
    x, y, _ = gaussian_pairs(2000, 2, 0.0, seed=1)
    ds = ksg_mi(x, y)
    assert abs(ds.mutual_information.item()) < 0.05
    if ds.mutual_information.item() < 0:
        assert ds.reliable.item() == 0 and ds.unreliable_reason.item().startswith("negative estimate")
    else:
        assert ds.reliable.item() == 0 and ds.unreliable_reason.item().startswith("standard error")


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


def test_high_dimension_at_small_n_is_flagged_and_low_dimension_at_large_n_is_not():
    # 5 + 5 dimensions, 1.12 nats: at n = 5,000 KSG gives about 0.7 of such MI (bmi-v1 sparse 5x5).
    x, y, truth = gaussian_pairs(3000, 5, 0.6, seed=4)
    wide = ksg_mi(x, y)
    assert wide.reliable.item() == 0
    assert wide.unreliable_reason.item().startswith("d_x + d_y = 10 dimensions at n = 3000: KSG underestimates above 5")
    assert wide.mutual_information.item() < 0.9 * truth  # the flag is deserved
    narrow = ksg_mi(x[:, :1], y[:, :1])
    assert narrow.reliable.item() == 1


def test_a_tiny_sample_is_flagged():
    x, y, _ = gaussian_pairs(30, 1, 0.3, seed=5)
    ds = ksg_mi(x, y)
    assert ds.reliable.item() == 0 and ds.unreliable_reason.item() != ""


def test_heavy_tails_are_flagged_and_normal_scores_fix_them():
    from scipy.special import ndtri
    from scipy.stats import rankdata

    rng = np.random.default_rng(7)  # bivariate Student-t, 1 degree of freedom, identity dispersion: 0.22 nats
    z = rng.standard_normal((3000, 4)) / np.sqrt(rng.chisquare(1, (3000, 1)))
    raw = ksg_mi(z[:, :2], z[:, 2:])
    assert raw.reliable.item() == 0 and raw.unreliable_reason.item().startswith("heavy tails")
    scores = ndtri(rankdata(z, axis=0) / 3001)
    assert ksg_mi(scores[:, :2], scores[:, 2:]).reliable.item() == 1


def test_max_reliable_dims_grows_with_n():
    assert [ksg_max_dims(n) for n in (50, 500, 5000, 50000)] == [2, 3, 6, 9]
    assert ksg_verdict(math.nan, se=0.0, dims=2, n=100) == "non-finite estimate"
    assert ksg_verdict(0.5, se=0.2, dims=2, n=5000).startswith("standard error 0.2 nats")
    assert ksg_verdict(0.5, se=0.01, dims=2, n=5000) == ""


def test_same_seed_same_estimate():
    x, y, _ = gaussian_pairs(500, 2, 0.6, seed=6)
    assert ksg_mi(x, y, seed=3).identical(ksg_mi(x, y, seed=3))
