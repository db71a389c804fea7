"""What mi_estimate's inputs are before any estimator sees them: constant, discrete, tied or
continuous columns; normal scores; a principal-component reduction fitted on training rows.

A continuous variable has no ties, so ties say how a column was made (the limits are in
`probe.analyzers._reliability`):

    constant    one value: carries no information; dropped, and the count reported.
    discrete    at most n / DISCRETE_ROWS_PER_LEVEL distinct values (each seen about 10 times or
                more): categories or counts. Estimated as such (plug-in), never jittered.
    mixed       more values, but one of them holds ATOM_SHARE of the rows or more, and ATOM_RATIO
                times as many as the other values on average (an atom, e.g. a pixel that is 0
                in most images, a ReLU unit): part discrete, part continuous. Mixed-KSG (Gao et
                al. 2017) counts its ties as they are.
    rounded     ties, but no atom and many values: a continuous variable stored at finite
                precision. Ties are broken at random, which is what a jitter below the
                rounding step does, and the column is treated as continuous.
    continuous  no ties.

Normal scores Φ⁻¹(rank / (n + 1)) replace each column by a strictly increasing function of it,
which leaves I(X; Y) unchanged (ties of discrete and mixed columns keep their average rank).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from probe.analyzers import _reliability as limits

TIED_KINDS = ("discrete", "mixed")


def column_kind(column: np.ndarray) -> str:
    """"constant", "discrete", "mixed", "rounded" or "continuous" for one column (see the module docstring)."""
    n = column.size
    _, counts = np.unique(column, return_counts=True)
    if counts.size == 1:
        return "constant"
    if counts.size == n:
        return "continuous"
    if counts.size * limits.DISCRETE_ROWS_PER_LEVEL <= n:
        return "discrete"
    top = counts.max()
    atom = top >= limits.ATOM_SHARE * n and top >= limits.ATOM_RATIO * (n - top) / (counts.size - 1)
    return "mixed" if atom else "rounded"


@dataclass
class View:
    """One side (x or y) after the checks: its varying columns and what they are."""

    values: np.ndarray          # (n, d) the varying columns, as given
    scores: np.ndarray          # (n, d) their normal scores
    kinds: tuple[str, ...]      # the kind of each varying column
    dropped: int                # constant columns removed

    @property
    def discrete(self) -> bool:
        return all(k == "discrete" for k in self.kinds)

    @property
    def tied(self) -> bool:
        """Some column has ties that carry information (discrete or mixed)."""
        return any(k in TIED_KINDS for k in self.kinds)


def normal_scores(a: np.ndarray, rng: np.random.Generator | None = None,
                  kinds: tuple[str, ...] | None = None) -> np.ndarray:
    """(n, d) -> (n, d): each column's ranks mapped through Φ⁻¹(r / (n + 1)). Ties keep their average
    rank, except in "rounded" columns (given `kinds` and `rng`), where they are broken at random."""
    n = a.shape[0]
    ranks = rankdata(a, axis=0)
    if rng is not None and kinds is not None:
        for j, kind in enumerate(kinds):
            if kind == "rounded":
                order = np.lexsort((rng.random(n), a[:, j]))
                ranks[order, j] = np.arange(1, n + 1)
    return ndtri(ranks / (n + 1))


def prepare_view(a: np.ndarray, rng: np.random.Generator) -> View:
    """Drop constant columns, classify the others, compute normal scores (caller checks that one varies)."""
    kinds = [column_kind(a[:, j]) for j in range(a.shape[1])]
    keep = np.array([k != "constant" for k in kinds])
    values = a[:, keep]
    varying = tuple(k for k in kinds if k != "constant")
    return View(values, normal_scores(values, rng, varying), varying, int((~keep).sum()))


def principal_components(train: np.ndarray, *, max_components: int, share: float = 0.99) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """(mean (d,), basis (d, k)): the leading principal directions of the `train` rows that explain
    `share` of their variance, at most `max_components` of them, and none of zero variance."""
    mean = train.mean(axis=0)
    centred = train - mean
    if train.shape[0] > train.shape[1]:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        values, vectors = values[::-1], vectors[:, ::-1]
    else:  # fewer rows than columns: the directions come from the rows' Gram matrix
        _, singular, rows = np.linalg.svd(centred, full_matrices=False)
        values, vectors = singular**2, rows.T
    values = np.clip(values, 0.0, None)
    positive = values > 1e-10 * max(values[0], 1e-300)
    explained = np.cumsum(values) / max(values.sum(), 1e-300)
    k = int(min(max_components, positive.sum(), np.searchsorted(explained, share) + 1))
    return mean, vectors[:, :max(k, 1)]
