"""Each critic's score matrix against a plain loop S[i][j] = f(x_i, y_j)."""
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


def test_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'bilinear'"):
        make_critic("bilinaer", 2, 2)
    with pytest.raises(InputValueError, match="widths 3 and 4"):
        make_critic("inner_product", 3, 4)
