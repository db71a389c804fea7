"""condition_numbers: known linear maps, a flow checked against autograd's slogdet, mode handling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probe.analyzers import condition_numbers
from probe.errors import InputTypeError, InputValueError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: thread pools fighting slow tests 10x
    yield
    torch.set_num_threads(previous)


def _linear(matrix: np.ndarray) -> nn.Linear:
    layer = nn.Linear(matrix.shape[1], matrix.shape[0], bias=True).double()
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(matrix))
    return layer


def test_diagonal_map_has_log_condition_number_ln_10():
    ds = condition_numbers(_linear(np.diag([1.0, 10.0])), np.random.default_rng(0).standard_normal((5, 2)))
    np.testing.assert_allclose(ds.log_condition_number.values, np.log(10), rtol=0, atol=1e-14)
    np.testing.assert_allclose(ds.log_abs_det.values, np.log(10), atol=1e-14)
    np.testing.assert_allclose(ds.log_condition_number_quantile.values, np.log(10), atol=1e-14)
    assert list(ds["quantile"].values) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)])
def test_rectangular_map_gives_its_singular_values(shape):
    a = np.random.default_rng(1).standard_normal(shape)
    sigma = np.linalg.svd(a, compute_uv=False)
    ds = condition_numbers(_linear(a), np.zeros((4, shape[1])), return_singular_values=True)
    assert ds.singular_values.dims == ("sample", "rank") and ds.sizes["rank"] == min(shape)
    np.testing.assert_allclose(ds.singular_values.values, np.tile(sigma, (4, 1)), rtol=1e-12)
    np.testing.assert_allclose(ds.log_condition_number.values, np.log(sigma[0] / sigma[-1]), rtol=1e-12)
    assert "log_abs_det" not in ds


class AffineCoupling(nn.Module):
    """y1 = x1, y2 = x2 * exp(s(x1)) + t(x1), then a fixed permutation (a RealNVP block)."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.half = dim // 2
        self.net = nn.Sequential(nn.Linear(self.half, 8), nn.Tanh(), nn.Linear(8, 2 * (dim - self.half)))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.5
        self.register_buffer("perm", torch.randperm(dim, generator=gen))

    def forward(self, x):
        x1, x2 = x[:, : self.half], x[:, self.half:]
        s, t = self.net(x1).chunk(2, dim=1)
        return torch.cat([x1, x2 * torch.exp(s) + t], dim=1)[:, self.perm]


def test_flow_log_abs_det_equals_slogdet_of_the_autograd_jacobian():
    flow = nn.Sequential(*[AffineCoupling(4, seed) for seed in range(3)]).double()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ds = condition_numbers(flow, x)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0], x[i])
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert ds.log_abs_det.values[i] == pytest.approx(logdet.item(), abs=1e-10)
        sigma = torch.linalg.svdvals(jac)
        assert ds.log_condition_number.values[i] == pytest.approx(torch.log(sigma[0] / sigma[-1]).item(), abs=1e-10)


def test_modes_are_restored_and_parameters_get_no_gradient():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 3))
    model.train()
    model[2].eval()
    before = [m.training for m in model.modules()]
    a = condition_numbers(model, np.ones((4, 3), dtype=np.float32))
    b = condition_numbers(model, np.ones((4, 3), dtype=np.float32))
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(a.log_condition_number.values, b.log_condition_number.values)  # dropout was off


def test_encoders_vmap_cannot_trace_fall_back_to_per_sample_jacrev():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x * torch.tensor([1.0, 5.0], dtype=x.dtype)

    ds = condition_numbers(Branchy(), np.array([[1.0, 1.0], [-1.0, -1.0]]))
    assert ds.attrs["method"].startswith("per-sample jacrev")
    np.testing.assert_allclose(ds.log_condition_number.values, [0.0, np.log(5)], atol=1e-14)


def test_singular_jacobian_is_recorded_as_inf_with_a_flag():
    ds = condition_numbers(lambda x: x * torch.tensor([1.0, 0.0], dtype=x.dtype), np.ones((3, 2)))
    assert np.isposinf(ds.log_condition_number.values).all()
    assert np.isposinf(ds.log_condition_number_quantile.values).all()
    assert ds.rank_deficient.values.tolist() == [1, 1, 1] and ds.attrs["n_rank_deficient"] == 3
    assert "3 of 3 Jacobians" in ds.attrs["warning"]
    assert np.isneginf(ds.log_abs_det.values).all()


def test_quantiles_mix_finite_and_infinite_values_without_nan():
    scale = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # rows 0 regular, 1 singular
    ds = condition_numbers(lambda x: x * scale[(x[:, :1] > 0).long().squeeze(1)], np.array([[-1.0, 0.0], [1.0, 0.0]]),
                           quantiles=(0.0, 0.5, 1.0))
    assert ds.log_condition_number.values.tolist() == [0.0, np.inf]
    assert ds.log_condition_number_quantile.values.tolist() == [0.0, np.inf, np.inf]


def test_max_samples_measures_a_seeded_subset():
    x = np.random.default_rng(2).standard_normal((50, 2))
    ds = condition_numbers(_linear(np.eye(2)), x, max_samples=8, seed=4)
    assert ds.sizes["sample"] == 8 and np.all(np.diff(ds["sample"].values) > 0)
    xr_again = condition_numbers(_linear(np.eye(2)), x, max_samples=8, seed=4)
    assert ds["sample"].values.tolist() == xr_again["sample"].values.tolist()


def test_errors_name_the_problem():
    x = np.ones((3, 2))
    with pytest.raises(InputTypeError, match="encoder is a str"):
        condition_numbers("resnet", x)
    with pytest.raises(InputValueError, match=r"maps inputs of shape \(3, 2\) to shape \(3, 2, 1\)"):
        condition_numbers(lambda v: v[..., None], x)
    with pytest.raises(InputTypeError, match="returned a ndarray"):
        condition_numbers(lambda v: v.numpy(), x)
    with pytest.raises(InputValueError, match="every level must lie in"):
        condition_numbers(_linear(np.eye(2)), x, quantiles=(0.5, 2.0))
    with pytest.raises(InputValueError, match="encoder failed"):
        condition_numbers(_linear(np.eye(3)), x)
