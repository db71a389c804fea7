"""MI of a Gaussian mixture fitted to the normal scores: the copula's model, with K components.

When the scores are not jointly Gaussian, a mixture of K Gaussians may still describe them
(zero-correlation mixtures, sign-mixed pairs). Its MI is the mean over rows of the model's
pointwise MI, log q(x, y) - log q(x) - log q(y), each marginal the mixture of the components'
marginal blocks (after Piras et al. 2023, "GMM-MI"). To keep the estimate honest:

- K is chosen on held-out rows: the rows are split into two random halves A and B, mixtures
  of K = 1, 2, 3, ... components are fitted on A and scored by their mean log-likelihood on B,
  and the best K is kept (the search stops when K no longer improves it);
- the estimate is cross-fitted: the chosen mixture is refitted on A to give the terms of B's
  rows and on B to give A's, so no row's term comes from a model fitted on it; the same with
  mixtures fitted on half of A and half of B measures how much the estimate still moves with
  the number of rows (a model fitted on few rows loses some of the dependence);
- the mixture's own assumption is checked twice. Within each component the held-out rows,
  whitened by it and weighted by its responsibility, must have Mardia's Gaussian kurtosis (for
  a true mixture these weighted moments are the component's own, E[r_k(z) f(z)] = w_k E_k[f]):
  a scale mixture inside a component (Student-t) fails it. And the mixture's marginals must
  reproduce each view's kurtosis: with q the mixture, the estimate equals a Barber-Agakov lower
  bound plus KL(p(y) || q(y)), so it can exceed I(X; Y) only by as much as q misfits a
  marginal, and a misfit marginal is how a mixture of a few Gaussians fails curved dependence
  (a spiral: Gaussian views, modelled by components whose marginals are a scale mixture).

Reference: Piras, Mancini, Lasenby et al., "GMM-MI: a robust estimator of mutual information
using Gaussian mixtures", Machine Learning: Science and Technology 4 (2023); Mardia (1970).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from probe.analyzers import _reliability as limits
from probe.analyzers._mi_gaussian import Shape, _whiten, shape

MAX_COMPONENTS = 8
# Judgement: at most 2 parameters per training row; the held-out likelihood, not this cap, is what
# normally stops K growing (a 25 + 25 mixture of 2 components has 2,652 parameters for 2,500 rows).
MAX_PARAMETERS_PER_ROW = 2.0
LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class Mixture:
    value: float
    terms: np.ndarray                   # (n,) cross-fitted pointwise MI of each row
    half: float                         # the same estimate from mixtures fitted on half as many rows
    components: int
    shapes: list[Shape]                  # Mardia's statistics of each component on held-out rows
    capped: bool                         # the search stopped at its largest K, still improving
    marginal_misfit: float               # largest |kurtosis of a view under the mixture - in the data|


def _fit(z: np.ndarray, k: int, seed: int):
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the held-out score judges the fit
        return GaussianMixture(k, covariance_type="full", reg_covar=1e-6, max_iter=200, n_init=2,
                               random_state=seed).fit(z)


def _component_logs(model, z: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, K) log w_k N(z_block; μ_k, Σ_k) and (n, K) squared Mahalanobis lengths."""
    logs, squares = [], []
    for w, mean, cov in zip(model.weights_, model.means_, model.covariances_):
        chol = np.linalg.cholesky(cov[np.ix_(block, block)])
        r = np.linalg.solve(chol, (z[:, block] - mean[block]).T)
        sq = np.einsum("ij,ij->j", r, r)
        squares.append(sq)
        logs.append(math.log(w) - 0.5 * (block.size * LOG_2PI + sq) - np.log(np.diag(chol)).sum())
    return np.stack(logs, axis=1), np.stack(squares, axis=1)


def _pmi(model, z: np.ndarray, dx: int) -> np.ndarray:
    d = z.shape[1]
    blocks = (np.arange(d), np.arange(dx), np.arange(dx, d))
    joint, x, y = (logsumexp(_component_logs(model, z, b)[0], axis=1) for b in blocks)
    return joint - x - y


def _component_shapes(model, z: np.ndarray) -> list[Shape]:
    """Each component's Mardia statistics on held-out rows, whitened by the component and weighted
    by its responsibilities."""
    logs, _ = _component_logs(model, z, np.arange(z.shape[1]))
    resp = np.exp(logs - logsumexp(logs, axis=1, keepdims=True))
    out = []
    for k, (mean, cov) in enumerate(zip(model.means_, model.covariances_)):
        values, vectors = np.linalg.eigh(cov)
        u = (z - mean) @ (vectors / np.sqrt(np.clip(values, 1e-300, None)))
        out.append(shape(u, resp[:, k]))
    return out


def mixture_fit(xs: np.ndarray, ys: np.ndarray, seed: int) -> Mixture | None:
    """The cross-fitted mixture MI of the scores (see the module docstring); None when no mixture of
    two or more components beats one Gaussian on held-out rows."""
    z = np.hstack([xs, ys])
    n, d = z.shape
    order = np.random.default_rng([seed, 0x6A11]).permutation(n)
    a, b = np.sort(order[: n // 2]), np.sort(order[n // 2:])
    per_component = d * (d + 3) / 2 + 1
    largest = int(min(MAX_COMPONENTS, max(1, (a.size * MAX_PARAMETERS_PER_ROW) // per_component)))
    best_k, best_score, scores = 1, -math.inf, {}
    for k in range(1, largest + 1):
        scores[k] = float(_fit(z[a], k, seed).score(z[b]))
        if scores[k] > best_score:
            best_k, best_score = k, scores[k]
        elif k >= best_k + 2:  # two components past the best without improving: stop
            break
    if best_k == 1:
        return None
    dx = xs.shape[1]
    on_a, on_b = _fit(z[a], best_k, seed), _fit(z[b], best_k, seed)
    terms = np.empty(n)
    terms[b], terms[a] = _pmi(on_a, z[b], dx), _pmi(on_b, z[a], dx)
    # The same from fits on half of each half: how far the estimate still moves with the rows.
    half = np.mean([_pmi(_fit(z[fit[: fit.size // 2]], best_k, seed), z[rows], dx).mean() for fit, rows in ((a, b), (b, a))])
    model_rows = on_a.sample(4 * n)[0]
    misfit = max(abs(shape(_whiten(model_rows[:, cols])).kurtosis - shape(_whiten(z[:, cols])).kurtosis)
                 for cols in (slice(0, dx), slice(dx, None)))
    return Mixture(float(terms.mean()), terms, float(half), best_k, _component_shapes(on_a, z[b]), best_k == largest,
                   float(misfit))


def mixture_verdict(fit: Mixture) -> str:
    """Why the mixture's assumption failed, or ""."""
    for k, s in enumerate(fit.shapes):
        if abs(s.kurtosis_z) > limits.MIXTURE_SHAPE_Z and abs(s.kurtosis) > limits.MARDIA_EFFECT:
            return (f"component {k + 1} of {fit.components} is not Gaussian on held-out rows ({s.describe()}): "
                    "the mixture does not describe the scores")
    if fit.marginal_misfit > limits.MIXTURE_MARGINAL_KURTOSIS:
        return (f"the mixture's marginals do not match the views: a view's kurtosis differs by {fit.marginal_misfit:.3f} "
                f"(over {limits.MIXTURE_MARGINAL_KURTOSIS}) between the mixture and the data, and a mixture that misfits "
                "a marginal can report more or less than the MI (curved dependence, a spiral, does this)")
    if fit.capped:
        return (f"{fit.components} components, the most the rows allow, fit best on held-out rows: more might fit "
                "better, the model may be too small")
    return ""
