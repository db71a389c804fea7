"""Did a run show the paper's effect? One line per study, decided by numbers in its results.

Each study module defines `verdict(ds) -> Verdict`: the paper's claim, whether our run showed
it, the numbers that decide it and the chart of the study's report page that shows it. Every
verdict decides by the same rules, stated here and in each claim:

- A difference counts only when it exceeds its noise across seeds: the 95 % t-interval of the
  paired (same-seed) difference excludes 0, in the claimed direction (`paired`, `exceeds`).
  Seeds pair because every cell of a seed shares its data order and initialisation streams.
  Where the seeds do not pair (families compared at the seeds where each matched its target),
  the difference is the family term of an ANCOVA, the measure regressed on family and achieved
  bound over those seeds, with its t-interval or partial F-test (`ancova`).
- Where the claim has a size (a rise of 0.01 accuracy, a drop of 0.15, 1 nat of conditioning),
  the estimate must reach it too: significant and large enough.
- Fewer than MIN_SEEDS seeds with finite values, or no grid cell that qualifies, is
  `undecided`, with the reason. A diverged seed (NaN) is left out of a mean, never read as a
  value; "worst" counts it as the worst (no nanmax / nanmin over seeds: one seed never decides).
- Matching a target is per seed: a seed counts at (estimator, t) only where its own held-out
  L_t = |I_EST - t| is at most MATCH_TOLERANCE, never the mean over seeds.
- A run too short to decide is "not judged" (`judge`): the smoke preset, or fewer training steps
  than the study's smallest other preset.

A run whose variables are missing or all non-finite is "undecided", never "held".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import xarray as xr
from scipy import stats

HELD, PARTLY, NOT_HELD, UNDECIDED = "held", "partly held", "did not hold", "undecided"
NOT_JUDGED = "not judged"

LEVEL = 0.95    # every interval below is a two-sided 95 % t-interval
MIN_SEEDS = 3   # seeds (with finite values) a comparison needs; fewer is undecided


@dataclass(frozen=True)
class Verdict:
    claim: str                 # the paper's claim, with the threshold that decides it
    outcome: str               # HELD, PARTLY, NOT_HELD, UNDECIDED or NOT_JUDGED
    evidence: tuple[str, ...]  # the deciding numbers, one line per grid cell
    decided_by: str            # the chart (variable over step) on the study's report page that shows it
    paper: str = ""            # what the paper reported for the same quantities (docs/reference.md)
    reason: str = ""           # why a NOT_JUDGED run was not judged ("smoke preset: too short to decide")

    @property
    def label(self) -> str:
        """The outcome as shown: "held", ..., or "not judged (smoke preset: too short to decide)"."""
        return f"{self.outcome} ({self.reason})" if self.outcome == NOT_JUDGED and self.reason else self.outcome


def outcome(*parts: bool) -> str:
    """HELD when every part held, NOT_HELD when none did, PARTLY otherwise."""
    if all(parts):
        return HELD
    return NOT_HELD if not any(parts) else PARTLY


def combine(*parts: str) -> str:
    """One outcome from the outcomes of a claim's parts (or of its grid cells).

    HELD when every part held; PARTLY when some held and some did not; NOT_HELD when none that
    could be decided held; otherwise (something undecided, nothing against) UNDECIDED.
    """
    some_held = any(p in (HELD, PARTLY) for p in parts)
    some_not = any(p in (NOT_HELD, PARTLY) for p in parts)
    if some_held and some_not:
        return PARTLY
    if some_not:
        return NOT_HELD
    if not parts or UNDECIDED in parts:
        return UNDECIDED
    return HELD


def all_of(*conditions: str) -> str:
    """One part of a claim that needs every condition: NOT_HELD if any failed, else UNDECIDED if
    any could not be decided, else HELD (where `combine` would call a mix "partly held")."""
    if NOT_HELD in conditions or PARTLY in conditions:
        return NOT_HELD
    return UNDECIDED if UNDECIDED in conditions or not conditions else HELD


def over_cells(states: list[str], left_out: int) -> str:
    """The outcome over the grid cells that could be compared (`states`), `left_out` others could
    not: UNDECIDED when none could; PARTLY when every compared cell held but some were left out."""
    state = combine(*states) if states else UNDECIDED
    return PARTLY if state == HELD and left_out else state


# ---------------------------------------------------------------------------- reading results

def _step_index(var: xr.DataArray, which: str) -> int:
    """The position of the first or last evaluation by step value (whatever the coordinate's order)."""
    steps = np.asarray(var["step"].values, dtype=float)
    return int(np.argmin(steps) if which == "first" else np.argmax(steps))


def at_step(ds: xr.Dataset, name: str, which: str = "last", **sel) -> np.ndarray:
    """Per-seed values of `name` at the first or last evaluation (NaN for a run that diverged).

    `sel` picks grid coordinates; a `quantile` dimension, if any, must be selected too.
    """
    if name not in ds:
        raise KeyError(name)
    var = ds[name].sel(**sel) if sel else ds[name]
    if "step" in var.dims:
        var = var.isel(step=_step_index(var, which))
    values = np.asarray(var.values, dtype=float)
    return values.reshape(-1)


def per_seed(ds: xr.Dataset, name: str, which: str = "last", **sel) -> xr.DataArray:
    """`name` at the first or last evaluation as a (seed,) array labelled by seed, for pairing.

    `sel` must pick every other dimension of `name`; one left with more than one value is a
    ValueError (`judge` turns it into "undecided" with its text).
    """
    if name not in ds:
        raise KeyError(name)
    var = ds[name].sel(**sel) if sel else ds[name]
    if "step" in var.dims:
        var = var.isel(step=_step_index(var, which))
    if "seed" not in var.dims:
        var = var.expand_dims(seed=[0])
    left = [d for d in var.dims if d != "seed" and var.sizes[d] > 1]
    if left:
        raise ValueError(f"{name} still varies over {left} after selecting {sel or 'nothing'}; "
                         "the verdict compares one value per seed")
    var = var.squeeze([d for d in var.dims if d != "seed"], drop=True).reset_coords(drop=True)
    return var.astype(float)


def mean_sd(values: np.ndarray) -> tuple[float, float, int]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    sd = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), sd, int(finite.size)


def mean(values: np.ndarray) -> float:
    return mean_sd(values)[0]


def number(x: float, digits: int = 3, sign: str = "") -> str:
    """`x` with `digits` decimals, or in powers of ten past 10⁴ (a diverged NWJ's 2.83e+08, not
    282683206.644), so an exploded value reads as one."""
    return f"{x:{sign}.{digits - 1}e}" if np.isfinite(x) and abs(x) >= 1e4 else f"{x:{sign}.{digits}f}"


def fmt(values: np.ndarray, digits: int = 3) -> str:
    """'0.812 ± 0.004' over the finite seeds; '0.812' for one seed; 'n/a' for none."""
    m, sd, n = mean_sd(np.asarray(values, dtype=float))
    if n == 0:
        return "n/a"
    return number(m, digits) if n == 1 else f"{number(m, digits)} ± {number(sd, digits)}"


def undecided(claim: str, reason: str, decided_by: str, paper: str = "") -> Verdict:
    return Verdict(claim=claim, outcome=UNDECIDED, evidence=(reason,), decided_by=decided_by, paper=paper)


def settings_of(ds: xr.Dataset) -> dict:
    """The run's settings (`settings_json` attribute) as a dict; {} where none is recorded."""
    try:
        return dict(json.loads(str(ds.attrs.get("settings_json", "{}"))))
    except (ValueError, TypeError):
        return {}


# ---------------------------------------------------------------------------- intervals

@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % t-interval, and the n independent samples (seeds) it rests on."""
    mean: float
    low: float
    high: float
    n: int
    how: str = "paired t"

    def __neg__(self) -> "Interval":
        return Interval(-self.mean, -self.high, -self.low, self.n, self.how)

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "no seed with finite values"
        m, lo, hi = (number(v, digits, "+") for v in (self.mean, self.low, self.high))
        if not np.isfinite(self.low):
            return f"{m} ({self.how}, n = {self.n}: no interval)"
        return f"{m} [{lo}, {hi}] ({self.how}, n = {self.n})"


def t_interval(values: np.ndarray, how: str = "t") -> Interval:
    """Mean of the finite `values` with its 95 % t-interval (NaN bounds below 2 values)."""
    values = np.asarray(values, dtype=float).reshape(-1)
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, how)
    m = float(values.mean())
    if n < 2:
        return Interval(m, float("nan"), float("nan"), 1, how)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return Interval(m, m - half, m + half, n, how)


def paired(a: xr.DataArray, b: xr.DataArray | float) -> Interval:
    """a − b over the seeds where both are finite, paired by seed label (`per_seed` arrays);
    `b` may be a number (a one-sample interval against it)."""
    if not isinstance(b, xr.DataArray):
        return t_interval(np.asarray(a.values, dtype=float) - float(b), "t")
    a, b = xr.align(a, b, join="inner")
    return t_interval(np.asarray(a.values, dtype=float) - np.asarray(b.values, dtype=float), "paired t")


def exceeds(interval: Interval, minimum: float = 0.0) -> str:
    """HELD when the interval lies above 0 and the estimate is at least `minimum`; NOT_HELD when
    not; UNDECIDED on fewer than MIN_SEEDS samples."""
    if interval.n < MIN_SEEDS:
        return UNDECIDED
    return HELD if interval.low > 0 and interval.mean >= minimum else NOT_HELD


def decision_text(state: str, interval: Interval, digits: int = 3) -> str:
    """'+0.031 [+0.012, +0.050] (paired t, n = 3): shown' and its two other endings."""
    ending = {HELD: "shown", NOT_HELD: "not shown", UNDECIDED: f"undecided (fewer than {MIN_SEEDS} seeds)"}[state]
    return f"{interval.text(digits)}: {ending}"


# ---------------------------------------------------------------------------- families at equal bound

@dataclass(frozen=True, eq=False)
class Ancova:
    """measure ~ family + slope · (bound − mean bound), fitted by least squares over (family, seed) rows.

    `adjusted` are the family means at the pooled mean bound; `p` the partial F-test of the
    family term (do families differ once the bound is accounted for?); `df` the residual degrees
    of freedom. Without a bound it is a one-way ANOVA (`slope` NaN).
    """
    adjusted: dict[str, float]
    p: float
    n: int
    df: int
    slope: float
    covariance: np.ndarray = field(repr=False)   # of the family coefficients (scaled by the residual variance)

    def contrast(self, a: str, b: str) -> Interval:
        """Family a minus family b at equal bound, with its 95 % t-interval."""
        names = list(self.adjusted)
        i, j = names.index(a), names.index(b)
        var = self.covariance[i, i] + self.covariance[j, j] - 2 * self.covariance[i, j]
        half = float(stats.t.ppf(0.5 + LEVEL / 2, self.df) * np.sqrt(max(var, 0.0)))
        d = self.adjusted[a] - self.adjusted[b]
        return Interval(d, d - half, d + half, self.n, "ANCOVA" if np.isfinite(self.slope) else "t")

    def spread(self) -> tuple[str, str, float]:
        """The lowest and highest family at equal bound and the difference between them."""
        lo, hi = min(self.adjusted, key=self.adjusted.get), max(self.adjusted, key=self.adjusted.get)
        return lo, hi, self.adjusted[hi] - self.adjusted[lo]


def ancova(groups: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> Ancova | str:
    """Fit `Ancova` to {family: (measure per seed, bound per seed or None)}, rows finite in both.

    Returns the reason as a string where it cannot be fitted: a family with fewer than MIN_SEEDS
    rows, no residual degree of freedom, or bounds that separate the families so that the
    family term cannot be told from the bound's.
    """
    with_bound = all(bound is not None for _, bound in groups.values())
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for family, (y, bound) in groups.items():
        y = np.asarray(y, dtype=float)
        x = np.asarray(bound, dtype=float) if with_bound else np.zeros_like(y)
        keep = np.isfinite(y) & np.isfinite(x)
        if keep.sum() < MIN_SEEDS:
            return f"{family} has {int(keep.sum())} seed(s) with finite values (needs {MIN_SEEDS})"
        rows[family] = (y[keep], x[keep])
    names = list(rows)
    y = np.concatenate([rows[f][0] for f in names])
    x = np.concatenate([rows[f][1] for f in names])
    which = np.concatenate([np.full(rows[f][0].size, i) for i, f in enumerate(names)])
    design = np.eye(len(names))[which]
    if with_bound:
        design = np.column_stack([design, x - x.mean()])
    n, k = design.shape
    if np.linalg.matrix_rank(design) < k:
        return "the achieved bounds separate the families: their difference cannot be told from I_EST's"
    if n - k < 1:
        return f"{n} rows for {k} coefficients: no residual degree of freedom"
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    rss = float(np.sum((y - design @ beta) ** 2))
    reduced = np.column_stack([np.ones(n)] + ([x - x.mean()] if with_bound else []))
    rss_reduced = float(np.sum((y - reduced @ np.linalg.lstsq(reduced, y, rcond=None)[0]) ** 2))
    df, df_family = n - k, len(names) - 1
    scale = 1e-12 * max(1.0, float(np.sum(y ** 2)))   # exact fits (noise-free inputs) without 0 / 0
    if rss <= scale:
        p = 0.0 if rss_reduced > scale else 1.0
    else:
        p = float(stats.f.sf(((rss_reduced - rss) / df_family) / (rss / df), df_family, df))
    covariance = np.linalg.pinv(design.T @ design)[:len(names), :len(names)] * (rss / df)
    return Ancova({f: float(beta[i]) for i, f in enumerate(names)}, p, n, df,
                  float(beta[-1]) if with_bound else float("nan"), covariance)


# ---------------------------------------------------------------------------- matching a target

# L_t = |I_EST - t| on held-out pairs at the last evaluation, at most this (nats): that seed "matched" t.
MATCH_TOLERANCE = 0.5


def matched_seeds(ds: xr.Dataset, **sel) -> xr.DataArray:
    """True for each seed whose own `target_gap` (held-out L_t) at the last evaluation is at most
    MATCH_TOLERANCE; a diverged seed (NaN) never matched."""
    gap = per_seed(ds, "target_gap", **sel)
    return (gap <= MATCH_TOLERANCE) & np.isfinite(gap)


def gap_text(ds: xr.Dataset, **sel) -> str:
    """'L_t 0.12, 0.08, 1.20 (2 of 3 seeds matched)': each seed's own L_t."""
    gap = per_seed(ds, "target_gap", **sel)
    values = ", ".join("n/a" if not np.isfinite(g) else f"{g:.2f}" for g in gap.values)
    matched = int(matched_seeds(ds, **sel).sum())
    return f"L_t {values} ({matched} of {gap.size} seeds matched)"


def median_quantile(ds: xr.Dataset) -> float:
    """The `quantile` coordinate closest to the median, the lower of two equally close ones (0.4 on
    the paper's 0, 0.2, ..., 1 grid, which has no 0.5), as the report's tables pick it."""
    q = np.sort(np.asarray(ds["quantile"].values, dtype=float))  # argmin takes the first of a tie: the lower
    return float(q[np.argmin(np.abs(q - 0.5))])


# ---------------------------------------------------------------------------- judging a run

SMOKE = "smoke preset: too short to decide"


def too_short(study, ds: xr.Dataset) -> str:
    """Why `ds` is too short to judge, or "": the smoke preset, or fewer training steps (its
    `settings_json`) than the study's smallest preset other than smoke."""
    if str(ds.attrs.get("preset", "")) == "smoke":
        return SMOKE
    steps = settings_of(ds).get("steps")
    presets = {name: getattr(s, "steps", None) for name, s in getattr(study, "presets", {}).items() if name != "smoke"}
    presets = {name: s for name, s in presets.items() if isinstance(s, int)}
    if isinstance(steps, int) and presets:
        smallest = min(presets, key=presets.get)
        if steps < presets[smallest]:
            return (f"{steps:,} training steps, fewer than the {presets[smallest]:,} of the {smallest} preset: "
                    "too short to decide")
    return ""


def judge(study, ds: xr.Dataset) -> Verdict:
    """`study.verdict(ds)`, undecided (with the reason) if the study has none or it cannot decide,
    and "not judged" (with the reason, the numbers kept) for a run too short to decide (`too_short`).

    Called once per page, by whoever writes it (`probe run-study`, `probe report`), and handed to
    the page: the report never has to import the studies. A variant of another study (origin
    "variant") may reuse that study's verdict, but not the paper's numbers it quotes: those are
    the reference of the original experiment, not of the variant.
    """
    if getattr(study, "verdict", None) is None:
        verdict = undecided("—", "this study declares no verdict", "—")
    else:
        try:
            verdict = study.verdict(ds)
        except (KeyError, ValueError, IndexError) as err:  # a partial or foreign result: say what is missing
            verdict = undecided("—", f"could not be decided from this result ({type(err).__name__}: {err})", "—")
    if getattr(study, "origin", "paper") == "variant" and verdict.paper:
        verdict = replace(verdict, paper="")
    reason = too_short(study, ds)
    return replace(verdict, outcome=NOT_JUDGED, reason=reason) if reason else verdict
