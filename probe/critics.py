"""Critics f(x, y): each maps a batch of K x's and K y's to the (K, K) score matrix.

`score_pairs(x, y)` gives the K row-wise scores f(x_i, y_i) without the K² matrix (used for
triplet margins measured with the critic's own similarity).

Sizes follow the paper's notebook (docs/reference.md, "Estimators and critics"): bilinear xᵀWy with W of size
d_x x d_y; separable φ1(x)ᵀφ2(y) with one 100-unit ReLU hidden layer and a 100-unit output;
concat MLP on [x, y] with one 200-unit ReLU hidden layer and a scalar output, evaluated on all
K² pairs. Initialisation as Keras `Dense` (the notebook builds every critic from it):
Glorot-uniform weights, zero biases.
"""
from __future__ import annotations

import torch
from torch import nn

from probe.encoders import dense_stack
from probe.errors import InputValueError, unknown_name


class BilinearCritic(nn.Module):
    """f(x, y) = xᵀ W y, W of shape (dim_x, dim_y), Glorot-uniform init (Keras Dense default)."""

    def __init__(self, dim_x: int, dim_y: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim_x, dim_y))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight) @ y.T

    def score_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x @ self.weight) * y).sum(dim=1)


class InnerProductCritic(nn.Module):
    """f(x, y) = xᵀy (no parameters): the critic under which InfoNCE is a K-pair metric loss."""

    def __init__(self, dim_x: int, dim_y: int):
        super().__init__()
        if dim_x != dim_y:
            raise InputValueError(
                f"inner_product critic: views have widths {dim_x} and {dim_y}; they must be equal. "
                "Use the bilinear critic for views of different widths."
            )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y.T

    def score_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * y).sum(dim=1)


class SeparableCritic(nn.Module):
    """f(x, y) = φ1(x)ᵀ φ2(y), each φ an MLP (hidden..., output) with ReLU between layers,
    Glorot-uniform weights and zero biases."""

    def __init__(self, dim_x: int, dim_y: int, hidden: tuple[int, ...] = (100,), out: int = 100):
        super().__init__()
        self.phi_x = dense_stack([dim_x, *hidden, out])
        self.phi_y = dense_stack([dim_y, *hidden, out])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.phi_x(x) @ self.phi_y(y).T

    def score_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.phi_x(x) * self.phi_y(y)).sum(dim=1)


class ConcatCritic(nn.Module):
    """f(x, y) = MLP([x, y]) -> scalar, evaluated on all K² pairs; Glorot-uniform weights and
    zero biases."""

    def __init__(self, dim_x: int, dim_y: int, hidden: tuple[int, ...] = (200,)):
        super().__init__()
        self.net = dense_stack([dim_x + dim_y, *hidden, 1])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        # Row i pairs x_i with every y_j: the first layer is split so the K² pairs cost one
        # (K + K) x hidden product instead of a K² x (dx + dy) one.
        first, rest = self.net[0], self.net[1:]
        wx, wy = first.weight[:, : x.shape[1]], first.weight[:, x.shape[1]:]
        h = (x @ wx.T)[:, None, :] + (y @ wy.T)[None, :, :] + first.bias
        return rest(h.reshape(k * y.shape[0], -1)).reshape(k, y.shape[0])

    def score_pairs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y], dim=1)).squeeze(1)


CRITICS = {
    "bilinear": BilinearCritic,
    "inner_product": InnerProductCritic,
    "separable": SeparableCritic,
    "concat": ConcatCritic,
}


def make_critic(name: str, dim_x: int, dim_y: int, **kwargs) -> nn.Module:
    """Build the critic registered under `name` for views of widths dim_x and dim_y."""
    try:
        cls = CRITICS[name]
    except (KeyError, TypeError):
        raise unknown_name("critic", name, list(CRITICS)) from None
    return cls(dim_x, dim_y, **kwargs)
