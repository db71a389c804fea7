"""Tests of probe.ground_truth: the Beyond-Normal v1 tasks (Czyż et al., NeurIPS 2023).

Closed forms are checked by Monte Carlo against densities written independently (scipy.stats),
or by numerical integration; transforms by round trips, monotonicity and finite differences.
"""
import itertools

import numpy as np
import pytest
from scipy import integrate, linalg, stats
from scipy.special import gammaln

from probe.errors import InputTypeError, InputValueError, UnknownNameError
from probe.ground_truth import TASKS, Task, get_task, list_tasks
from probe.ground_truth.distributions import StudentPair, student_t_mi_correction
from probe.ground_truth.transforms import (
    BIMODAL_X,
    BIMODAL_Y,
    WIGGLY_X,
    WIGGLY_Y,
    Asinh,
    GaussianMixtureQuantile,
    HalfCube,
    NormalCDF,
    Spiral,
    SwissRoll,
    Wiggly,
)

# The v1 list of cbg-ethz/bmi (bmi.benchmark.BENCHMARK_TASKS_LIST), in its order.
BMI_V1 = [
    "1v1-normal-0.75", "normal_cdf-1v1-normal-0.75", "1v1-additive-0.1", "1v1-additive-0.75",
    "1v1-bimodal-0.75", "wiggly-1v1-normal-0.75", "half_cube-1v1-normal-0.75", "student-identity-1-1-1",
    "asinh-student-identity-1-1-1", "swissroll_x-normal_cdf-1v1-normal-0.75",
    *[f"multinormal-dense-{d}-{d}-0.5" for d in (2, 3, 5, 25, 50)],
    *[f"multinormal-sparse-{d}-{d}-2-2.0" for d in (2, 3, 5, 25)],
    *[f"student-identity-{d}-{d}-{k}" for d, k in ((2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3))],
    *[f"{p}multinormal-sparse-{d}-{d}-2-2.0" for p in ("normal_cdf-", "half_cube-", "spiral-", "spiral-normal_cdf-")
      for d in (3, 5, 25)],
    *[f"asinh-student-identity-{d}-{d}-{k}" for d, k in ((2, 1), (3, 2), (5, 2))],
]
NAMES = list(TASKS)
BASES = [t.name for t in list_tasks() if t.transform == "identity"]
TRANSFORMED = [t.name for t in list_tasks() if t.transform != "identity"]


def test_registry_mirrors_bmi_v1():
    assert len(TASKS) >= 40
    assert NAMES == BMI_V1
    assert len(set(NAMES)) == len(NAMES)
    assert [t.name for t in list_tasks()] == NAMES
    assert {t.family for t in list_tasks()} == {
        "normal-1v1", "additive-noise", "dense", "sparse", "student", "transformed", "embedding"}
    for task in list_tasks():
        assert isinstance(task, Task) and task.description
        assert task.base in TASKS and TASKS[task.base].transform == "identity"
        assert task.mutual_information == TASKS[task.base].mutual_information  # transforms keep MI
        assert task.dim_x >= 1 and task.dim_y >= 1 and np.isfinite(task.mutual_information)
        assert task.mutual_information > 0


def test_get_task_suggests_the_closest_name():
    assert get_task("1v1-normal-0.75") is TASKS["1v1-normal-0.75"]
    with pytest.raises(UnknownNameError, match=r"Unknown task 'multinormal-dense-5-5-0\.4'\. Did you mean "
                                               r"'multinormal-dense-5-5-0\.5'\?"):
        get_task("multinormal-dense-5-5-0.4")
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        get_task("no such task")


@pytest.mark.parametrize("name", NAMES)
def test_sample_shapes_determinism_and_finiteness(name):
    task = get_task(name)
    x, y = task.sample(300, seed=3)
    assert x.shape == (300, task.dim_x) and y.shape == (300, task.dim_y)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.isfinite(x).all() and np.isfinite(y).all()
    x2, y2 = task.sample(300, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, y3 = task.sample(300, seed=4)
    assert not np.array_equal(x, x3) and not np.array_equal(y, y3)


@pytest.mark.parametrize("name", TRANSFORMED)
def test_transformed_samples_invert_to_the_base_samples(name):
    task = get_task(name)
    x, y = task.sample(500, seed=1)
    x0, y0 = task.sample_base(500, seed=1)
    assert x.shape != x0.shape or not np.allclose(x, x0)  # the transform does something
    np.testing.assert_allclose(task.transform_x.inverse(x), x0, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(task.transform_y.inverse(y), y0, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("bad, error", [((0, 1), InputValueError), ((2.5, 1), InputTypeError),
                                        ((10, -1), InputValueError), ((10, 1.0), InputTypeError)])
def test_sample_rejects_bad_n_and_seed(bad, error):
    with pytest.raises(error, match=r"Task\('1v1-normal-0.75'\)\.sample: (n|seed)"):
        get_task("1v1-normal-0.75").sample(*bad)


# ---- closed forms ------------------------------------------------------------------------------

def _reference_pmi(task: Task, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p(x, y) - log p(x) - log p(y) from scipy's densities, independent of the package."""
    dist, dx = task.distribution, task.distribution.dim_x
    if task.family == "student":
        scatter = dist.dispersion

        def logpdf(z, block):
            return stats.multivariate_t(np.zeros(len(block)), scatter[np.ix_(block, block)], df=dist.dof).logpdf(z)
    else:
        scatter = dist.covariance

        def logpdf(z, block):
            return stats.multivariate_normal(np.zeros(len(block)), scatter[np.ix_(block, block)]).logpdf(z)
    ix, iy = list(range(dx)), list(range(dx, scatter.shape[0]))
    return logpdf(np.hstack([x, y]), ix + iy) - logpdf(x, ix) - logpdf(y, iy)


@pytest.mark.parametrize("name", [n for n in BASES if TASKS[n].family != "additive-noise"])
def test_closed_form_mi_matches_monte_carlo_of_the_density_ratio(name):
    task = get_task(name)
    n = 20_000
    x, y = task.sample(n, seed=11)
    pmi = _reference_pmi(task, x, y)
    mean, se = pmi.mean(), pmi.std(ddof=1) / np.sqrt(n)
    assert se < 0.02, f"{name}: Monte Carlo too noisy to test anything (se={se:.3g})"
    assert abs(mean - task.mutual_information) < 4 * se, (name, mean, se, task.mutual_information)
    # the package's own pointwise MI is the same function
    np.testing.assert_allclose(task.distribution.pointwise_mutual_information(x[:500], y[:500]), pmi[:500],
                               rtol=1e-9, atol=1e-9)


def test_gaussian_closed_forms_against_explicit_formulas():
    # dense: log det((1-ρ) I_d + ρ 11ᵀ) = (d-1) log(1-ρ) + log(1 + (d-1)ρ)
    def logdet(d, rho=0.5):
        return (d - 1) * np.log(1 - rho) + np.log(1 + (d - 1) * rho)
    for d in (2, 3, 5, 25, 50):
        expected = 0.5 * (2 * logdet(d) - logdet(2 * d))
        assert get_task(f"multinormal-dense-{d}-{d}-0.5").mutual_information == pytest.approx(expected, rel=1e-10)
    assert get_task("1v1-normal-0.75").mutual_information == pytest.approx(-0.5 * np.log(1 - 0.75**2), rel=1e-12)


@pytest.mark.parametrize("d", [2, 3, 5, 25])
def test_sparse_covariance_is_bmis_latent_variable_model(d):
    # bmi's LVM with alpha = beta = 0, lambda = eta = 2, epsilon = 1: X_i = 2 Z_i + E_i (i < 2),
    # X_i = 2 V_i + E_i (i >= 2), likewise for Y with F and W; every latent is N(0, 1).
    k, lam = 2, 2.0
    latents = k + 2 * d + 2 * (d - k)
    mixing = np.zeros((2 * d, latents))
    for side in (0, 1):
        for i in range(d):
            row = side * d + i
            if i < k:
                mixing[row, i] = lam
            else:
                mixing[row, k + 2 * d + side * (d - k) + (i - k)] = lam
            mixing[row, k + side * d + i] = 1.0
    cov = mixing @ mixing.T
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    task = get_task(f"multinormal-sparse-{d}-{d}-2-2.0")
    np.testing.assert_allclose(task.distribution.covariance, corr, atol=1e-15)
    assert task.mutual_information == pytest.approx(-k * 0.5 * np.log(1 - 0.8**2), rel=1e-12)


def test_student_correction_is_positive_and_vanishes_for_large_dof():
    for dx, dy in ((1, 1), (2, 2), (5, 5), (1, 4)):
        values = [student_t_mi_correction(dof, dx, dy) for dof in (1, 2, 3, 10, 100)]
        assert all(v > 0 for v in values) and values == sorted(values, reverse=True)
        assert student_t_mi_correction(1e7, dx, dy) < 1e-6
    # a dispersion with correlations adds the Gaussian MI of the dispersion
    disp = np.array([[1.0, 0.6], [0.6, 1.0]])
    assert StudentPair(disp, 1, 3).mutual_information() == pytest.approx(
        student_t_mi_correction(3, 1, 1) - 0.5 * np.log(1 - 0.36), rel=1e-12)


@pytest.mark.parametrize("k, dof", [(1, 1), (2, 1), (4, 2), (6, 3), (10, 2), (10, 3)])
def test_student_entropy_by_quadrature_over_the_radius(k, dof):
    from probe.ground_truth.distributions import student_t_entropy

    # For T ~ t_ν(0, I_k), |T|²/k ~ F(k, ν) and log p(t) = c - (ν+k)/2 log(1 + |t|²/ν), so
    # h = -c + (ν+k)/2 E log(1 + k F / ν): one integral against scipy's F density.
    c = gammaln(0.5 * (dof + k)) - gammaln(0.5 * dof) - 0.5 * k * np.log(dof * np.pi)
    f_dist = stats.f(k, dof)
    expectation = integrate.quad(lambda v: np.log1p(k * v / dof) * f_dist.pdf(v), 0, np.inf, limit=200)[0]
    assert student_t_entropy(k, dof) == pytest.approx(-c + 0.5 * (dof + k) * expectation, abs=1e-7)
    assert student_t_entropy(k, dof) == pytest.approx(
        stats.multivariate_t(np.zeros(k), np.eye(k), df=dof).entropy(), abs=1e-10)


@pytest.mark.parametrize("name", [n for n in BASES if TASKS[n].family != "additive-noise"])
def test_samplers_draw_the_stated_distribution(name):
    # whitened by the Cholesky factor, |w|² ~ χ²(d) for the Gaussian and |w|²/d ~ F(d, ν) for Student-t
    task = get_task(name)
    x, y = task.sample_base(20_000, seed=8)
    dist = task.distribution
    scatter = dist.dispersion if task.family == "student" else dist.covariance
    w = linalg.solve_triangular(np.linalg.cholesky(scatter), np.hstack([x, y]).T, lower=True).T
    r2, d = np.einsum("ij,ij->i", w, w), scatter.shape[0]
    reference = stats.f(d, dist.dof).cdf if task.family == "student" else stats.chi2(d).cdf
    assert stats.kstest(r2 / d if task.family == "student" else r2, reference).pvalue > 1e-3
    u = w / np.sqrt(r2)[:, None]  # uniform on the sphere: E[u uᵀ] = I / d (heavy tails do not matter)
    np.testing.assert_allclose(d * (u.T @ u) / len(u), np.eye(d), atol=0.06)


@pytest.mark.parametrize("epsilon", [0.1, 0.3, 0.5, 0.75, 2.0])
def test_additive_uniform_mi_by_numerical_integration(epsilon):
    from probe.ground_truth.distributions import AdditiveUniformPair

    pair = AdditiveUniformPair(epsilon)

    def p_y(v):  # ∫_0^1 p_N(v - x) dx by quadrature, not by the package's trapezoid
        lo, hi = max(0.0, v - epsilon), min(1.0, v + epsilon)
        return integrate.quad(lambda _: 1.0 / (2 * epsilon), lo, hi)[0] if hi > lo else 0.0

    def integrand(v):
        p = p_y(v)
        return -p * np.log(p) if p > 0 else 0.0

    kinks = sorted({-epsilon, epsilon, 1 - epsilon, 1 + epsilon})
    h_y = sum(integrate.quad(integrand, a, b)[0] for a, b in itertools.pairwise(kinks))
    assert pair.mutual_information() == pytest.approx(h_y - np.log(2 * epsilon), abs=1e-8)
    # and by Monte Carlo of the package's pointwise MI, whose density the quadrature confirms
    x, y = pair.sample(20_000, np.random.default_rng(5))
    pmi = pair.pointwise_mutual_information(x, y)
    assert abs(pmi.mean() - pair.mutual_information()) < 4 * pmi.std() / np.sqrt(len(pmi))
    assert stats.kstest(x[:, 0], stats.uniform(0, 1).cdf).pvalue > 1e-3
    assert stats.kstest(y[:, 0] - x[:, 0], stats.uniform(-epsilon, 2 * epsilon).cdf).pvalue > 1e-3
    grid = np.linspace(-epsilon, 1 + epsilon, 7)
    np.testing.assert_allclose(pair.density_y(grid), [p_y(v) for v in grid], atol=1e-12)


def test_additive_pmi_rejects_points_off_the_support():
    pair = get_task("1v1-additive-0.1").distribution
    with pytest.raises(InputValueError, match="outside the support"):
        pair.pointwise_mutual_information(np.array([[0.5]]), np.array([[0.9]]))


# ---- transforms --------------------------------------------------------------------------------

ELEMENTWISE = [NormalCDF(), HalfCube(), Asinh(), Wiggly(WIGGLY_X), Wiggly(WIGGLY_Y), BIMODAL_X, BIMODAL_Y]


@pytest.mark.parametrize("transform", ELEMENTWISE, ids=lambda t: t.name)
def test_elementwise_transforms_are_strictly_increasing_and_invertible(transform):
    grid = np.linspace(-6, 6, 4000).reshape(-1, 1)  # even count: skips 0, where half_cube has a cusp
    out = transform.forward(grid)
    assert (np.diff(out[:, 0]) > 0).all()
    deriv = transform.derivative(grid)
    assert (deriv[np.abs(grid) > 1e-9] > 0).all()
    h = 1e-5
    finite_diff = (transform.forward(grid + h) - transform.forward(grid - h)) / (2 * h)
    np.testing.assert_allclose(deriv, finite_diff, rtol=1e-5, atol=1e-8)
    # round trip to within what float64 can hold of the output: one ulp of out is ulp / f'(x) in x
    tolerance = 1e-9 * (1 + np.abs(grid)) + 8 * np.spacing(np.abs(out)) / deriv
    assert (np.abs(transform.inverse(out) - grid) <= tolerance).all()


@pytest.mark.parametrize("transform, weights, means", [(BIMODAL_X, (0.3, 0.7), (0.0, 5.0)),
                                                      (BIMODAL_Y, (0.5, 0.5), (-1.0, 3.0))])
def test_bimodal_maps_normal_to_the_mixture(transform, weights, means):
    z = np.random.default_rng(0).standard_normal(5000)
    x = transform.forward(z)

    def mixture_cdf(v):
        return sum(w * stats.norm.cdf(v - m) for w, m in zip(weights, means))
    assert stats.kstest(x, mixture_cdf).pvalue > 0.01
    # deep tails stay finite, ordered and invertible (no clipping at a bracket)
    tails = np.array([-30.0, -12.0, -8.0, 8.0, 12.0, 30.0])
    out = transform.forward(tails)
    assert np.isfinite(out).all() and (np.diff(out) > 0).all()
    np.testing.assert_allclose(transform.inverse(out), tails, rtol=1e-9)


def test_wiggly_and_mixture_reject_non_monotone_settings():
    with pytest.raises(InputValueError, match="strictly increasing"):
        Wiggly([(0.8, 1.5, 0.0)])
    with pytest.raises(InputValueError, match="summing to 1"):
        GaussianMixtureQuantile((0.5, 0.6), (0.0, 1.0))


@pytest.mark.parametrize("dim, plane", [(3, (0, 1)), (3, (1, 2)), (5, (1, 2)), (25, (0, 1))])
def test_spiral_is_a_rotation_by_the_lie_exponential_and_inverts(dim, plane):
    spiral = Spiral(dim, plane, speed=1.0 / dim)
    x = np.random.default_rng(2).standard_normal((50, dim)) * 2
    generator = np.zeros((dim, dim))
    generator[plane[0], plane[1]], generator[plane[1], plane[0]] = -1.0, 1.0
    expected = np.stack([linalg.expm(generator * (row @ row) / dim) @ row for row in x])
    np.testing.assert_allclose(spiral.forward(x), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(spiral.forward(x), axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(spiral.inverse(spiral.forward(x)), x, rtol=1e-10, atol=1e-12)
    # the Jacobian is non-singular (finite differences, a few points)
    h = 1e-6
    for row in x[:5]:
        jac = np.stack([(spiral.forward((row + h * e)[None]) - spiral.forward((row - h * e)[None]))[0] / (2 * h)
                        for e in np.eye(dim)], axis=1)
        assert abs(np.linalg.det(jac)) > 1e-3


def test_swissroll_is_injective_on_the_unit_interval():
    roll = SwissRoll()
    u = np.linspace(0.0, 1.0, 2001).reshape(-1, 1)
    p = roll.forward(u)
    assert p.shape == (2001, 2)
    np.testing.assert_allclose(roll.inverse(p), u, atol=1e-12)
    radius = np.hypot(p[:, 0], p[:, 1])
    assert (np.diff(radius) > 0).all()  # the radius grows with u: no two u share a point


def test_the_package_is_a_low_layer():
    # numpy/scipy and probe.errors / probe.validation only: no torch, nothing else from probe
    import subprocess
    import sys

    code = ("import sys, probe.ground_truth; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'probe'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    loaded = set(eval(out))
    assert "torch" not in loaded
    others = {m for m in loaded if not m.startswith("probe.ground_truth")}
    assert others <= {"probe", "probe.errors", "probe.validation"}
