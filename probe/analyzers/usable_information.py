"""Predictive V-information: the information a restricted family V can actually use.

Xu, Zhao, Song, Stewart & Ermon, "A Theory of Usable Information under Computational
Constraints" (ICLR 2020, arXiv 2002.10689), Def. 2 and Prop. 2:

    I_V(Z -> Y) = H_V(Y | ∅) - H_V(Y | Z),   H_V(Y | Z) = inf_{f in V} E[-ln f[z](y)].

Each infimum is fit on training rows and evaluated on held-out rows (the paper's estimator
with guarantees). Unlike Shannon MI it is not invariant to bijections of Z: an invertible map
that destroys linear structure lowers it, which is the point of measuring it next to MI.

Two families:
- labels: V = multinomial logistic regression on standardised z, scikit-learn's
  LogisticRegression objective solved to tol 1e-6 by probe.analyzers.logistic (torch,
  float64, Newton-CG; CPU or GPU); the "empty" predictor is the constant class-frequency
  distribution of the training rows.
- target: V = linear-Gaussian regressors, one independent Gaussian per target feature. The
  empty predictor is N(train mean, train variance); the conditional one is ridge regression
  with the residual variance of the fit. Negative log-likelihoods are summed over features.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from sklearn.preprocessing import StandardScaler

from probe.analyzers._bootstrap import bootstrap_ci, check_ci_level, check_n_bootstrap, ci_variable
from probe.analyzers._common import (
    NATS_PER_BIT,
    PROB_FLOOR,
    capped_blas_threads,
    check_label_pair,
    check_positive_float,
    check_seed,
    held_out_cross_entropy,
    make_dataset,
    split_indices,
    var,
)
from probe.analyzers.logistic import LogisticFit, capped_torch_threads, check_device, fit_logistic
from probe.errors import InputValueError
from probe.validation import check_array, check_fraction, check_labels, check_same_length, check_same_width

CALLER = "v_information"
REFERENCE = "Xu et al., A Theory of Usable Information under Computational Constraints, ICLR 2020"
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
SELECTION_TOL, FINAL_TOL = 1e-4, 1e-6  # max |gradient| of the mean objective, as scikit-learn's tol
MAX_ITER = 100  # Newton iterations; 10-20 reach tol 1e-6 on the problems tested
RIDGE_GRID = tuple(10.0 ** np.arange(-6, 3))  # times the number of training rows
VAR_FLOOR = 1e-12


# --- labels: multinomial logistic regression -------------------------------------------------

def _fit(x: torch.Tensor, codes: np.ndarray, C: float, tol: float,
         init: LogisticFit | WarmStart | None) -> tuple[LogisticFit, np.ndarray]:
    """The logistic family on rows x (a tensor) with labels `codes`: (fit, its classes)."""
    classes, local = np.unique(codes, return_inverse=True)
    if init is not None and init.coef.shape[0] != classes.size:
        init = None
    start = None if init is None else (init.coef, init.intercept)
    fit = fit_logistic(x, local, C, n_classes=classes.size, init=start, tol=tol, max_iter=MAX_ITER)
    return fit, classes


def _select_C(x: torch.Tensor, codes: np.ndarray, seed: int) -> tuple[float, LogisticFit | None]:
    """C from C_GRID by held-out cross-entropy on a 25% validation split of the training rows.

    Walks the grid from strong to weak regularisation with warm starts (tol 1e-4) and stops
    at the first C whose validation cross-entropy is worse than the best so far. Returns the
    chosen C and its fit (the warm start of the final fit); with too few rows for a validation
    split, C = 1 and no fit.
    """
    try:
        tr, va = split_indices(x.shape[0], 0.25, seed, labels=codes, caller=CALLER)
    except InputValueError:
        return 1.0, None
    x_tr, x_va = x[torch.as_tensor(tr, device=x.device)], x[torch.as_tensor(va, device=x.device)]
    best_C, best_fit, _ = walk_C(x_tr, codes[tr], x_va, codes[va])
    return best_C, best_fit


def walk_C(x_tr: torch.Tensor, y_tr: np.ndarray, x_va: torch.Tensor,
           y_va: np.ndarray) -> tuple[float, LogisticFit | None, list[float]]:
    """`_select_C`'s walk on given training and validation rows: (chosen C, its fit, the validation
    cross-entropy of every C fitted, in grid order)."""
    best, best_C, best_fit, fit, entropies = math.inf, C_GRID[0], None, None, []
    for C in C_GRID:
        fit, classes = _fit(x_tr, y_tr, C, SELECTION_TOL, fit)
        entropies.append(held_out_cross_entropy(fit.predict_proba(x_va), classes, y_va))
        if entropies[-1] >= best:
            break
        best, best_C, best_fit = entropies[-1], C, fit
    return best_C, best_fit, entropies


def _label_entropies(z, y, tz, ty, C, seed, device, warm_start=None) -> dict:
    classes, counts = np.unique(y, return_counts=True)
    empty_rows = _row_nll(np.tile(counts / counts.sum(), (ty.shape[0], 1)), classes, ty)
    scaler = StandardScaler().fit(z)
    x = torch.as_tensor(np.ascontiguousarray(scaler.transform(z)), device=device)
    tx = torch.as_tensor(np.ascontiguousarray(scaler.transform(tz)), device=device)
    searching = time.perf_counter()
    chosen, init = _select_C(x, y, seed) if isinstance(C, str) else (float(C), None)
    search_s = time.perf_counter() - searching
    if warm_start is not None and init is None and np.array_equal(warm_start.classes, classes):
        init = warm_start
    fit, fit_classes = _fit(x, y, chosen, FINAL_TOL, init)
    given_rows = _row_nll(fit.predict_proba(tx), fit_classes, ty)
    extra = {"n_iter": var((), np.int64(fit.n_iter), "Newton iterations of the final fit", "1"),
             "converged": var((), np.int8(fit.converged),
                              f"1 if the final fit reached tol {FINAL_TOL:g} within {MAX_ITER} Newton iterations", "1")}
    return dict(h_empty=float(np.mean(empty_rows)), h_given=float(np.mean(given_rows)), extra=extra, chosen=chosen,
                rows=(empty_rows, given_rows), fit=fit, classes=fit_classes, search_s=search_s)


@dataclass(frozen=True)
class WarmStart:
    """A fitted logistic family on standardised z, as the start of a later fit: `coef` (K, d)
    and `intercept` (K,) for the class labels `classes` (a start for other classes is ignored)."""

    classes: np.ndarray
    coef: torch.Tensor
    intercept: torch.Tensor


@dataclass(frozen=True)
class LabelVInformation:
    """One fit of `label_v_information`: I_V = marginal - conditional entropy (nats, held-out),
    the C used (`searched`: picked by the validation walk on these rows, which took `search_s`
    seconds of the call), and the fit as a start."""

    v_information: float
    marginal_entropy: float
    conditional_entropy: float
    C: float
    searched: bool
    n_iter: int
    converged: bool
    warm_start: WarmStart
    search_s: float = 0.0


@capped_blas_threads
def label_v_information(z: np.ndarray, y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray, *,
                        C: float | str = "auto", warm_start: WarmStart | None = None, seed: int = 0,
                        device: str | torch.device | None = None) -> LabelVInformation:
    """`v_information(z, y, test_z=..., test_y=...)`'s labels estimate for a caller that fits again
    and again on similar data (probe.training.evaluation: every evaluation of a run).

    The inputs are not validated (finite (n, d) arrays, cast to float64; integer labels). With C a number
    there is no search, and `warm_start` (a previous result's) starts the final fit; the optimum
    and so the value are the same as from a cold start, to the solver's tolerance.
    """
    torch_device = check_device(device, CALLER)
    with capped_torch_threads(torch_device):
        as_float = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731  (as check_array gives them)
        result = _label_entropies(as_float(z), np.asarray(y), as_float(test_z), np.asarray(test_y), C, seed,
                                  torch_device, warm_start)
    fit = result["fit"]
    return LabelVInformation(
        v_information=result["h_empty"] - result["h_given"], marginal_entropy=result["h_empty"],
        conditional_entropy=result["h_given"], C=float(result["chosen"]), searched=isinstance(C, str),
        n_iter=int(fit.n_iter), converged=bool(fit.converged),
        warm_start=WarmStart(result["classes"], fit.coef, fit.intercept), search_s=result["search_s"])


def _row_nll(proba: np.ndarray, model_classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row -ln p(y_i) in nats, as `held_out_cross_entropy` (whose mean it is) clips it."""
    p = np.zeros(y.shape[0])
    seen = np.isin(y, model_classes)
    p[seen] = proba[np.flatnonzero(seen), np.searchsorted(model_classes, y[seen])]
    return -np.log(np.maximum(p, PROB_FLOOR))


# --- target: linear-Gaussian regressors ------------------------------------------------------

def _gaussian_nll(residual: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Per-feature mean negative log-likelihood (nats) of residuals under N(0, variance)."""
    return 0.5 * np.log(2 * np.pi * variance) + np.mean(residual**2, axis=0) / (2 * variance)


def _ridge_gcv(x: np.ndarray, t: np.ndarray, ridge: float | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge of each centred target column on centred x, alpha per column by generalised CV.

    Returns (coefficients (d, m), residual variance (m,) = RSS / (n - df), alpha (m,)).
    Everything comes from one SVD x = U S V^T: with shrinkage d_k = s_k^2 / (s_k^2 + alpha),
    RSS = |t|^2 - sum_k (2 d_k - d_k^2) (U^T t)_k^2 and df = 1 + sum_k d_k (1 for the intercept).
    """
    n = x.shape[0]
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    c = u.T @ t
    alphas = n * np.asarray(RIDGE_GRID) if isinstance(ridge, str) else np.array([float(ridge)])
    shrink = s[None, :] ** 2 / (s[None, :] ** 2 + alphas[:, None])  # (alphas, k)
    rss = np.sum(t**2, axis=0)[None, :] - ((2 * shrink - shrink**2) @ c**2)  # (alphas, m)
    rss = np.maximum(rss, 0.0)
    df = 1.0 + shrink.sum(axis=1)
    gcv = rss / n / np.maximum(1.0 - df / n, 1e-12)[:, None] ** 2
    best = np.argmin(gcv, axis=0)
    alpha = alphas[best]
    factor = s[:, None] / (s[:, None] ** 2 + alpha[None, :])  # (k, m)
    coef = vt.T @ (factor * c)
    dof = np.maximum(n - df[best], 1.0)
    return coef, np.maximum(rss[best, np.arange(t.shape[1])] / dof, VAR_FLOOR), alpha


def _target_entropies(z, t, tz, tt, ridge) -> dict:
    x_mean, x_std = z.mean(axis=0), z.std(axis=0)
    x_std[x_std == 0] = 1.0
    x, tx = (z - x_mean) / x_std, (tz - x_mean) / x_std
    t_mean = t.mean(axis=0)
    base_var = np.maximum(t.var(axis=0, ddof=1), VAR_FLOOR)
    coef, res_var, alpha = _ridge_gcv(x, t - t_mean, ridge)
    empty_residual, given_residual = tt - t_mean, tt - t_mean - tx @ coef
    per_feature_empty = _gaussian_nll(empty_residual, base_var)
    per_feature_given = _gaussian_nll(given_residual, res_var)
    extra = {
        "v_information_per_feature": var("feature", per_feature_empty - per_feature_given,
                                         "V-information per target feature", "nats"),
        "ridge_alpha": var("feature", alpha, "ridge penalty chosen by generalised cross-validation", "1"),
    }

    def rows(residual: np.ndarray, variance: np.ndarray) -> np.ndarray:  # per-row NLL summed over features
        return np.sum(0.5 * np.log(2 * np.pi * variance) + residual**2 / (2 * variance), axis=1)

    return dict(h_empty=float(per_feature_empty.sum()), h_given=float(per_feature_given.sum()), extra=extra,
                chosen=ridge, rows=(rows(empty_residual, base_var), rows(given_residual, res_var)))


# --- public ----------------------------------------------------------------------------------

def _held_out(z, labels_or_target, test_z, test_other, *, mode, test_fraction, seed):
    """Validated (z, other, test_z, test_other), splitting with the seed when no test set is given."""
    other_name = "y" if mode == "labels" else "target"
    if (test_z is None) != (test_other is None):
        raise InputValueError(f"{CALLER}: test_z and test_{other_name} must be given together (got only one of them).")
    if mode == "labels" and test_z is not None:
        tz = check_array(test_z, name="test_z", caller=CALLER, min_samples=1)
        check_same_width(z, tz, names=("z", "test_z"), caller=CALLER)
        y, ty = check_label_pair(labels_or_target, test_other, n_train=z.shape[0], n_test=tz.shape[0],
                                 caller=CALLER, names=("y", "test_y"))
        return z, y, tz, ty
    if mode == "labels":
        other = check_labels(labels_or_target, name="y", caller=CALLER, n_samples=z.shape[0])
    else:
        other = check_array(labels_or_target, name="target", caller=CALLER)
        check_same_length(z, other, names=("z", "target"), caller=CALLER)
    if test_z is not None:
        tz = check_array(test_z, name="test_z", caller=CALLER, min_samples=1)
        tt = check_array(test_other, name="test_target", caller=CALLER, min_samples=1)
        check_same_width(z, tz, names=("z", "test_z"), caller=CALLER)
        check_same_width(other, tt, names=("target", "test_target"), caller=CALLER)
        check_same_length(tz, tt, names=("test_z", "test_target"), caller=CALLER)
        return z, other, tz, tt
    test_fraction = check_fraction(test_fraction, name="test_fraction", caller=CALLER)
    tr, te = split_indices(z.shape[0], test_fraction, seed, labels=other if mode == "labels" else None, caller=CALLER)
    if tr.size < 3:
        raise InputValueError(f"{CALLER}: only {tr.size} training row(s) after the split; at least 3 are required.")
    return z[tr], other[tr], z[te], other[te]


@capped_blas_threads
def v_information(
    z: Any,
    y: Any = None,
    *,
    target: Any = None,
    test_z: Any = None,
    test_y: Any = None,
    test_target: Any = None,
    test_fraction: float = 0.2,
    C: float | str = "auto",
    ridge: float | str = "auto",
    seed: int = 0,
    device: str | None = None,
    n_bootstrap: int = 0,
    ci_level: float = 0.95,
) -> xr.Dataset:
    """Predictive V-information I_V(Z -> Y) in nats (and bits) from embeddings z.

    Args:
        z: (n, d) embeddings. Exactly one of
        y: (n,) class labels -> V = multinomial logistic regression, or
        target: (n, m) another representation (e.g. view-2 embeddings) -> V = linear-Gaussian.
        test_z with test_y / test_target: held-out rows; without them a seeded split holds out
            `test_fraction` (stratified by label).
        C: inverse L2 strength of the logistic family; "auto" picks from 1e-3..1e2 on a
            validation split of the training rows (the output's `C_selected`: pass it as C
            on later calls on similar data to skip the search). ridge: ridge penalty, "auto" =
            generalised cross-validation per target feature over n * 1e-6..1e2.
        seed: the splits and the bootstrap.
        device: torch device of the logistic fits ("cpu" by default, "cuda" for a GPU); the
            result does not depend on it beyond float64 rounding.
        n_bootstrap: with n > 0, `v_information_ci`: a percentile-bootstrap interval over the
            held-out rows (n redraws, the fitted predictors kept). ci_level: its coverage.

    Returns:
        Dataset with `v_information` (nats), `v_information_bits` (bits),
        `marginal_entropy` H_V(Y|∅) and `conditional_entropy` H_V(Y|Z) (nats, held-out), plus
        solver diagnostics (labels) or `v_information_per_feature` and `ridge_alpha` over
        `feature` (target), and `v_information_ci` over `interval` with n_bootstrap > 0.
        Held-out estimates may be slightly negative when z carries nothing V can use.

    Reference: Xu et al., ICLR 2020, Def. 2 and Sec. 4 (empirical V-information).
    """
    z = check_array(z, name="z", caller=CALLER)
    if (y is None) == (target is None):
        raise InputValueError(
            f"{CALLER}: exactly one of y (class labels) and target (a representation to predict) is required; "
            f"got {'both' if y is not None else 'neither'}."
        )
    mode = "labels" if y is not None else "target"
    seed = check_seed(seed, CALLER)
    n_bootstrap = check_n_bootstrap(n_bootstrap, CALLER)
    ci_level = check_ci_level(ci_level, CALLER)
    for name, value in (("C", C), ("ridge", ridge)):
        if not (isinstance(value, str) and value == "auto"):
            check_positive_float(value, name=name, caller=CALLER)
    torch_device = check_device(device, CALLER)
    z, other, tz, tother = _held_out(z, y if mode == "labels" else target, test_z,
                                     test_y if mode == "labels" else test_target,
                                     mode=mode, test_fraction=test_fraction, seed=seed)
    if mode == "labels":
        with capped_torch_threads(torch_device):
            result = _label_entropies(z, other, tz, tother, C, seed, torch_device)
        family = (f"multinomial logistic regression on standardised z (scikit-learn's objective, torch Newton-CG, "
                  f"tol {FINAL_TOL:g}); empty = train class frequencies")
    else:
        result = _target_entropies(z, other, tz, tother, ridge)
        family = "linear-Gaussian: ridge per target feature with residual variance; empty = per-feature Gaussian"
    v = result["h_empty"] - result["h_given"]
    long_name = "predictive V-information I_V(Z -> Y), held-out"
    data_vars = {
        "v_information": var((), v, long_name, "nats"),
        "v_information_bits": var((), v / NATS_PER_BIT, long_name, "bits"),
        "marginal_entropy": var((), result["h_empty"], "predictive entropy H_V(Y | empty), held-out", "nats"),
        "conditional_entropy": var((), result["h_given"],
                                   "predictive conditional entropy H_V(Y | Z), held-out", "nats"),
        **result["extra"],
    }
    if n_bootstrap:
        gain = result["rows"][0] - result["rows"][1]  # per held-out row: H(Y|empty) - H(Y|Z) terms
        lower, upper = bootstrap_ci(lambda rows: gain[rows].mean(), gain.size, n_bootstrap=n_bootstrap, seed=seed,
                                    level=ci_level)
        data_vars["v_information_ci"] = ci_variable(lower, upper, long_name, "nats", level=ci_level,
                                                    n_bootstrap=n_bootstrap)
    return make_dataset(
        CALLER, f"{mode}: {family}", data_vars, reference=REFERENCE, target_kind=mode,
        C=C if mode == "labels" else "none", C_selected=result["chosen"] if mode == "labels" else "none",
        ridge=ridge if mode == "target" else "none", seed=seed, n_train=z.shape[0], n_test=tz.shape[0],
        test_fraction=test_fraction, probability_floor=PROB_FLOOR,
    )
