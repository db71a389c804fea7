"""mi_estimate's rule: which candidate is reported, with what interval, and whether it is reliable.

1. A valid lower bound refutes every estimate it exceeds by more than their two margins (the
   bound's below its value, the estimate's above) combined in quadrature, as independent errors
   combine: with margins of z standard errors, a one-sided test of the difference at the
   interval's upper tail (97.5% for a 95% interval; the sum of the margins, non-overlapping
   intervals, asked for 2.8 combined standard errors instead of 2). Then the estimate missed
   dependence the bound found, so it counts from then on neither as a
   rival of the estimate reported nor as a fallback (also one that had failed only on
   precision). Valid, not necessarily tight: a critic that overfits its training pairs still
   gives a lower bound on held-out pairs, only a loose one.
2. Of the estimates that passed their checks, the first in PREFERENCE is reported: the one
   whose assumption is the most specific of those verified (discrete plug-in, then a Gaussian
   copula whose scores passed the Gaussian check, then a Gaussian mixture whose components did,
   then the radial KSG where separate rotations of the views change nothing, then KSG, which
   assumes only smoothness).
   Its interval is widened to hold every other passing estimate's interval and the value of
   every lower bound that passed its own checks (a tight bound above it). If another estimate's
   interval does not overlap it, no check has decided between them: the result is unreliable,
   the disagreement its reason. "Another estimate" is any whose assumptions held, also one that
   failed only on precision (a standard error, a move with n): its interval is wide, not wrong.
3. With no passing estimate, the first estimate whose assumptions held but whose precision did
   not (a standard error too large, a move between n / 2 and n) is reported, unreliable, with
   every candidate's reason, if its value is at least the largest valid lower bound's: an
   estimate that is still settling says more than a bound below it (a 25 + 25 mixture's 4.45
   nats, still rising with n, against a critic's 0.08).
4. Failing that, the largest valid lower bound above 0 is reported as such: kind "lower_bound",
   the one-sided interval [value - t_(1-α)·se, inf) (never below 0), reliable = False and the
   reason "lower bound only" with why each estimate failed.
5. With neither, the first estimate whose assumptions held (also a negative value: independence
   looks like this) is reported, unreliable, with every candidate's reason; failing that, when
   bounds exist but none is above 0, the value 0 as a lower bound (all that is known); failing
   that, the first finite candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from probe.analyzers._mi_candidates import ESTIMATE, LOWER_BOUND, Candidate

PREFERENCE = ("plug_in", "gaussian_copula", "gaussian_mixture", "ksg_radial", "ksg")


@dataclass
class Result:
    chosen: Candidate
    kind: str
    lower: float
    upper: float
    reason: str
    ci_method: str
    value: float = math.nan   # the value reported: the chosen candidate's, or 0 for a vacuous bound

    def __post_init__(self) -> None:
        if math.isnan(self.value):
            self.value = self.chosen.value


def _rank(candidate: Candidate) -> int:
    return PREFERENCE.index(candidate.name) if candidate.name in PREFERENCE else len(PREFERENCE)


def refute(candidates: list[Candidate]) -> None:
    """Mark an estimate unreliable when a valid lower bound lies above it beyond both their margins
    combined in quadrature (see the module docstring).

    A refuted estimate no longer `applies`: the bound shows its assumption failed here, so it is
    neither a rival that makes the result unreliable nor a description reported in its place.
    """
    # Any valid bound, also one that is an estimate too (the radial KSG where it is exact).
    bounds = [c for c in candidates if c.valid_bound and math.isfinite(c.lower_as_bound())]
    for c in candidates:
        if c.kind != ESTIMATE or (c.reason and not c.applies):  # passing, or failed only on precision
            continue
        above = [b for b in bounds if b is not c and b.value - c.value > math.hypot(
            b.value - b.lower_as_bound(), c.upper - c.value)]
        if above:
            top = max(above, key=lambda b: b.value)
            found = (f"below the lower bound {top.name} = {top.value:.3g} nats [{top.lower_as_bound():.3g}, "
                     f"{top.upper:.3g}]: it misses dependence the bound found")
            c.reason, c.applies = (f"{c.reason}; also {found}" if c.reason else found), False


def _summary(candidates: list[Candidate]) -> str:
    return "; ".join(f"{c.name}: {c.reason}" for c in candidates if c.reason)


def select(candidates: list[Candidate], level: float) -> Result:
    """Apply the module's rule to candidates already checked one by one (see the module docstring)."""
    refute(candidates)
    estimates = sorted((c for c in candidates if c.kind == ESTIMATE and not c.reason), key=_rank)
    # An estimate that is also a valid bound and failed its checks as an estimate is still a bound.
    bounds = [c for c in candidates if c.valid_bound and (c.kind == LOWER_BOUND or c.reason)]
    if estimates:
        chosen, others = estimates[0], estimates[1:]
        tight = [b for b in bounds if not b.reason and b.value > chosen.upper]  # a passing bound above it
        # Estimates whose assumptions held but not their precision have honest, wide intervals: if even
        # those exclude the chosen estimate, the candidates disagree too.
        imprecise = [c for c in candidates if c.kind == ESTIMATE and c.reason and c.applies and math.isfinite(c.value)]
        clash = [c for c in others + imprecise if c.lower > chosen.upper or c.upper < chosen.lower]
        lower = min(c.lower for c in estimates)
        upper = max([*(c.upper for c in estimates), *(b.value for b in tight)])
        widened = [c.name for c in others] + [b.name for b in tight]
        method = chosen.ci_method + (f"; widened to hold {', '.join(widened)}" if widened else "")
        reason = ""
        if clash:
            reason = ("estimates disagree beyond their intervals and no check decides between them: "
                      + "; ".join(f"{c.name} = {c.value:.3g} [{c.lower:.3g}, {c.upper:.3g}]" for c in [chosen, *clash]))
        elif lower <= 0:
            reason = f"the {level:.0%} interval reaches {lower:.3g} nats: no dependence is established"
        return Result(chosen, ESTIMATE, lower, upper, reason, method)
    informative = [b for b in bounds if b.value > 0]
    summary = "no candidate is reliable, {} is reported; " + _summary(candidates)
    applying = sorted((c for c in candidates if c.kind == ESTIMATE and c.applies and math.isfinite(c.value)),
                      key=_rank)
    top = max((b.value for b in informative), default=-math.inf)
    settling = [c for c in applying if c.value >= top]  # (a bound above it would refute it)
    if settling:  # rule 3: an estimate whose assumptions held, above every bound
        chosen = settling[0]
        return Result(chosen, ESTIMATE, min(chosen.lower, chosen.value), max(chosen.upper, chosen.value),
                      summary.format(chosen.name), chosen.ci_method)
    if informative:
        chosen = max(informative, key=lambda b: b.value)
        failed = _summary([c for c in candidates if c.kind == ESTIMATE])
        reason = ("lower bound only" + (f" (no estimate passed its checks: {failed})" if failed else
                                        " (no estimate applies to these inputs)")
                  + (f"; it may be loose: {chosen.reason}" if chosen.reason else ""))
        return Result(chosen, LOWER_BOUND, max(min(chosen.one_sided_lower(level), chosen.value), 0.0), math.inf,
                      reason, f"one-sided: {chosen.ci_method}")
    if applying:  # its assumptions held, its precision did not: the best description there is
        chosen = applying[0]
        return Result(chosen, ESTIMATE, min(chosen.lower, chosen.value), max(chosen.upper, chosen.value),
                      summary.format(chosen.name), chosen.ci_method)
    if bounds:  # every estimate's assumptions failed and every bound is <= 0: only I >= 0 is known
        chosen = max(bounds, key=lambda b: b.value)
        return Result(chosen, LOWER_BOUND, 0.0, math.inf,
                      "lower bound only: no estimate applies to these inputs and every bound is <= 0 "
                      f"({chosen.name} = {chosen.value:.3g}), so only I(X; Y) >= 0 is known; " + _summary(candidates),
                      "one-sided: I(X; Y) >= 0", value=0.0)
    finite = sorted((c for c in candidates if math.isfinite(c.value)), key=lambda c: (c.kind != ESTIMATE, _rank(c)))
    chosen = finite[0] if finite else candidates[0]
    return Result(chosen, chosen.kind, min(chosen.lower, chosen.value), max(chosen.upper, chosen.value),
                  summary.format(chosen.name), chosen.ci_method)
