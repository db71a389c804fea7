"""mi_estimate's candidates: each an estimate or a lower bound of I(X; Y), with its interval and
the first of its own assumptions that failed (see mi_estimate's module docstring for the rule).

Every candidate but the neural ones is a mean of per-row terms, so its standard error is the
terms' spread over sqrt(n) and its interval value ± z·se; KSG's terms share neighbours, so its
standard error is the larger of that and the spread over disjoint blocks of rows, with a t
quantile (`ksg.block_standard_error`). An estimate whose value moves between n / 2 and n rows has
that move added on the side it points to (`BIAS_FACTOR`). The neural bounds average over test
batches: a t interval with (batches - 1) degrees of freedom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import norm, t

from probe.analyzers import _reliability as limits
from probe.analyzers._mi_data import View, principal_components
from probe.analyzers._mi_discrete import plug_in, state_codes
from probe.analyzers._mi_gaussian import Gaussian, gaussian_fit
from probe.analyzers._mi_mixture import mixture_fit, mixture_verdict
from probe.analyzers._reliability import convergence_verdict, ksg_max_dims, value_verdict
from probe.analyzers.bounds import mi_bounds, three_way_split
from probe.analyzers.ksg import SE_BLOCKS, _prepare, block_standard_error, ksg_terms, mixed_ksg_terms

ESTIMATE, LOWER_BOUND = "estimate", "lower_bound"
TERMS_CI = "normal interval from the standard error of the per-row terms"
BLOCKS_CI = ("t interval from the larger of the per-row terms' standard error and that of {blocks} disjoint "
             "blocks of rows ({dof:g} dof)")


@dataclass
class Candidate:
    """One estimate or lower bound of I(X; Y) in nats, its standard error and interval, and its verdict."""

    name: str
    kind: str                 # ESTIMATE or LOWER_BOUND
    value: float
    se: float
    lower: float
    upper: float
    reason: str               # the first failed check, "" when it passed them all
    ci_method: str
    half: float = math.nan    # the value on n / 2 rows (NaN where not measured)
    dof: float = math.inf     # degrees of freedom of its standard error (test batches - 1 for a critic)
    shapes: list = field(default_factory=list)  # a mixture's per-component Mardia statistics
    # A lower bound whose value is a valid bound even where its reason says it is not tight (a critic
    # that overfits, InfoNCE at its cap): it can still refute an estimate below it.
    valid_bound: bool = False
    # An estimate whose assumptions held and which failed only on precision (its standard error, a
    # negative value, a move with n): still the best description of the data when nothing passes.
    applies: bool = False
    # An estimate that is also a valid bound (the radial KSG where it is exact): the lower end of its
    # interval as a bound, without the widening for its move (NaN: `lower` is that end).
    bound_lower: float = math.nan

    def lower_as_bound(self) -> float:
        return self.bound_lower if math.isfinite(self.bound_lower) else self.lower

    def one_sided_lower(self, level: float) -> float:
        """value - t_(level, dof) se: the lower end of a one-sided interval of coverage `level`."""
        if not math.isfinite(self.se):
            return self.value
        return self.value - float(t.ppf(level, self.dof) if math.isfinite(self.dof) else norm.ppf(level)) * self.se


def z_value(level: float, dof: float = math.inf) -> float:
    """The two-sided quantile of a `level` interval: normal, or t with `dof` degrees of freedom."""
    return float(norm.ppf(0.5 + level / 2) if math.isinf(dof) else t.ppf(0.5 + level / 2, dof))


def from_terms(name: str, kind: str, terms: np.ndarray, level: float, *, value: float | None = None,
               half: float = math.nan, reason: str = "", method: str = TERMS_CI,
               se: tuple[float, float] | None = None) -> Candidate:
    """A candidate whose value is the mean of `terms` (or `value`), its interval widened by the move from
    `half`; `se` (standard error, dof) where the terms' own does not hold (`ksg.block_standard_error`)."""
    value = float(terms.mean()) if value is None else value
    error, dof = se if se is not None else (float(terms.std(ddof=1) / math.sqrt(terms.size)), math.inf)
    move = value - half if math.isfinite(half) else 0.0
    lower = value - z_value(level, dof) * error - limits.BIAS_FACTOR * max(-move, 0.0)
    upper = value + z_value(level, dof) * error + limits.BIAS_FACTOR * max(move, 0.0)
    if math.isfinite(half):
        method += f", widened by {limits.BIAS_FACTOR:g} x its move between n / 2 and n rows"
    return Candidate(name, kind, value, error, lower, upper, reason, method, half, dof=dof)


def _ksg_method(dof: float) -> str:
    return TERMS_CI if math.isinf(dof) else BLOCKS_CI.format(blocks=SE_BLOCKS, dof=dof)


def half_value(statistic: Callable[[np.ndarray], float], n: int, seed: int) -> float:
    """The mean of `statistic` over two disjoint random halves of the n rows (seeded)."""
    order = np.random.default_rng([seed, 0x4A1F]).permutation(n)
    return float(np.mean([statistic(np.sort(part)) for part in (order[: n // 2], order[n // 2: 2 * (n // 2)])]))


def _estimate_reason(value: float, se: float, half: float) -> str:
    return value_verdict(value, se) or convergence_verdict(value, half)


def gaussian_candidate(vx: View, vy: View, level: float) -> tuple[Candidate, Gaussian]:
    """The Gaussian copula: an estimate when the scores look jointly Gaussian, a lower bound when only
    each view's do, and an estimate marked unreliable when a view's do not (it can then overshoot)."""
    fit = gaussian_fit(vx.scores, vy.scores)
    n, dims = vx.scores.shape[0], sum(fit.ranks)
    views_bad = [f"{name} ({fit.shapes[name].describe()})" for name in ("x", "y") if not fit.shapes[name].gaussian]
    kind, reason = ESTIMATE, ""
    if vx.tied or vy.tied:
        reason = ("discrete or mixed columns (ties that carry probability): the Gaussian copula needs continuous "
                  "marginals")
    elif fit.saturated:
        # Ranks in perfect agreement (y a copy or a noiseless monotone map of x along a direction) set
        # no finite value: the copula's is then its rounding cap, neither an estimate nor a bound.
        reason = (f"the normal scores of x and y agree exactly along {fit.saturated} direction(s) (a copied "
                  "column or a noiseless monotone map, in these n rows): the copula's value is its rounding cap, "
                  "not a measurement; I(X; Y) is beyond what it resolves (infinite if the map is exact)")
    elif n < limits.ROWS_PER_DIM * dims:
        reason = f"n = {n} rows for {dims} dimensions: fewer than {limits.ROWS_PER_DIM} per dimension"
    elif views_bad:
        reason = ("the normal scores of " + " and ".join(views_bad) + " are not jointly Gaussian: the copula can "
                  "overestimate as well as underestimate")
    elif not fit.jointly_gaussian:
        kind = LOWER_BOUND  # each view Gaussian: I = I_G + D(X̃, Ỹ) >= I_G
        reason = "" if math.isfinite(fit.value) else "non-finite"
    candidate = from_terms("gaussian_copula", kind, fit.terms, level, value=fit.value, reason=reason,
                           method=TERMS_CI + " (delta method)")
    candidate.valid_bound = kind == LOWER_BOUND and math.isfinite(fit.value)
    if kind == ESTIMATE and not candidate.reason:
        candidate.reason, candidate.applies = value_verdict(candidate.value, candidate.se), True
    return candidate, fit


def mixture_candidate(vx: View, vy: View, *, seed: int, level: float) -> Candidate | None:
    """The cross-fitted MI of a Gaussian mixture of the scores, or None when one Gaussian fits best."""
    fit = mixture_fit(vx.scores, vy.scores, seed)
    if fit is None:
        return None
    candidate = from_terms("gaussian_mixture", ESTIMATE, fit.terms, level, half=fit.half,
                           method=TERMS_CI + f" ({fit.components} components, cross-fitted)")
    candidate.shapes = fit.shapes
    misfit = mixture_verdict(fit)
    candidate.reason = misfit or _estimate_reason(candidate.value, candidate.se, fit.half)
    candidate.applies = not misfit
    return candidate


def ksg_candidate(vx: View, vy: View, *, k: int, seed: int, level: float) -> Candidate:
    """KSG-1 on the scores, or Gao et al.'s mixed KSG when columns are discrete or mixed."""
    n, dims = vx.scores.shape[0], vx.scores.shape[1] + vy.scores.shape[1]
    tied = vx.tied or vy.tied
    if tied:
        def terms_of(rows):
            return mixed_ksg_terms(vx.scores[rows], vy.scores[rows], k)
    else:
        rng = np.random.default_rng(seed)
        xs, ys = _prepare(vx.scores, rng, True), _prepare(vy.scores, rng, True)

        def terms_of(rows):
            return ksg_terms(xs[rows], ys[rows], k)
    terms = terms_of(np.arange(n))
    half = half_value(lambda rows: float(terms_of(rows).mean()), n, seed)
    se = block_standard_error(terms, terms_of, k, seed)
    value = float(terms.mean())
    limit = ksg_max_dims(n)
    reason = (f"d_x + d_y = {dims} dimensions at n = {n}: KSG underestimates above {limit}" if dims > limit
              else _estimate_reason(value, se[0], half))
    method = _ksg_method(se[1]) + (" (mixed KSG, Gao et al. 2017)" if tied else " (KSG-1)")
    candidate = from_terms("ksg", ESTIMATE, terms, level, half=half, reason=reason, method=method, se=se)
    candidate.applies = dims <= limit
    return candidate


def radial_candidate(fit: Gaussian, *, k: int, seed: int, level: float) -> Candidate:
    """KSG on the whitened views' lengths: I(‖X̃‖; ‖Ỹ‖) <= I(X; Y) by data processing, with equality
    when the views are invariant under separate rotations (`rotation_z` within its limit): then an
    estimate, with the checks every estimate has, and still a valid lower bound."""
    rng = np.random.default_rng(seed)
    norms = [_prepare(r[:, None], rng, True) for r in fit.whitened_norms]

    def terms_of(rows):
        return ksg_terms(norms[0][rows], norms[1][rows], k)
    terms = terms_of(np.arange(norms[0].shape[0]))
    value = float(terms.mean())
    se = block_standard_error(terms, terms_of, k, seed)
    invariant = math.isfinite(fit.rotation_z) and fit.rotation_z <= limits.RADIAL_ROTATION_Z
    if invariant:
        half = half_value(lambda rows: float(terms_of(rows).mean()), terms.size, seed)
        method = _ksg_method(se[1]) + f" (KSG-1; separate rotations of x and y change nothing: z = {fit.rotation_z:.2f})"
        candidate = from_terms("ksg_radial", ESTIMATE, terms, level, half=half, method=method, se=se)
        candidate.reason = _estimate_reason(value, candidate.se, half)
        candidate.applies, candidate.bound_lower = True, value - z_value(level, se[1]) * candidate.se
    else:
        reason = "non-finite" if not math.isfinite(value) else (
            f"negative ({value:.3g} nats): no dependence in the lengths" if value < 0 else "")
        candidate = from_terms("ksg_radial", LOWER_BOUND, terms, level, reason=reason,
                               method=_ksg_method(se[1]) + " (KSG-1)", se=se)
    candidate.valid_bound = math.isfinite(value)
    return candidate


def plug_in_candidate(vx: View, vy: View, *, seed: int, level: float) -> Candidate:
    """Miller-Madow plug-in MI of all-discrete x and y, with at least limits.PLUGIN_ROWS_PER_STATE rows per state."""
    cx, cy = state_codes(vx.values), state_codes(vy.values)
    fit = plug_in(cx, cy)
    n = cx.size
    half = half_value(lambda rows: plug_in(state_codes(cx[rows, None]), state_codes(cy[rows, None])).value, n, seed)
    se = float(fit.terms.std(ddof=1) / math.sqrt(n))
    m_xy = fit.states[2]
    reason = (f"{m_xy} joint states seen in n = {n} rows: fewer than {limits.PLUGIN_ROWS_PER_STATE} rows per state"
              if m_xy * limits.PLUGIN_ROWS_PER_STATE > n else _estimate_reason(fit.value, se, half))
    candidate = from_terms("plug_in", ESTIMATE, fit.terms, level, half=half, reason=reason,
                           method=TERMS_CI + " (Miller-Madow plug-in)")
    candidate.applies = m_xy * limits.PLUGIN_ROWS_PER_STATE <= n
    return candidate


def _reduced(a: np.ndarray, train: np.ndarray, k: int) -> np.ndarray:
    """`a` on its first k principal components fitted on the `train` rows (itself when k >= its width)."""
    if k >= a.shape[1]:
        return a
    mean, basis = principal_components(a[train], max_components=k)
    return (a - mean) @ basis


def _critic_widths(d: int) -> list[int]:
    """The principal-component counts a critic is tried on for a view of width d: 8, 16, 32 and 64
    below d, and d itself up to CRITIC_MAX_DIMS."""
    return [k for k in (8, 16, 32, 64) if k < min(d, limits.CRITIC_MAX_DIMS + 1)] + (
        [d] if d <= limits.CRITIC_MAX_DIMS else [])


def _bound_candidate(name: str, ds, level: float, note: str) -> Candidate:
    value, reason, batches = ds.bound.item(), str(ds.unreliable_reason.item()), int(ds.attrs["n_eval_batches"])
    se = ds.bound_std.item() / math.sqrt(batches) if batches > 1 else math.inf
    half_width = float(t.ppf(0.5 + level / 2, batches - 1)) * se if batches > 1 and math.isfinite(value) else 0.0
    valid = math.isfinite(value) and math.isfinite(se) and not int(ds.diverged.item())
    return Candidate(name, LOWER_BOUND, value, se, value - half_width, value + half_width, reason,
                     f"t interval over {batches} test batches of the held-out bound{note}",
                     dof=max(batches - 1, 1), valid_bound=valid)


def neural_candidates(xs: np.ndarray, ys: np.ndarray, *, seed: int, level: float,
                      steps: int | None) -> list[Candidate]:
    """The held-out InfoNCE bound, and NWJ's when InfoNCE meets its cap log K (both lower bounds).

    Wide views overfit a critic (784 pixels from 3,000 training pairs), so each view is reduced
    to its leading principal components, fitted on the critic's training rows (mi_bounds' split
    for this seed); the number of components (8, 16, 32 or 64, or the view's width) is chosen by
    the bound on the validation rows, so the test rows that give the bound take no part in it.
    """
    train = three_way_split(xs.shape[0], 0.2, 0.2, seed)[0]
    wx, wy = _critic_widths(xs.shape[1]), _critic_widths(ys.shape[1])
    trials = []
    for i in range(max(len(wx), len(wy))):
        kx, ky = wx[min(i, len(wx) - 1)], wy[min(i, len(wy) - 1)]
        cx, cy = _reduced(xs, train, kx), _reduced(ys, train, ky)
        trials.append(((kx, ky), cx, cy, mi_bounds(cx, cy, estimators=["infonce"], steps=steps, seed=seed)))
    (kx, ky), cx, cy, best = max(trials, key=lambda trial: trial[3].validation_bound.item()
                                 if np.isfinite(trial[3].validation_bound.item()) else -math.inf)
    reduced = [f"{name} {d} -> {k}" for name, d, k in (("x", xs.shape[1], kx), ("y", ys.shape[1], ky)) if k < d]
    note = "" if not reduced else ("; principal components fitted on the critic's training rows: " + ", ".join(reduced)
                                   + f" (chosen on validation rows among {len(trials)} widths)")
    out = [_bound_candidate("infonce", best, level, note)]
    if out[0].reason.startswith("InfoNCE within"):
        out.append(_bound_candidate("nwj", mi_bounds(cx, cy, estimators=["nwj"], steps=steps, seed=seed), level, note))
    return out
