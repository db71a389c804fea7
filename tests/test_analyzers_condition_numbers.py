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


# ------------------------------------------------------------- vmap against a naive loop, batching

def _naive_singular_values(f, x: torch.Tensor) -> np.ndarray:
    """One torch.autograd.functional.jacobian per input, then its SVD in float64."""
    return np.stack([torch.linalg.svdvals(torch.autograd.functional.jacobian(lambda v: f(v[None])[0], row).double())
                     .numpy() for row in x])


def test_known_singular_values_of_a_linear_map():
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    sigma = np.array([8.0, 2.0, 0.5, 0.25])
    a = u @ np.diag(sigma) @ v[:4]  # 4 x 6 with singular values `sigma`
    ds = condition_numbers(_linear(a), rng.standard_normal((7, 6)), return_singular_values=True, batch_size=3)
    np.testing.assert_allclose(ds.singular_values.values, np.tile(sigma, (7, 1)), rtol=1e-12)
    np.testing.assert_allclose(ds.log_condition_number.values, np.log(32.0), rtol=1e-12)
    assert ds.attrs["method"].startswith("vmap(jacrev)")  # d_out < d_in: one pass per output


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_flow_matches_a_per_input_autograd_loop_whatever_the_batching(dtype, monkeypatch):
    from probe.analyzers import jacobian
    from probe.encoders import RealNVP

    torch.manual_seed(0)
    flow = RealNVP(6, n_couplings=3, hidden=(16, 16), coupling="affine", init_std=0.3).to(dtype)
    x = torch.randn(11, 6, dtype=dtype)
    expected = _naive_singular_values(flow, x)
    monkeypatch.setattr(jacobian, "SVD_BATCH", 4)  # several svdvals batches, the last one partial
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    for batch_size in (1, 4, 16):
        ds = condition_numbers(flow, x, batch_size=batch_size, return_singular_values=True)
        np.testing.assert_allclose(ds.singular_values.values, expected, rtol=rtol)


@pytest.mark.parametrize("shape", [(6, 3), (3, 6)])
def test_wide_and_tall_networks_use_the_cheaper_mode_and_match_the_loop(shape):
    d_in, d_out = shape
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(d_in, 8), nn.Tanh(), nn.Linear(8, d_out)).double()
    x = torch.randn(5, d_in, dtype=torch.float64)
    ds = condition_numbers(net, x, return_singular_values=True)
    assert ds.attrs["method"].startswith("vmap(jacrev)" if d_out <= d_in else "vmap(jacfwd)")
    np.testing.assert_allclose(ds.singular_values.values, _naive_singular_values(net, x), rtol=1e-10)


def test_a_non_finite_jacobian_gives_nan_not_a_lapack_error():
    ds = condition_numbers(lambda x: torch.sqrt(x), np.array([[1.0, 4.0], [0.0, 1.0]]))
    assert ds.log_condition_number.values[0] == pytest.approx(np.log(2.0))
    assert np.isnan(ds.log_condition_number.values[1])  # d sqrt / dx at 0 is inf


# ------------------------------------------------------------------ members of a stacked ensemble

def _ensemble(n_members: int, dim: int = 6):
    from probe.critics import make_critic
    from probe.encoders import RealNVP
    from probe.training.ensemble import Ensemble

    members = []
    for seed in range(n_members):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        members.append((RealNVP(dim, 2, (8,), "additive", 0.5, generator=gen),
                        RealNVP(dim, 2, (8,), "additive", 0.5, generator=gen), make_critic("bilinear", dim, dim)))
    ensemble = Ensemble.from_modules(members)
    state = {k[3:]: v for k, v in {**ensemble.params, **ensemble.buffers}.items() if k.startswith("g1.")}
    return ensemble, state


@pytest.mark.parametrize("per_member_inputs", [False, True])
def test_members_at_once_equal_each_member_alone(per_member_inputs):
    from probe.analyzers.jacobian import member_condition_numbers

    ensemble, state = _ensemble(3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 6) if per_member_inputs else (5, 6)).astype(np.float32)
    # 9 Jacobians a call: blocks of 3 members x 3 inputs, then 3 x 2
    ds = member_condition_numbers(ensemble.template.g1, state, x, batch_size=9, return_singular_values=True)
    assert ds.log_condition_number.dims == ("member", "sample") and ds.sizes["member"] == 3
    assert ds.log_condition_number_quantile.dims == ("member", "quantile")
    assert ds.attrs["method"].startswith("vmap over members")
    for m in range(3):
        g1 = ensemble.member_modules(m)[0]
        inputs = x[m] if per_member_inputs else x
        alone = condition_numbers(g1, inputs, return_singular_values=True)
        np.testing.assert_allclose(ds.singular_values.values[m], alone.singular_values.values, rtol=1e-5)
        np.testing.assert_allclose(ds.log_condition_number_quantile.values[m],
                                   alone.log_condition_number_quantile.values, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ds.singular_values.values[m],
                                   _naive_singular_values(g1, torch.from_numpy(inputs)), rtol=1e-4)


def test_members_vmap_cannot_trace_are_measured_one_by_one():
    from probe.analyzers.jacobian import member_condition_numbers

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(2, dtype=torch.float64))

        def forward(self, x):
            return x * self.scale if x.sum() > 0 else x * 2 * self.scale

    state = {"scale": torch.tensor([[1.0, 3.0], [1.0, 5.0]], dtype=torch.float64)}
    ds = member_condition_numbers(Branchy(), state, np.array([[1.0, 1.0], [-1.0, -1.0]]))
    assert ds.attrs["method"].startswith("per-sample jacrev")
    np.testing.assert_allclose(ds.log_condition_number.values, np.log([[3.0, 3.0], [5.0, 5.0]]), atol=1e-14)


def test_member_inputs_must_fit_the_members():
    from probe.analyzers.jacobian import member_condition_numbers

    ensemble, state = _ensemble(2)
    with pytest.raises(InputValueError, match="for 2 members"):
        member_condition_numbers(ensemble.template.g1, state, np.zeros((3, 4, 6)))
    with pytest.raises(InputTypeError, match="non-empty dict"):
        member_condition_numbers(ensemble.template.g1, {}, np.zeros((4, 6)))
