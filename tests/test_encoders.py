"""Every bijection against autograd: inverse round trip and log|det J| against slogdet."""
import pytest
import torch

from probe.encoders import (AdditiveCoupling, AffineCoupling, ConvEncoder, Permutation, RealNVP,
                            ResidualMLPEncoder, count_parameters, make_encoder)
from probe.errors import InputValueError, UnknownNameError

DIM = 7  # odd on purpose: the masked half and the transformed half differ in size


def bijections():
    g = torch.Generator().manual_seed(0)
    return {
        "additive": AdditiveCoupling(DIM, (16,), init_std=0.5),
        "affine": AffineCoupling(DIM, (16, 16), init_std=0.5),
        "permutation": Permutation(torch.randperm(DIM, generator=g)),
        "realnvp-additive": RealNVP(DIM, 4, (16,), "additive", init_std=0.5, generator=g),
        "realnvp-affine": RealNVP(DIM, 4, (16,), "affine", init_std=0.3, generator=g),
    }


@pytest.mark.parametrize("name", list(bijections()))
def test_inverse_round_trip(name):
    torch.manual_seed(1)
    f = bijections()[name].double()
    x = torch.randn(32, DIM, dtype=torch.float64)
    assert torch.allclose(f.inverse(f(x)), x, atol=1e-10)
    assert torch.allclose(f(f.inverse(x)), x, atol=1e-10)


@pytest.mark.parametrize("name", list(bijections()))
def test_log_det_matches_autograd(name):
    torch.manual_seed(2)
    f = bijections()[name].double()
    x = torch.randn(5, DIM, dtype=torch.float64)
    jac = torch.vmap(torch.func.jacrev(lambda v: f(v[None])[0]))(x)
    expected = torch.linalg.slogdet(jac).logabsdet
    assert torch.allclose(f.log_abs_det_jacobian(x), expected, atol=1e-9)
    if isinstance(f, RealNVP):
        y, log_det = f.forward_and_log_det(x)
        assert torch.allclose(y, f(x)) and torch.allclose(log_det, expected, atol=1e-9)


def test_paper_flow_starts_near_a_permutation():
    torch.manual_seed(3)
    flow = RealNVP(392, 30, (512, 512), "additive", 1e-4)
    x = torch.rand(16, 392)
    perm = torch.arange(392)
    for step in flow.steps:
        if isinstance(step, Permutation):
            perm = perm[step.permutation]
    assert (flow(x) - x[:, perm]).abs().max() < 1e-3


def test_residual_mlp_starts_at_identity():
    net = ResidualMLPEncoder(392, 5, 1e-4)
    x = torch.rand(8, 392)
    assert (net(x) - x).abs().max() < 1e-2


def test_paper_parameter_counts():
    assert count_parameters(make_encoder("mlp", 392)) == 238_300
    assert count_parameters(make_encoder("convnet", 392, view_shape=(14, 28))) == 219_748


def test_convnet_uses_tf_same_padding():
    net = ConvEncoder(392, (14, 28))
    assert net(torch.rand(3, 392)).shape == (3, 100)


def test_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'realnvp'"):
        make_encoder("realnvpp", 4)
    with pytest.raises(InputValueError, match="view_shape"):
        make_encoder("convnet", 392)
    with pytest.raises(UnknownNameError, match="coupling"):
        RealNVP(4, 1, (4,), "affin")
