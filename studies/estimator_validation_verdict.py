"""The estimator-validation study's verdict (Poole et al. 2019, Fig. 2): InfoNCE saturates at log K,
NWJ's per-step variance exceeds InfoNCE's at high MI.

Kept apart from studies/estimator_validation.py (which imports `verdict` and `window_length`
from here) because the presets run one seed, as Poole et al.: the noise is then across the
steps of each stair's last window, whose length both the study's statistics and this verdict count.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from probe.verdict import (
    HELD,
    LEVEL,
    MIN_SEEDS,
    NOT_HELD,
    UNDECIDED,
    Verdict,
    combine,
    decision_text,
    exceeds,
    fmt,
    paired,
    per_seed,
    settings_of,
    undecided,
)


def window_length(fraction: float, lo: int, hi: int) -> int:
    """Steps in the last `fraction` of the stair [lo, hi): at least 2 (a sample sd needs them)."""
    return max(2, int(round(fraction * (hi - lo))))



SATURATION = 0.5   # nats below log K within which InfoNCE "sits just under its cap"


def verdict(ds):
    """Poole et al. 2019: InfoNCE saturates at log K; NWJ's variance grows with the true MI."""
    claim = (f"At the highest true MI, for every critic and d (identity transform), InfoNCE sits just under its cap "
             f"log K (the 95 % interval of its mean estimate inside [log K − {SATURATION}, log K]) and NWJ's per-step sd "
             f"exceeds InfoNCE's (95 %). The noise is across seeds (t-interval, paired by seed) where ≥ {MIN_SEEDS} "
             "seeds have finite values, else across the steps of each seed's last window (t-interval of its mean, "
             "F-test of the variance ratio), every seed then deciding alike: the presets run one seed, as Poole et al.")
    paper = "Poole et al. 2019: InfoNCE ≤ log K with low variance; NWJ's variance grows exponentially with MI"
    decided_by = "estimate_smoothed over step, against true_mi and infonce_cap"
    estimators = [str(e) for e in ds["estimator"].values]
    if "infonce" not in estimators or "nwj" not in estimators or "estimate_mean" not in ds:
        return undecided(claim, "needs InfoNCE and NWJ cells with per-level statistics", decided_by, paper)
    cap = np.asarray(ds["infonce_cap"].values, dtype=float)
    cap = float(cap[np.isfinite(cap)].mean()) if np.isfinite(cap).any() else math.nan  # log K: one number
    sel = {"transform": "identity"} if "transform" in ds.dims and "identity" in ds["transform"].values else {}
    top = float(ds["mi_level"].max())
    window = _top_window(ds)
    saturated, noisier, parts = [], [], []
    for critic in ds["critic"].values:
        for d in (ds["data_dim"].values if "data_dim" in ds.dims else [None]):
            cell = {**sel, "critic": critic, "mi_level": top, **({"data_dim": d} if d is not None else {})}
            nce, nce_sd, nwj_sd = (per_seed(ds, name, estimator=est, **cell) for name, est in (
                ("estimate_mean", "infonce"), ("estimate_sd", "infonce"), ("estimate_sd", "nwj")))
            states, text = _saturation_and_noise(nce, nce_sd, nwj_sd, cap, window)
            saturated.append(states[0])
            noisier.append(states[1])
            parts.append(f"{critic}{'' if d is None else f', d={int(d)}'}: InfoNCE {fmt(nce.values, 2)} (log K {cap:.2f}), "
                         f"sd NWJ {fmt(nwj_sd.values, 3)} vs InfoNCE {fmt(nce_sd.values, 3)}; {text}")
    evidence = (f"true MI {top:g} nats", *parts)
    return Verdict(claim, combine(combine(*saturated), combine(*noisier)), evidence, decided_by, paper)


def _top_window(ds) -> int | None:
    """Steps in the highest stair's last window, from the run's settings (None where none are recorded)."""
    settings = settings_of(ds)
    if not {"steps", "mi_levels", "window_fraction"} <= set(settings):
        return None
    steps, levels = int(settings["steps"]), len(settings["mi_levels"])
    return window_length(float(settings["window_fraction"]), (levels - 1) * steps // levels, steps)


def _saturation_and_noise(nce, nce_sd, nwj_sd, cap: float, window: int | None) -> tuple[tuple[str, str], str]:
    """(saturated, noisier) outcomes of one cell and the text that says how they were decided."""
    if int(np.isfinite(nce.values).sum()) >= MIN_SEEDS:
        level, spread = paired(nce, 0.0), paired(nwj_sd, nce_sd)
        inside = HELD if cap - SATURATION <= level.low and level.high <= cap + 1e-3 else NOT_HELD
        return (inside, exceeds(spread)), (f"InfoNCE mean {level.text(2)}, NWJ sd minus InfoNCE sd "
                                           f"{decision_text(exceeds(spread), spread)}")
    if window is None:
        return (UNDECIDED, UNDECIDED), (f"fewer than {MIN_SEEDS} seeds and no settings_json to tell how many steps "
                                        "each window holds: undecided")
    inside, louder = [], []
    for m, s_nce, s_nwj in zip(nce.values, nce_sd.values, nwj_sd.values):
        if not np.isfinite([m, s_nce, s_nwj]).all():
            inside.append(UNDECIDED)
            louder.append(UNDECIDED)
            continue
        half = stats.t.ppf(0.5 + LEVEL / 2, window - 1) * s_nce / math.sqrt(window)
        inside.append(HELD if cap - SATURATION <= m - half and m + half <= cap + 1e-3 else NOT_HELD)
        louder.append(HELD if s_nwj ** 2 > stats.f.ppf(0.5 + LEVEL / 2, window - 1, window - 1) * s_nce ** 2
                      else NOT_HELD)
    return (combine(*inside), combine(*louder)), (f"over each seed's last {window} steps: InfoNCE within its cap "
                                                  f"{combine(*inside)}, NWJ noisier {combine(*louder)}")
