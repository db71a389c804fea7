"""Linear evaluation: multinomial logistic regression on frozen embeddings.

The "paper" protocol is exactly Tschannen et al. (ICLR 2020), Sec. 3 and the companion
notebook: features min-max scaled (scaler fit on the training set), scikit-learn's SAGA solver
with tol 0.1, C = 10 and the default 100 iterations. At tol 0.1 SAGA stops after a handful of
epochs, far from the optimum; that is the protocol, so its ConvergenceWarning is silenced and
the iteration count recorded instead. The "converged" protocol keeps the scaling, C and
scikit-learn's objective but solves it to tol 1e-6 (max |gradient| of the mean objective, as
scikit-learn's lbfgs) with probe.analyzers.logistic (torch, float64, Newton-CG, CPU or GPU),
to separate the representation from the optimiser.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import MinMaxScaler

from probe.analyzers._bootstrap import bootstrap_ci, check_ci_level, check_n_bootstrap, ci_variable
from probe.analyzers._common import (
    PROB_FLOOR,
    capped_blas_threads,
    check_choice,
    check_label_pair,
    check_positive_float,
    check_seed,
    held_out_cross_entropy,
    make_dataset,
    run_quietly,
    split_indices,
    var,
)
from probe.analyzers.logistic import capped_torch_threads, check_device, fit_logistic
from probe.errors import InputValueError
from probe.validation import check_array, check_fraction, check_labels, check_positive_int, check_same_width

CALLER = "linear_probe"
PROTOCOLS = {
    "paper": dict(solver="saga", tol=0.1, max_iter=100),
    "converged": dict(solver="newton-cg (torch, probe.analyzers.logistic)", tol=1e-6, max_iter=100),
}
REFERENCE = "Tschannen et al., On Mutual Information Maximization for Representation Learning, ICLR 2020, Sec. 3"


class ConvergedProbe:
    """scikit-learn's LogisticRegression optimum (same objective, tol on max |gradient|) fitted by
    probe.analyzers.logistic, with the attributes the probe reads: classes_, n_iter_, predict,
    predict_proba. Newton iterations count as n_iter_."""

    def __init__(self, C: float, tol: float, max_iter: int, device=None):
        self.C, self.tol, self.max_iter, self.device = C, tol, max_iter, device

    def fit(self, x: np.ndarray, y: np.ndarray) -> ConvergedProbe:
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.fit_ = fit_logistic(x, codes, self.C, n_classes=self.classes_.size, tol=self.tol,
                                 max_iter=self.max_iter, device=self.device)
        self.n_iter_ = np.array([self.fit_.n_iter])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.fit_.predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(x), axis=1)]


def fit_probe(z: np.ndarray, y: np.ndarray, *, protocol: str, C: float, seed: int,
              device=None) -> tuple[MinMaxScaler, LogisticRegression | ConvergedProbe]:
    """Fit the min-max scaler and the logistic regression of `protocol` on (z, y)."""
    scaler = MinMaxScaler().fit(z)
    x = scaler.transform(z)
    if protocol == "converged":
        settings = PROTOCOLS[protocol]
        return scaler, ConvergedProbe(C, settings["tol"], settings["max_iter"], device).fit(x, y)
    model = LogisticRegression(C=C, random_state=seed, **PROTOCOLS[protocol])
    run_quietly(lambda: model.fit(x, y), (ConvergenceWarning,))
    return scaler, model


def _score(z_tr, y_tr, z_te, y_te, *, protocol, C, seed, device) -> tuple[float, float, int, np.ndarray, np.ndarray]:
    """Held-out accuracy, cross-entropy, solver iterations, and per row: correct (0/1) and -ln p(y)."""
    scaler, model = fit_probe(z_tr, y_tr, protocol=protocol, C=C, seed=seed, device=device)
    x_te = scaler.transform(z_te)
    correct = (model.predict(x_te) == y_te).astype(np.float64)
    proba = model.predict_proba(x_te)
    cross_entropy = held_out_cross_entropy(proba, model.classes_, y_te)
    p = np.zeros(y_te.shape[0])
    seen = np.isin(y_te, model.classes_)
    p[seen] = proba[np.flatnonzero(seen), np.searchsorted(model.classes_, y_te[seen])]
    nll = -np.log(np.maximum(p, PROB_FLOOR))  # the rows whose mean is cross_entropy
    return float(np.mean(correct)), cross_entropy, int(np.max(model.n_iter_)), correct, nll


def _cross_validate(z, y, folds, **fit) -> np.ndarray:
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if folds > smallest:
        raise InputValueError(
            f"{CALLER}: folds is {folds} but the smallest class has {smallest} sample(s); "
            f"stratified {folds}-fold cross-validation needs at least {folds} per class. Lower folds."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=fit["seed"])
    return [_score(z[tr], y[tr], z[te], y[te], **fit) for tr, te in splitter.split(z, y)]


@capped_blas_threads
def linear_probe(
    train_z: Any,
    train_y: Any,
    test_z: Any = None,
    test_y: Any = None,
    *,
    protocol: str = "paper",
    folds: int | None = None,
    test_fraction: float = 0.2,
    C: float = 10.0,
    seed: int = 0,
    device: str | None = None,
    n_bootstrap: int = 0,
    ci_level: float = 0.95,
) -> xr.Dataset:
    """Held-out accuracy and cross-entropy of a linear probe on embeddings.

    Args:
        train_z: (n, d) training embeddings. train_y: (n,) class labels (ints or strings).
        test_z, test_y: (m, d) and (m,) held-out set; both or neither. Without them the
            probe is scored by stratified `folds`-fold cross-validation when `folds` is given,
            else on a seeded stratified split holding out `test_fraction` of the rows.
        protocol: "paper" (scikit-learn SAGA, tol 0.1, C 10, 100 iterations) or "converged"
            (the same objective to tol 1e-6 by torch Newton-CG, up to 100 Newton iterations);
            both min-max scale with a scaler fit on the training rows.
        folds: k >= 2 for k-fold cross-validation on the training set (reported per `fold`; with
            a test set it is reported next to the held-out scores).
        C: inverse L2 strength (10 in the paper). seed: split, fold assignment, SAGA order and
            the bootstrap.
        device: torch device of the "converged" fit (default CPU; "cuda" for a GPU). The
            "paper" protocol is scikit-learn's and always runs on the CPU.
        n_bootstrap: with n > 0, `accuracy_ci` and `cross_entropy_ci`: percentile-bootstrap
            intervals over the held-out rows (n redraws, the probe not refitted; with folds
            and no test set, over the pooled out-of-fold rows). ci_level: their coverage.

    Returns:
        Dataset with `accuracy` (1), `cross_entropy` (nats, held-out, probabilities clipped at
        1e-12), `n_iter` (solver iterations, max over folds), with `folds` also
        `cv_accuracy` and `cv_cross_entropy` over `fold`, and with n_bootstrap > 0 the `_ci`
        intervals over `interval`.

    Reference: Tschannen et al., ICLR 2020, Sec. 3 (linear evaluation protocol).
    """
    z = check_array(train_z, name="train_z", caller=CALLER)
    protocol = check_choice(protocol, kind="protocol", choices=tuple(PROTOCOLS))
    C = check_positive_float(C, name="C", caller=CALLER)
    seed = check_seed(seed, CALLER)
    folds = None if folds is None else check_positive_int(folds, name="folds", caller=CALLER, minimum=2)
    n_bootstrap = check_n_bootstrap(n_bootstrap, CALLER)
    ci_level = check_ci_level(ci_level, CALLER)
    torch_device = check_device(device, CALLER)
    if (test_z is None) != (test_y is None):
        raise InputValueError(f"{CALLER}: test_z and test_y must be given together (got only one of them).")
    fit = dict(protocol=protocol, C=C, seed=seed, device=torch_device)

    if test_z is not None:
        tz = check_array(test_z, name="test_z", caller=CALLER, min_samples=1)
        check_same_width(z, tz, names=("train_z", "test_z"), caller=CALLER)
        y, ty = check_label_pair(train_y, test_y, n_train=z.shape[0], n_test=tz.shape[0], caller=CALLER)
        evaluation = "held-out test set"
    else:
        y = check_labels(train_y, name="train_y", caller=CALLER, n_samples=z.shape[0])
        if folds is None:
            test_fraction = check_fraction(test_fraction, name="test_fraction", caller=CALLER)
            tr, te = split_indices(z.shape[0], test_fraction, seed, labels=y, caller=CALLER)
            z, tz, y, ty = z[tr], z[te], y[tr], y[te]
            evaluation = f"seeded stratified split, test_fraction={test_fraction}"
        else:
            evaluation = f"stratified {folds}-fold cross-validation, scores are means over folds"
            tz = z[:0]  # no single held-out set: every row is held out once

    data_vars, coords = {}, {}
    with capped_torch_threads(torch_device):
        if folds is not None:
            cv = _cross_validate(z, y, folds, **fit)
            scores = np.array([fold[:3] for fold in cv])
            coords["fold"] = np.arange(folds)
            data_vars["cv_accuracy"] = var("fold", scores[:, 0], "probe accuracy on each cross-validation fold", "1")
            data_vars["cv_cross_entropy"] = var("fold", scores[:, 1],
                                                "probe cross-entropy on each cross-validation fold", "nats")
        if test_z is not None or folds is None:
            accuracy, cross_entropy, n_iter, correct, nll = _score(z, y, tz, ty, **fit)
        else:
            accuracy, cross_entropy = float(scores[:, 0].mean()), float(scores[:, 1].mean())
            n_iter = int(scores[:, 2].max())
            correct, nll = np.concatenate([fold[3] for fold in cv]), np.concatenate([fold[4] for fold in cv])
    names = {"accuracy": ("held-out linear probe accuracy", "1"),
             "cross_entropy": ("held-out linear probe cross-entropy", "nats")}
    data_vars["accuracy"] = var((), accuracy, *names["accuracy"])
    data_vars["cross_entropy"] = var((), cross_entropy, *names["cross_entropy"])
    data_vars["n_iter"] = var((), np.int64(n_iter), "solver iterations (max over folds)", "1")
    if n_bootstrap:
        per_row = np.stack([correct, nll], axis=1)
        lower, upper = bootstrap_ci(lambda rows: per_row[rows].mean(axis=0), per_row.shape[0],
                                    n_bootstrap=n_bootstrap, seed=seed, level=ci_level)
        for i, name in enumerate(names):
            data_vars[f"{name}_ci"] = ci_variable(lower[i], upper[i], *names[name], level=ci_level,
                                                  n_bootstrap=n_bootstrap)
    solver = (f"LogisticRegression({PROTOCOLS[protocol]})" if protocol == "paper" else
              f"scikit-learn's LogisticRegression objective by {PROTOCOLS[protocol]['solver']}, "
              f"tol {PROTOCOLS[protocol]['tol']:g}, max_iter {PROTOCOLS[protocol]['max_iter']}")
    return make_dataset(
        CALLER, f"{protocol}: MinMaxScaler + {solver}", data_vars,
        coords=coords, reference=REFERENCE, protocol=protocol, folds=folds, C=C, seed=seed,
        evaluation=evaluation, n_train=z.shape[0], n_test=tz.shape[0], max_iter=PROTOCOLS[protocol]["max_iter"],
        test_fraction=test_fraction,
    )
