"""triplet_margins: checked against a plain Python loop over the sampled triplets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probe.analyzers.triplets as tm
from probe.analyzers import triplet_margins
from probe.critics import make_critic
from probe.errors import InputValueError, UnknownNameError


def _loop_margins(anchors, others, triplets, distance):
    margins = []
    for i, j, k in triplets:
        a, p, n = anchors[i].tolist(), others[j].tolist(), others[k].tolist()
        margins.append(distance(a, n) - distance(a, p))
    return np.array(margins)


def _cosine_distance(u, v):
    dot = sum(x * y for x, y in zip(u, v))
    return 1 - dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))


def test_identical_views_with_random_negatives_match_a_loop():
    anchors = np.random.default_rng(0).standard_normal((6, 3))
    ds = triplet_margins(anchors, anchors.copy(), n_triplets=50, alpha=[0.0, 0.5, 2.0], keep_triplets=True)
    triplets = ds.triplet_index.values
    assert np.all(triplets[:, 0] == triplets[:, 1]) and np.all(triplets[:, 2] != triplets[:, 0])
    expected = _loop_margins(anchors, anchors, triplets, math.dist)
    np.testing.assert_allclose(ds.margin.values, expected, rtol=1e-12)
    assert np.all(expected > 0)  # d(a, a) = 0 < d(a, n) for distinct points
    assert ds.margin_mean.item() == pytest.approx(sum(expected) / len(expected))
    np.testing.assert_allclose(ds.margin_quantile.values, np.quantile(expected, tm.QUANTILES))
    for alpha, fraction in zip([0.0, 0.5, 2.0], ds.violation_fraction.values):
        assert fraction == sum(m < alpha for m in expected) / len(expected)


def test_cosine_distance_matches_a_loop():
    rng = np.random.default_rng(1)
    anchors, positives = rng.standard_normal((8, 4)), rng.standard_normal((8, 4))
    ds = triplet_margins(anchors, positives, distance="cosine", n_triplets=40, keep_triplets=True)
    expected = _loop_margins(anchors, positives, ds.triplet_index.values, _cosine_distance)
    np.testing.assert_allclose(ds.margin.values, expected, rtol=1e-10, atol=1e-12)


def test_critic_similarity_uses_the_diagonal_and_flips_the_sign():
    rng = np.random.default_rng(2)
    anchors, positives = rng.standard_normal((7, 3)), rng.standard_normal((7, 3))
    torch.manual_seed(0)
    critic = make_critic("bilinear", 3, 3).double()
    w = critic.weight.detach().numpy()
    ds = triplet_margins(anchors, positives, distance=critic, n_triplets=30, keep_triplets=True)
    expected = [anchors[i] @ w @ positives[j] - anchors[i] @ w @ positives[k] for i, j, k in ds.triplet_index.values]
    np.testing.assert_allclose(ds.margin.values, expected, rtol=1e-10)
    assert "similarity" in ds.attrs["method"]
    rowwise = triplet_margins(anchors, positives, distance=lambda a, b: np.sum(a * b, axis=1), n_triplets=30)
    assert np.isfinite(rowwise.margin_mean.item())


def test_class_triplets_respect_the_classes():
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # class 3 has one member: never an anchor
    anchors = rng.standard_normal((10, 2))
    ds = triplet_margins(anchors, labels=labels, n_triplets=500, keep_triplets=True)
    a, p, n = ds.triplet_index.values.T
    assert np.all(labels[a] == labels[p]) and np.all(a != p) and np.all(labels[n] != labels[a])
    assert not np.any(labels[a] == 3) and np.any(labels[n] == 3)
    np.testing.assert_allclose(ds.margin.values, _loop_margins(anchors, anchors, ds.triplet_index.values, math.dist))


def test_paired_views_with_labels_draw_negatives_from_other_classes():
    rng = np.random.default_rng(4)
    labels = np.arange(12) % 3
    ds = triplet_margins(rng.standard_normal((12, 2)), rng.standard_normal((12, 2)), labels=labels,
                         n_triplets=300, keep_triplets=True)
    a, p, n = ds.triplet_index.values.T
    assert np.all(a == p) and np.all(labels[n] != labels[a])


def test_separated_clusters_have_only_positive_margins():
    rng = np.random.default_rng(5)
    labels = np.arange(300) % 3
    anchors = np.array([[0, 0], [100, 0], [0, 100]])[labels] + rng.standard_normal((300, 2))
    ds = triplet_margins(anchors, labels=labels, n_triplets=2000, alpha=[0.0, 10.0])
    assert ds.margin_quantile.sel(quantile=0.0).item() > 0
    np.testing.assert_array_equal(ds.violation_fraction.values, [0.0, 0.0])


def test_chunking_does_not_change_the_answer(monkeypatch):
    rng = np.random.default_rng(6)
    anchors, positives = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    whole = triplet_margins(anchors, positives, n_triplets=1000)
    monkeypatch.setattr(tm, "CHUNK", 7)
    chunked = triplet_margins(anchors, positives, n_triplets=1000)
    for name in whole.data_vars:
        np.testing.assert_allclose(chunked[name].values, whole[name].values, rtol=1e-12)


def test_scalar_alpha_still_has_an_alpha_dimension():
    anchors = np.random.default_rng(7).standard_normal((10, 2))
    ds = triplet_margins(anchors, anchors, n_triplets=20, alpha=0.1)
    assert ds.violation_fraction.dims == ("alpha",) and ds.alpha.values.tolist() == [0.1]


def test_errors_name_the_problem():
    anchors = np.random.default_rng(8).standard_normal((10, 2))
    with pytest.raises(InputValueError, match="neither positives nor labels"):
        triplet_margins(anchors)
    with pytest.raises(UnknownNameError, match="Did you mean 'cosine'"):
        triplet_margins(anchors, anchors, distance="cosin")
    with pytest.raises(InputValueError, match=r"returned shape \(3,\) for 4"):
        triplet_margins(anchors, anchors, distance=lambda a, b: np.zeros(3), n_triplets=4)
    with pytest.raises(InputValueError, match="every class in labels has a single sample"):
        triplet_margins(anchors[:3], labels=[0, 1, 2])
    with pytest.raises(InputValueError, match="alpha"):
        triplet_margins(anchors, anchors, alpha=[])
    with pytest.raises(InputValueError, match="n_triplets is 0"):
        triplet_margins(anchors, anchors, n_triplets=0)


# ----------------------------------------------------------------------------- bootstrap intervals

def _loop_intervals(triplets, margins, n_rows, paired, alpha, n_bootstrap, seed, level=0.95):
    """The documented bootstrap, one triplet and one drawn row at a time."""
    from probe.analyzers._bootstrap import BOOTSTRAP_STREAM

    rng = np.random.default_rng([seed, BOOTSTRAP_STREAM])
    means, fractions = [], []
    for _ in range(n_bootstrap):
        drawn = rng.integers(0, n_rows, n_rows).tolist()
        weights = []
        for anchor, positive, negative in triplets.tolist():
            members = [anchor, negative] if paired else [anchor, positive, negative]
            weights.append(math.prod(drawn.count(row) for row in members))
        total = sum(weights)
        means.append(sum(w * m for w, m in zip(weights, margins)) / total)
        fractions.append(sum(w for w, m in zip(weights, margins) if m < alpha) / total)
    low = math.floor((1 - level) / 2 * (n_bootstrap - 1) + 1e-9)
    high = math.ceil((1 + level) / 2 * (n_bootstrap - 1) - 1e-9)
    return [(sorted(v)[low], sorted(v)[high]) for v in (means, fractions)]


@pytest.mark.parametrize("paired", [True, False])
def test_bootstrap_intervals_match_a_loop_over_redrawn_rows(paired):
    rng = np.random.default_rng(10)
    anchors, labels = rng.standard_normal((9, 2)), np.arange(9) % 3
    kwargs = {"positives": anchors + 0.5 * rng.standard_normal((9, 2))} if paired else {"labels": labels}
    ds = triplet_margins(anchors, **kwargs, n_triplets=60, alpha=0.3, keep_triplets=True, seed=4, n_bootstrap=40)
    mean_ci, fraction_ci = _loop_intervals(ds.triplet_index.values, ds.margin.values.tolist(), 9, paired, 0.3, 40, 4)
    np.testing.assert_allclose(ds.margin_mean_ci.values, mean_ci, rtol=1e-12)
    np.testing.assert_allclose(ds.violation_fraction_ci.sel(alpha=0.3).values, fraction_ci, rtol=1e-12)
    assert ds.margin_mean_ci.attrs["method"] == "percentile bootstrap over rows (sampled triplets reweighted)"


def test_bootstrap_interval_covers_the_population_mean_margin_about_95_percent():
    # Paired Gaussian views: the population mean margin, from 100,000 rows, lies inside the
    # interval from 100 rows in about 95% of draws (measured: 95.5% over 200 draws; redrawing
    # the anchors alone, without the negatives' rows, gives 87%).
    def views(rng, n):
        z = rng.standard_normal((n, 3))
        return z, z + 0.8 * rng.standard_normal((n, 3))

    rng = np.random.default_rng(11)
    truth = triplet_margins(*views(rng, 100_000), n_triplets=200_000).margin_mean.item()
    draws = 120
    covered = 0
    for seed in range(draws):
        ci = triplet_margins(*views(rng, 100), n_triplets=800, n_bootstrap=100, seed=seed).margin_mean_ci.values
        covered += ci[0] <= truth <= ci[1]
    assert 0.89 <= covered / draws <= 1.0


def test_no_interval_unless_asked():
    anchors = np.random.default_rng(12).standard_normal((10, 2))
    ds = triplet_margins(anchors, anchors + 1, n_triplets=50)
    assert not [name for name in ds.data_vars if name.endswith("_ci")] and "interval" not in ds.dims


def test_bootstrap_errors_name_the_problem():
    anchors = np.random.default_rng(13).standard_normal((10, 2))
    with pytest.raises(InputValueError, match="^triplet_margins: n_bootstrap is -1"):
        triplet_margins(anchors, anchors, n_bootstrap=-1)
    with pytest.raises(InputValueError, match="^triplet_margins: ci_level is 2"):
        triplet_margins(anchors, anchors, n_bootstrap=10, ci_level=2)
    with pytest.raises(InputValueError, match="n_triplets is 1, too few for n_bootstrap"):
        triplet_margins(anchors, anchors, n_triplets=1, n_bootstrap=50)
