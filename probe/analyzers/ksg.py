"""Kraskov-Stögbauer-Grassberger nearest-neighbour MI estimator (KSG-1).

Kraskov, Stögbauer & Grassberger, "Estimating mutual information", Phys. Rev. E 69, 066138
(2004), estimator (8):

    I(X; Y) = ψ(k) + ψ(N) - < ψ(n_x + 1) + ψ(n_y + 1) >,

with ε_i the max-norm distance from (x_i, y_i) to its k-th neighbour in the joint space and
n_x(i), n_y(i) the numbers of other points strictly closer than ε_i in each marginal space.
A non-parametric reference for low-dimensional data (the synthetic Gaussians of the paper's
experiment 6); its bias grows quickly with the dimension, so it refuses more than `max_dims`
joint dimensions and flags as unreliable any estimate above `ksg_max_dims(n)` of them (at
n = 5,000: 6; measured on the bmi-v1 tasks, where 10 joint dimensions already give 0.5-0.7
of the true MI), heavy tails (excess kurtosis above 20), a negative estimate, or a standard
error above a quarter of the estimate.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr
from scipy.spatial import cKDTree
from scipy.special import digamma
from scipy.stats import kurtosis

from probe.analyzers._common import NATS_PER_BIT, check_seed, make_dataset, var
from probe.analyzers._reliability import ksg_verdict
from probe.errors import InputValueError
from probe.validation import check_array, check_positive_int, check_same_length

CALLER = "ksg_mi"
REFERENCE = "Kraskov, Stögbauer & Grassberger, Estimating mutual information, Phys. Rev. E 69, 066138 (2004), Eq. 8"
# The standard error of a KSG estimate comes from SE_BLOCKS disjoint random blocks as well as from its
# per-row terms, which share neighbours and so understate its spread. bench/ksg_se.py (80 seeds each
# of Gaussian, Student-t, uniform-noise and sign-mixture pairs, n 500-5,000, 1-3 + 1-3 dims; none a
# ground-truth task): the spread over seeds was 1.19-1.43x the terms' standard error and 1.01-1.23x
# the larger of the two; 95% intervals held the mean over seeds in 85-88% of seeds with the terms'
# (normal quantile), in 91-95% with the larger (t, SE_BLOCKS - 1 dof).
SE_BLOCKS = 8
BLOCK_ROWS_PER_K = 10  # blocks smaller than this many rows per neighbour are not used


def _prepare(a: np.ndarray, rng: np.random.Generator, standardize: bool) -> np.ndarray:
    """Centre and scale each column (MI is invariant to it; max-norm balls are not), then add
    1e-10-relative jitter so ties between repeated values do not bias the neighbour counts
    (as scikit-learn's mutual_info_regression does)."""
    if standardize:
        std = a.std(axis=0)
        a = (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return a + 1e-10 * np.maximum(1.0, np.mean(np.abs(a), axis=0)) * rng.standard_normal(a.shape)


def _max_kurtosis(a: np.ndarray) -> float:
    """The largest sample excess kurtosis over the varying columns of a (0 when none varies)."""
    varying = a[:, a.std(axis=0) > 0]
    return float(kurtosis(varying, axis=0).max()) if varying.shape[1] else 0.0


def block_standard_error(terms: np.ndarray, terms_of: Callable[[np.ndarray], np.ndarray], k: int,
                         seed: int) -> tuple[float, float]:
    """(standard error, its degrees of freedom) of the mean of `terms`, a KSG-type estimate on n rows.

    The larger of the terms' own (std / sqrt(n)) and the spread of the estimate over SE_BLOCKS disjoint
    random blocks of rows (`terms_of(rows)`, seeded) over sqrt(SE_BLOCKS), with SE_BLOCKS - 1 degrees
    of freedom; with fewer than BLOCK_ROWS_PER_K * k rows a block, the terms' alone (infinite dof).
    """
    n = terms.size
    se = float(terms.std(ddof=1) / np.sqrt(n))
    if n < SE_BLOCKS * BLOCK_ROWS_PER_K * k:
        return se, math.inf
    order = np.random.default_rng([seed, 0x5EB]).permutation(n)
    values = [float(terms_of(np.sort(rows)).mean()) for rows in np.array_split(order, SE_BLOCKS)]
    return max(se, float(np.std(values, ddof=1) / math.sqrt(SE_BLOCKS))), float(SE_BLOCKS - 1)


def ksg_terms(xs: np.ndarray, ys: np.ndarray, k: int) -> np.ndarray:
    """The n per-sample terms ψ(k) + ψ(N) - ψ(n_x + 1) - ψ(n_y + 1), in nats; their mean is KSG-1.

    xs: (n, d_x), ys: (n, d_y), already prepared (scaled, jittered); k < n.
    """
    n = xs.shape[0]
    joint = np.hstack([xs, ys])
    radius, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    # "Strictly closer than ε": shrink ε by one ulp; the point itself is counted, so subtract 1.
    below = np.nextafter(radius[:, -1], 0)
    n_x = cKDTree(xs).query_ball_point(xs, below, p=np.inf, return_length=True) - 1
    n_y = cKDTree(ys).query_ball_point(ys, below, p=np.inf, return_length=True) - 1
    return digamma(k) + digamma(n) - digamma(n_x + 1) - digamma(n_y + 1)


def mixed_ksg_terms(xs: np.ndarray, ys: np.ndarray, k: int) -> np.ndarray:
    """The n per-sample terms of Gao et al.'s mixed KSG, in nats; their mean estimates I(X; Y).

    For discrete-continuous mixtures, where exact ties carry probability (Gao, Kannan, Oh &
    Viswanath, "Estimating Mutual Information for Discrete-Continuous Mixtures", NeurIPS 2017,
    Algorithm 1, as in the authors' code): ρ_i is the max-norm distance to the k-th joint
    neighbour. Where ρ_i > 0 the term is KSG-1's with ln N for ψ(N): ψ(k) + ln N - ψ(n_x + 1) -
    ψ(n_y + 1), n_x, n_y the other points strictly within ρ_i. Where ρ_i = 0 the point sits on an
    atom: ψ(k̃) + ln N - ψ(m_x) - ψ(m_y), with k̃, m_x, m_y the points (itself included) equal to
    it jointly, in x and in y, so that on discrete data the term is the plug-in's log ratio.
    No jitter: the ties are the data. xs: (n, d_x), ys: (n, d_y); k < n.
    """
    n = xs.shape[0]
    joint = np.hstack([xs, ys])
    tree = cKDTree(joint)
    radius = tree.query(joint, k=k + 1, p=np.inf)[0][:, -1]
    atom = radius == 0
    below = np.where(atom, 0.0, np.nextafter(radius, 0))  # strictly closer than ρ_i; exactly equal on an atom
    n_x = cKDTree(xs).query_ball_point(xs, below, p=np.inf, return_length=True)  # itself included
    n_y = cKDTree(ys).query_ball_point(ys, below, p=np.inf, return_length=True)
    repeats = np.where(atom, tree.query_ball_point(joint, below, p=np.inf, return_length=True), k)
    return digamma(repeats) + np.log(n) - digamma(n_x) - digamma(n_y)


def ksg_mi(
    x: Any,
    y: Any,
    *,
    k: int = 3,
    max_dims: int = 20,
    standardize: bool = True,
    seed: int = 0,
) -> xr.Dataset:
    """KSG-1 estimate of I(X; Y) in nats (and bits).

    Args:
        x: (n, d_x) samples; y: (n, d_y) samples paired row by row.
        k: neighbours (3 is the usual bias/variance trade-off); k < n.
        max_dims: refuse when d_x + d_y exceeds it (KSG is unreliable in high dimension).
        standardize: centre and scale each column to unit variance first.
        seed: the tie-breaking jitter and the blocks of the standard error.

    Returns:
        Dataset with `mutual_information` (nats) and `mutual_information_bits` (bits),
        `mutual_information_se` (nats: the larger of the per-sample terms' standard error, which
        ignores that the terms share neighbours, and the spread over 8 disjoint blocks of rows;
        see `block_standard_error`),
        `reliable` (1/0) and `unreliable_reason` ("" when reliable; see `ksg_max_dims`). The
        raw estimate is reported, so it can be slightly negative for independent variables.

    Reference: Kraskov et al., Phys. Rev. E 69, 066138 (2004), Eq. 8.
    """
    xa = check_array(x, name="x", caller=CALLER)
    ya = check_array(y, name="y", caller=CALLER)
    check_same_length(xa, ya, names=("x", "y"), caller=CALLER)
    k = check_positive_int(k, name="k", caller=CALLER)
    max_dims = check_positive_int(max_dims, name="max_dims", caller=CALLER, minimum=2)
    seed = check_seed(seed, CALLER)
    n, dims = xa.shape[0], xa.shape[1] + ya.shape[1]
    if k >= n:
        raise InputValueError(f"{CALLER}: k is {k} but there are only {n} samples; k < n is required.")
    if dims > max_dims:
        raise InputValueError(
            f"{CALLER}: x and y have {xa.shape[1]} + {ya.shape[1]} = {dims} dimensions together (shape={xa.shape} "
            f"and {ya.shape}); at most max_dims={max_dims} are supported. KSG's nearest-neighbour bias grows quickly "
            "with the dimension: use mi_bounds for embeddings, or raise max_dims if you accept the bias."
        )
    rng = np.random.default_rng(seed)
    xs, ys = _prepare(xa, rng, standardize), _prepare(ya, rng, standardize)
    terms = ksg_terms(xs, ys, k)
    mi = float(terms.mean())
    se, _ = block_standard_error(terms, lambda rows: ksg_terms(xs[rows], ys[rows], k), k, seed)
    reason = ksg_verdict(mi, se=se, dims=dims, n=n, kurtosis=max(_max_kurtosis(xa), _max_kurtosis(ya)))
    data_vars = {
        "mutual_information": var((), mi, "KSG-1 estimate of I(X; Y)", "nats"),
        "mutual_information_bits": var((), mi / NATS_PER_BIT, "KSG-1 estimate of I(X; Y)", "bits"),
        "mutual_information_se": var((), se, "standard error of the KSG estimate (per-sample terms and 8 disjoint "
                                    "blocks, the larger)", "nats"),
        "reliable": var((), np.int8(reason == ""), "1 if the estimate passed every reliability check", "1"),
        "unreliable_reason": var((), reason, "the first failed reliability check (empty when reliable)", "1"),
    }
    return make_dataset(CALLER, "KSG-1 (max-norm, digamma counts)", data_vars, reference=REFERENCE, k=k,
                        max_dims=max_dims, standardize=standardize, n_samples=n, seed=seed)
