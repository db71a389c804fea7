"""probe's best estimate of I(X; Y) in one call, with an interval and a verdict.

Every column of x and of y is first replaced by its normal scores, Φ⁻¹(rank / (n + 1)): a
strictly increasing map of each coordinate, which leaves I(X; Y) unchanged, removes heavy
tails and undoes coordinate-wise distortions (CDFs, cubes, asinh). On those scores up to four
candidates are computed, chosen by the shape (n, d_x + d_y):

    gaussian_copula  ½ ln(det Σ_x det Σ_y / det Σ) of the scores' covariance, with the
                     Wishart bias correction (Ince et al. 2017). Exact for Gaussian-copula
                     data; for d_x = d_y = 1 a lower bound on any copula (the Gaussian has the
                     largest joint entropy at given marginals and correlation), above that an
                     estimate that misses dependence not carried by correlations.
    ksg              KSG-1 on the scores, run only where `ksg_max_dims(n)` allows it.
    ksg_radial       KSG-1 on (‖x̃‖, ‖ỹ‖), the lengths of the whitened scores: I(‖X̃‖; ‖Ỹ‖) ≤
                     I(X; Y) by data processing, and equal for elliptical (Student-t) data,
                     whose dependence lives in a shared scale. Run when d_x + d_y > 2.
    infonce          the held-out InfoNCE bound of `mi_bounds` (validation-selected critic),
                     run above `ksg_max_dims(n)`; NWJ too when InfoNCE meets its cap.

Each candidate carries its own verdict. A lower bound (ksg_radial, infonce, nwj, and
gaussian_copula when d_x = d_y = 1) whose value less two standard errors exceeds a point
estimate refutes that estimate ("below the lower bound ..."). The reported value is the
largest reliable candidate; when none is reliable it is the largest finite one, reported
unreliable with its reason. The 95% interval is a percentile bootstrap of the chosen
candidate (`ci_method` says over what).

References: Ince et al., "A statistical framework for neuroimaging data analysis based on mutual
information estimated via a Gaussian copula", Human Brain Mapping 38 (2017); Kraskov et al.,
Phys. Rev. E 69, 066138 (2004); Czyż et al., "Beyond Normal" (NeurIPS 2023).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import digamma, ndtri
from scipy.stats import rankdata

from probe.analyzers._bootstrap import (
    bootstrap_ci,
    bootstrap_replicates,
    check_ci_level,
    check_n_bootstrap,
    ci_variable,
    percentile_interval,
)
from probe.analyzers._common import check_seed, make_dataset, var
from probe.analyzers._reliability import SE_SHARE, ksg_max_dims, ksg_verdict
from probe.analyzers.bounds import mi_bounds
from probe.analyzers.ksg import _prepare, ksg_terms
from probe.errors import InputTypeError, InputValueError
from probe.validation import check_array, check_positive_int, check_same_length

CALLER = "mi_estimate"
REFERENCE = ("Ince et al., Human Brain Mapping 38 (2017) (Gaussian copula); Kraskov et al., Phys. Rev. E 69, "
             "066138 (2004); Poole et al., ICML 2019; Czyż et al., Beyond Normal, NeurIPS 2023")
MIN_NEURAL_ROWS = 500  # below this the held-out splits are too small for a critic's bound


@dataclass
class Candidate:
    """One estimate of I(X; Y) (nats), its standard error and interval, and what is known about it."""

    name: str
    value: float
    se: float
    lower: float
    upper: float
    is_bound: bool
    reason: str
    ci_method: str


def normal_scores(a: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d): each column's ranks (ties averaged) mapped through Φ⁻¹(r / (n + 1))."""
    return ndtri(rankdata(a, axis=0) / (a.shape[0] + 1))


def _log_det_unbiased(cov: np.ndarray, n: int) -> float:
    """ln det Σ from a sample covariance of n rows, less the Wishart bias E[ln det S] - ln det Σ."""
    d = cov.shape[0]
    return float(np.linalg.slogdet(cov)[1] - d * math.log(2.0 / (n - 1))
                 - digamma((n - np.arange(1, d + 1)) / 2.0).sum())


def gaussian_copula_mi(xs: np.ndarray, ys: np.ndarray) -> float:
    """Bias-corrected Gaussian MI of (xs, ys) in nats (Ince et al. 2017, Eq. 8 and its correction)."""
    n, dx = xs.shape
    cov = np.atleast_2d(np.cov(np.hstack([xs, ys]), rowvar=False))
    return 0.5 * (_log_det_unbiased(cov[:dx, :dx], n) + _log_det_unbiased(cov[dx:, dx:], n)
                  - _log_det_unbiased(cov, n))


def _whitened_norm(a: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 1): length of each centred row after whitening (pseudo-inverse for rank loss)."""
    centred = a - a.mean(axis=0)
    values, vectors = np.linalg.eigh(np.atleast_2d(np.cov(centred, rowvar=False)))
    keep = values > 1e-10 * values.max()
    return np.linalg.norm(centred @ (vectors[:, keep] / np.sqrt(values[keep])), axis=1, keepdims=True)


def _value_verdict(value: float, se: float) -> str:
    if not math.isfinite(value):
        return "non-finite"
    if value < 0:
        return f"negative estimate ({value:.3g} nats): X and Y look independent"
    if se > SE_SHARE * value:
        return f"standard error {se:.3g} nats over {SE_SHARE:.0%} of the estimate ({value:.3g} nats)"
    return ""


def _gaussian_candidate(xs: np.ndarray, ys: np.ndarray, n_bootstrap: int, seed: int, level: float) -> Candidate:
    n, dx, d = xs.shape[0], xs.shape[1], xs.shape[1] + ys.shape[1]
    value = gaussian_copula_mi(xs, ys)
    joint = np.hstack([xs, ys])
    replicates = bootstrap_replicates(lambda rows: gaussian_copula_mi(joint[rows, :dx], joint[rows, dx:]), n,
                                      n_bootstrap=n_bootstrap, seed=seed)
    # Redrawn rows repeat, which inflates the covariance's off-diagonal noise: recentre on the estimate.
    replicates = replicates + (value - np.median(replicates))
    lower, upper = percentile_interval(replicates, level)
    se = float(replicates.std(ddof=1)) if n_bootstrap > 1 else math.inf
    reason = _value_verdict(value, se)
    if not reason and n < 10 * d:
        reason = f"n = {n} rows for {d} dimensions: fewer than 10 per dimension, the covariance is poorly estimated"
    return Candidate("gaussian_copula", value, se, float(lower), float(upper), dx == 1 and ys.shape[1] == 1,
                     reason, "percentile bootstrap over rows, recentred on the estimate")


def _ksg_candidate(name: str, xs: np.ndarray, ys: np.ndarray, *, k: int, seed: int, dims: int, is_bound: bool,
                   n_bootstrap: int, level: float) -> Candidate:
    rng = np.random.default_rng(seed)
    terms = ksg_terms(_prepare(xs, rng, True), _prepare(ys, rng, True), k)
    value, se = float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(terms.size))
    lower, upper = bootstrap_ci(lambda rows: terms[rows].mean(), terms.size, n_bootstrap=n_bootstrap, seed=seed,
                                level=level)
    return Candidate(name, value, se, lower, upper, is_bound, ksg_verdict(value, se=se, dims=dims, n=terms.size),
                     "percentile bootstrap over the rows' KSG terms (neighbour counts held fixed)")


def _neural_candidates(xs: np.ndarray, ys: np.ndarray, seed: int, level: float,
                       steps: int | None) -> list[Candidate]:
    """The held-out InfoNCE bound, and NWJ's when InfoNCE meets its cap log K."""
    z = float(ndtri(0.5 + level / 2))
    out: list[Candidate] = []
    names = ["infonce"]
    while names:
        name = names.pop(0)
        ds = mi_bounds(xs, ys, estimators=[name], steps=steps, seed=seed)
        value, reason, batches = ds.bound.item(), str(ds.unreliable_reason.item()), ds.attrs["n_eval_batches"]
        se = ds.bound_std.item() / math.sqrt(batches) if batches > 1 else math.inf
        # Test batches are few (about 8 at n = 5,000): a normal interval from their spread.
        out.append(Candidate(name, value, se, value - z * se, value + z * se, True, reason,
                             "normal interval from the spread of the bound over test batches"))
        if name == "infonce" and reason.startswith("InfoNCE within"):
            names.append("nwj")
    return out


def _refute(candidates: list[Candidate]) -> None:
    """Mark a point estimate unreliable when a lower bound, less two standard errors, exceeds it."""
    bounds = [c for c in candidates if c.is_bound and math.isfinite(c.value) and math.isfinite(c.se) and c.value >= 0]
    for c in candidates:
        if c.is_bound or c.reason:
            continue
        above = [b for b in bounds if b.value - 2 * b.se > c.value]
        if above:
            top = max(above, key=lambda b: b.value)
            c.reason = (f"below the lower bound {top.name} = {top.value:.3g} nats: "
                        "this dependence is not what the estimate models")


def _check_neural(neural: Any) -> bool | None:
    if neural is not None and not isinstance(neural, (bool, np.bool_)):
        raise InputTypeError(f"{CALLER}: neural is {neural!r}; True, False or None (chosen by shape) is required.")
    return None if neural is None else bool(neural)


def mi_estimate(
    x: Any,
    y: Any,
    *,
    seed: int = 0,
    k: int = 3,
    neural: bool | None = None,
    critic_steps: int | None = None,
    n_bootstrap: int = 200,
    ci_level: float = 0.95,
) -> xr.Dataset:
    """probe's best estimate of I(X; Y) in nats, with a bootstrap interval and a verdict.

    Args:
        x: (n, d_x) and y: (n, d_y) paired rows, n >= 20.
        seed: KSG jitter, the critic's split and training, and the bootstrap.
        k: KSG neighbours.
        neural: train the InfoNCE critic (True), never (False), or when d_x + d_y exceeds
            `ksg_max_dims(n)` and n >= 500 (None).
        critic_steps: the most training steps of that critic (None: mi_bounds' default for the shape).
        n_bootstrap: bootstrap resamples for the interval (>= 1).
        ci_level: the interval's coverage.

    Returns:
        Dataset with `mutual_information` (nats), `mutual_information_ci` over `interval`
        ("lower", "upper"), `method` (the chosen candidate's name), `reliable` (1/0),
        `unreliable_reason` ("" when reliable) and, over `candidate`, `candidate_estimate`
        (nats), `candidate_reliable`, `candidate_is_bound` and `candidate_reason`. The attrs
        `ci_method` says what the interval resamples; `transform` the normal-score map.

    Reference: see the module docstring (Ince et al. 2017; Kraskov et al. 2004; Poole et al. 2019).
    """
    xa = check_array(x, name="x", caller=CALLER, min_samples=20)
    ya = check_array(y, name="y", caller=CALLER, min_samples=20)
    check_same_length(xa, ya, names=("x", "y"), caller=CALLER)
    seed = check_seed(seed, CALLER)
    k = check_positive_int(k, name="k", caller=CALLER)
    neural = _check_neural(neural)
    if critic_steps is not None:
        critic_steps = check_positive_int(critic_steps, name="critic_steps", caller=CALLER)
    n_bootstrap = check_positive_int(check_n_bootstrap(n_bootstrap, CALLER), name="n_bootstrap", caller=CALLER)
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
    xs, ys = (normal_scores(a[:, a.std(axis=0) > 0]) for a in (xa, ya))
    dims = xs.shape[1] + ys.shape[1]
    run_neural = neural if neural is not None else (dims > ksg_max_dims(n) and n >= MIN_NEURAL_ROWS)

    candidates = [_gaussian_candidate(xs, ys, n_bootstrap, seed, level)]
    ksg_options = {"k": k, "seed": seed, "n_bootstrap": n_bootstrap, "level": level}
    if dims <= ksg_max_dims(n):
        candidates.append(_ksg_candidate("ksg", xs, ys, dims=dims, is_bound=False, **ksg_options))
    if dims > 2:
        candidates.append(_ksg_candidate("ksg_radial", _whitened_norm(xs), _whitened_norm(ys), dims=2, is_bound=True,
                                         **ksg_options))
    if run_neural:
        candidates.extend(_neural_candidates(xs, ys, seed, level, critic_steps))
    _refute(candidates)

    reliable = [c for c in candidates if not c.reason]
    finite = [c for c in candidates if math.isfinite(c.value)]
    if not finite:
        raise InputValueError(f"{CALLER}: no candidate gave a finite estimate on x (shape={xa.shape}) and y "
                              f"(shape={ya.shape}); are the inputs degenerate (all ties)?")
    chosen = max(reliable or finite, key=lambda c: c.value)
    lower, upper = min(chosen.lower, chosen.value), max(chosen.upper, chosen.value)
    if reliable:
        reason = "" if lower > 0 else f"the {level:.0%} interval reaches {lower:.3g} nats: no dependence is established"
    else:
        reason = (f"no candidate is reliable, the largest ({chosen.name}) is reported; "
                  + "; ".join(f"{c.name}: {c.reason}" for c in candidates))

    names = [c.name for c in candidates]
    data_vars = {
        "mutual_information": var((), chosen.value, "probe's best estimate of I(X; Y)", "nats"),
        "mutual_information_ci": ci_variable(lower, upper, "estimate of I(X; Y)", "nats", level=level,
                                             n_bootstrap=n_bootstrap, resampled=chosen.ci_method.split(" over ")[-1]),
        "method": var((), chosen.name, "the candidate reported (largest reliable one)", "1"),
        "reliable": var((), np.int8(reason == ""), "1 if the reported candidate passed every check", "1"),
        "unreliable_reason": var((), reason, "why the estimate is not reliable (empty when it is)", "1"),
        "candidate_estimate": var("candidate", [c.value for c in candidates], "each candidate's estimate", "nats"),
        "candidate_reliable": var("candidate", np.array([not c.reason for c in candidates], dtype=np.int8),
                                  "1 if the candidate passed its checks", "1"),
        "candidate_ci": ci_variable([c.lower for c in candidates], [c.upper for c in candidates],
                                    "candidate's estimate", "nats", level=level, n_bootstrap=n_bootstrap,
                                    dims="candidate", resampled="rows (see each candidate in the module docstring)"),
        "candidate_is_bound": var("candidate", np.array([c.is_bound for c in candidates], dtype=np.int8),
                                  "1 if the candidate is a lower bound on I(X; Y) (in expectation)", "1"),
        "candidate_reason": var("candidate", np.array([c.reason for c in candidates], dtype=str),
                                "the candidate's first failed check (empty when reliable)", "1"),
    }
    return make_dataset(
        CALLER, f"largest reliable of {', '.join(names)} on normal scores", data_vars,
        coords={"candidate": np.array(names)}, reference=REFERENCE, ci_method=chosen.ci_method,
        transform="normal scores: each column's ranks mapped through the inverse normal CDF (MI-invariant)",
        seed=seed, k=k, neural=neural, critic_steps=critic_steps, n_bootstrap=n_bootstrap, ci_level=level, n_samples=n,
        dims=dims, ksg_max_dims=ksg_max_dims(n),
    )
