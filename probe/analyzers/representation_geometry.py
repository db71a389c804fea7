"""Geometry of a representation: how many directions it uses, how it fills the sphere, how
close paired views land, how similar it is to another representation, and how well its
neighbourhoods respect the classes.

- effective rank, RankMe variant (Garrido, Balestriero, Najman & LeCun, "RankMe", ICML 2023):
  exp(-Σ p_k ln p_k), p_k = σ_k / Σ σ + ε with ε = 1e-7, σ the singular values of the
  uncentred n x d matrix z (as in RankMe).
- alignment and uniformity (Wang & Isola, ICML 2020) on L2-normalised rows:
  alignment = E ||f(x) - f(y)||^2 over paired rows, uniformity = ln E exp(-2 ||f(u) - f(v)||^2)
  over distinct rows (t = 2).
- linear CKA (Kornblith, Norouzi, Lee & Hinton, ICML 2019), feature-space form on centred
  columns: ||Yᵀ X||_F^2 / (||Xᵀ X||_F ||Yᵀ Y||_F).
- k-NN accuracy: leave-one-out majority vote of the k nearest other rows (Euclidean).

With n_bootstrap > 0 each scalar gets a percentile-bootstrap interval `<var>_ci` over redrawn
rows: effective rank and CKA are recomputed on each redraw, their replicates recentred on the
value (redrawn rows lower RankMe and raise CKA by several times their spread when d is not
small against n; see probe.analyzers._bootstrap); alignment and k-NN accuracy
average their per-row terms (the neighbours are those found once on all rows, not refound
among the redrawn rows, where a repeated row would be its own neighbour); uniformity averages
its pair kernel over pairs of distinct original rows of the redrawn subset.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr
from scipy.spatial.distance import pdist, squareform
from scipy.special import logsumexp
from sklearn.neighbors import NearestNeighbors

from probe.analyzers._bootstrap import bootstrap_ci, check_ci_level, check_n_bootstrap, ci_variable
from probe.analyzers._common import check_seed, make_dataset, var
from probe.errors import InputValueError
from probe.validation import check_array, check_labels, check_positive_int, check_same_length

CALLER = "geometry"
REFERENCE = ("Garrido et al., RankMe, ICML 2023; Wang & Isola, Understanding Contrastive Representation Learning "
             "through Alignment and Uniformity, ICML 2020; Kornblith et al., Similarity of Neural Network "
             "Representations Revisited, ICML 2019")
RANKME_EPS = 1e-7
UNIFORMITY_T = 2.0
ORDER = ("effective_rank", "uniformity", "linear_cka", "alignment", "knn_accuracy")  # as before intervals existed


def effective_rank(z: np.ndarray) -> float:
    """RankMe: exp of the entropy of the normalised singular values of z (uncentred)."""
    # Singular values from the d x d Gram matrix: O(n d^2) time, O(d^2) memory for any n.
    eig = np.linalg.eigvalsh(z.T @ z)
    sigma = np.sqrt(np.clip(eig, 0.0, None))
    if sigma.sum() == 0:
        return 0.0
    p = sigma / sigma.sum() + RANKME_EPS
    return float(np.exp(-np.sum(p * np.log(p))))


def _normalise(z: np.ndarray) -> np.ndarray:
    # eps as in torch.nn.functional.normalize: an all-zero row stays zero instead of NaN.
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _uniformity_rows(n: int, rng: np.random.Generator, max_samples: int) -> np.ndarray | slice:
    return np.sort(rng.choice(n, max_samples, replace=False)) if n > max_samples else slice(None)


def uniformity(z: np.ndarray, rng: np.random.Generator, max_samples: int) -> float:
    """ln mean_{i<j} exp(-t ||u_i - u_j||^2) over L2-normalised rows (a seeded subset of rows)."""
    sq = pdist(_normalise(z[_uniformity_rows(z.shape[0], rng, max_samples)]), "sqeuclidean")
    return float(logsumexp(-UNIFORMITY_T * sq) - np.log(sq.size))


def uniformity_interval(z: np.ndarray, rng: np.random.Generator, max_samples: int, *, n_bootstrap: int,
                        seed: int, level: float) -> tuple[float, float]:
    """Bootstrap interval of `uniformity` over the rows of its subset (the same rows, same rng).

    A redraw with counts c_i averages the kernel K_ij = exp(-t ||u_i - u_j||^2) over pairs of
    distinct original rows: (cᵀ K c - Σ c_i²) / ((Σ c_i)² - Σ c_i²), since K_ii = 1. A row
    paired with its own copy (distance 0) would otherwise inflate the estimate.
    """
    u = _normalise(z[_uniformity_rows(z.shape[0], rng, max_samples)])
    # Entries lie in [exp(-4t), 1] (|u - v|^2 <= 4): a plain exp neither under- nor overflows.
    kernel = np.exp(-UNIFORMITY_T * squareform(pdist(u, "sqeuclidean")))

    def statistic(rows: np.ndarray) -> float:
        c = np.bincount(rows, minlength=u.shape[0]).astype(np.float64)
        self_pairs = float(c @ c)
        distinct = c.sum() ** 2 - self_pairs
        # One distinct row redrawn n times has no pair; the least uniform value (K = 1) stands in.
        return float(np.log((c @ kernel @ c - self_pairs) / distinct)) if distinct > 0 else 0.0

    return bootstrap_ci(statistic, u.shape[0], n_bootstrap=n_bootstrap, seed=seed, level=level)


def _pair_distances(z: np.ndarray, paired: np.ndarray) -> np.ndarray:
    return np.sum((_normalise(z) - _normalise(paired)) ** 2, axis=1)


def alignment(z: np.ndarray, paired: np.ndarray) -> float:
    """mean_i ||u_i - v_i||^2 over L2-normalised paired rows (alpha = 2)."""
    return float(np.mean(_pair_distances(z, paired)))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between (n, d1) and (n, d2), columns centred; 0 if either is constant."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denom) if denom > 0 else 0.0


def knn_accuracy(z: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out k-NN accuracy: each row voted on by its k nearest other rows.

    Ties in the vote go to the smallest label. Each row is removed from its own neighbour list
    by index, so exact duplicates still count as neighbours.
    """
    return float(np.mean(knn_correct(z, labels, k)))


def knn_correct(z: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(n,) bool: whether each row's leave-one-out k-NN vote gives its own label."""
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    own = idx == np.arange(z.shape[0])[:, None]
    drop = np.where(own.any(axis=1), np.argmax(own, axis=1), k)  # self, else the farthest
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(z.shape[0]), drop] = False
    neighbours = labels[idx[keep].reshape(z.shape[0], k)]
    classes, codes = np.unique(labels, return_inverse=True)
    votes = np.zeros((z.shape[0], classes.size), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(z.shape[0]), k), np.searchsorted(classes, neighbours.ravel())), 1)
    return np.argmax(votes, axis=1) == codes


def geometry(
    z: Any,
    *,
    labels: Any = None,
    paired: Any = None,
    k: int = 5,
    max_samples: int = 2000,
    seed: int = 0,
    n_bootstrap: int = 0,
    ci_level: float = 0.95,
) -> xr.Dataset:
    """Effective rank, uniformity, and with `paired` alignment and linear CKA, with `labels` k-NN accuracy.

    Args:
        z: (n, d) embeddings. labels: (n,) classes for `knn_accuracy`.
        paired: (n, d') the paired view's embeddings: `linear_cka` for any d', `alignment`
            when d' = d.
        k: neighbours for k-NN (k < n). max_samples: rows (seeded subset) for uniformity's
            O(m^2) pairwise distances. seed: that subset and the bootstrap.
        n_bootstrap: with n > 0, a percentile-bootstrap interval `<var>_ci` (over `interval`)
            for every scalar, from n redraws of the rows (see the module docstring; the
            neighbours and the uniformity subset are not redrawn). Effective rank and CKA cost
            O(n d^2) per redraw. ci_level: the intervals' coverage.

    Returns:
        Dataset of scalars (units "1"): `effective_rank` in [1, d] (RankMe),
        `uniformity` (<= 0, lower is more uniform), `alignment` in [0, 4] (lower is closer),
        `linear_cka` in [0, 1], `knn_accuracy` in [0, 1]; with n_bootstrap > 0 their `_ci`.

    References: Garrido et al. 2023; Wang & Isola 2020; Kornblith et al. 2019.
    """
    za = check_array(z, name="z", caller=CALLER)
    k = check_positive_int(k, name="k", caller=CALLER)
    max_samples = check_positive_int(max_samples, name="max_samples", caller=CALLER, minimum=2)
    seed = check_seed(seed, CALLER)
    n_bootstrap = check_n_bootstrap(n_bootstrap, CALLER)
    ci_level = check_ci_level(ci_level, CALLER)
    pa = ya = None
    if paired is not None:
        pa = check_array(paired, name="paired", caller=CALLER)
        check_same_length(za, pa, names=("z", "paired"), caller=CALLER)
    if labels is not None:
        ya = check_labels(labels, name="labels", caller=CALLER, n_samples=za.shape[0])
        if k >= za.shape[0]:
            raise InputValueError(f"{CALLER}: k is {k} but z has {za.shape[0]} rows; leave-one-out k-NN needs k < n.")

    # name -> (long name, statistic of redrawn row indices); each statistic on all rows is the value.
    measures: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
        "effective_rank": ("effective rank (RankMe)", lambda rows: effective_rank(za[rows])),
    }
    notes = []
    if pa is not None:
        measures["linear_cka"] = ("linear CKA between z and paired", lambda rows: linear_cka(za[rows], pa[rows]))
        if pa.shape[1] == za.shape[1]:
            distances = _pair_distances(za, pa)
            measures["alignment"] = ("alignment E |u - v|^2 of L2-normalised pairs",
                                     lambda rows: float(np.mean(distances[rows])))
        else:
            notes.append(f"alignment skipped: z has {za.shape[1]} features and paired {pa.shape[1]}")
    if ya is not None:
        correct = knn_correct(za, ya, k).astype(np.float64)
        measures["knn_accuracy"] = (f"leave-one-out {k}-NN accuracy", lambda rows: float(np.mean(correct[rows])))
    every_row = np.arange(za.shape[0])
    data_vars = {name: var((), statistic(every_row), long_name, "1") for name, (long_name, statistic) in measures.items()}
    uniformity_name = "uniformity ln E exp(-2 |u - v|^2) of L2-normalised rows"
    data_vars["uniformity"] = var((), uniformity(za, np.random.default_rng(seed), max_samples), uniformity_name, "1")
    data_vars = {name: data_vars[name] for name in ORDER if name in data_vars}
    if n_bootstrap:
        common = {"level": ci_level, "n_bootstrap": n_bootstrap}
        # Same seed and row count: both calls see the same redraws of the rows.
        for names, recentred in ((("effective_rank", "linear_cka"), True), (("alignment", "knn_accuracy"), False)):
            names = [name for name in names if name in measures]
            if not names:
                continue
            estimate = np.array([data_vars[name][1] for name in names]) if recentred else None
            lower, upper = bootstrap_ci(lambda rows, names=names: np.array([measures[name][1](rows) for name in names]),
                                        za.shape[0], n_bootstrap=n_bootstrap, seed=seed, level=ci_level,
                                        estimate=estimate)
            for i, name in enumerate(names):
                data_vars[f"{name}_ci"] = ci_variable(lower[i], upper[i], measures[name][0], "1",
                                                      recentred=recentred, **common)
        bounds = uniformity_interval(za, np.random.default_rng(seed), max_samples, n_bootstrap=n_bootstrap,
                                     seed=seed, level=ci_level)
        data_vars["uniformity_ci"] = ci_variable(*bounds, uniformity_name, "1", resampled="the rows of the uniformity subset",
                                                 **common)
    return make_dataset(
        CALLER, f"RankMe (uncentred, eps={RANKME_EPS}); uniformity t={UNIFORMITY_T}; alignment alpha=2; "
        "linear CKA (feature space); leave-one-out Euclidean k-NN", data_vars, reference=REFERENCE,
        k=k, max_samples=max_samples, seed=seed, note="; ".join(notes) or "none",
    )
