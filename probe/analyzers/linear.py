"""Linear evaluation: multinomial logistic regression on frozen embeddings.

The "paper" protocol is exactly Tschannen et al. (ICLR 2020), Sec. 3 and the companion
notebook: features min-max scaled (scaler fit on the training set), scikit-learn's SAGA solver
with tol 0.1, C = 10 and the default 100 iterations. At tol 0.1 SAGA stops after a handful of
epochs, far from the optimum; that is the protocol, so its ConvergenceWarning is silenced and
the iteration count recorded instead. The "converged" protocol keeps the scaling and C but
solves to tol 1e-6 with L-BFGS (up to 2,000 iterations) to separate the representation from
the optimiser.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import MinMaxScaler

from probe.analyzers._common import (
    capped_blas_threads, check_choice, check_label_pair, check_positive_float, check_seed, held_out_cross_entropy,
    make_dataset, run_quietly, split_indices, var,
)
from probe.errors import InputValueError
from probe.validation import check_array, check_fraction, check_labels, check_positive_int, check_same_width

CALLER = "linear_probe"
PROTOCOLS = {
    "paper": dict(solver="saga", tol=0.1, max_iter=100),
    "converged": dict(solver="lbfgs", tol=1e-6, max_iter=2000),
}
REFERENCE = "Tschannen et al., On Mutual Information Maximization for Representation Learning, ICLR 2020, Sec. 3"


def fit_probe(z: np.ndarray, y: np.ndarray, *, protocol: str, C: float,
              seed: int) -> tuple[MinMaxScaler, LogisticRegression]:
    """Fit the min-max scaler and the logistic regression of `protocol` on (z, y)."""
    scaler = MinMaxScaler().fit(z)
    model = LogisticRegression(C=C, random_state=seed, **PROTOCOLS[protocol])
    quiet = (ConvergenceWarning,) if protocol == "paper" else ()
    run_quietly(lambda: model.fit(scaler.transform(z), y), quiet)
    return scaler, model


def _score(z_tr, y_tr, z_te, y_te, *, protocol, C, seed) -> tuple[float, float, int]:
    scaler, model = fit_probe(z_tr, y_tr, protocol=protocol, C=C, seed=seed)
    x_te = scaler.transform(z_te)
    accuracy = float(np.mean(model.predict(x_te) == y_te))
    cross_entropy = held_out_cross_entropy(model.predict_proba(x_te), model.classes_, y_te)
    return accuracy, cross_entropy, int(np.max(model.n_iter_))


def _cross_validate(z, y, folds, **fit) -> np.ndarray:
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if folds > smallest:
        raise InputValueError(
            f"{CALLER}: folds is {folds} but the smallest class has {smallest} sample(s); "
            f"stratified {folds}-fold cross-validation needs at least {folds} per class. Lower folds."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=fit["seed"])
    return np.array([_score(z[tr], y[tr], z[te], y[te], **fit) for tr, te in splitter.split(z, y)])


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
) -> xr.Dataset:
    """Held-out accuracy and cross-entropy of a linear probe on embeddings.

    Args:
        train_z: (n, d) training embeddings. train_y: (n,) class labels (ints or strings).
        test_z, test_y: (m, d) and (m,) held-out set; both or neither. Without them the
            probe is scored by stratified `folds`-fold cross-validation when `folds` is given,
            else on a seeded stratified split holding out `test_fraction` of the rows.
        protocol: "paper" (SAGA, tol 0.1, C 10, 100 iterations) or "converged" (L-BFGS, tol 1e-6,
            2,000 iterations); both min-max scale with a scaler fit on the training rows.
        folds: k >= 2 for k-fold cross-validation on the training set (reported per `fold`; with
            a test set it is reported next to the held-out scores).
        C: inverse L2 strength (10 in the paper). seed: split, fold assignment and SAGA order.

    Returns:
        Dataset with `accuracy` (1), `cross_entropy` (nats, held-out, probabilities clipped at
        1e-12), `n_iter` (solver iterations, max over folds), and with `folds` also
        `cv_accuracy` and `cv_cross_entropy` over `fold`.

    Reference: Tschannen et al., ICLR 2020, Sec. 3 (linear evaluation protocol).
    """
    z = check_array(train_z, name="train_z", caller=CALLER)
    protocol = check_choice(protocol, kind="protocol", choices=tuple(PROTOCOLS))
    C = check_positive_float(C, name="C", caller=CALLER)
    seed = check_seed(seed, CALLER)
    folds = None if folds is None else check_positive_int(folds, name="folds", caller=CALLER, minimum=2)
    if (test_z is None) != (test_y is None):
        raise InputValueError(f"{CALLER}: test_z and test_y must be given together (got only one of them).")
    fit = dict(protocol=protocol, C=C, seed=seed)

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
    if folds is not None:
        scores = _cross_validate(z, y, folds, **fit)
        coords["fold"] = np.arange(folds)
        data_vars["cv_accuracy"] = var("fold", scores[:, 0], "probe accuracy on each cross-validation fold", "1")
        data_vars["cv_cross_entropy"] = var("fold", scores[:, 1],
                                            "probe cross-entropy on each cross-validation fold", "nats")
    if test_z is not None or folds is None:
        accuracy, cross_entropy, n_iter = _score(z, y, tz, ty, **fit)
    else:
        accuracy, cross_entropy = float(scores[:, 0].mean()), float(scores[:, 1].mean())
        n_iter = int(scores[:, 2].max())
    data_vars["accuracy"] = var((), accuracy, "held-out linear probe accuracy", "1")
    data_vars["cross_entropy"] = var((), cross_entropy, "held-out linear probe cross-entropy", "nats")
    data_vars["n_iter"] = var((), np.int64(n_iter), "solver iterations (max over folds)", "1")
    return make_dataset(
        CALLER, f"{protocol}: MinMaxScaler + LogisticRegression({PROTOCOLS[protocol]})", data_vars,
        coords=coords, reference=REFERENCE, protocol=protocol, folds=folds, C=C, seed=seed,
        evaluation=evaluation, n_train=z.shape[0], n_test=tz.shape[0], max_iter=PROTOCOLS[protocol]["max_iter"],
        test_fraction=test_fraction,
    )
