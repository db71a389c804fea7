"""ksg_mi on correlated Gaussians (closed-form MI) and its reliability verdict."""
from __future__ import annotations

import math

import numpy as np
import pytest

from probe.analyzers import ksg_mi
from probe.analyzers._reliability import ksg_max_dims, ksg_verdict
from probe.analyzers.ksg import SE_BLOCKS, _prepare, block_standard_error, ksg_terms
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


def _mixed_ksg_naive(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Gao et al. 2017, Algorithm 1, one point at a time with explicit max-norm distances."""
    from scipy.special import digamma

    n = x.shape[0]
    total = 0.0
    for i in range(n):
        dx = np.abs(x - x[i]).max(axis=1)
        dy = np.abs(y - y[i]).max(axis=1)
        dz = np.maximum(dx, dy)
        rho = np.sort(np.delete(dz, i))[k - 1]
        if rho == 0:
            kk, nx, ny = (dz == 0).sum(), (dx == 0).sum(), (dy == 0).sum()  # itself included
        else:
            kk, nx, ny = k, (dx < rho).sum(), (dy < rho).sum()
        total += digamma(kk) + math.log(n) - digamma(nx) - digamma(ny)
    return total / n


def test_mixed_ksg_matches_a_naive_loop_on_discrete_continuous_and_mixed_rows():
    from probe.analyzers.ksg import mixed_ksg_terms

    rng = np.random.default_rng(4)
    discrete = rng.integers(0, 3, size=(80, 1)).astype(float)
    continuous = discrete + rng.standard_normal((80, 1))
    binary = (continuous > 1).astype(float)
    for x, y in ((discrete, continuous), (discrete, binary), (continuous, continuous + rng.standard_normal((80, 1)))):
        assert mixed_ksg_terms(x, y, 3).mean() == pytest.approx(_mixed_ksg_naive(x, y, 3), abs=1e-12)


def test_mixed_ksg_on_discrete_pairs_is_the_plug_in_and_is_consistent_on_a_mixed_pair():
    from probe.analyzers.ksg import mixed_ksg_terms

    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, size=(4000, 1)).astype(float)
    flip = rng.random((4000, 1)) < 0.1
    y = np.where(flip, 1 - x, x)
    truth = math.log(2) + 0.1 * math.log(0.1) + 0.9 * math.log(0.9)  # binary symmetric channel, 0.368 nats
    assert mixed_ksg_terms(x, y, 3).mean() == pytest.approx(truth, abs=0.03)
    y_mixed = 2.0 * x + rng.standard_normal((4000, 1))  # categorical -> Gaussian: 0.338 nats
    assert mixed_ksg_terms(x, y_mixed, 3).mean() == pytest.approx(0.3378, abs=0.04)


def test_plug_in_with_miller_madow_matches_the_formula_and_removes_the_bias_of_independence():
    from probe.analyzers._mi_discrete import plug_in, state_codes

    rng = np.random.default_rng(6)
    cx, cy = rng.integers(0, 4, 500), rng.integers(0, 3, 500)
    fit = plug_in(cx, cy)
    joint = np.zeros((4, 3))
    np.add.at(joint, (cx, cy), 1)
    p = joint / 500
    naive = sum(p[i, j] * math.log(p[i, j] / (p[i].sum() * p[:, j].sum())) for i in range(4) for j in range(3)
                if p[i, j] > 0)
    m_xy = int((joint > 0).sum())
    assert fit.value == pytest.approx(naive - (m_xy - 4 - 3 + 1) / 1000)
    assert fit.states == (4, 3, m_xy) and fit.terms.mean() == pytest.approx(fit.value)
    plain, corrected = [], []
    for seed in range(40):
        r = np.random.default_rng(seed)
        f = plug_in(r.integers(0, 4, 300), r.integers(0, 4, 300))
        corrected.append(f.value)
        plain.append(f.value + (f.states[2] - f.states[0] - f.states[1] + 1) / 600)
    assert np.mean(plain) > 0.012 and abs(np.mean(corrected)) < 0.004  # (4-1)(4-1)/(2*300) = 0.015 removed
    assert state_codes(np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 2.0]])).tolist() == [1, 0, 1]


def test_the_block_standard_error_matches_independent_terms_and_holds_ksg_across_seeds():
    # Independent terms: the blocks estimate what std / sqrt(n) already says.
    terms = np.random.default_rng(3).standard_normal(4000)
    se, dof = block_standard_error(terms, lambda rows: terms[rows], 3, seed=0)
    assert dof == SE_BLOCKS - 1 and 1 / math.sqrt(4000) * 0.95 < se < 1.6 / math.sqrt(4000)
    # Too few rows a block: the terms' alone, with a normal quantile.
    few = terms[:200]
    assert block_standard_error(few, lambda rows: few[rows], 3, seed=0) == (few.std(ddof=1) / math.sqrt(200), math.inf)
    # KSG's terms share neighbours: over 24 seeds of a Gaussian pair its spread exceeds the terms' standard
    # error, and the block one comes closer to it.
    values, term_se, block_se = [], [], []
    for seed in range(24):
        rng = np.random.default_rng(100 + seed)
        x = rng.standard_normal((1000, 1))
        y = 0.7 * x + math.sqrt(0.51) * rng.standard_normal((1000, 1))
        xs, ys = _prepare(x, rng, True), _prepare(y, rng, True)
        t = ksg_terms(xs, ys, 3)
        values.append(t.mean())
        term_se.append(t.std(ddof=1) / math.sqrt(1000))
        block_se.append(block_standard_error(t, lambda rows, xs=xs, ys=ys: ksg_terms(xs[rows], ys[rows], 3), 3, seed)[0])
    spread = np.std(values, ddof=1)
    assert spread > 1.1 * np.mean(term_se)
    assert abs(np.log(spread / np.mean(block_se))) < abs(np.log(spread / np.mean(term_se)))
