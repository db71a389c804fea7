"""Variational MI lower bounds between two representations, selected on validation pairs and
reported on test pairs that took no part in training or selection.

The rows are split three ways (seeded): training, validation, test. One critic per estimator
is trained (Adam) to maximise that estimator on training pairs; every `eval_every` steps the
bound is measured on the validation pairs, the critic with the best validation bound is kept
(early stopping after `patience` evaluations without improvement), and the bound of that
critic is reported on the test pairs, in batches of the training batch size K with the last
partial batch dropped. This avoids two pitfalls: the paper's notebook reports its "test" bound
on fresh training batches (docs/reference.md, "Where the bound is measured"), and choosing the reported step on
the pairs the bound is reported on would bias it upwards. InfoNCE cannot exceed log K (4.852
nats at K = 128), so the cap is reported next to the bounds.

Every estimator also gets a verdict, `reliable` (1/0) and `unreliable_reason` (the first
failed check, "" when none failed): see `probe.analyzers._reliability`.

References: Poole et al., "On Variational Bounds of Mutual Information" (ICML 2019);
Tschannen et al. (ICLR 2020), Sec. 2; Song & Ermon, "Understanding the Limitations of
Variational Mutual Information Estimators" (ICLR 2020) on train/test gaps and variance.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import xarray as xr

from probe.analyzers._bootstrap import bootstrap_ci, check_ci_level, check_n_bootstrap, ci_variable
from probe.analyzers._common import check_positive_float, check_seed, make_dataset, var
from probe.analyzers._reliability import bound_verdict
from probe.critics import make_critic
from probe.errors import InputTypeError, InputValueError
from probe.estimators import get_estimator
from probe.validation import check_array, check_fraction, check_positive_int, check_same_length

CALLER = "mi_bounds"
REFERENCE = ("Poole et al., On Variational Bounds of Mutual Information, ICML 2019; Tschannen et al., ICLR 2020, "
             "Sec. 2; Song & Ermon, ICLR 2020")
N_LOGGED = 20  # points of the training curve
HIDDEN_CRITICS = ("separable", "concat")  # the critics with hidden layers, sized by `hidden`
SPLIT_CODES = {"training": 0, "validation": 1, "test": 2}


def _batches(x: torch.Tensor, y: torch.Tensor, k: int, seed: int):
    """Full batches of k pairs drawn without replacement in a seeded random order (the last partial
    batch is dropped). Random, not consecutive: rows sorted by a variable would otherwise share
    batches with their nearest neighbours, whose negatives are hard, and the bound would depend on
    the rows' order (x4.4 on sorted rows before this)."""
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    for lo in range(0, x.shape[0] - k + 1, k):
        yield x[order[lo:lo + k]], y[order[lo:lo + k]]


@torch.no_grad()
def _evaluate(critic, estimator, x, y, batch_size, seed: int = 0) -> np.ndarray:
    """The estimator on seeded random full batches, in float64 so that an overconfident critic gives
    a very negative NWJ value rather than a float32 overflow to -inf."""
    critic = copy.deepcopy(critic).double()
    return np.array([estimator(critic(xb, yb)).item()
                     for xb, yb in _batches(x.double(), y.double(), batch_size, seed)])


def _summary(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, std (ddof 1; 0 for one batch), number of non-finite batches); with non-finite
    batches the mean is their (infinite) mean and the std +inf, so nothing becomes a silent NaN."""
    finite = np.isfinite(values)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged critic's values can be ~1e200
        if finite.all():
            return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, 0
        return float(values.mean()), math.inf, int((~finite).sum())


def _batch_interval(values: np.ndarray, n_bootstrap: int, seed: int, level: float) -> tuple[float, float]:
    """The bootstrap interval of the mean over batches; (nan, nan) when not asked for."""
    if not n_bootstrap:
        return math.nan, math.nan
    if np.isnan(values).any():
        return -math.inf, math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        return bootstrap_ci(lambda b: values[b].mean(), values.size, n_bootstrap=n_bootstrap, seed=seed, level=level)


def _selection_value(values: np.ndarray) -> float:
    """The validation score a checkpoint is ranked by: its mean bound, -inf if any batch is not finite."""
    mean, _, nonfinite = _summary(values)
    return mean if nonfinite == 0 and math.isfinite(mean) else -math.inf


def _train(critic: torch.nn.Module, estimator, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
           y_val: torch.Tensor, *, steps: int, batch_size: int, lr: float, eval_every: int, patience: int,
           seed: int) -> dict[str, Any]:
    """Maximise estimator(critic(x_b, y_b)) with Adam over shuffled full batches (reshuffled each
    epoch), keeping the parameters with the best validation bound (checked at step 0 and every
    `eval_every` steps) and stopping after `patience` checks without improvement.

    On return `critic` holds the selected parameters. The dict has `objective` (every step's
    training objective, NaN after the last step taken), `diverged` (1 if the objective became
    non-finite, where training stopped), `best_step`, `validation_bound` (at best_step) and
    `steps_completed`. A parameter-free critic (inner product) is evaluated, not trained.
    """
    params = [p for p in critic.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr) if params else None
    generator = torch.Generator().manual_seed(seed)
    per_epoch = x.shape[0] // batch_size
    objective = np.full(steps, np.nan)
    best = {"value": _selection_value(_evaluate(critic, estimator, x_val, y_val, batch_size, seed)), "step": 0,
            "state": copy.deepcopy(critic.state_dict())}
    diverged, completed, since_best = 0, 0, 0
    for step in range(steps if optimizer is not None else 0):
        if step % per_epoch == 0:
            order = torch.randperm(x.shape[0], generator=generator)
        idx = order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        value = estimator(critic(x[idx], y[idx]))
        if not torch.isfinite(value):
            diverged = 1
            break
        objective[step] = value.item()
        optimizer.zero_grad()
        (-value).backward()
        optimizer.step()
        completed = step + 1
        if completed % eval_every == 0 or completed == steps:
            checked = _selection_value(_evaluate(critic, estimator, x_val, y_val, batch_size, seed))
            if checked > best["value"]:
                best = {"value": checked, "step": completed, "state": copy.deepcopy(critic.state_dict())}
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    break
    critic.load_state_dict(best["state"])
    return {"objective": objective, "diverged": diverged, "best_step": best["step"], "steps_completed": completed}


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _log_points(steps: int) -> list[np.ndarray]:
    """Up to N_LOGGED consecutive, non-empty stretches of step indices."""
    return np.array_split(np.arange(steps), min(N_LOGGED, steps))


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


def three_way_split(n: int, test_fraction: float, validation_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (training, validation, test) row indices, each sorted and pairwise disjoint.

    The test set has round(test_fraction * n) rows and the validation set
    round(validation_fraction * n), both drawn from one seeded permutation.
    """
    if test_fraction + validation_fraction >= 1.0:
        raise InputValueError(
            f"{CALLER}: test_fraction={test_fraction} and validation_fraction={validation_fraction} sum to "
            f"{test_fraction + validation_fraction:g}; they must leave training rows (sum < 1)."
        )
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(math.floor(test_fraction * n + 0.5)), int(math.floor(validation_fraction * n + 0.5))
    return np.sort(order[n_test + n_val:]), np.sort(order[n_test:n_test + n_val]), np.sort(order[:n_test])


def default_settings(n_train: int, n_heldout: int, dim_x: int, dim_y: int) -> dict[str, Any]:
    """Settings that suit the data's shape: (rows in the training split, rows in the smaller
    held-out split, widths).

    batch_size: 128 (the paper's), lowered to a power of two that leaves at least 4 held-out
    batches. hidden: 128 units, 64 when both views are narrow (<= 2 columns). steps: at most
    60 epochs, between 1,000 and 6,000; eval_every: about 4 epochs, 25 to 200 steps; patience:
    8 checks. lr: 1e-3 (Adam). Chosen from trial runs on bmi-v1 tasks at n = 5,000 (Student-t
    5 x 5, sparse Gaussian 25 x 25, spiral 5 x 5): there a separable critic's validation bound
    peaks within 5-40 epochs and then falls as it fits the 3,000 training pairs, so the
    selection, not the step budget, decides the reported bound. bench/mi_ground_truth.py
    measures the result on all 40 tasks.
    """
    batch_size = 128
    while batch_size > 8 and n_heldout < 4 * batch_size:
        batch_size //= 2
    per_epoch = max(1, n_train // batch_size)
    return {
        "batch_size": batch_size,
        "hidden": 64 if max(dim_x, dim_y) <= 2 else 128,
        "steps": int(np.clip(60 * per_epoch, 1000, 6000)),
        "eval_every": int(np.clip(4 * per_epoch, 25, 200)),
        "patience": 8,
        "lr": 1e-3,
    }


def _critic_kwargs(critic: str, hidden: int | None) -> dict[str, Any]:
    if critic == "separable":
        return {"hidden": (hidden,), "out": hidden}
    if critic == "concat":
        return {"hidden": (hidden, hidden)}
    return {}


def mi_bounds(
    x: Any,
    y: Any,
    *,
    estimators: tuple[str, ...] | list[str] = ("infonce", "nwj"),
    critic: str = "separable",
    hidden: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
    eval_every: int | None = None,
    patience: int | None = None,
    standardize: bool = True,
    seed: int = 0,
    n_bootstrap: int = 0,
    ci_level: float = 0.95,
) -> xr.Dataset:
    """Held-out variational lower bounds on I(X; Y), one trained critic per estimator.

    Args:
        x: (n, d_x) and y: (n, d_y) paired rows (e.g. the two views' embeddings).
        estimators: names from probe.estimators (infonce, nwj, dv, tuba, js, smile); each
            trains its own critic from the same initialisation on the same batches.
        critic: name from probe.critics (bilinear, inner_product, separable, concat).
        hidden: units per hidden layer of a separable (one hidden layer, output of the same
            width) or concat (two hidden layers) critic.
        steps: the most Adam steps per critic; batch_size: K pairs per step and per evaluated
            batch; lr: Adam learning rate; eval_every: steps between validation checks;
            patience: checks without improvement before training stops.
            Any of these left None is chosen from the data's shape (`default_settings`).
        test_fraction, validation_fraction: shares of the rows held out for reporting and for
            selecting the critic (seeded split; the two are disjoint, see `split`).
        standardize: centre and scale columns with training-row statistics (MI is unchanged).
        seed: split, critic initialisation and batch order.
        n_bootstrap: with n > 0, `bound_ci`: a percentile-bootstrap interval (coverage
            `ci_level`) over the test batches, whose mean the bound is (redrawing pairs instead
            would put repeated rows into one batch, where InfoNCE reads them as extra
            positives). It shows the spread from the test pairs only, not from training the
            critic; with few test batches (attr `n_eval_batches`) it is coarse. A bound with a
            NaN batch gets (-inf, +inf).

    Returns:
        Dataset over `estimator`: `bound` (test mean over full batches, nats), `bound_std` (its
        spread across those batches; +inf with `nonfinite_batches` > 0), `validation_bound` and
        `train_bound` (the selected critic on those rows), `best_step` (the selected step; 0 is
        the untrained critic), `diverged` (1 if training hit a non-finite objective and stopped)
        with `steps_completed`, `reliable` (1/0) and `unreliable_reason` ("" when reliable),
        `train_objective` over (`estimator`, `step`) (NaN after training stopped),
        `split` over `sample` (0 training, 1 validation, 2 test) and `infonce_cap` = log K in
        nats. Bounds are evaluated in float64; the settings used are in the attributes.

    Reference: Poole et al., ICML 2019; Tschannen et al., ICLR 2020, Sec. 2 and Fig. 1.
    """
    xa = check_array(x, name="x", caller=CALLER)
    ya = check_array(y, name="y", caller=CALLER)
    check_same_length(xa, ya, names=("x", "y"), caller=CALLER)
    names = _check_estimators(estimators)
    test_fraction = check_fraction(test_fraction, name="test_fraction", caller=CALLER)
    validation_fraction = check_fraction(validation_fraction, name="validation_fraction", caller=CALLER)
    seed = check_seed(seed, CALLER)
    n_bootstrap = check_n_bootstrap(n_bootstrap, CALLER)
    ci_level = check_ci_level(ci_level, CALLER)
    if hidden is not None:
        hidden = check_positive_int(hidden, name="hidden", caller=CALLER)
        if critic not in HIDDEN_CRITICS:
            raise InputValueError(
                f"{CALLER}: hidden={hidden} was given for the {critic!r} critic, which has no hidden layers; "
                f"hidden applies to {' and '.join(HIDDEN_CRITICS)}. Drop hidden or choose one of those critics."
            )
    make_critic(critic, xa.shape[1], ya.shape[1])  # unknown names and width mismatches fail before any work
    tr, va, te = three_way_split(xa.shape[0], test_fraction, validation_fraction, seed)
    auto = default_settings(tr.size, min(va.size, te.size), xa.shape[1], ya.shape[1])
    hidden = hidden if hidden is not None else (auto["hidden"] if critic in HIDDEN_CRITICS else None)
    steps = auto["steps"] if steps is None else check_positive_int(steps, name="steps", caller=CALLER)
    batch_size = auto["batch_size"] if batch_size is None else check_positive_int(
        batch_size, name="batch_size", caller=CALLER, minimum=2)
    lr = auto["lr"] if lr is None else check_positive_float(lr, name="lr", caller=CALLER)
    eval_every = auto["eval_every"] if eval_every is None else check_positive_int(
        eval_every, name="eval_every", caller=CALLER)
    patience = auto["patience"] if patience is None else check_positive_int(patience, name="patience", caller=CALLER)
    for part, rows in (("training", tr), ("validation", va), ("held-out", te)):
        if rows.size < batch_size:
            raise InputValueError(
                f"{CALLER}: the {part} split has {rows.size} pair(s) (n={xa.shape[0]}, test_fraction={test_fraction}, "
                f"validation_fraction={validation_fraction}); at least batch_size={batch_size} are required. "
                "Lower batch_size, adjust the fractions, or pass more pairs."
            )
    if standardize:
        for a in (xa, ya):
            mean, std = a[tr].mean(axis=0), a[tr].std(axis=0)
            a -= mean
            a /= np.where(std > 0, std, 1.0)
    parts = {key: (torch.as_tensor(xa[rows], dtype=torch.float32), torch.as_tensor(ya[rows], dtype=torch.float32))
             for key, rows in (("training", tr), ("validation", va), ("test", te))}

    keys = ("bound", "bound_std", "nonfinite_batches", "validation_bound", "train_bound", "best_step", "diverged",
            "steps_completed", "reliable", "unreliable_reason", "curve", "ci")
    rows: dict[str, list] = {key: [] for key in keys}
    for name in names:
        estimator = get_estimator(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make_critic(critic, xa.shape[1], ya.shape[1], **_critic_kwargs(critic, hidden))
        run = _train(model, estimator, *parts["training"], *parts["validation"], steps=steps, batch_size=batch_size,
                     lr=lr, eval_every=eval_every, patience=patience, seed=seed)
        test_values = _evaluate(model, estimator, *parts["test"], batch_size, seed)
        bound, spread, nonfinite = _summary(test_values)
        train_bound = _summary(_evaluate(model, estimator, *parts["training"], batch_size, seed))[0]
        reason = bound_verdict(name, bound=bound, spread=spread, n_batches=test_values.size, nonfinite=nonfinite,
                               train_bound=train_bound, diverged=run["diverged"], cap=math.log(batch_size))
        for key, value in (("bound", bound), ("bound_std", spread), ("nonfinite_batches", nonfinite),
                           ("validation_bound", _summary(_evaluate(model, estimator, *parts["validation"],
                                                                   batch_size, seed))[0]),
                           ("train_bound", train_bound), ("best_step", run["best_step"]),
                           ("diverged", run["diverged"]), ("steps_completed", run["steps_completed"]),
                           ("reliable", int(reason == "")), ("unreliable_reason", reason),
                           ("curve", [_finite_mean(run["objective"][chunk]) for chunk in _log_points(steps)]),
                           ("ci", _batch_interval(test_values, n_bootstrap, seed, ci_level))):
            rows[key].append(value)

    split = np.zeros(xa.shape[0], dtype=np.int8)
    split[va], split[te] = SPLIT_CODES["validation"], SPLIT_CODES["test"]
    step_coord = np.array([int(chunk[-1]) + 1 for chunk in _log_points(steps)])
    ints = {key: np.array(rows[key], dtype=np.int64) for key in ("nonfinite_batches", "best_step", "steps_completed")}
    data_vars = {
        "bound": var("estimator", rows["bound"], "MI lower bound on test pairs (mean over batches)", "nats"),
        "bound_std": var("estimator", rows["bound_std"], "standard deviation (ddof 1) of the bound across test batches",
                         "nats"),
        "validation_bound": var("estimator", rows["validation_bound"],
                                "MI lower bound on validation pairs at the selected step", "nats"),
        "train_bound": var("estimator", rows["train_bound"],
                           "MI lower bound on training pairs at the selected step (mean over batches)", "nats"),
        "nonfinite_batches": var("estimator", ints["nonfinite_batches"], "test batches whose bound is not finite", "1"),
        "best_step": var("estimator", ints["best_step"],
                         "training step whose critic is reported (best validation bound; 0 = untrained)", "1"),
        "diverged": var("estimator", np.array(rows["diverged"], dtype=np.int8),
                        "1 if the training objective became non-finite (training stopped there)", "1"),
        "steps_completed": var("estimator", ints["steps_completed"],
                               "training steps taken before the end, early stopping or a divergence", "1"),
        "reliable": var("estimator", np.array(rows["reliable"], dtype=np.int8),
                        "1 if the test bound passed every reliability check", "1"),
        "unreliable_reason": var("estimator", np.array(rows["unreliable_reason"], dtype=str),
                                 "the first failed reliability check (empty when reliable)", "1"),
        "train_objective": var(("estimator", "step"), np.array(rows["curve"]),
                               "training objective, mean over the steps ending at each step (NaN after training "
                               "stopped)", "nats"),
        "split": var("sample", split, "split of each row: 0 training, 1 validation (selection), 2 test (reported)",
                     "1"),
        **({"bound_ci": ci_variable(*np.array(rows["ci"]).T, "MI lower bound on test pairs", "nats", level=ci_level,
                                    n_bootstrap=n_bootstrap, dims="estimator", coords={"estimator": np.array(names)},
                                    resampled=f"test batches of {batch_size} pairs")} if n_bootstrap else {}),
        "infonce_cap": var((), math.log(batch_size), "log(batch_size): the largest value InfoNCE can take", "nats"),
    }
    return make_dataset(
        CALLER, f"one {critic} critic per estimator, Adam, best validation step, test full batches of {batch_size}",
        data_vars, coords={"estimator": np.array(names), "step": step_coord}, reference=REFERENCE, critic=critic,
        hidden=hidden, steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every, patience=patience,
        test_fraction=test_fraction, validation_fraction=validation_fraction, standardize=standardize, seed=seed,
        n_train=tr.size, n_validation=va.size, n_test=te.size, n_eval_batches=te.size // batch_size,
    )
