"""Encoders g1, g2: bijective RealNVP flows and the paper's non-invertible networks.

Bijections (Dinh et al., "Density estimation using Real NVP", ICLR 2017) expose
`forward(x)`, `inverse(y)` and `log_abs_det_jacobian(x)`; each is checked against autograd in
tests/test_encoders.py. Architectures and initialisations follow the paper's notebook
(docs/reference.md, experiments 1-5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from probe.errors import InputValueError, unknown_name


def truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """TF's truncated_normal initializer: N(0, std²) redrawn outside ±2 std."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def dense_stack(sizes: list[int], init_std: float | None = None) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last), biases zero.

    Weights are Glorot-uniform, U(±sqrt(6 / (fan_in + fan_out))), when `init_std` is None (the
    Keras `Dense` default the notebook uses for its MLP encoder and its critics), else a
    truncated normal of that std (the notebook's RealNVP shift nets and residual MLP, 1e-4).
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        if init_std is None:
            nn.init.xavier_uniform_(linear.weight)  # Keras Dense default (Glorot uniform)
        else:
            truncated_normal_(linear.weight, init_std)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------- bijections
class AdditiveCoupling(nn.Module):
    """y[:m] = x[:m];  y[m:] = x[m:] + t(x[:m])  (shift only: log|det J| = 0).

    `t` is an MLP with ReLU hidden layers, as tfp's `real_nvp_default_template(shift_only=True)`.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...], init_std: float):
        super().__init__()
        self.dim, self.masked = dim, dim // 2
        self.shift = dense_stack([self.masked, *hidden, dim - self.masked], init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, : self.masked], x[:, self.masked:]
        return torch.cat([a, b + self.shift(a)], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = y[:, : self.masked], y[:, self.masked:]
        return torch.cat([a, b - self.shift(a)], dim=1)

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0])


class AffineCoupling(nn.Module):
    """y[:m] = x[:m];  y[m:] = x[m:] * s(x[:m]) + t(x[:m]), s = softplus(·) + 1e-7.

    The paper's adversarial experiment (Fig. 1c) uses softplus instead of exp for the scale
    (notebook); s > 0 keeps the map invertible, log|det J| = Σ log s.
    """

    eps = 1e-7

    def __init__(self, dim: int, hidden: tuple[int, ...], init_std: float):
        super().__init__()
        self.dim, self.masked = dim, dim // 2
        self.net = dense_stack([self.masked, *hidden, 2 * (dim - self.masked)], init_std)

    def _scale_shift(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(a).chunk(2, dim=1)
        return F.softplus(raw_scale) + self.eps, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, : self.masked], x[:, self.masked:]
        scale, shift = self._scale_shift(a)
        return torch.cat([a, b * scale + shift], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = y[:, : self.masked], y[:, self.masked:]
        scale, shift = self._scale_shift(a)
        return torch.cat([a, (b - shift) / scale], dim=1)

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        scale, _ = self._scale_shift(x[:, : self.masked])
        return torch.log(scale).sum(dim=1)


class Permutation(nn.Module):
    """A fixed permutation of the features (log|det J| = 0), stored as a buffer."""

    def __init__(self, permutation: torch.Tensor):
        super().__init__()
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.permutation]

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, self.inverse_permutation]

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0])


class RealNVP(nn.Module):
    """A RealNVP flow: `n_couplings` couplings, each preceded by a fixed random permutation.

    Paper, Fig. 1a/b: 30 additive couplings, shift MLPs [512, 512], weights ~ truncated
    normal(std 1e-4), zero biases, so the flow starts near the identity. Input and output
    are (n, dim). Order: the notebook builds `tfb.Chain([coupling_1, permute_1, ...,
    coupling_30, permute_30])`, and a Chain applies its list right to left, so the input is
    permuted first and the last step is a coupling; `steps` holds them in the order applied.
    """

    invertible = True

    def __init__(self, dim: int, n_couplings: int = 30, hidden: tuple[int, ...] = (512, 512),
                 coupling: str = "additive", init_std: float = 1e-4, generator: torch.Generator | None = None):
        super().__init__()
        if dim < 2:
            raise InputValueError(f"RealNVP: dim is {dim}; a coupling flow needs at least 2 features.")
        classes = {"additive": AdditiveCoupling, "affine": AffineCoupling}
        if coupling not in classes:
            raise unknown_name("coupling", coupling, list(classes))
        steps: list[nn.Module] = []
        for _ in range(n_couplings):
            steps.append(Permutation(torch.randperm(dim, generator=generator)))
            steps.append(classes[coupling](dim, tuple(hidden), init_std))
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for step in reversed(self.steps):
            y = step.inverse(y)
        return y

    def forward_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for step in self.steps:
            log_det = log_det + step.log_abs_det_jacobian(x)
            x = step(x)
        return x, log_det

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_and_log_det(x)[1]


# ------------------------------------------------------------------ non-invertible encoders
class MLPEncoder(nn.Module):
    """MLP with ReLU hidden layers and a linear output. Paper, Fig. 3/4: 392→300→300→100."""

    invertible = False

    def __init__(self, dim: int, hidden: tuple[int, ...] = (300, 300), out: int = 100):
        super().__init__()
        self.net = dense_stack([dim, *hidden, out], init_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualMLPEncoder(nn.Module):
    """`n_layers` width-preserving dense layers with skips, x ← layer(x) + x.

    Paper, Fig. 2: 5 layers of width 392, ReLU in all but the last, weights std 1e-4, so the
    network starts at the identity and can become hard to invert during training.
    """

    invertible = False

    def __init__(self, dim: int, n_layers: int = 5, init_std: float = 1e-4):
        super().__init__()
        self.layers = nn.ModuleList(dense_stack([dim, dim], init_std)[0] for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(x)
            x = (h if i == last else torch.relu(h)) + x
        return x


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF/Keras "same" padding: total = max((ceil(n/s) - 1)·s + k - n, 0), extra on the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def layer_norm(h: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The notebook's LayerNorm on (n, C, H, W): per example over (C, H, W), then per channel.

    out = (h - mean) / (std + eps) * scale[c] + bias[c], with the population std (Keras
    `K.std`) and eps outside the square root. At init on MNIST the per-example variance after
    the second conv is 1e-4 to 8e-4, so where eps sits matters: torch's layer_norm with
    eps = 1e-3 under the root gives 0.3-0.66 of this value.
    """
    mean = h.mean(dim=(1, 2, 3), keepdim=True)
    var = (h - mean).square().mean(dim=(1, 2, 3), keepdim=True)
    # sqrt has an infinite slope at 0: a constant activation map (e.g. a blank input) would
    # turn the backward pass into NaN. Its normalised value is 0 whatever std is taken to be.
    positive = var > 0
    std = torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    return (h - mean) / (std + eps) * scale[:, None, None] + bias[:, None, None]


def _check_view_shape(view_shape: object, dim: int, caller: str) -> tuple[int, int, int]:
    """(H, W) or (H, W, C) of positive ints holding `dim` features; returned as (H, W, C)."""
    if not isinstance(view_shape, (tuple, list)) or len(view_shape) not in (2, 3):
        raise InputValueError(
            f"{caller}: view_shape is {view_shape!r}; (H, W) for one channel or (H, W, C) is required."
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in view_shape):
        raise InputValueError(f"{caller}: view_shape {tuple(view_shape)} must hold positive integers.")
    h, w, c = (*view_shape, 1) if len(view_shape) == 2 else view_shape
    if h * w * c != dim:
        raise InputValueError(
            f"{caller}: view_shape {tuple(view_shape)} holds {h * w * c} features, the input has {dim}; "
            "they must match (inputs are flattened in H x W x C order)."
        )
    return h, w, c


class ConvEncoder(nn.Module):
    """The paper's ConvNet (Fig. 4): view as an image; 5×5/2 "same" conv 64 + ReLU; 5×5/2
    "same" conv 128 + ReLU; the notebook's LayerNorm (`layer_norm`); global average pool;
    linear to `out`. 219,748 parameters on 14×28 MNIST halves. Glorot-uniform weights and
    zero biases throughout (Keras defaults).

    `view_shape` is (H, W) for one channel or (H, W, C); the flat input of H·W·C features is
    in H × W × C order (channels last, as TF's Reshape((H, W, C)) reads it).
    """

    invertible = False

    def __init__(self, dim: int, view_shape: tuple[int, ...], channels: tuple[int, int] = (64, 128),
                 kernel: int = 5, out: int = 100):
        super().__init__()
        self.image_shape = _check_view_shape(view_shape, dim, "ConvEncoder")
        self.view_shape, self.kernel = tuple(view_shape), kernel
        self.conv1 = nn.Conv2d(self.image_shape[2], channels[0], kernel, stride=2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, stride=2)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)  # fans k·k·C_in and k·k·C_out, as Keras Conv2D
            nn.init.zeros_(conv.bias)
        self.norm_scale = nn.Parameter(torch.ones(channels[1]))
        self.norm_bias = nn.Parameter(torch.zeros(channels[1]))
        self.head = dense_stack([channels[1], out], init_std=None)

    def _conv_same(self, conv: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(h.shape[2], self.kernel, 2)
        left, right = _same_padding(h.shape[3], self.kernel, 2)
        return conv(F.pad(h, (left, right, top, bottom)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], *self.image_shape).permute(0, 3, 1, 2)  # (n, C, H, W)
        h = torch.relu(self._conv_same(self.conv1, h))
        h = torch.relu(self._conv_same(self.conv2, h))
        h = layer_norm(h, self.norm_scale, self.norm_bias)
        return self.head(h.mean(dim=(2, 3)))


ENCODERS = {
    "realnvp": RealNVP,
    "mlp": MLPEncoder,
    "resmlp": ResidualMLPEncoder,
    "convnet": ConvEncoder,
}


def make_encoder(name: str, dim: int, *, view_shape: tuple[int, ...] | None = None,
                 generator: torch.Generator | None = None, **kwargs) -> nn.Module:
    """Build the encoder registered under `name` for an input of `dim` features."""
    if name not in ENCODERS:
        raise unknown_name("encoder", name, list(ENCODERS))
    if name == "realnvp":
        return RealNVP(dim, generator=generator, **kwargs)
    if name == "convnet":
        if view_shape is None:
            raise InputValueError("make_encoder: the convnet encoder needs view_shape=(H, W) or (H, W, C).")
        return ConvEncoder(dim, view_shape, **kwargs)
    return ENCODERS[name](dim, **kwargs)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
