"""Each critic's score matrix against a plain loop S[i][j] = f(x_i, y_j); initialisations
against the notebook's Keras Dense defaults (Glorot-uniform weights, zero biases)."""
import math

import pytest
import torch

from probe.critics import CRITICS, make_critic
from probe.errors import InputValueError, UnknownNameError


def pairwise_loop(critic, x, y):
    rows = []
    for i in range(len(x)):
        row = []
        for j in range(len(y)):
            if isinstance(critic, CRITICS["concat"]):
                row.append(critic.net(torch.cat([x[i], y[j]])).squeeze())
            else:
                row.append(critic(x[i: i + 1], y[j: j + 1])[0, 0])
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("name", sorted(CRITICS))
def test_score_matrix_matches_loop(name):
    torch.manual_seed(0)
    dim_y = 5 if name == "inner_product" else 3
    critic = make_critic(name, 5, dim_y).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, dim_y, dtype=torch.float64)
    s = critic(x, y)
    assert s.shape == (6, 6)
    assert torch.allclose(s, pairwise_loop(critic, x, y), atol=1e-10)
    assert torch.allclose(critic.score_pairs(x, y), s.diagonal(), atol=1e-10)


def test_paper_sizes():
    assert make_critic("bilinear", 392, 392).weight.shape == (392, 392)
    sep = make_critic("separable", 100, 100)
    assert [m.out_features for m in sep.phi_x if hasattr(m, "out_features")] == [100, 100]
    concat = make_critic("concat", 100, 100)
    assert [m.out_features for m in concat.net if hasattr(m, "out_features")] == [200, 1]


def linears(critic):
    return [m for m in critic.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("name,sizes", [
    ("separable", [(100, 100), (100, 100)] * 2),  # phi_x and phi_y: 100 -> 100 -> 100
    ("concat", [(200, 200), (1, 200)]),  # [x, y] of 200 -> 200 -> 1
])
def test_mlp_critics_are_glorot_uniform_with_zero_biases(name, sizes):
    torch.manual_seed(0)
    critic = make_critic(name, 100, 100)
    layers = linears(critic)
    assert [tuple(layer.weight.shape) for layer in layers] == sizes
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        limit = math.sqrt(6 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert w.abs().max() <= limit
        assert torch.count_nonzero(layer.bias) == 0
        if w.numel() >= 10_000:  # U(±limit): variance 2 / (fan_in + fan_out); sample sd 0.9 %
            assert float(w.var()) == pytest.approx(2 / (fan_in + fan_out), rel=0.05)
        else:  # 200 weights: the sample variance is within 25 % (4 sd)
            assert float(w.var()) == pytest.approx(2 / (fan_in + fan_out), rel=0.25)


def test_bilinear_is_glorot_uniform():
    torch.manual_seed(0)
    w = make_critic("bilinear", 392, 100).weight.detach()
    limit = math.sqrt(6 / (392 + 100))
    assert w.abs().max() <= limit and float(w.var()) == pytest.approx(2 / 492, rel=0.05)


def test_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'bilinear'"):
        make_critic("bilinaer", 2, 2)
    with pytest.raises(InputValueError, match="widths 3 and 4"):
        make_critic("inner_product", 3, 4)
