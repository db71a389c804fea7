"""Variational lower bounds on mutual information, as pure functions of a score matrix.

Every estimator takes a (K, K) score matrix S with S[i, j] = f(x_i, y_j): the diagonal holds
the K positive (jointly drawn) pairs, the off-diagonal entries the K(K-1) negative pairs
(product of marginals). Each returns a 0-d tensor in nats and is differentiable, so the same
function is used as the training objective (maximise it) and as the reported estimate.

References: Poole et al., "On Variational Bounds of Mutual Information" (ICML 2019);
Tschannen et al. (ICLR 2020), Sec. 2; Song & Ermon, "Understanding the Limitations of
Variational MI Estimators" (ICLR 2020) for SMILE.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from probe.errors import InputTypeError, InputValueError, unknown_name

Estimator = Callable[..., torch.Tensor]


def _check_scores(scores: torch.Tensor, caller: str) -> int:
    if not isinstance(scores, torch.Tensor):
        raise InputTypeError(f"{caller}: scores is a {type(scores).__name__}; a torch.Tensor of shape (K, K) is required.")
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise InputValueError(
            f"{caller}: scores has shape {tuple(scores.shape)}; a square (K, K) matrix with S[i, j] = f(x_i, y_j) is required."
        )
    k = scores.shape[0]
    if k < 2:
        raise InputValueError(
            f"{caller}: scores is {k}x{k}; K >= 2 is required (a bound needs at least one negative pair). "
            "Use a batch size of 2 or more."
        )
    if not scores.dtype.is_floating_point:
        raise InputTypeError(f"{caller}: scores has dtype {scores.dtype}; a floating-point tensor is required.")
    return k


def _check_scalar(value: object, caller: str, name: str, allow_inf: bool = False) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{caller}: {name} is {value!r}; a real number is required.")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise InputValueError(f"{caller}: {name} is {value}; a finite number is required.")
    return float(value)


def _off_diagonal_logmeanexp(scores: torch.Tensor) -> torch.Tensor:
    """log mean_{i != j} exp(S_ij), computed through logsumexp for stability."""
    k = scores.shape[0]
    eye = torch.eye(k, dtype=torch.bool, device=scores.device)
    masked = scores.masked_fill(eye, float("-inf"))
    return torch.logsumexp(masked.reshape(-1), dim=0) - math.log(k * (k - 1))


def infonce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018): log K + mean_i (S_ii - logsumexp_j S_ij).

    Bounded above by log K (4.852 nats at K = 128): low variance, biased when MI > log K.
    Computed as log K - mean_i logsumexp_j (S_ij - S_ii): the same value, but each row is
    shifted by its own positive first, so scores of size 1e3 in float32 do not lose the O(1)
    result to rounding at 1e3 (ulp 6e-5).
    """
    k = _check_scores(scores, "infonce")
    diag = scores.diagonal()
    # The value does not depend on the shift; a non-finite positive score is not subtracted
    # from itself (inf - inf = NaN) but left in, so it gives -inf as the plain formula does.
    shift = torch.where(torch.isfinite(diag), diag, torch.zeros_like(diag)).detach()
    return math.log(k) - (torch.logsumexp(scores - shift[:, None], dim=1) - (diag - shift)).mean()


def nwj(scores: torch.Tensor) -> torch.Tensor:
    """NWJ / f-GAN KL bound (Nguyen, Wainwright & Jordan 2010): E_p[f] - e^{-1} E_q[e^f].

    The marginal term averages over the K(K-1) off-diagonal pairs only. Unbiased for a fixed
    critic; its variance grows exponentially with the MI.
    """
    _check_scores(scores, "nwj")
    return scores.diagonal().mean() - torch.exp(_off_diagonal_logmeanexp(scores) - 1.0)


def dv(scores: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan / MINE (Belghazi et al. 2018): E_p[f] - log E_q[e^f] (biased in minibatches)."""
    _check_scores(scores, "dv")
    return scores.diagonal().mean() - _off_diagonal_logmeanexp(scores)


def tuba(scores: torch.Tensor, log_baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """TUBA with a constant log-baseline a (Poole et al. 2019, Eq. 9): NWJ is TUBA with a = 1.

    I >= 1 + E_p[f - a] - E_q[e^{f - a}]. With a = 0 this is the "UBA" bound.
    """
    _check_scores(scores, "tuba")
    a = _check_scalar(log_baseline, "tuba", "log_baseline")
    a = torch.as_tensor(a, dtype=scores.dtype, device=scores.device)
    return 1.0 + (scores.diagonal() - a).mean() - torch.exp(_off_diagonal_logmeanexp(scores) - a)


def _js_objective(scores: torch.Tensor, k: int) -> torch.Tensor:
    """f-GAN Jensen-Shannon objective (Nowozin et al. 2016): E_p[-softplus(-S)] - E_q[softplus(S)]."""
    eye = torch.eye(k, dtype=torch.bool, device=scores.device)
    return -F.softplus(-scores.diagonal()).mean() - F.softplus(scores[~eye]).mean()


def _value_with_js_gradient(value: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """`value` forward, the JS objective's gradient backward (the published stop-gradient sum)."""
    js_objective = _js_objective(scores, k)
    if not torch.isfinite(js_objective):  # the straight-through sum would turn -inf into NaN
        return value
    return js_objective + (value - js_objective).detach()


def js(scores: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon training, NWJ value reported (Poole et al. 2019 Sec. 2.3; Hjelm et al. 2019).

    As `js_lower_bound` in Poole et al.'s vbmi code and Song & Ermon's SMILE code: the value is
    NWJ(S) = mean_i S_ii - e^{-1} mean_{i != j} e^{S_ij} (their `nwj_lower_bound`, i.e.
    `tuba_lower_bound(S - 1)`), the gradient that of the f-GAN JS objective. At the JS-optimal
    critic S = log p/q this value is MI - 1/e; `js_shifted` reports NWJ(S + 1) instead.
    """
    k = _check_scores(scores, "js")
    return _value_with_js_gradient(nwj(scores), scores, k)


def js_shifted(scores: torch.Tensor) -> torch.Tensor:
    """JS training with NWJ(S + 1) = 1 + mean_i S_ii - mean_{i != j} e^{S_ij} reported.

    The JS-optimal critic estimates log p/q and NWJ's optimal critic is 1 + log p/q, so this
    value is tight (= MI) at the JS optimum, 1/e above what `js` and the published code report.
    Still a valid lower bound for any critic. Gradient: the f-GAN JS objective's, as `js`.
    """
    k = _check_scores(scores, "js_shifted")
    # Written out rather than nwj(scores + 1): adding 1 would round every score first.
    value = 1.0 + scores.diagonal().mean() - torch.exp(_off_diagonal_logmeanexp(scores))
    return _value_with_js_gradient(value, scores, k)


def smile(scores: torch.Tensor, tau: float = 5.0) -> torch.Tensor:
    """SMILE (Song & Ermon 2020): DV with the marginal term's scores clipped to [-tau, tau].

    Clipping trades a little bias for far lower variance; tau = inf recovers DV. As in the
    authors' code, the value is the clipped DV but the gradient is the JS objective's: trained
    on its own gradient the clipped DV is unbounded (the diagonal is not clipped, the clipped
    negatives stop pulling back) and diverges.
    """
    k = _check_scores(scores, "smile")
    tau = _check_scalar(tau, "smile", "tau", allow_inf=True)
    if not tau > 0:
        raise InputValueError(f"smile: tau is {tau}; a positive clipping threshold is required.")
    value = scores.diagonal().mean() - _off_diagonal_logmeanexp(scores.clamp(-tau, tau))
    return _value_with_js_gradient(value, scores, k)


ESTIMATORS: dict[str, Estimator] = {"infonce": infonce, "nwj": nwj, "dv": dv, "tuba": tuba, "js": js,
                                     "js_shifted": js_shifted, "smile": smile}


def get_estimator(name: str) -> Estimator:
    """Return the estimator function registered under `name` (did-you-mean on a typo)."""
    try:
        return ESTIMATORS[name]
    except (KeyError, TypeError):
        raise unknown_name("estimator", name, list(ESTIMATORS)) from None


def estimate(name: str, scores: torch.Tensor) -> torch.Tensor:
    return get_estimator(name)(scores)
