"""When an MI estimate should not be trusted: the limits, and one verdict function per family
of estimator, each returning the first failed check as a sentence ("" when every check passed).

A negative or non-finite value is never reliable. Where each limit comes from is written beside
it: "tuning half" means it was set on the tuning half of the extended ground-truth suite
(probe.ground_truth.suite, SPLIT_SEED; `python bench/mi_ground_truth.py --half tuning`), never
on the scoring half that the claims rest on; "judgement" marks a convention, each exercised by
a test built to fail it.

References: Song & Ermon, "Understanding the Limitations of Variational Mutual Information
Estimators" (ICLR 2020): train/test gaps and the variance of NWJ-type bounds; McAllester &
Stratos, "Formal Limitations on the Measurement of Mutual Information" (AISTATS 2020): InfoNCE
cannot exceed log K; Czyż et al., "Beyond Normal: On the Evaluation of Mutual Information
Estimators" (NeurIPS 2023): KSG's failure in high dimension at n = 5,000.
"""
from __future__ import annotations

import math

# ---- what a column is (probe.analyzers._mi_data) ------------------------------------------------
# Judgement: a column with at most n / 10 distinct values (each seen about 10 times) is discrete;
# a value held by 1 % of the rows or more, and by 10 times as many rows as the other values on
# average, is an atom (a continuous variable has none; rounding makes ties of similar sizes).
DISCRETE_ROWS_PER_LEVEL = 10
ATOM_SHARE = 0.01
ATOM_RATIO = 10.0

# ---- every estimate ------------------------------------------------------------------------------
# Judgement: an estimate is measured only if its standard error is at most SE_SHARE of the value
# and, above SE_MAX_NATS (absolute), at most SE_SHARE_ABOVE_MAX of it: a small sample (1 + 1 dims,
# n = 25: se ~ 0.15 nats) is not passed because its value came out large unless it is large indeed
# (tests/test_analyzers_mi_estimate.py's small grid).
SE_MAX_NATS = 0.05
SE_SHARE = 0.25
SE_SHARE_ABOVE_MAX = 0.1
# An estimate that moves by more than CONVERGENCE_SHARE of itself between n / 2 and n rows has not
# converged; the interval is widened by BIAS_FACTOR times that move, in its direction (a bias
# falling like n^-a leaves 1 / (2^a - 1) such moves to go: 1 for a = 1, 3 for a = 0.4).
# Tuning half (n = 500 to 5,000, 3 seeds, no critic): the reliable KSG intervals that missed the
# truth needed 2 to 4 times their move (Student-t 2 x 2, categorical-to-Gaussian 1 x 5), the
# spiral 3 x 3's 5 to 6 times at a move of 7 %: 3 and 5 % cover the first and flag the second.
CONVERGENCE_SHARE = 0.05
BIAS_FACTOR = 3.0

# ---- Gaussian copula ----------------------------------------------------------------------------
# Judgement: at least 10 rows per dimension for a covariance.
ROWS_PER_DIM = 10
# Normal scores are jointly Gaussian unless Mardia's kurtosis or skewness is off by more than
# MARDIA_Z standard errors and by more than MARDIA_EFFECT. Tuning half: on the Gaussian-copula
# tasks (normal, dense, sparse and their monotone transforms; 3 seeds, n <= 5,000) the largest
# |z| is 4.1 (kurtosis, a 25 + 25 task) and 2.5 (skewness); on spirals 5 to 43.
MARDIA_Z = 4.5
MARDIA_EFFECT = 0.01
MARDIA_MAX_DIMS = 64  # above this, the kurtosis runs on the leading principal components
SKEW_MAX_DIMS = 24    # and the skewness (its cost grows as d³) on fewer
# The canonical pairs' conditional test (probe.analyzers._mi_gaussian.conditional_z), on at most
# 8 leading pairs. Tuning half (every continuous task, n = 500 to 5,000, 3 seeds): the Gaussian-
# copula tasks (normal, dense, sparse and their monotone transforms) give z from -3.8 to 1.3; the
# additive-noise task 49 or more, x-mixtures 8.8 or more, spirals 4.7 or more except behind a
# normal CDF: the 5 + 5 one at n = 500 (0.1 to 1.0) and the 25 + 25 one (up to 2.4), where the
# copula is within 0.85-0.94 of the truth. The limit of 3 is a one-sided 0.1 % test under the null.
COPULA_CONDITIONAL_PAIRS = 8
COPULA_CONDITIONAL_Z = 3.0

# ---- radial KSG as an estimate (probe.analyzers._mi_gaussian.rotation_z) --------------------------
# Judgement: the rotation test runs on views of at most 8 whitened dimensions (its features grow
# as d^2) with at least 10 rows per feature. Tuning half (every task with d_x + d_y > 2 and continuous
# columns, n = 500 to 5,000, 3 seeds, `rotation_z` of each cell): the invariant
# tasks (multivariate t with identity scatter, and its asinh transform) give z from -2.0 to 1.9,
# like a standard normal; every other task 16.6 or more (x-mixture 3 + 3 at n = 500). The limit
# of 3 is a one-sided 0.1 % test under the null.
RADIAL_MAX_VIEW_DIMS = 8
RADIAL_ROWS_PER_FEATURE = 10
RADIAL_ROTATION_Z = 3.0

# ---- Gaussian mixture ---------------------------------------------------------------------------
# A component's kurtosis is measured on held-out rows with estimated parameters and soft
# responsibilities, so its null spread is wider than Mardia's: its own limit. Tuning half: |z| <= 3.7
# on the mixture and sign-mixing tasks at n >= 2,000, 3 to 11 on Student-t ones.
MIXTURE_SHAPE_Z = 4.0
# Tuning half: a view's relative excess kurtosis under the fitted mixture and in the data differ by
# at most 0.073 on the mixture and sign-mixing tasks (n = 2,000 and 5,000), by 0.10 to 0.24 on the
# spirals, where the mixture reports half the MI.
MIXTURE_MARGINAL_KURTOSIS = 0.08
# Judgement: fitted only up to 50 joint dimensions (a 25 + 25 pair) and from 200 rows.
MIXTURE_MAX_DIMS = 50
MIXTURE_MIN_ROWS = 200

# ---- discrete plug-in -----------------------------------------------------------------------------
# Judgement: at least 5 rows per observed joint state.
PLUGIN_ROWS_PER_STATE = 5

# ---- variational bounds --------------------------------------------------------------------------
# InfoNCE within this many nats of log K is measuring the cap, not the MI.
INFONCE_CAP_MARGIN = 0.1
# A selected critic whose training bound exceeds its test bound by more than
# max(GAP_NATS, GAP_SHARE * test bound) has fitted its training pairs, not the distribution.
GAP_NATS = 0.3
GAP_SHARE = 0.5
# Judgement: a critic sees at most this many principal components of each view (fitted on its
# training rows): 784 pixels from 3,000 training pairs overfit.
CRITIC_MAX_DIMS = 64

# ---- KSG ------------------------------------------------------------------------------------------
# Joint dimensions allowed at n samples: d_x + d_y <= KSG_DIMS_PER_DECADE * log10(n / KSG_N0).
# Issue 10's limit, read off all 40 bmi tasks at n = 5,000 (so half of them now in the scoring
# half), kept: on the tuning half no KSG estimate at or below it was reliable and wrong.
KSG_DIMS_PER_DECADE = 3.0
KSG_N0 = 50.0
# KSG: a column whose sample excess kurtosis exceeds this is heavy-tailed: after standardising, a
# few outliers set the scale and most points share one max-norm ball (bmi-v1 Student-t tasks:
# 25 to 4,500, KSG at 0.5-0.6 of the truth; Gaussian, uniform and transformed tasks: below 4).
KSG_MAX_KURTOSIS = 20.0


def value_verdict(value: float, se: float) -> str:
    """The checks every estimate shares: finite, not negative, and measured (absolute and relative SE)."""
    if not math.isfinite(value):
        return "non-finite estimate"
    if value < 0:
        return f"negative estimate ({value:.3g} nats): X and Y look independent"
    if not math.isfinite(se) or (se > SE_MAX_NATS and se > SE_SHARE_ABOVE_MAX * value):
        return (f"standard error {se:.3g} nats, over {SE_MAX_NATS} nats and over {SE_SHARE_ABOVE_MAX:.0%} of the "
                f"estimate ({value:.3g} nats): not measured precisely enough; pass more rows")
    if se > SE_SHARE * value:
        return f"standard error {se:.3g} nats over {SE_SHARE:.0%} of the estimate ({value:.3g} nats)"
    return ""


def convergence_verdict(value: float, half: float) -> str:
    """Why an estimate that gave `half` on n / 2 rows and `value` on n has not converged, or ""."""
    move = value - half
    limit = CONVERGENCE_SHARE * abs(value)
    if math.isfinite(move) and abs(move) > limit:
        return (f"moves by {move:+.3g} nats between n / 2 and n rows (over {CONVERGENCE_SHARE:.0%} of it): "
                "its bias has not settled; pass more rows")
    return ""


def bound_verdict(name: str, *, bound: float, spread: float, n_batches: int, nonfinite: int, train_bound: float,
                  diverged: int, cap: float) -> str:
    """Why a held-out variational bound is unreliable, or "".

    Args: the estimator's name, its test `bound` (nats), the std `spread` (ddof 1) of the bound
    across `n_batches` test batches, the number of `nonfinite` test batches, the selected
    critic's `train_bound`, `diverged` (1/0) and the InfoNCE `cap` log K (nats).
    """
    if nonfinite or not math.isfinite(bound):
        return f"non-finite: {nonfinite} of {n_batches} test batch(es) gave no finite bound"
    if diverged:
        return "diverged: the training objective became non-finite"
    if bound < 0:
        return f"negative held-out bound ({bound:.3g} nats)"
    if name == "infonce" and bound > cap - INFONCE_CAP_MARGIN:
        return (f"InfoNCE within {INFONCE_CAP_MARGIN} nats of its cap ln K = {cap:.3f}: "
                "the MI may be far higher; use a larger batch_size or another estimator")
    gap = train_bound - bound
    if math.isfinite(train_bound) and gap > max(GAP_NATS, GAP_SHARE * bound):
        return f"train/test gap {gap:.2f} nats: the critic fits its training pairs, not the distribution"
    if n_batches < 2:
        return "one test batch: no standard error; pass more pairs or lower batch_size"
    se = spread / math.sqrt(n_batches)
    if se > SE_SHARE * bound:
        return f"standard error {se:.3g} nats over {SE_SHARE:.0%} of the bound ({bound:.3g} nats); pass more pairs"
    return ""


def ksg_max_dims(n: int) -> int:
    """Joint dimensions d_x + d_y at which KSG stays within a factor 1.5 at n samples (at least 2)."""
    return max(2, int(math.floor(KSG_DIMS_PER_DECADE * math.log10(max(n, 1) / KSG_N0))))


def ksg_verdict(value: float, *, se: float, dims: int, n: int, kurtosis: float = 0.0) -> str:
    """Why a KSG estimate is unreliable, or "": non-finite, negative, too many joint `dims` for
    `n` samples, heavy tails (the largest column excess `kurtosis`), or a standard error `se`
    (nats) over SE_SHARE of the value."""
    if not math.isfinite(value):
        return "non-finite estimate"
    if value < 0:
        return f"negative estimate ({value:.3g} nats): X and Y look independent, or KSG is biased here"
    limit = ksg_max_dims(n)
    if dims > limit:
        return (f"d_x + d_y = {dims} dimensions at n = {n}: KSG underestimates above {limit} "
                "(its nearest-neighbour bias grows with the dimension); use mi_estimate or mi_bounds")
    if kurtosis > KSG_MAX_KURTOSIS:
        return (f"heavy tails (a column's excess kurtosis is {kurtosis:.0f}): outliers set the neighbour scale; "
                "pass normal scores (rank-transformed columns), as mi_estimate does")
    if se > SE_SHARE * value:
        return f"standard error {se:.3g} nats over {SE_SHARE:.0%} of the estimate ({value:.3g} nats); pass more samples"
    return ""
