"""geometry: known answers and naive-loop checks for each measurement."""
from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from probe.analyzers import geometry
from probe.analyzers.representation_geometry import knn_accuracy, linear_cka, uniformity
from probe.errors import InputValueError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(1):  # shared 2-core machine: BLAS threads fighting slow tests 10x
        yield


def _orthogonal(d: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


def test_effective_rank_of_an_isotropic_gaussian_is_about_d():
    z = np.random.default_rng(0).standard_normal((4000, 32))
    assert geometry(z).effective_rank.item() == pytest.approx(32, rel=0.1)


def test_effective_rank_of_rank_r_data_is_about_r():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3000, 5)) @ _orthogonal(40, 2)[:5]
    assert geometry(z).effective_rank.item() == pytest.approx(5, abs=0.1)


def test_effective_rank_matches_the_rankme_formula_on_a_tiny_input():
    z = np.random.default_rng(3).standard_normal((6, 3))
    sigma = np.linalg.svd(z, compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    assert geometry(z).effective_rank.item() == pytest.approx(math.exp(-sum(p * np.log(p))), rel=1e-10)


def test_linear_cka_is_one_under_rotation_and_about_zero_for_independent_data():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((2000, 16))
    assert geometry(z, paired=3 * z @ _orthogonal(16, 5)).linear_cka.item() == pytest.approx(1.0, abs=1e-12)
    assert geometry(z, paired=rng.standard_normal((2000, 8))).linear_cka.item() < 0.02


def test_linear_cka_matches_the_hsic_form_on_a_tiny_input():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    h = np.eye(7) - 1 / 7
    kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
    hsic = lambda a, b: np.trace(a @ b)  # noqa: E731 - constants cancel in the ratio
    assert linear_cka(x, y) == pytest.approx(hsic(kx, ky) / math.sqrt(hsic(kx, kx) * hsic(ky, ky)), rel=1e-12)


def test_uniformity_and_alignment_match_loops():
    rng = np.random.default_rng(7)
    z, paired = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    u = [row / np.linalg.norm(row) for row in z]
    v = [row / np.linalg.norm(row) for row in paired]
    pairs = [math.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i in range(6) for j in range(i + 1, 6)]
    ds = geometry(z, paired=paired)
    assert ds.uniformity.item() == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-12)
    assert ds.alignment.item() == pytest.approx(np.mean([np.sum((a - b) ** 2) for a, b in zip(u, v)]), rel=1e-12)


def test_uniformity_subsamples_large_inputs_with_the_seed():
    z = np.random.default_rng(8).standard_normal((300, 4))
    a = uniformity(z, np.random.default_rng(0), 100)
    assert a == uniformity(z, np.random.default_rng(0), 100) != uniformity(z, np.random.default_rng(1), 100)
    assert a == pytest.approx(uniformity(z, np.random.default_rng(0), 300), abs=0.1)


def test_knn_accuracy_matches_a_leave_one_out_loop():
    rng = np.random.default_rng(9)
    z, labels = rng.standard_normal((15, 2)), rng.integers(0, 3, 15)
    expected = []
    for i in range(15):
        dist = [(np.linalg.norm(z[i] - z[j]), j) for j in range(15) if j != i]
        votes = np.bincount([labels[j] for _, j in sorted(dist)[:3]], minlength=3)
        expected.append(np.argmax(votes) == labels[i])
    assert knn_accuracy(z, labels, 3) == pytest.approx(np.mean(expected))


def test_knn_accuracy_counts_duplicates_as_neighbours_and_separated_clusters_as_perfect():
    z = np.array([[0.0], [0.0], [0.0], [5.0], [5.0], [5.0]])
    assert knn_accuracy(z, np.array([0, 0, 0, 1, 1, 1]), 2) == 1.0
    labels = np.arange(200) % 4
    blobs = np.eye(4)[labels] * 50 + np.random.default_rng(10).standard_normal((200, 4))
    assert geometry(blobs, labels=labels).knn_accuracy.item() == 1.0


def test_alignment_is_skipped_when_widths_differ():
    rng = np.random.default_rng(11)
    ds = geometry(rng.standard_normal((50, 4)), paired=rng.standard_normal((50, 3)))
    assert "alignment" not in ds and "linear_cka" in ds and "alignment skipped" in ds.attrs["note"]


def test_errors_name_the_problem():
    z = np.random.default_rng(12).standard_normal((10, 2))
    with pytest.raises(InputValueError, match="k is 10 but z has 10 rows"):
        geometry(z, labels=np.arange(10) % 2, k=10)
    with pytest.raises(InputValueError, match="but paired has 9"):
        geometry(z, paired=z[:9])


# ----------------------------------------------------------------------------- bootstrap intervals

def _percentile(values, level=0.95):
    ordered, last = sorted(values), len(values) - 1
    return ordered[math.floor((1 - level) / 2 * last + 1e-9)], ordered[math.ceil((1 + level) / 2 * last - 1e-9)]


def _rankme(z):
    sigma = np.linalg.svd(z, compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    return math.exp(-sum(p * np.log(p)))


def test_bootstrap_intervals_match_loops_over_redrawn_rows():
    from probe.analyzers._bootstrap import BOOTSTRAP_STREAM

    rng = np.random.default_rng(13)
    n, n_bootstrap = 14, 30
    z, labels = rng.standard_normal((n, 3)), np.arange(n) % 2
    paired = z + 0.5 * rng.standard_normal((n, 3))
    ds = geometry(z, paired=paired, labels=labels, k=3, seed=5, n_bootstrap=n_bootstrap)

    u = [row / np.linalg.norm(row) for row in z]
    v = [row / np.linalg.norm(row) for row in paired]
    correct = []
    for i in range(n):
        near = sorted((np.linalg.norm(z[i] - z[j]), j) for j in range(n) if j != i)[:3]
        correct.append(np.argmax(np.bincount([labels[j] for _, j in near], minlength=2)) == labels[i])
    draws = np.random.default_rng([5, BOOTSTRAP_STREAM])
    reps = {name: [] for name in ("effective_rank", "linear_cka", "alignment", "knn_accuracy", "uniformity")}
    for _ in range(n_bootstrap):
        rows = draws.integers(0, n, n).tolist()
        reps["effective_rank"].append(_rankme(z[rows]))
        reps["linear_cka"].append(linear_cka(z[rows], paired[rows]))
        reps["alignment"].append(np.mean([np.sum((u[r] - v[r]) ** 2) for r in rows]))
        reps["knn_accuracy"].append(np.mean([correct[r] for r in rows]))
        # Pairs of draws that are distinct original rows (n <= max_samples: every row is in the subset).
        kernel = [math.exp(-2 * np.sum((u[a] - u[b]) ** 2)) for a in rows for b in rows if a != b]
        reps["uniformity"].append(math.log(np.mean(kernel)))
    for name in ("effective_rank", "linear_cka"):  # recentred: the replicates' median moved to the value
        shift = ds[name].item() - np.median(reps[name])
        reps[name] = [r + shift for r in reps[name]]
    for name, values in reps.items():
        np.testing.assert_allclose(ds[f"{name}_ci"].values, _percentile(values), rtol=1e-9, err_msg=name)
        assert ds[f"{name}_ci"].attrs["n_bootstrap"] == n_bootstrap and ds[f"{name}_ci"].dims == ("interval",)
    assert ds.effective_rank_ci.attrs["method"].endswith("recentred on the estimate")
    assert ds.alignment_ci.attrs["method"] == "percentile bootstrap over held-out rows"


def test_rankme_and_cka_intervals_hold_their_values_where_redraws_bias_them():
    # 200 x 32: redrawn rows lower RankMe and raise CKA by more than their spread; recentring
    # keeps the interval around the reported value.
    rng = np.random.default_rng(14)
    z = rng.standard_normal((200, 32))
    ds = geometry(z, paired=z + rng.standard_normal(z.shape), n_bootstrap=100)
    for name in ("effective_rank", "linear_cka", "alignment", "uniformity"):
        lower, upper = ds[f"{name}_ci"].values
        assert lower <= ds[name].item() <= upper, name


def test_uniformity_interval_uses_the_seeded_subset():
    z = np.random.default_rng(15).standard_normal((120, 3))
    ds = geometry(z, max_samples=40, seed=2, n_bootstrap=50)
    lower, upper = ds.uniformity_ci.values
    assert lower <= ds.uniformity.item() <= upper
    assert ds.uniformity_ci.attrs["method"] == "percentile bootstrap over the rows of the uniformity subset"
    other_subset = geometry(z, max_samples=40, seed=3, n_bootstrap=50)
    assert not np.array_equal(other_subset.uniformity_ci.values, ds.uniformity_ci.values)


def test_no_interval_unless_asked():
    z = np.random.default_rng(16).standard_normal((30, 3))
    ds = geometry(z, paired=z, labels=np.arange(30) % 2)
    assert not [name for name in ds.data_vars if name.endswith("_ci")] and "interval" not in ds.dims
    assert list(ds.data_vars) == ["effective_rank", "uniformity", "linear_cka", "alignment", "knn_accuracy"]


def test_bootstrap_errors_name_the_problem():
    z = np.random.default_rng(17).standard_normal((10, 2))
    with pytest.raises(InputValueError, match="^geometry: n_bootstrap is -5"):
        geometry(z, n_bootstrap=-5)
    with pytest.raises(InputValueError, match="^geometry: ci_level is 0"):
        geometry(z, n_bootstrap=10, ci_level=0)
