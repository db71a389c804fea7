"""Discrete and mixed pairs: channels with closed-form MI, and a class that sets a Gaussian's mean.

- `DiscretePair`: X and Y on finite sets (each state a vector of numbers), any joint pmf P;
  I(X; Y) = Σ P(x, y) ln(P(x, y) / (P(x) P(y))) exactly. Built from it: `binary_symmetric`
  (X uniform on {0, 1}, Y = X flipped with probability ε, `bits` independent copies: I = bits ·
  (ln 2 - H(ε))), `symmetric_channel` (X uniform on m classes, Y = X with probability 1 - β,
  else one of the other m - 1 uniformly: I = ln m - H(β) - β ln(m - 1)), `random_channel`
  (seeded Dirichlet input and rows). Every sample is tied: the data an estimator for continuous
  variables gets wrong.
- `CategoricalGaussianPair`: X categorical (one column of class ids 0..m-1), Y | X = k ~ N(μ_k,
  σ² I): a mixed pair, I(X; Y) = H(X) - H(X | Y) by Monte Carlo.

Reference: Cover & Thomas, Elements of Information Theory (2006), Sec. 7.1 (channels);
Gao, Kannan, Oh & Viswanath, "Estimating Mutual Information for Discrete-Continuous Mixtures"
(NeurIPS 2017), whose experiments use such pairs.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp, xlogy

from probe.errors import InputValueError
from probe.ground_truth.distributions import LOG_2PI, JointDistribution, MonteCarloTruth
from probe.ground_truth.tasks import Task, make_task


def binary_entropy(p: float) -> float:
    """H(p) = -p ln p - (1 - p) ln(1 - p) in nats (0 at p = 0 or 1)."""
    return float(-xlogy(p, p) - xlogy(1.0 - p, 1.0 - p))


class DiscretePair(JointDistribution):
    """(X, Y) with joint pmf `table` (m_x, m_y); state i of X is the row `x_values[i]` (d_x numbers),
    state j of Y the row `y_values[j]`. States must be distinct rows."""

    def __init__(self, table, x_values, y_values) -> None:
        caller = "DiscretePair"
        self.table = np.asarray(table, dtype=np.float64)
        self.x_values = np.atleast_2d(np.asarray(x_values, dtype=np.float64))
        self.y_values = np.atleast_2d(np.asarray(y_values, dtype=np.float64))
        if self.table.ndim != 2 or (self.table < 0).any() or not np.isclose(self.table.sum(), 1.0):
            raise InputValueError(f"{caller}: table (shape={self.table.shape}) must be a 2-D pmf: non-negative, "
                                  "summing to 1.")
        for name, values, m in (("x_values", self.x_values, self.table.shape[0]),
                                ("y_values", self.y_values, self.table.shape[1])):
            if values.shape[0] != m or len({tuple(v) for v in values}) != m:
                raise InputValueError(f"{caller}: {name} has shape {values.shape}; {m} distinct rows (one per "
                                      "state of the table) are required.")
        self.dim_x, self.dim_y = self.x_values.shape[1], self.y_values.shape[1]
        self._x_index = {tuple(v): i for i, v in enumerate(self.x_values)}
        self._y_index = {tuple(v): j for j, v in enumerate(self.y_values)}

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        flat = rng.choice(self.table.size, size=n, p=self.table.ravel())
        i, j = np.divmod(flat, self.table.shape[1])
        return self.x_values[i].copy(), self.y_values[j].copy()

    def mutual_information(self) -> float:
        px, py = self.table.sum(axis=1, keepdims=True), self.table.sum(axis=0, keepdims=True)
        ratio = np.where(self.table > 0, self.table / np.where(self.table > 0, px * py, 1.0), 1.0)
        return float(np.sum(xlogy(self.table, ratio)))

    def _states(self, values: np.ndarray, index: dict, name: str) -> np.ndarray:
        try:
            return np.array([index[tuple(v)] for v in values], dtype=np.int64)
        except KeyError as err:
            raise InputValueError(f"DiscretePair.pointwise_mutual_information: {name} holds the row {err.args[0]}, "
                                  "which is not one of the distribution's states.") from None

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = self._check_pair(x, y, "DiscretePair.pointwise_mutual_information")
        i, j = self._states(x, self._x_index, "x"), self._states(y, self._y_index, "y")
        px, py = self.table.sum(axis=1), self.table.sum(axis=0)
        with np.errstate(divide="ignore"):
            return np.log(self.table[i, j]) - np.log(px[i]) - np.log(py[j])


def _check_probability(value: float, name: str, caller: str, upper: float = 1.0) -> float:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= upper):
        raise InputValueError(f"{caller}: {name} is {value!r}; a probability in [0, {upper:g}] is required.")
    return float(value)


def binary_symmetric(crossover: float, bits: int = 1) -> Task:
    """`bits` independent binary symmetric channels: X uniform on {0, 1}^bits, each bit flipped w.p. ε."""
    eps = _check_probability(crossover, "crossover", "binary_symmetric", 0.5)
    one = np.array([[1.0 - eps, eps], [eps, 1.0 - eps]]) / 2.0
    table, values = one, np.array([[0.0], [1.0]])
    for _ in range(bits - 1):
        table = np.kron(table, one)
        values = np.array([[*a, *b] for a in values for b in ([0.0], [1.0])])
    name = f"binary-symmetric-{crossover}" + (f"-{bits}bits" if bits > 1 else "")
    return make_task(name, "discrete", f"Binary symmetric channel, crossover {crossover}, {bits} bit(s) "
                     f"(I = {bits} (ln 2 - H(ε)))", DiscretePair(table, values, values))


def symmetric_channel(classes: int, beta: float) -> Task:
    """X uniform on `classes` values; Y = X with probability 1 - β, else another value uniformly."""
    beta = _check_probability(beta, "beta", "symmetric_channel", (classes - 1) / classes)
    table = np.full((classes, classes), beta / (classes - 1) / classes)
    np.fill_diagonal(table, (1.0 - beta) / classes)
    values = np.arange(classes, dtype=np.float64)[:, None]
    return make_task(f"symmetric-channel-{classes}-{beta}", "discrete",
                     f"{classes}-ary symmetric channel, error {beta} (I = ln m - H(β) - β ln(m - 1))",
                     DiscretePair(table, values, values))


def random_channel(inputs: int, outputs: int, seed: int, concentration: float = 0.5) -> Task:
    """P(X) ~ Dirichlet(1) and each row P(Y | X = i) ~ Dirichlet(concentration), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    px = rng.dirichlet(np.ones(inputs))
    rows = rng.dirichlet(np.full(outputs, concentration), size=inputs)
    return make_task(f"random-channel-{inputs}-{outputs}-s{seed}", "discrete",
                     f"Random channel {inputs} → {outputs} states (Dirichlet({concentration}) rows, seed {seed})",
                     DiscretePair(px[:, None] * rows, np.arange(inputs, dtype=np.float64)[:, None],
                                  np.arange(outputs, dtype=np.float64)[:, None]))


class CategoricalGaussianPair(MonteCarloTruth, JointDistribution):
    """X ~ Categorical(p) as one column of class ids, Y | X = k ~ N(means[k], σ² I); MI by Monte Carlo."""

    def __init__(self, probabilities, means, sigma: float) -> None:
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.means = np.atleast_2d(np.asarray(means, dtype=np.float64))
        if self.probabilities.ndim != 1 or (self.probabilities <= 0).any() \
                or not np.isclose(self.probabilities.sum(), 1.0) or self.means.shape[0] != self.probabilities.size:
            raise InputValueError(f"CategoricalGaussianPair: probabilities {self.probabilities.tolist()} must be "
                                  f"positive, sum to 1 and give one row of means (shape={self.means.shape}) each.")
        if not sigma > 0:
            raise InputValueError(f"CategoricalGaussianPair: sigma is {sigma!r}; a standard deviation > 0 is required.")
        self.sigma = float(sigma)
        self.dim_x, self.dim_y = 1, self.means.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = rng.choice(self.probabilities.size, size=n, p=self.probabilities)
        return k[:, None].astype(np.float64), self.means[k] + self.sigma * rng.standard_normal((n, self.dim_y))

    def _log_conditional(self, y: np.ndarray) -> np.ndarray:
        """(n, m): log N(y; μ_k, σ² I) for every class k."""
        sq = ((y[:, None, :] - self.means[None]) ** 2).sum(axis=2)
        return -0.5 * (self.dim_y * (LOG_2PI + 2.0 * math.log(self.sigma)) + sq / self.sigma**2)

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = self._check_pair(x, y, "CategoricalGaussianPair.pointwise_mutual_information")
        k = x[:, 0].astype(np.int64)
        if not (np.array_equal(k, x[:, 0]) and (k >= 0).all() and (k < self.probabilities.size).all()):
            raise InputValueError("CategoricalGaussianPair.pointwise_mutual_information: x must hold class ids "
                                  f"0..{self.probabilities.size - 1}.")
        log_cond = self._log_conditional(y)
        return log_cond[np.arange(k.size), k] - logsumexp(log_cond + np.log(self.probabilities), axis=1)


def categorical_gaussian(classes: int, dim: int, separation: float, sigma: float = 1.0) -> Task:
    """X uniform on `classes` ids; Y = the class centre + σ noise in `dim` dimensions. The centres lie
    `separation` apart on a line (dim = 1) or on a circle in Y's first two coordinates (dim >= 2;
    the others are noise only)."""
    means = np.zeros((classes, dim))
    if dim == 1:
        means[:, 0] = separation * np.arange(classes)
    else:
        angle = 2.0 * math.pi * np.arange(classes) / classes
        radius = separation / (2.0 * math.sin(math.pi / classes))
        means[:, 0], means[:, 1] = radius * np.cos(angle), radius * np.sin(angle)
    return make_task(f"categorical-gaussian-{classes}-{dim}-{separation}", "mixed",
                     f"{classes} classes → Gaussian in {dim} dim(s) (centres {separation} apart, σ = {sigma})",
                     CategoricalGaussianPair(np.full(classes, 1.0 / classes), means, sigma))
