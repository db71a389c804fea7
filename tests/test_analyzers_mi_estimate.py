"""mi_estimate: known answers, kinds (estimate / lower bound), selection by checks, discrete and
tied data, high-dimensional inputs with constant columns, calibrated intervals, verdicts.

Each failure mode of issue 19 has a test here built on a case where the estimator before it
went wrong: a sign-mixed pair (the copula overshoots), a binary channel (ties), a 784-d input
with constant columns (it crashed), a lower bound reported as the estimate (Student-t), and a
small grid whose reliable intervals must cover the truth (tiny samples were passed because
their value came out large)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import xarray as xr

from probe.analyzers._mi_candidates import ESTIMATE, LOWER_BOUND, Candidate
from probe.analyzers._mi_select import select
from probe.analyzers.mi_estimate import gaussian_copula_mi, mi_estimate, normal_scores
from probe.errors import InputTypeError, InputValueError
from probe.ground_truth.discrete import binary_symmetric
from probe.ground_truth.mixtures import sign_mixing, x_mixture


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine
    yield
    torch.set_num_threads(previous)


def gaussian_pairs(n: int, d: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) noise: I(x; y) = -d/2 ln(1 - rho^2) nats."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y, -d / 2 * math.log(1 - rho**2)


def student_pairs(n: int, d: int, dof: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multivariate Student-t with identity dispersion split d + d: uncorrelated, yet dependent."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2 * d)) / np.sqrt(rng.chisquare(dof, (n, 1)) / dof)
    return z[:, :d], z[:, d:]


def _ci(ds: xr.Dataset) -> tuple[float, float]:
    return tuple(float(v) for v in ds.mutual_information_ci.values)


def test_two_dimensional_gaussian_is_recovered_as_an_estimate_with_an_interval_around_it():
    x, y, truth = gaussian_pairs(3000, 1, 0.8, seed=0)  # 0.51 nats
    ds = mi_estimate(x, y)
    lower, upper = _ci(ds)
    assert ds.mutual_information.item() == pytest.approx(truth, abs=0.05)
    assert lower <= ds.mutual_information.item() <= upper and lower < truth < upper
    assert ds.reliable.item() == 1 and ds.unreliable_reason.item() == "" and ds.kind.item() == "estimate"
    assert ds.method.item() == "gaussian_copula"  # its scores passed the Gaussian check; KSG agrees
    assert ds.candidate.values.tolist() == ["gaussian_copula", "ksg"]
    assert ds.candidate_kind.values.tolist() == ["estimate", "estimate"]
    assert "standard error of the per-row terms" in ds.attrs["ci_method"] and "widened to hold ksg" in ds.attrs["ci_method"]
    assert ds.constant_columns.values.tolist() == [0, 0]


def test_gaussian_copula_matches_the_closed_form_and_the_log_determinant_formula():
    x, y, truth = gaussian_pairs(4000, 5, 0.6, seed=1)  # 1.12 nats; too many dimensions for KSG at n = 4,000
    ds = mi_estimate(x, y, neural=False)
    assert ds.method.item() == "gaussian_copula" and ds.reliable.item() == 1
    assert ds.mutual_information.item() == pytest.approx(truth, abs=0.05)
    assert "ksg" not in ds.candidate.values
    xs, ys = normal_scores(x), normal_scores(y)
    cov = np.cov(np.hstack([xs, ys]), rowvar=False)
    logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    plain = 0.5 * (logdet(cov[:5, :5]) + logdet(cov[5:, 5:]) - logdet(cov))
    assert gaussian_copula_mi(xs, ys) == pytest.approx(plain, abs=0.01)  # only the Wishart correction differs


def test_the_wishart_correction_removes_the_bias_of_independent_gaussians():
    rng = np.random.default_rng(2)
    values = [gaussian_copula_mi(rng.standard_normal((500, 10)), rng.standard_normal((500, 10))) for _ in range(20)]
    assert abs(np.mean(values)) < 0.01  # uncorrected: d_x d_y / 2n = 0.1 nats


def test_monotone_maps_of_each_column_change_nothing():
    x, y, _ = gaussian_pairs(1000, 2, 0.7, seed=3)
    plain = mi_estimate(x, y, neural=False)
    warped = mi_estimate(np.exp(x), np.sign(y) * np.abs(y) ** 3 + 5.0, neural=False)
    xr.testing.assert_identical(plain, warped)


def test_a_sign_mixed_pair_is_not_taken_from_the_copula_that_overshoots_it():
    task = sign_mixing(1, 0.9, 0.1)  # 2 + 2: Y's pairs uncorrelated yet dependent; X = Y + noise
    x, y = task.sample(3000, seed=4)
    ds = mi_estimate(x, y, neural=False)
    copula = ds.sel(candidate="gaussian_copula")
    assert copula.candidate_reliable.item() == 0 and "not jointly Gaussian" in copula.candidate_reason.item()
    assert copula.candidate_estimate.item() > task.mutual_information  # it would have overshot
    ratio = ds.mutual_information.item() / task.mutual_information
    assert ds.reliable.item() == 0 or 1 / 1.25 < ratio < 1.25
    assert ds.method.item() != "gaussian_copula"


def test_a_binary_symmetric_channel_is_estimated_as_discrete():
    task = binary_symmetric(0.1)  # I = ln 2 - H(0.1) = 0.368 nats; every row tied
    x, y = task.sample(2000, seed=5)
    ds = mi_estimate(x, y)
    assert ds.method.item() == "plug_in" and ds.reliable.item() == 1 and ds.kind.item() == "estimate"
    assert ds.mutual_information.item() == pytest.approx(task.mutual_information, rel=0.1)
    lower, upper = _ci(ds)
    assert lower < task.mutual_information < upper
    assert "discrete or mixed columns" in ds.candidate_reason.sel(candidate="gaussian_copula").item()
    assert ds.attrs["column_kinds_x"] == "discrete 1" and "infonce" not in ds.candidate.values


def test_a_mixed_pair_is_estimated_by_mixed_ksg_without_jitter():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 2, size=(3000, 1)).astype(float)
    y = 2.0 * x + rng.standard_normal((3000, 1))  # truth 0.338 nats (see test_ground_truth_families)
    ds = mi_estimate(x, y)
    assert ds.method.item() == "ksg" and "mixed KSG" in ds.attrs["ci_method"]
    assert ds.mutual_information.item() == pytest.approx(0.3378, rel=0.1)


def _image_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """784 'pixels' in [0, 1] quantised to 256 levels, a 4-pixel border always 0 (384 constant columns),
    two views whose class agrees; n rows."""
    rng = np.random.default_rng(seed)
    inside = np.zeros((28, 28), dtype=bool)
    inside[4:24, 4:24] = True
    prototypes = rng.random((10, 784)) * inside.ravel()
    classes = rng.integers(0, 10, size=n)

    def draw(c):
        img = np.clip(prototypes[c] + 0.3 * rng.standard_normal((n, 784)), 0, 1) * inside.ravel()
        return np.round(img * 255) / 255
    return draw(classes), draw(classes), int((~inside).sum())


def test_a_784_dimensional_input_with_constant_columns_gives_a_finite_flagged_answer():
    x, y, constant = _image_like(600, seed=7)
    ds = mi_estimate(x, y, critic_steps=150)
    assert np.isfinite(ds.mutual_information.item())
    assert ds.constant_columns.values.tolist() == [constant, constant]
    assert ds.kind.item() == "lower_bound" and ds.reliable.item() == 0
    assert ds.unreliable_reason.item().startswith("lower bound only")
    assert "principal components fitted on the critic's training rows: x 400 -> " in ds.attrs["ci_method"]
    lower, upper = _ci(ds)
    assert upper == math.inf and lower <= ds.mutual_information.item()


def test_a_lower_bound_is_reported_as_one_when_no_estimate_passes():
    from probe.ground_truth.tasks import TASKS

    x, y = TASKS["spiral-multinormal-sparse-3-3-2-2.0"].sample(3000, 8)  # 1.022 nats; no estimate's checks pass
    ds = mi_estimate(x, y, neural=False)
    assert ds.kind.item() == "lower_bound"
    assert ds.reliable.item() == 0 and ds.unreliable_reason.item().startswith("lower bound only")
    assert 0 < ds.mutual_information.item() < 1.022
    assert _ci(ds)[1] == math.inf
    assert ds.candidate_kind.sel(candidate="ksg_radial").item() == "lower_bound"  # the spiral turns the directions
    assert ds.candidate_kind.sel(candidate=ds.method.item()).item() == "lower_bound"


def test_a_student_t_pair_is_estimated_by_the_radial_ksg_where_rotations_change_nothing():
    x, y = student_pairs(4000, 3, 2, seed=8)  # 0.291 nats, all of it in the shared scale
    ds = mi_estimate(x, y, neural=False)
    assert ds.kind.item() == "estimate" and ds.method.item() == "ksg_radial", ds.unreliable_reason.item()
    assert ds.reliable.item() == 1
    assert ds.mutual_information.item() == pytest.approx(0.291, rel=0.15)
    lower, upper = _ci(ds)
    assert lower < 0.291 < upper
    assert ds.candidate_reliable.sel(candidate="gaussian_copula").item() == 0
    assert "separate rotations of x and y change nothing" in ds.attrs["ci_method"]


def test_a_correlated_student_t_pair_keeps_the_radial_ksg_a_lower_bound():
    x, y = student_pairs(4000, 3, 2, seed=8)
    ds = mi_estimate(x, y + 0.5 * x, neural=False)  # cross-scatter: the directions of x now tell about y
    assert ds.candidate_kind.sel(candidate="ksg_radial").item() == "lower_bound"
    assert ds.method.item() != "ksg_radial" or ds.kind.item() == "lower_bound"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_z_is_a_null_z_score_for_an_invariant_pair_and_large_for_a_correlated_one(seed):
    from probe.analyzers._mi_data import prepare_view
    from probe.analyzers._mi_gaussian import _whiten, rotation_z

    def z_of(x, y):  # as mi_estimate computes it: on the whitened normal scores
        rng = np.random.default_rng(seed)
        return rotation_z(_whiten(prepare_view(x, rng).scores), _whiten(prepare_view(y, rng).scores))

    x, y = student_pairs(2000, 2, 1, seed=seed)
    assert abs(z_of(x, y)) < 3.0
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2000, 2))
    assert z_of(a, 0.6 * a + 0.8 * rng.standard_normal((2000, 2))) > 10.0  # rho 0.6: I(X; Y) > I(|X|; |Y|)
    assert np.isnan(z_of(rng.standard_normal((2000, 9)), y))  # a view over 8 dimensions: not tested


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conditional_z_is_small_for_gaussian_pairs_and_large_for_uniform_noise_on_a_uniform_signal(seed):
    from probe.analyzers._mi_data import prepare_view
    from probe.analyzers._mi_gaussian import gaussian_fit

    def z_of(x, y):
        rng = np.random.default_rng(seed)
        return gaussian_fit(prepare_view(x, rng).scores, prepare_view(y, rng).scores).conditional_z

    rng = np.random.default_rng([seed, 5])
    for d in (1, 5):  # rho 0.6 in every coordinate: jointly Gaussian, any monotone map of the columns too
        a = rng.standard_normal((2000, d))
        assert z_of(np.exp(a), 0.6 * a + 0.8 * rng.standard_normal((2000, d))) < 3.0
    u = rng.random((2000, 1))
    assert z_of(u, u + rng.uniform(-0.5, 0.5, (2000, 1))) > 10.0  # the spread of y given x depends on x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uniform_noise_on_a_uniform_signal_does_not_get_the_copula_as_a_reliable_estimate(seed):
    # I(X; X + N) for X ~ U(0, 1), N ~ U(-1/2, 1/2): h(X + N) - h(N) = 1/2 nat. At n = 500 Mardia's
    # statistics pass and the copula says 0.32; the canonical pair's conditional test does not pass.
    rng = np.random.default_rng(seed)
    x = rng.random((500, 1))
    y = x + rng.uniform(-0.5, 0.5, (500, 1))
    ds = mi_estimate(x, y, seed=seed, neural=False)
    assert ds.copula_conditional_z.item() > 3.0
    assert ds.candidate_kind.sel(candidate="gaussian_copula").item() == "lower_bound"
    assert ds.candidate_estimate.sel(candidate="gaussian_copula").item() < 0.4
    if ds.reliable.item():
        assert ds.method.item() != "gaussian_copula"
        assert 0.5 / 1.5 <= ds.mutual_information.item() <= 0.5 * 1.5


def test_a_zero_correlation_mixture_is_solved_by_the_mixture_candidate():
    task = x_mixture(2, 0.8)  # 0.538 nats, no correlation between X and Y
    x, y = task.sample(3000, seed=9)
    ds = mi_estimate(x, y, neural=False)
    assert ds.candidate_kind.sel(candidate="gaussian_copula").item() == "lower_bound"  # views Gaussian, pair not
    assert ds.method.item() == "gaussian_mixture" and ds.reliable.item() == 1
    assert ds.mutual_information.item() == pytest.approx(task.mutual_information, rel=0.15)
    assert ds.mixture_shape.sizes["component"] >= 2


def test_reliable_intervals_cover_the_truth_on_a_small_grid_and_tiny_samples_are_not_reliable():
    covered, reliable, tiny_reliable = 0, 0, 0
    for n in (25, 200, 1000):
        for seed in range(6):
            x, y, truth = gaussian_pairs(n, 1, 0.6, seed=100 + seed)  # 0.223 nats
            ds = mi_estimate(x, y, seed=seed, neural=False)
            if ds.reliable.item():
                lower, upper = _ci(ds)
                reliable += 1
                covered += lower <= truth <= upper
                tiny_reliable += n == 25
                assert 1 / 1.5 < ds.mutual_information.item() / truth < 1.5
    assert tiny_reliable == 0  # 25 rows: the standard error alone is over 0.1 nats
    assert reliable >= 8 and covered >= 0.9 * reliable


@pytest.mark.parametrize("relation", ["copy", "monotone", "one column copied"])
def test_a_copy_of_x_is_not_given_the_copulas_rounding_cap_as_an_estimate(relation):
    # y = x (or exp(x), or one column of x beside noise): I(X; Y) is infinite. The copula's canonical
    # correlation is 1 to rounding, so its value was its clip, 26.9 nats for 2 columns, reported reliable.
    rng = np.random.default_rng(21)
    x = rng.standard_normal((500, 2))
    y = {"copy": x.copy(), "monotone": np.exp(x),
         "one column copied": np.hstack([x[:, :1], rng.standard_normal((500, 1))])}[relation]
    ds = mi_estimate(x, y, seed=0)
    copula = ds.sel(candidate="gaussian_copula")
    assert ds.reliable.item() == 0 and copula.candidate_reliable.item() == 0
    assert "agree exactly" in str(copula.candidate_reason.values)
    assert str(ds.kind.values) == "lower_bound" and ds.mutual_information_ci.sel(interval="upper").item() == math.inf
    # With more rows KSG, still climbing by ln 2 per doubling, is no estimate either: a lower bound at most.
    for columns in (1, 2):
        big = rng.standard_normal((5000, columns))
        many = mi_estimate(big, big.copy(), seed=0, neural=False)
        assert str(many.kind.values) == "lower_bound" and many.reliable.item() == 0
        assert many.mutual_information_ci.sel(interval="upper").item() == math.inf
    # Noise well above rounding keeps the copula an estimate: the check is for exact agreement only.
    x, y, truth = gaussian_pairs(2000, 2, 0.999, seed=22)
    near = mi_estimate(x, y, seed=0).sel(candidate="gaussian_copula")
    assert near.candidate_reliable.item() == 1 and abs(near.candidate_estimate.item() / truth - 1) < 0.1


def test_estimates_that_disagree_beyond_their_intervals_make_the_result_unreliable():
    def make(name, kind, value, half_width, reason=""):
        return Candidate(name, kind, value, half_width / 2, value - half_width, value + half_width, reason, "m",
                         valid_bound=kind == LOWER_BOUND)
    agree = select([make("gaussian_copula", ESTIMATE, 1.0, 0.1), make("ksg", ESTIMATE, 1.05, 0.1)], 0.95)
    assert agree.reason == "" and agree.chosen.name == "gaussian_copula" and agree.upper == pytest.approx(1.15)
    clash = select([make("gaussian_copula", ESTIMATE, 1.0, 0.05), make("ksg", ESTIMATE, 1.5, 0.05)], 0.95)
    assert clash.reason.startswith("estimates disagree beyond their intervals") and "ksg = 1.5" in clash.reason
    refuted = select([make("gaussian_copula", ESTIMATE, 1.0, 0.05), make("infonce", LOWER_BOUND, 1.4, 0.1)], 0.95)
    assert refuted.kind == LOWER_BOUND and refuted.chosen.name == "infonce" and refuted.upper == math.inf
    assert refuted.reason.startswith("lower bound only") and "below the lower bound infonce" in refuted.reason
    imprecise = make("ksg", ESTIMATE, 0.5, 0.15, "moves with n")
    imprecise.applies = True  # its assumptions held, its precision did not: its interval still counts
    clash = select([make("gaussian_copula", ESTIMATE, 0.2, 0.03), imprecise], 0.95)
    assert clash.chosen.name == "gaussian_copula" and clash.reason.startswith("estimates disagree")
    nothing = select([make("ksg", ESTIMATE, 0.3, 0.1, "too noisy")], 0.95)
    assert nothing.reason.startswith("no candidate is reliable") and "too noisy" in nothing.reason


def test_an_estimate_still_settling_above_every_bound_is_reported_over_the_bound_and_one_below_is_not():
    def make(name, kind, value, half_width, reason=""):
        return Candidate(name, kind, value, half_width / 2, value - half_width, value + half_width, reason, "m",
                         valid_bound=kind == LOWER_BOUND)

    def settling(value):  # its assumptions held; it moved with n, so its precision did not
        c = make("gaussian_mixture", ESTIMATE, value, 0.6, "moves by +0.48 nats between n / 2 and n rows")
        c.applies = True
        return c

    above = select([make("gaussian_copula", LOWER_BOUND, 0.0, 0.01), settling(4.45),
                    make("infonce", LOWER_BOUND, 0.08, 0.02, "train/test gap 0.46 nats")], 0.95)
    assert above.chosen.name == "gaussian_mixture" and above.kind == ESTIMATE and above.value == pytest.approx(4.45)
    assert above.reason.startswith("no candidate is reliable") and "moves by" in above.reason
    below = select([settling(1.0), make("infonce", LOWER_BOUND, 1.5, 0.1)], 0.95)  # a bound says more
    assert below.chosen.name == "infonce" and below.kind == LOWER_BOUND and below.reason.startswith("lower bound only")


def test_an_estimate_refuted_by_a_bound_is_no_rival_of_the_estimate_that_refuted_it():
    radial = Candidate("ksg_radial", ESTIMATE, 0.304, 0.014, 0.272, 0.329, "", "m", valid_bound=True, applies=True,
                       bound_lower=0.278)  # exact here (rotations change nothing), and a bound everywhere
    ksg = Candidate("ksg", ESTIMATE, 0.2, 0.015, 0.18, 0.238, "", "m", applies=True)
    result = select([ksg, radial], 0.95)
    assert result.chosen.name == "ksg_radial" and result.reason == ""
    assert ksg.reason.startswith("below the lower bound ksg_radial") and not ksg.applies
    imprecise = Candidate("ksg", ESTIMATE, 0.2, 0.03, 0.15, 0.25, "moves with n", "m", applies=True)
    fallback = select([imprecise, Candidate("infonce", LOWER_BOUND, 0.3, 0.01, 0.28, 0.32, "", "m", valid_bound=True)],
                      0.95)
    assert fallback.chosen.name == "infonce" and "moves with n; also below the lower bound infonce" in fallback.reason


def test_a_bound_refutes_an_estimate_beyond_their_margins_in_quadrature_not_only_beyond_their_sum():
    def pair(bound_value):
        ksg = Candidate("ksg", ESTIMATE, 0.104, 0.018, 0.063, 0.154, "", "m", applies=True)  # margin above 0.050
        radial = Candidate("ksg_radial", LOWER_BOUND, bound_value, 0.014, bound_value - 0.033, bound_value + 0.033, "",
                           "m", valid_bound=True)  # margin below 0.033: quadrature 0.060, sum 0.083
        return ksg, radial
    for value, refuted in ((0.104 + 0.065, True), (0.104 + 0.055, False)):
        ksg, radial = pair(value)
        select([ksg, radial], 0.95)
        assert (not ksg.applies) is refuted and ksg.reason.startswith("below the lower bound") is refuted


def test_no_negative_or_non_finite_value_is_marked_reliable():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((300, 2))
        ds = mi_estimate(x, rng.standard_normal((300, 1)) + 0.05 * x[:, :1], seed=seed, neural=False)
        value = ds.mutual_information.item()
        assert not ds.reliable.item() or (math.isfinite(value) and value > 0)
        for c in ds.candidate.values:
            if ds.candidate_reliable.sel(candidate=c).item():
                assert ds.candidate_estimate.sel(candidate=c).item() >= 0


def test_independent_variables_are_never_reported_reliable():
    rng = np.random.default_rng(5)
    ds = mi_estimate(rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2)), neural=False)
    assert ds.reliable.item() == 0 and ds.mutual_information.item() < 0.1


def test_the_critic_candidates_run_by_shape_and_are_lower_bounds():
    x, y, truth = gaussian_pairs(600, 2, 0.8, seed=7)  # 4 dimensions > ksg_max_dims(600) = 3: a critic is trained
    ds = mi_estimate(x, y, critic_steps=60)
    assert ds.candidate_kind.sel(candidate="infonce").item() == "lower_bound"
    assert ds.candidate_estimate.sel(candidate="infonce").item() < truth + 0.15
    assert ds.attrs["critic_steps"] == 60
    assert "infonce" not in mi_estimate(x, y, neural=False).candidate.values


def test_same_seed_same_dataset_and_it_survives_netcdf(tmp_path):
    x, y, _ = gaussian_pairs(600, 2, 0.6, seed=8)
    before = x.copy()
    first, again = mi_estimate(x, y, seed=2, neural=False), mi_estimate(x, y, seed=2, neural=False)
    xr.testing.assert_identical(first, again)
    np.testing.assert_array_equal(x, before)
    path = tmp_path / "mi.nc"
    first.to_netcdf(path, engine="netcdf4")
    with xr.open_dataset(path, engine="netcdf4") as back:
        xr.testing.assert_identical(first, back.load())


def test_errors_name_the_input_the_problem_and_the_fix():
    x, y, _ = gaussian_pairs(100, 2, 0.5, seed=9)
    with pytest.raises(InputValueError, match="mi_estimate: every column of y is constant"):
        mi_estimate(x, np.ones((100, 2)))
    with pytest.raises(InputValueError, match="mi_estimate: x has 10 sample"):
        mi_estimate(x[:10], y[:10])
    with pytest.raises(InputValueError, match="k is 60 for n = 100 rows; k < n / 2"):
        mi_estimate(x, y, k=60)
    with pytest.raises(InputTypeError, match="neural is 'yes'"):
        mi_estimate(x, y, neural="yes")
    with pytest.raises(InputValueError, match="x has 100 rows but y has 99"):
        mi_estimate(x, y[:99])
    with pytest.raises(InputValueError, match="NaN"):
        mi_estimate(np.where(x > 2, np.nan, x), y)


def test_probe_analyze_prints_a_lower_bound_as_one_with_its_interval_and_reason(tmp_path):
    from click.testing import CliRunner

    from probe.cli import main

    x, y = student_pairs(450, 3, 2, seed=12)  # below 500 rows: no critic, the radial bound is what is left
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y + 0.5 * x)  # cross-scatter: the radial KSG is only a bound
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "x.npy"), "--paired", str(tmp_path / "y.npy"),
                                       "--analyzers", "mi_estimate", "--threads", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [summary] = [line for line in lines if line.startswith("mi_estimate_summary ")]
    assert re.search(r"≥ \d+\.\d+ nats \(lower bound\), 95% interval \[\d+\.?\d*, inf\)", summary), summary
    [row] = [line for line in lines if line.startswith("mi_estimate_mutual_information ")]
    assert re.search(r"≥ \d+\.?\d*\s+\[\d+\.?\d*, inf\]\s+nats\s+UNRELIABLE: lower bound only", row), row
    assert any(line.startswith("mi_estimate_kind") and "lower_bound" in line for line in lines)


def test_probe_analyze_marks_every_candidate_that_is_a_lower_bound_with_its_sign(tmp_path):
    from click.testing import CliRunner

    from probe.cli import main

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1200, 2))
    y = x + 0.5 * rng.normal(size=(1200, 2))  # Gaussian: the copula is the estimate, ksg_radial a bound beside it
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "x.npy"), "--paired", str(tmp_path / "y.npy"),
                                       "--analyzers", "mi_estimate", "--threads", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()
            if line.startswith("mi_estimate_candidate_estimate[")}
    assert rows["mi_estimate_candidate_estimate[ksg_radial]"] == "≥", rows
    assert rows["mi_estimate_candidate_estimate[gaussian_copula]"] != "≥", rows
