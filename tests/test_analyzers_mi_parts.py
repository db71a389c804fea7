"""mi_estimate's parts, each against a case whose answer is known: what a column is, normal scores,
Mardia's statistics, the copula's per-row terms and their standard error, the principal components
fitted on training rows, the mixture's checks, the critic's widths."""
from __future__ import annotations

import math

import numpy as np
import pytest

from probe.analyzers._mi_candidates import _critic_widths
from probe.analyzers._mi_data import column_kind, normal_scores, prepare_view, principal_components
from probe.analyzers._mi_gaussian import _whiten, gaussian_fit, shape
from probe.analyzers._mi_mixture import mixture_fit, mixture_verdict
from probe.ground_truth import get_task
from probe.ground_truth.mixtures import x_mixture


def test_each_column_is_named_for_what_its_ties_say():
    rng = np.random.default_rng(0)
    n = 500
    normal = rng.standard_normal(n)
    assert column_kind(np.full(n, 3.0)) == "constant"
    assert column_kind(normal) == "continuous"
    assert column_kind(rng.integers(0, 5, n).astype(float)) == "discrete"
    assert column_kind(np.where(rng.random(n) < 0.3, 0.0, normal)) == "mixed"   # an atom at 0
    assert column_kind(np.round(normal, 2)) == "rounded"                       # ties, no atom, many values
    view = prepare_view(np.column_stack([normal, np.ones(n), rng.integers(0, 2, n)]), rng)
    assert view.dropped == 1 and view.kinds == ("continuous", "discrete") and view.tied and not view.discrete


def test_normal_scores_break_the_ties_of_rounded_columns_only():
    rng = np.random.default_rng(1)
    a = np.column_stack([np.round(rng.standard_normal(400), 1), rng.integers(0, 3, 400)]).astype(float)
    scores = normal_scores(a, rng, ("rounded", "discrete"))
    assert np.unique(scores[:, 0]).size == 400                      # every tie broken
    assert np.unique(scores[:, 1]).size == 3                        # a category keeps its one score
    assert (np.diff(a[np.argsort(scores[:, 0]), 0]) >= 0).all()    # still increasing in the value
    assert np.corrcoef(np.argsort(np.argsort(a[:, 1])), scores[:, 1])[0, 1] > 0.8


def test_mardia_statistics_pass_gaussian_rows_and_catch_scale_mixtures_and_curves():
    rng = np.random.default_rng(2)
    gaussian = shape(_whiten(rng.standard_normal((3000, 6))))
    assert abs(gaussian.kurtosis_z) < 4 and gaussian.skewness_z < 4 and gaussian.gaussian
    student = rng.standard_normal((3000, 6)) / np.sqrt(rng.chisquare(3, (3000, 1)) / 3)
    assert shape(_whiten(student)).kurtosis_z > 10 and not shape(_whiten(student)).gaussian
    x = rng.standard_normal(3000)
    banana = np.column_stack([x, x**2 + 0.3 * rng.standard_normal(3000)])
    assert shape(_whiten(banana)).skewness_z > 10


def test_the_copula_terms_average_to_its_value_and_their_spread_is_its_standard_error():
    values, ses = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((500, 2))
        y = 0.6 * x + 0.8 * rng.standard_normal((500, 2))
        fit = gaussian_fit(normal_scores(x), normal_scores(y))
        assert fit.terms.mean() == pytest.approx(fit.value, abs=1e-12)
        values.append(fit.value)
        ses.append(fit.terms.std(ddof=1) / math.sqrt(500))
    assert np.mean(values) == pytest.approx(-math.log(1 - 0.36), abs=0.02)  # 0.446 nats
    assert 0.75 < np.mean(ses) / np.std(values, ddof=1) < 1.33  # the delta method's error is the draws' spread


def test_principal_components_come_from_the_training_rows_alone():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20))
    train = np.arange(200)
    mean, basis = principal_components(a[train], max_components=5)
    b = a.copy()
    b[200:] = rng.standard_normal((100, 20)) * 100  # other held-out rows: the same basis
    mean2, basis2 = principal_components(b[train], max_components=5)
    np.testing.assert_array_equal(basis, basis2)
    assert basis.shape == (20, 5) and np.allclose(basis.T @ basis, np.eye(5))
    flat = np.column_stack([rng.standard_normal(200), np.zeros((200, 3))])
    assert principal_components(flat, max_components=4)[1].shape == (4, 1)  # no zero-variance direction


def test_the_mixture_describes_a_mixture_and_refuses_a_spiral():
    x, y = x_mixture(2, 0.8).sample(2000, seed=4)
    fit = mixture_fit(normal_scores(x), normal_scores(y), seed=0)
    assert fit is not None and fit.components >= 2 and mixture_verdict(fit) == ""
    assert fit.value == pytest.approx(0.538, rel=0.15) and fit.marginal_misfit < 0.05
    x, y = get_task("spiral-multinormal-sparse-3-3-2-2.0").sample(2000, seed=2)  # tuning half
    spiral = mixture_fit(normal_scores(x), normal_scores(y), seed=2)
    assert spiral is not None and "marginals do not match" in mixture_verdict(spiral)
    assert spiral.value < 0.6 * 1.022  # what it would have reported
    rng = np.random.default_rng(5)
    assert mixture_fit(rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2)), seed=0) is None  # one Gaussian


def test_the_critic_is_tried_on_few_components_of_a_wide_view():
    assert _critic_widths(784) == [8, 16, 32, 64]
    assert _critic_widths(10) == [8, 10] and _critic_widths(5) == [5] and _critic_widths(64) == [8, 16, 32, 64]
