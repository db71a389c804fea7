"""The families issue 19 adds to probe.ground_truth: Gaussian mixtures and sign-mixing pairs (Monte
Carlo truth), discrete channels (closed form), categorical-to-Gaussian pairs, image class pairs,
the extended suite and its tuning / scoring split, and the scoring rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from probe.errors import InputValueError
from probe.ground_truth import TASKS
from probe.ground_truth.discrete import (
    CategoricalGaussianPair,
    DiscretePair,
    binary_entropy,
    binary_symmetric,
    categorical_gaussian,
    random_channel,
    symmetric_channel,
)
from probe.ground_truth.images import ImageClassPair
from probe.ground_truth.mixtures import GaussianMixturePair, sign_mixing, x_mixture
from probe.ground_truth.scoring import covered, factor, family_table, format_table, solved
from probe.ground_truth.suite import HALVES, NEW_FAMILIES, new_tasks, split, suite


def _small_mc(distribution, samples=40_000):
    distribution.MC_SAMPLES = samples  # an instance attribute: the class's 400,000 are for the suite
    return distribution.mutual_information(), distribution.mutual_information_se()


def test_mixture_pmi_is_the_log_ratio_of_scipy_mixture_densities():
    dist = x_mixture(2, 0.7, weight=0.6).distribution
    x, y = dist.sample(300, np.random.default_rng(0))
    z = np.hstack([x, y])

    def mixture_logpdf(points, block):
        return np.log(sum(w * stats.multivariate_normal(m[block], c[np.ix_(block, block)]).pdf(points)
                          for w, m, c in zip(dist.weights, dist.means, dist.covariances)))
    joint, bx, by = [0, 1, 2, 3], [0, 1], [2, 3]
    expected = mixture_logpdf(z, joint) - mixture_logpdf(x, bx) - mixture_logpdf(y, by)
    np.testing.assert_allclose(dist.pointwise_mutual_information(x, y), expected, rtol=1e-9, atol=1e-9)


def test_x_mixture_has_gaussian_marginals_no_correlation_and_the_mi_of_a_quadrature():
    task = x_mixture(1, 0.9)
    x, y = task.sample(40_000, seed=1)
    assert abs(np.corrcoef(x[:, 0], y[:, 0])[0, 1]) < 0.02
    assert stats.kstest(x[:, 0], "norm").pvalue > 0.01 and stats.kstest(y[:, 0], "norm").pvalue > 0.01
    cov = [[1, 0.9], [0.9, 1]]
    plus, minus = stats.multivariate_normal([0, 0], cov), stats.multivariate_normal([0, 0], [[1, -0.9], [-0.9, 1]])

    def integrand(b, a):
        p = 0.5 * plus.pdf([a, b]) + 0.5 * minus.pdf([a, b])
        return p * math.log(p / (stats.norm.pdf(a) * stats.norm.pdf(b)))
    exact = integrate.dblquad(integrand, -8, 8, -8, 8, epsabs=1e-7)[0]
    mc, se = _small_mc(x_mixture(1, 0.9).distribution)
    assert se < 0.01 and abs(mc - exact) < 4 * se
    assert exact == pytest.approx(0.4056, abs=0.005)  # the suite's 400,000-pair value


def test_x_mixture_in_many_dimensions_approaches_its_known_limit():
    # With the sign readable from the data, I -> d * (-1/2 ln(1 - rho^2)) - ln 2 (issue 19: 4.42 at 10 x 10, 0.8).
    mc, se = _small_mc(x_mixture(10, 0.8).distribution, 20_000)
    assert mc == pytest.approx(10 * -0.5 * math.log(1 - 0.8**2) - math.log(2), abs=0.05)


def test_sign_mixing_pairs_are_uncorrelated_within_y_and_x_is_y_plus_noise():
    task = sign_mixing(2, 0.8, 0.3)
    x, y = task.sample(40_000, seed=2)
    assert abs(np.corrcoef(y[:, 0], y[:, 1])[0, 1]) < 0.02  # a and b: zero correlation...
    assert np.corrcoef(y[:, 0] ** 2, y[:, 1] ** 2)[0, 1] > 0.3  # ...yet dependent
    assert np.std(x - y, axis=0) == pytest.approx([0.3] * 4, rel=0.03)
    per_pair = sign_mixing(2, 0.8, 0.3, per_pair=True).distribution
    assert per_pair.weights.size == 4 and task.distribution.weights.size == 2
    assert task.family == "sign-mixing" and task.dim_x == task.dim_y == 4


def test_mixture_arguments_are_checked():
    with pytest.raises(InputValueError, match="rho is 1.0"):
        x_mixture(2, 1.0)
    with pytest.raises(InputValueError, match="weights are"):
        GaussianMixturePair([0.5, 0.6], np.zeros((2, 2)), np.stack([np.eye(2)] * 2), 1)
    with pytest.raises(InputValueError, match="noise is 0"):
        sign_mixing(1, 0.5, 0)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.25])
def test_binary_symmetric_channel_closed_form(eps):
    assert binary_symmetric(eps).mutual_information == pytest.approx(math.log(2) - binary_entropy(eps), abs=1e-12)
    assert binary_symmetric(eps, bits=3).mutual_information == pytest.approx(3 * (math.log(2) - binary_entropy(eps)))


def test_symmetric_channel_closed_form_and_a_naive_sum():
    task = symmetric_channel(10, 0.2)
    assert task.mutual_information == pytest.approx(math.log(10) - binary_entropy(0.2) - 0.2 * math.log(9))
    table = task.distribution.table
    naive = sum(table[i, j] * math.log(table[i, j] / (table[i].sum() * table[:, j].sum()))
                for i in range(10) for j in range(10) if table[i, j] > 0)
    assert task.mutual_information == pytest.approx(naive)


@pytest.mark.parametrize("make", [lambda: binary_symmetric(0.1, bits=2), lambda: random_channel(3, 8, seed=2),
                                  lambda: symmetric_channel(4, 0.3)])
def test_discrete_samples_follow_the_table_and_the_pmi_averages_to_the_mi(make):
    task = make()
    x, y = task.sample(60_000, seed=3)
    pmi = task.distribution.pointwise_mutual_information(x, y)
    assert abs(pmi.mean() - task.mutual_information) < 4 * pmi.std() / math.sqrt(pmi.size)
    assert task.mutual_information_se == 0.0 and task.family == "discrete"
    assert len(np.unique(np.hstack([x, y]), axis=0)) <= task.distribution.table.size


def test_discrete_pair_rejects_a_bad_table_and_unknown_states():
    with pytest.raises(InputValueError, match="pmf"):
        DiscretePair([[0.5, 0.6]], [[0.0]], [[0.0], [1.0]])
    with pytest.raises(InputValueError, match="distinct rows"):
        DiscretePair([[0.5, 0.5]], [[0.0]], [[1.0], [1.0]])
    with pytest.raises(InputValueError, match="not one of the distribution's states"):
        binary_symmetric(0.1).distribution.pointwise_mutual_information(np.array([[2.0]]), np.array([[0.0]]))


def test_categorical_gaussian_mi_by_monte_carlo_matches_a_quadrature():
    dist = categorical_gaussian(2, 1, 2.0).distribution
    mixture = lambda y: 0.5 * stats.norm.pdf(y, 0, 1) + 0.5 * stats.norm.pdf(y, 2, 1)  # noqa: E731
    h_y = integrate.quad(lambda y: -mixture(y) * math.log(mixture(y)), -12, 14)[0]
    exact = h_y - 0.5 * math.log(2 * math.pi * math.e)
    mc, se = _small_mc(dist)
    assert abs(mc - exact) < 4 * se
    with pytest.raises(InputValueError, match="class ids"):
        dist.pointwise_mutual_information(np.array([[0.5]]), np.array([[0.0]]))
    with pytest.raises(InputValueError, match="sigma"):
        CategoricalGaussianPair([0.5, 0.5], [[0.0], [1.0]], 0.0)


def _toy_images(per_class=6, classes=3):
    labels = np.repeat(np.arange(classes), per_class)
    images = np.arange(labels.size * 4, dtype=np.float32).reshape(labels.size, 4)  # each image distinct
    return images, labels


@pytest.mark.parametrize("beta", [0.0, 0.2, 0.5])
def test_image_pairs_agree_in_class_with_probability_one_minus_beta(beta):
    images, labels = _toy_images()
    pair = ImageClassPair(images, labels, beta)
    x, y = pair.sample(20_000, np.random.default_rng(4))
    cx, cy = labels[(x[:, 0] // 4).astype(int)], labels[(y[:, 0] // 4).astype(int)]
    assert np.mean(cx == cy) == pytest.approx(1 - beta, abs=0.015)
    assert not (x == y).all(axis=1).any()  # the second image is always another one
    assert pair.mutual_information() == pytest.approx(math.log(3) - binary_entropy(beta) - beta * math.log(2))
    # the empirical class channel's plug-in MI agrees with the closed form
    joint = np.histogram2d(cx, cy, bins=[3, 3])[0] / cx.size
    seen = joint > 0
    plug = np.sum(joint[seen] * np.log(joint[seen] / np.outer(joint.sum(1), joint.sum(0))[seen]))
    assert plug == pytest.approx(pair.mutual_information(), abs=0.01)


def test_image_pairs_reject_bad_inputs():
    images, labels = _toy_images()
    with pytest.raises(InputValueError, match="beta is 0.9"):
        ImageClassPair(images, labels, 0.9)
    with pytest.raises(InputValueError, match="at least 2 classes"):
        ImageClassPair(images[:6], labels[:6], 0.0)


def test_suite_holds_bmi_and_the_new_families_and_splits_each_family_in_two():
    tasks = suite()
    assert list(tasks)[:40] == list(TASKS)
    assert {t.family for t in new_tasks()} == set(NEW_FAMILIES) - {"image"}
    halves = split(tasks)
    assert set(halves.values()) == set(HALVES) and halves == split(tasks)
    for family in {t.family for t in tasks.values()}:
        names = [n for n, t in tasks.items() if t.family == family]
        counts = [sum(halves[n] == h for n in names) for h in HALVES]
        assert abs(counts[0] - counts[1]) <= 1 and (len(names) < 2 or min(counts) >= 1), family
    assert split(tasks, seed=1) != halves  # the seed decides


def test_scoring_rules_solved_factor_coverage_and_the_family_table():
    assert factor("discrete") == 1.25 and factor("sign-mixing") == 1.25 and factor("dense") == 1.5
    assert solved(1.3, 1.0, "dense") and not solved(1.3, 1.0, "discrete")
    assert not solved(-1.0, 1.0) and not solved(np.nan, 1.0) and not solved(0.0, 1.0)
    assert covered(0.9, 1.1, 1.0) and not covered(0.9, 0.95, 1.0) and covered(0.9, 0.99, 1.0, truth_se=0.01)
    records = [
        {"task": "a", "family": "f", "estimate": 1.0, "truth": 1.0, "reliable": 1, "lower": 0.9, "upper": 1.1},
        {"task": "b", "family": "f", "estimate": 2.0, "truth": 1.0, "reliable": 1, "lower": 1.9, "upper": 2.1},
        {"task": "c", "family": "g", "estimate": 0.2, "truth": 1.0, "reliable": 0, "lower": 0.1, "upper": math.inf},
    ]
    rows = {r["family"]: r for r in family_table(records)}
    assert rows["f"]["solved"] == 1 and rows["f"]["reliable and wrong"] == 1 and rows["f"]["coverage"] == 0.5
    assert rows["g"]["flagged"] == 1 and math.isnan(rows["g"]["coverage"])
    assert rows["all"]["cells"] == 3 and rows["all"]["tasks"] == 3
    assert "| f | 2 | 2 | 1 / 2 | 0 / 2 | 1 / 2 | 2 / 2 | 50% of 2 |" in format_table(family_table(records))
