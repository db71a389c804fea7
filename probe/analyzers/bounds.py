"""Variational MI lower bounds between two representations, on held-out pairs.

One critic per estimator is trained (Adam) to maximise that estimator on training pairs; the
bound is then reported on held-out pairs, in batches of the training batch size K with the last
partial batch dropped. This avoids the pitfall of the paper's notebook, whose "test" bound is
computed on fresh training batches (REFERENCE.md, "Common protocol"). InfoNCE cannot exceed
log K (4.852 nats at K = 128), so the cap is reported next to the bounds.

References: Poole et al., "On Variational Bounds of Mutual Information" (ICML 2019);
Tschannen et al. (ICLR 2020), Sec. 2.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import xarray as xr

from probe.analyzers._common import check_positive_float, check_seed, make_dataset, split_indices, var
from probe.critics import make_critic
from probe.errors import InputTypeError, InputValueError
from probe.estimators import get_estimator
from probe.validation import check_array, check_fraction, check_positive_int, check_same_length

CALLER = "mi_bounds"
REFERENCE = "Poole et al., On Variational Bounds of Mutual Information, ICML 2019; Tschannen et al., ICLR 2020, Sec. 2"
N_LOGGED = 20  # points of the training curve


def _batches(x: torch.Tensor, y: torch.Tensor, k: int):
    """Consecutive full batches of k pairs (the last partial batch is dropped)."""
    for lo in range(0, x.shape[0] - k + 1, k):
        yield x[lo:lo + k], y[lo:lo + k]


def _train(critic: torch.nn.Module, estimator, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int,
           lr: float, seed: int) -> tuple[np.ndarray, int]:
    """Maximise estimator(critic(x_b, y_b)) with Adam over shuffled full batches (reshuffled each epoch).

    Returns the objective at every step (NaN after a non-finite value, where training stops)
    and 1 if that happened. A parameter-free critic (inner product) is evaluated, not trained.
    """
    params = [p for p in critic.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr) if params else None
    generator = torch.Generator().manual_seed(seed)
    per_epoch = x.shape[0] // batch_size
    objective = np.full(steps, np.nan)
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(x.shape[0], generator=generator)
        idx = order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        with torch.set_grad_enabled(optimizer is not None):
            value = estimator(critic(x[idx], y[idx]))
        if not torch.isfinite(value):
            return objective, 1
        objective[step] = value.item()
        if optimizer is not None:
            optimizer.zero_grad()
            (-value).backward()
            optimizer.step()
    return objective, 0


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _log_points(steps: int) -> list[np.ndarray]:
    """Up to N_LOGGED consecutive, non-empty stretches of step indices."""
    return np.array_split(np.arange(steps), min(N_LOGGED, steps))


@torch.no_grad()
def _evaluate(critic, estimator, x, y, batch_size) -> np.ndarray:
    """The estimator on consecutive full batches, in float64 so that an overconfident critic gives
    a very negative NWJ value rather than a float32 overflow to -inf."""
    critic = copy.deepcopy(critic).double()
    return np.array([estimator(critic(xb.double(), yb.double())).item() for xb, yb in _batches(x, y, batch_size)])


def _summary(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, std, number of non-finite batches); with non-finite batches the mean is their
    (infinite) mean and the std +inf, so nothing becomes a silent NaN."""
    finite = np.isfinite(values)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged critic's values can be ~1e200
        if finite.all():
            return float(values.mean()), float(values.std()), 0
        return float(values.mean()), math.inf, int((~finite).sum())


def _check_estimators(estimators: Any) -> tuple[str, ...]:
    names = (estimators,) if isinstance(estimators, str) else estimators
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, (list, tuple)) or not names:
        raise InputTypeError(
            f"{CALLER}: estimators is {estimators!r}; a non-empty list of estimator names is required."
        )
    for name in names:
        get_estimator(name)  # unknown names raise the did-you-mean error
    if len(set(names)) != len(names):
        raise InputValueError(f"{CALLER}: estimators {list(names)} lists a name twice; each estimator is trained once.")
    return tuple(names)


def mi_bounds(
    x: Any,
    y: Any,
    *,
    estimators: tuple[str, ...] | list[str] = ("infonce", "nwj"),
    critic: str = "bilinear",
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    test_fraction: float = 0.2,
    standardize: bool = True,
    seed: int = 0,
) -> xr.Dataset:
    """Held-out variational lower bounds on I(X; Y), one trained critic per estimator.

    Args:
        x: (n, d_x) and y: (n, d_y) paired rows (e.g. the two views' embeddings).
        estimators: names from probe.estimators (infonce, nwj, dv, tuba, js, smile); each
            trains its own critic from the same initialisation on the same batches.
        critic: name from probe.critics (bilinear, inner_product, separable, concat).
        steps: Adam steps per critic; batch_size: K pairs per step and per evaluated batch.
        lr: Adam learning rate. test_fraction: held-out share of the rows (seeded split).
        standardize: centre and scale columns with training-row statistics (MI is unchanged).
        seed: split, critic initialisation and batch order.

    Returns:
        Dataset over `estimator`: `bound` (held-out mean over full batches, nats), `bound_std`
        (its spread across those batches; +inf with `nonfinite_batches` > 0), `train_bound`
        (same on the training rows), `diverged` (1 if training hit a non-finite objective and
        stopped) with `steps_completed`, `train_objective` over (`estimator`, `step`); and
        `infonce_cap` = log(batch_size) in nats. Bounds are evaluated in float64.

    Reference: Poole et al., ICML 2019; Tschannen et al., ICLR 2020, Sec. 2 and Fig. 1.
    """
    xa = check_array(x, name="x", caller=CALLER)
    ya = check_array(y, name="y", caller=CALLER)
    check_same_length(xa, ya, names=("x", "y"), caller=CALLER)
    names = _check_estimators(estimators)
    steps = check_positive_int(steps, name="steps", caller=CALLER)
    batch_size = check_positive_int(batch_size, name="batch_size", caller=CALLER, minimum=2)
    lr = check_positive_float(lr, name="lr", caller=CALLER)
    test_fraction = check_fraction(test_fraction, name="test_fraction", caller=CALLER)
    seed = check_seed(seed, CALLER)
    make_critic(critic, xa.shape[1], ya.shape[1])  # unknown names and width mismatches fail before any work
    tr, te = split_indices(xa.shape[0], test_fraction, seed, caller=CALLER)
    for part, rows in (("training", tr), ("held-out", te)):
        if rows.size < batch_size:
            raise InputValueError(
                f"{CALLER}: the {part} split has {rows.size} pair(s) (n={xa.shape[0]}, test_fraction={test_fraction}); "
                f"at least batch_size={batch_size} are required. Lower batch_size or adjust test_fraction."
            )
    if standardize:
        for a in (xa, ya):
            mean, std = a[tr].mean(axis=0), a[tr].std(axis=0)
            a -= mean
            a /= np.where(std > 0, std, 1.0)
    x_tr, y_tr = torch.as_tensor(xa[tr], dtype=torch.float32), torch.as_tensor(ya[tr], dtype=torch.float32)
    x_te, y_te = torch.as_tensor(xa[te], dtype=torch.float32), torch.as_tensor(ya[te], dtype=torch.float32)

    keys = ("bound", "bound_std", "nonfinite_batches", "train_bound", "diverged", "steps_completed", "curve")
    rows: dict[str, list] = {key: [] for key in keys}
    for name in names:
        estimator = get_estimator(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make_critic(critic, xa.shape[1], ya.shape[1])
        objective, diverged = _train(model, estimator, x_tr, y_tr, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        bound, spread, nonfinite = _summary(_evaluate(model, estimator, x_te, y_te, batch_size))
        rows["bound"].append(bound)
        rows["bound_std"].append(spread)
        rows["nonfinite_batches"].append(nonfinite)
        rows["train_bound"].append(_summary(_evaluate(model, estimator, x_tr, y_tr, batch_size))[0])
        rows["diverged"].append(diverged)
        rows["steps_completed"].append(int(np.isfinite(objective).sum()))
        rows["curve"].append([_finite_mean(objective[chunk]) for chunk in _log_points(steps)])

    step_coord = np.array([int(chunk[-1]) + 1 for chunk in _log_points(steps)])
    data_vars = {
        "bound": var("estimator", rows["bound"], "MI lower bound on held-out pairs (mean over batches)", "nats"),
        "bound_std": var("estimator", rows["bound_std"],
                         "standard deviation of the bound across held-out batches", "nats"),
        "train_bound": var("estimator", rows["train_bound"],
                           "MI lower bound on training pairs (mean over batches)", "nats"),
        "nonfinite_batches": var("estimator", np.array(rows["nonfinite_batches"], dtype=np.int64),
                                 "held-out batches whose bound is not finite", "1"),
        "diverged": var("estimator", np.array(rows["diverged"], dtype=np.int8),
                        "1 if the training objective became non-finite (training stopped there)", "1"),
        "steps_completed": var("estimator", np.array(rows["steps_completed"], dtype=np.int64),
                               "training steps completed before the end or a divergence", "1"),
        "train_objective": var(("estimator", "step"), np.array(rows["curve"]),
                               "training objective, mean over the steps ending at each step (NaN after a divergence)",
                               "nats"),
        "infonce_cap": var((), math.log(batch_size), "log(batch_size): the largest value InfoNCE can take", "nats"),
    }
    return make_dataset(
        CALLER, f"one {critic} critic per estimator, Adam, held-out full batches of {batch_size}", data_vars,
        coords={"estimator": np.array(names), "step": step_coord}, reference=REFERENCE, critic=critic,
        steps=steps, batch_size=batch_size, lr=lr, test_fraction=test_fraction, standardize=standardize, seed=seed,
        n_train=tr.size, n_test=te.size, n_eval_batches=te.size // batch_size,
    )
