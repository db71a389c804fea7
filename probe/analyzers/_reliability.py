"""When an MI estimate should not be trusted: one function per estimator family, each returning
the first failed check as a sentence ("" when every check passed).

A negative or non-finite value is never reliable. KSG's dimension and kurtosis limits were
read off the bmi-v1 ground-truth tasks at n = 5,000 (bench/mi_ground_truth.py); the gap,
standard-error and cap margins are judgement calls, each exercised by a case in
tests/test_analyzers_mi_bounds.py or tests/test_analyzers_ksg.py built to fail it.

References: Song & Ermon, "Understanding the Limitations of Variational Mutual Information
Estimators" (ICLR 2020): train/test gaps and the variance of NWJ-type bounds; McAllester &
Stratos, "Formal Limitations on the Measurement of Mutual Information" (AISTATS 2020): InfoNCE
cannot exceed log K; Czyż et al., "Beyond Normal: On the Evaluation of Mutual Information
Estimators" (NeurIPS 2023): KSG's failure in high dimension at n = 5,000.
"""
from __future__ import annotations

import math

# InfoNCE within this many nats of log K is measuring the cap, not the MI.
INFONCE_CAP_MARGIN = 0.1
# A selected critic whose training bound exceeds its test bound by more than
# max(GAP_NATS, GAP_SHARE * test bound) has fitted its training pairs, not the distribution.
GAP_NATS = 0.3
GAP_SHARE = 0.5
# A value whose standard error exceeds this share of the value itself is not measured.
SE_SHARE = 0.25
# KSG: joint dimensions allowed at n samples: d_x + d_y <= KSG_DIMS_PER_DECADE * log10(n / KSG_N0).
KSG_DIMS_PER_DECADE = 3.0
KSG_N0 = 50.0
# KSG: a column whose sample excess kurtosis exceeds this is heavy-tailed: after standardising, a
# few outliers set the scale and most points share one max-norm ball (bmi-v1 Student-t tasks:
# 25 to 4,500, KSG at 0.5-0.6 of the truth; Gaussian, uniform and transformed tasks: below 4).
KSG_MAX_KURTOSIS = 20.0


def bound_verdict(name: str, *, bound: float, spread: float, n_batches: int, nonfinite: int, train_bound: float,
                  diverged: int, cap: float) -> str:
    """Why a held-out variational bound is unreliable, or "".

    Args: the estimator's name, its test `bound` (nats), the std `spread` of the bound across
    `n_batches` test batches, the number of `nonfinite` test batches, the selected critic's
    `train_bound`, `diverged` (1/0) and the InfoNCE `cap` log K (nats).
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
