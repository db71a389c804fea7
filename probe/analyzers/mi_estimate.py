"""probe's best estimate of I(X; Y) in one call: a value, its kind, an interval and a verdict.

The inputs are first cleaned and read (`probe.analyzers._mi_data`): constant columns are
dropped and counted; each other column is continuous, rounded (ties broken at random),
discrete or mixed (an atom); every column is replaced by its normal scores, a strictly
increasing map that leaves I(X; Y) unchanged. Then the candidates that apply are computed,
each an *estimate* (consistent for I under its assumption) or a *lower bound* (below I in
expectation whatever the data), each with its own checks (`_mi_candidates`):

    plug_in          estimate, x and y all discrete: Miller-Madow plug-in; needs 5 rows per
                     joint state, a small standard error, and no move between n / 2 and n.
    gaussian_copula  ½ ln(det Σ_x det Σ_y / det Σ) of the scores, Wishart-corrected. An estimate
                     when Mardia's kurtosis and skewness find the scores jointly Gaussian, and so does a
                     test of the leading canonical pairs (`conditional_z`: each variate's residual
                     given its partner, and its square, against the partner); a lower bound when
                     only each view's are (then I = I_G + a non-negative term); unreliable when a
                     view's are not (it can then overshoot, e.g. sign-mixed pairs), or with ties;
                     neither when a canonical correlation is 1 to rounding (y a copy or a noiseless
                     monotone map of x along a direction: its value is then its clip, not a measurement).
    gaussian_mixture estimate, when the scores are continuous but not Gaussian and d_x + d_y <= 50:
                     the cross-fitted MI of a Gaussian mixture, its number of components chosen
                     on held-out rows; checked by Mardia's statistics within each component.
    ksg              estimate: KSG-1 on the scores, or Gao et al.'s mixed KSG with ties, up to
                     `ksg_max_dims(n)` joint dimensions; checked for precision and for a move
                     between n / 2 and n rows, which also widens its interval.
    ksg_radial       lower bound: KSG on the whitened views' lengths, I(‖X̃‖; ‖Ỹ‖) <= I(X; Y)
                     (data processing). It equals I when separate rotations of the whitened
                     views change nothing (each direction uniform and independent of the rest,
                     as in a Student-t with block-diagonal dispersion); where a test of that
                     (`rotation_z`: second moments of the directions against everything else,
                     views of up to 8 dimensions) passes, it is an estimate, checked like the
                     others. With correlation between X and Y it falls below.
    infonce, nwj     lower bounds: held-out variational bounds of `mi_bounds` (critic selected
                     on validation rows, each wide view first reduced to at most 64 principal
                     components fitted on the critic's training rows), run above
                     `ksg_max_dims(n)` joint dimensions; NWJ when InfoNCE meets its cap ln K.

The rule (`_mi_select`): a passing lower bound above an estimate's interval refutes it; the
estimate reported is the first passing one in the order plug_in, gaussian_copula,
gaussian_mixture, ksg_radial, ksg (the most specific assumption that was checked), its interval widened to hold the other passing
estimates and bounds; passing estimates whose intervals do not overlap make the result
unreliable with the disagreement as reason, since no check decides between them. A lower
bound is reported only when no estimate passed and none whose assumptions held (only its
precision failed) lies above it: kind "lower_bound", a one-sided interval, reliable = False,
reason "lower bound only"; such an estimate above every bound is reported instead, unreliable,
with its reason. Why not the largest candidate: an estimate whose
assumption fails can be too high (the copula on sign-mixed pairs), and a bound is not an
estimate however large it is.

References: Ince et al., Human Brain Mapping 38 (2017) (Gaussian copula); Mardia, Biometrika 57
(1970) (kurtosis, skewness); Kraskov et al., Phys. Rev. E 69, 066138 (2004); Gao et al., NeurIPS 2017
(mixed KSG); Miller (1955), Paninski, Neural Computation 15 (2003) (plug-in); Poole et al.,
ICML 2019 (bounds); Czyż et al., Beyond Normal, NeurIPS 2023.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import xarray as xr

from probe.analyzers import _reliability as limits
from probe.analyzers._bootstrap import check_ci_level, ci_variable
from probe.analyzers._common import check_seed, make_dataset, var
from probe.analyzers._mi_candidates import (
    ESTIMATE,
    LOWER_BOUND,
    gaussian_candidate,
    ksg_candidate,
    mixture_candidate,
    neural_candidates,
    plug_in_candidate,
    radial_candidate,
)
from probe.analyzers._mi_data import normal_scores, prepare_view
from probe.analyzers._mi_gaussian import SHAPE_STATISTICS, gaussian_fit
from probe.analyzers._mi_select import select
from probe.analyzers._reliability import ksg_max_dims
from probe.errors import InputTypeError, InputValueError
from probe.validation import check_array, check_positive_int, check_same_length

CALLER = "mi_estimate"
REFERENCE = ("Ince et al., Human Brain Mapping 38 (2017); Mardia, Biometrika 57 (1970); Kraskov et al., Phys. Rev. "
             "E 69, 066138 (2004); Gao et al., NeurIPS 2017; Paninski, Neural Computation 15 (2003); Poole et al., "
             "ICML 2019; Czyż et al., Beyond Normal, NeurIPS 2023")
MIN_NEURAL_ROWS = 500  # below this the held-out splits are too small for a critic's bound
KINDS = (ESTIMATE, LOWER_BOUND)
BLOCKS = ("x", "y", "joint")

__all__ = ["mi_estimate", "gaussian_copula_mi", "normal_scores"]


def gaussian_copula_mi(xs: np.ndarray, ys: np.ndarray) -> float:
    """Bias-corrected Gaussian MI of (xs, ys) in nats (Ince et al. 2017, Eq. 8 and its correction)."""
    return gaussian_fit(xs, ys).value


def _check_neural(neural: Any) -> bool | None:
    if neural is not None and not isinstance(neural, (bool, np.bool_)):
        raise InputTypeError(f"{CALLER}: neural is {neural!r}; True, False or None (chosen by shape) is required.")
    return None if neural is None else bool(neural)


def _kinds_text(kinds: tuple[str, ...]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(Counter(kinds).items()))


def _summary(result, level: float) -> str:
    """'1.23 nats (estimate), 95% interval [1.20, 1.26]' or '≥ 2.70 nats (lower bound), 95% interval [2.53, inf)'."""
    if result.kind == LOWER_BOUND:
        return f"≥ {result.value:.3g} nats (lower bound), {level:.0%} interval [{result.lower:.3g}, inf)"
    return f"{result.value:.3g} nats (estimate), {level:.0%} interval [{result.lower:.3g}, {result.upper:.3g}]"


def mi_estimate(
    x: Any,
    y: Any,
    *,
    seed: int = 0,
    k: int = 3,
    neural: bool | None = None,
    critic_steps: int | None = None,
    ci_level: float = 0.95,
) -> xr.Dataset:
    """probe's best estimate of I(X; Y) in nats, or a lower bound said to be one, with a verdict.

    Args:
        x: (n, d_x) and y: (n, d_y) paired rows, n >= 20. Constant columns are dropped (at least
            one column of each must vary).
        seed: tie-breaking, the KSG jitter and halves, and the critic's split and training.
        k: KSG neighbours.
        neural: train the critic bounds (True), never (False), or when d_x + d_y exceeds
            `ksg_max_dims(n)` and n >= 500 (None).
        critic_steps: the most training steps of a critic (None: mi_bounds' default for the shape).
        ci_level: the interval's coverage.

    Returns:
        Dataset with `mutual_information` (nats), `kind` ("estimate" or "lower_bound"), `summary`
        (in words, "≥ 2.70 nats (lower bound), 95% interval [2.53, inf)", as `probe analyze` prints it),
        `mutual_information_ci` over `interval` ("lower", "upper"; upper = inf for a lower
        bound), `method` (the candidate reported), `reliable` (1/0), `unreliable_reason` (""
        when reliable), `constant_columns` over `view` (x, y: how many were dropped) and, over
        `candidate`, `candidate_estimate` (nats), `candidate_kind`, `candidate_se`,
        `candidate_ci` (what each is: `candidate_ci_method`), `candidate_reliable` and
        `candidate_reason`; `scores_shape` (Mardia's statistics of the scores per block),
        `copula_conditional_z` (the canonical pairs' test) and,
        when a mixture was fitted, `mixture_shape`. The attrs say what the interval is
        (`ci_method`), the column kinds and the score transform.

    Reference: see the module docstring.
    """
    xa = check_array(x, name="x", caller=CALLER, min_samples=20)
    ya = check_array(y, name="y", caller=CALLER, min_samples=20)
    check_same_length(xa, ya, names=("x", "y"), caller=CALLER)
    seed = check_seed(seed, CALLER)
    k = check_positive_int(k, name="k", caller=CALLER)
    neural = _check_neural(neural)
    if critic_steps is not None:
        critic_steps = check_positive_int(critic_steps, name="critic_steps", caller=CALLER)
    level = check_ci_level(ci_level, CALLER)
    n = xa.shape[0]
    if k >= n // 2:
        raise InputValueError(f"{CALLER}: k is {k} for n = {n} rows; k < n / 2 is required. Lower k.")
    for name, a in (("x", xa), ("y", ya)):
        if not (a.std(axis=0) > 0).any():
            raise InputValueError(
                f"{CALLER}: every column of {name} is constant (shape={a.shape}); at least one varying column is "
                "required (a constant carries no information: I(X; Y) = 0)."
            )
    rng = np.random.default_rng([seed, 0x5C0E])
    vx, vy = prepare_view(xa, rng), prepare_view(ya, rng)
    dims = vx.scores.shape[1] + vy.scores.shape[1]
    candidates = []
    if vx.discrete and vy.discrete:
        candidates.append(plug_in_candidate(vx, vy, seed=seed, level=level))
    solved_discrete = bool(candidates) and not candidates[0].reason
    run_neural = neural if neural is not None else (dims > ksg_max_dims(n) and n >= MIN_NEURAL_ROWS
                                                    and not solved_discrete)
    gaussian, fit = gaussian_candidate(vx, vy, level)
    candidates.append(gaussian)
    tied = vx.tied or vy.tied
    scores_gaussian = fit.shapes["x"].gaussian and fit.shapes["y"].gaussian and fit.jointly_gaussian
    if not tied and not scores_gaussian and dims <= limits.MIXTURE_MAX_DIMS and n >= limits.MIXTURE_MIN_ROWS:
        mixture = mixture_candidate(vx, vy, seed=seed, level=level)
        candidates += [mixture] if mixture is not None else []
    if dims <= ksg_max_dims(n):
        candidates.append(ksg_candidate(vx, vy, k=k, seed=seed, level=level))
    if dims > 2 and not tied:
        candidates.append(radial_candidate(fit, k=k, seed=seed, level=level))
    if run_neural:
        candidates.extend(neural_candidates(vx.scores, vy.scores, seed=seed, level=level, steps=critic_steps))
    if fit.saturated:  # x and y agree exactly along a direction: I(X; Y) is infinite or beyond these rows,
        for c in candidates:  # so a finite estimate (KSG climbing by ln 2 per doubling of n) is a lower bound
            if c.kind == ESTIMATE and c.name != "gaussian_copula" and np.isfinite(c.value):
                c.kind, c.valid_bound, c.applies = LOWER_BOUND, True, False
                c.reason = c.reason or "x and y agree exactly along a direction: a finite value is a lower bound"
    result = select(candidates, level)

    names = [c.name for c in candidates]
    data_vars = {
        "mutual_information": var((), result.value, "probe's best estimate of I(X; Y)", "nats"),
        "kind": var((), result.kind, "estimate, or lower_bound: I(X; Y) is at least mutual_information", "1"),
        "summary": var((), _summary(result, level), "the result in words: value, kind, interval", "1"),
        "mutual_information_ci": ci_variable(result.lower, result.upper, "estimate of I(X; Y)", "nats", level=level,
                                             n_bootstrap=0, resampled="no resamples (see ci_method)"),
        "method": var((), result.chosen.name, "the candidate reported (see the rule in mi_estimate's docstring)", "1"),
        "reliable": var((), np.int8(result.reason == ""), "1 if the reported estimate passed every check", "1"),
        "unreliable_reason": var((), result.reason, "why the result is not reliable (empty when it is)", "1"),
        "constant_columns": var("view", np.array([vx.dropped, vy.dropped], dtype=np.int64),
                                "constant columns dropped before estimating", "1"),
        "candidate_estimate": var("candidate", [c.value for c in candidates], "each candidate's value", "nats"),
        "candidate_kind": var("candidate", np.array([c.kind for c in candidates], dtype=str),
                              "estimate or lower_bound", "1"),
        "candidate_se": var("candidate", [c.se for c in candidates], "each candidate's standard error", "nats"),
        "candidate_reliable": var("candidate", np.array([not c.reason for c in candidates], dtype=np.int8),
                                  "1 if the candidate passed its checks", "1"),
        "candidate_ci": ci_variable([c.lower for c in candidates], [c.upper for c in candidates],
                                    "candidate's value", "nats", level=level, n_bootstrap=0, dims="candidate",
                                    resampled="no resamples (normal or t interval, see each candidate)"),
        "candidate_reason": var("candidate", np.array([c.reason for c in candidates], dtype=str),
                                "the candidate's first failed check (empty when it passed)", "1"),
        "candidate_ci_method": var("candidate", np.array([c.ci_method for c in candidates], dtype=str),
                                   "what each candidate's interval is", "1"),
        "scores_shape": var(("block", "statistic"), np.array([fit.shapes[b].as_tuple() for b in BLOCKS]),
                            "Mardia's statistics of the normal scores: relative excess kurtosis, its z-score, "
                            "skewness b1, its z-score", "1"),
        "copula_conditional_z": var((), fit.conditional_z, "the canonical pairs' conditional test of the normal "
                                    "scores' joint Gaussianity, a z-score (see conditional_z; nan: not measured)", "1"),
    }
    data_vars["mutual_information_ci"].attrs["method"] = result.ci_method
    data_vars["candidate_ci"].attrs["method"] = "see candidate_ci_method"
    mixture = next((c for c in candidates if c.shapes), None)
    if mixture is not None:
        data_vars["mixture_shape"] = var(("component", "statistic"), np.array([s.as_tuple() for s in mixture.shapes]),
                                         "Mardia's statistics of each fitted mixture component on held-out rows", "1")
    return make_dataset(
        CALLER, f"checked candidates {', '.join(names)} on normal scores; the rule of mi_estimate's docstring",
        data_vars, coords={"candidate": np.array(names), "view": np.array(["x", "y"]), "block": np.array(BLOCKS),
                           "statistic": np.array(SHAPE_STATISTICS)}, reference=REFERENCE,
        ci_method=result.ci_method,
        transform="normal scores: each column's ranks mapped through the inverse normal CDF (MI-invariant)",
        column_kinds_x=_kinds_text(vx.kinds), column_kinds_y=_kinds_text(vy.kinds), seed=seed, k=k, neural=neural,
        critic_steps=critic_steps, ci_level=level, n_samples=n, dims=dims, ksg_max_dims=ksg_max_dims(n),
    )
