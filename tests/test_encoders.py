"""Every bijection against autograd (inverse round trip, log|det J| against slogdet); the
ConvNet's padding, channel order and LayerNorm against loops; initialisations against the
notebook's (Glorot-uniform or truncated normal, zero biases)."""
import math

import pytest
import torch

from probe.encoders import (
    AdditiveCoupling,
    AffineCoupling,
    ConvEncoder,
    MLPEncoder,
    Permutation,
    RealNVP,
    ResidualMLPEncoder,
    _same_padding,
    count_parameters,
    layer_norm,
    make_encoder,
)
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


def test_realnvp_permutes_before_each_coupling():
    # tfb.Chain([coupling_1, permute_1, ...]) applies its list right to left.
    flow = RealNVP(6, 3, (4,), "additive", 1e-4)
    kinds = [type(step) for step in flow.steps]
    assert kinds == [Permutation, AdditiveCoupling] * 3


def test_realnvp_generator_makes_permutations_deterministic():
    a = RealNVP(9, 3, (4,), generator=torch.Generator().manual_seed(7))
    b = RealNVP(9, 3, (4,), generator=torch.Generator().manual_seed(7))
    perms = lambda f: [s.permutation for s in f.steps if isinstance(s, Permutation)]
    assert all(torch.equal(p, q) for p, q in zip(perms(a), perms(b)))


# ------------------------------------------------------------------------------ ConvNet
def test_same_padding_matches_tf_formula_by_hand():
    # TF "same": out = ceil(n / s); total = max((out - 1)·s + k - n, 0), the odd one at the end.
    assert _same_padding(14, 5, 2) == (1, 2)  # out 7: 6·2 + 5 - 14 = 3
    assert _same_padding(28, 5, 2) == (1, 2)  # out 14: 13·2 + 5 - 28 = 3
    assert _same_padding(7, 5, 2) == (2, 2)  # out 4: 3·2 + 5 - 7 = 4
    assert _same_padding(3, 5, 2) == (2, 2)  # out 2: 2 + 5 - 3 = 4


def conv_outputs(net: ConvEncoder, x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [conv.register_forward_hook(lambda m, i, o: seen.append(o)) for conv in (net.conv1, net.conv2)]
    out = net(x)
    for hook in hooks:
        hook.remove()
    return [out, *seen]


def test_convnet_same_padding_shapes():
    # Same padding halves each side, rounding up: 14×28 -> 7×14 -> 4×7. Valid padding would
    # give 5×12 -> 1×4, and could not run at all on a 3×3 view (smaller than the 5×5 kernel).
    out, h1, h2 = conv_outputs(ConvEncoder(392, (14, 28)), torch.rand(3, 392))
    assert out.shape == (3, 100) and h1.shape == (3, 64, 7, 14) and h2.shape == (3, 128, 4, 7)
    out, h1, h2 = conv_outputs(ConvEncoder(9, (3, 3), channels=(4, 6), out=5), torch.rand(2, 9))
    assert out.shape == (2, 5) and h1.shape == (2, 4, 2, 2) and h2.shape == (2, 6, 1, 1)


def naive_tf_conv(flat: torch.Tensor, shape: tuple[int, int, int], conv: torch.nn.Conv2d) -> torch.Tensor:
    """TF Conv2D(stride 2, "same") on one flat H·W·C example read in H×W×C order, as loops."""
    h_in, w_in, c_in = shape
    k = conv.kernel_size[0]
    top, left = _same_padding(h_in, k, 2)[0], _same_padding(w_in, k, 2)[0]
    h_out, w_out = math.ceil(h_in / 2), math.ceil(w_in / 2)
    out = torch.zeros(conv.out_channels, h_out, w_out, dtype=flat.dtype)
    for o in range(conv.out_channels):
        for i in range(h_out):
            for j in range(w_out):
                total = conv.bias[o].item()
                for c in range(c_in):
                    for u in range(k):
                        for v in range(k):
                            r, q = 2 * i + u - top, 2 * j + v - left
                            if 0 <= r < h_in and 0 <= q < w_in:
                                total += conv.weight[o, c, u, v].item() * flat[(r * w_in + q) * c_in + c].item()
                out[o, i, j] = total
    return out


@pytest.mark.parametrize("view_shape", [(5, 6), (5, 6, 3)])
def test_first_conv_matches_a_tf_same_loop(view_shape):
    # Odd height and even width: the padding's extra row/column goes at the end, as in TF.
    torch.manual_seed(0)
    dim = math.prod(view_shape)
    net = ConvEncoder(dim, view_shape, channels=(3, 4), out=2).double()
    with torch.no_grad():
        net.conv1.bias.normal_()  # non-zero biases, so they are checked too
    x = torch.randn(2, dim, dtype=torch.float64)
    _, h1, _ = conv_outputs(net, x)
    shape3 = (*view_shape, 1)[:3]
    for n in range(2):
        assert torch.allclose(h1[n], naive_tf_conv(x[n], shape3, net.conv1), atol=1e-12)


def test_colour_convnet_reads_channels_last():
    # A first conv that copies input channel c to output channel c at the kernel centre: its
    # output must be channel c of the H×W×C image (sampled at stride 2, offset 1 by the padding).
    h, w, c = 4, 6, 3
    net = ConvEncoder(h * w * c, (h, w, c), channels=(3, 2), out=2)
    assert net.conv1.in_channels == 3
    with torch.no_grad():
        net.conv1.weight.zero_()
        for ch in range(c):
            net.conv1.weight[ch, ch, 2, 2] = 1.0
    x = torch.rand(2, h * w * c)
    out, h1, _ = conv_outputs(net, x)
    image = x.reshape(2, h, w, c)
    assert out.shape == (2, 2)
    for ch in range(c):
        assert torch.equal(h1[:, ch], image[:, 1::2, 1::2, ch])


def test_colour_convnet_parameter_count():
    # Only the first conv grows: 64·3·25 + 64 instead of 64·25 + 64.
    assert count_parameters(make_encoder("convnet", 14 * 28 * 3, view_shape=(14, 28, 3))) == 219_748 + 64 * 2 * 25
    assert count_parameters(ConvEncoder(392, (14, 28, 1))) == 219_748


def test_layer_norm_hand_computed():
    # One example, channels [0, 0] and [4, 4]: mean 2, population std 2, so (h - 2) / (2 + 1e-6).
    h = torch.tensor([[[[0.0, 0.0]], [[4.0, 4.0]]]], dtype=torch.float64)
    scale, bias = torch.tensor([2.0, 3.0], dtype=torch.float64), torch.tensor([0.5, -0.5], dtype=torch.float64)
    expected = torch.tensor([[[[0.5 - 4 / (2 + 1e-6)] * 2], [[-0.5 + 6 / (2 + 1e-6)] * 2]]], dtype=torch.float64)
    assert torch.allclose(layer_norm(h, scale, bias), expected, atol=1e-15)
    # eps is added to the std, not to the variance under the root: [0, 2e-6] has std 1e-6 and
    # maps to ±1e-6 / (1e-6 + 1e-6) = ±0.5 (eps 1e-6 under the root would give ±0.001).
    tiny = torch.tensor([[[[0.0, 2e-6]]]], dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    assert torch.allclose(layer_norm(tiny, one, zero), torch.tensor([[[[-0.5, 0.5]]]], dtype=torch.float64), atol=1e-12)


def test_layer_norm_is_scale_invariant_at_small_variance():
    # Variance 1e-4, the size after the second conv on MNIST at init: f(c·h) = f(h) up to
    # eps / std <= 2e-4 (torch's layer_norm with eps 1e-3 under the root scales by 0.3 here).
    g = torch.Generator().manual_seed(0)
    h = 0.01 * torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64)
    scale, bias = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    for c in (0.5, 7.0):
        assert torch.allclose(layer_norm(c * h, scale, bias), layer_norm(h, scale, bias), rtol=0, atol=1e-3)
    assert abs(float(layer_norm(h, scale.abs(), 0 * bias).std()) - float(scale.abs().square().mean().sqrt())) < 0.1


def test_convnet_at_init_is_scale_invariant():
    # Zero biases and ReLU make the convs positively homogeneous, so the LayerNorm makes the
    # whole encoder at init invariant to the input's scale, as the notebook's is.
    torch.manual_seed(0)
    net = ConvEncoder(392, (14, 28)).double()
    x = torch.rand(4, 392, dtype=torch.float64) * (torch.rand(4, 392, dtype=torch.float64) > 0.8)
    for c in (0.3, 3.0):
        assert torch.allclose(net(c * x), net(x), rtol=1e-3, atol=1e-4)


def test_layer_norm_of_a_constant_map_has_finite_gradient():
    h = torch.zeros(2, 3, 2, 2, requires_grad=True)
    scale = torch.ones(3, requires_grad=True)
    bias = torch.arange(3.0, requires_grad=True)
    out = layer_norm(h, scale, bias)
    assert torch.equal(out.detach(), bias.detach()[None, :, None, None].expand(2, 3, 2, 2))
    out.square().sum().backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(scale.grad).all()


# ---------------------------------------------------------------------------- initialisation
def check_glorot(linear_or_conv: torch.nn.Module, check_variance: bool = True) -> None:
    w = linear_or_conv.weight.detach()
    receptive = w[0, 0].numel() if w.ndim > 2 else 1
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
    limit = math.sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= limit
    if check_variance:  # U(±limit) has variance 2 / (fan_in + fan_out)
        assert float(w.var()) == pytest.approx(2 / (fan_in + fan_out), rel=0.05)
    assert torch.count_nonzero(linear_or_conv.bias) == 0


def test_mlp_and_convnet_are_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    mlp = MLPEncoder(392)
    for layer in mlp.net:
        if isinstance(layer, torch.nn.Linear):
            check_glorot(layer)
    conv = ConvEncoder(392, (14, 28))
    check_glorot(conv.conv1)  # fans 25·1 and 25·64, as Keras Conv2D
    check_glorot(conv.conv2)
    check_glorot(conv.head[0])
    assert torch.equal(conv.norm_scale, torch.ones(128)) and torch.count_nonzero(conv.norm_bias) == 0


def check_truncated_normal(linear: torch.nn.Linear, std: float) -> None:
    w = linear.weight.detach()
    assert w.abs().max() <= 2 * std
    # N(0, std²) cut at ±2 std has std · sqrt(1 - 4φ(2) / (2Φ(2) - 1)) = 0.8796 std.
    assert float(w.std()) == pytest.approx(0.8796 * std, rel=0.05)
    assert torch.count_nonzero(linear.bias) == 0


def test_flow_and_residual_mlp_use_truncated_normal_1e4_with_zero_biases():
    torch.manual_seed(0)
    flow = RealNVP(392, 2, (512, 512), "additive", 1e-4)
    for step in flow.steps:
        if isinstance(step, AdditiveCoupling):
            for layer in step.shift:
                if isinstance(layer, torch.nn.Linear):
                    check_truncated_normal(layer, 1e-4)
    for layer in RealNVP(392, 1, (512, 512), "affine", 1e-4).steps[1].net:
        if isinstance(layer, torch.nn.Linear):
            check_truncated_normal(layer, 1e-4)
    for layer in ResidualMLPEncoder(392, 2, 1e-4).layers:
        check_truncated_normal(layer, 1e-4)


def test_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'realnvp'"):
        make_encoder("realnvpp", 4)
    with pytest.raises(InputValueError, match="view_shape"):
        make_encoder("convnet", 392)
    with pytest.raises(UnknownNameError, match="coupling"):
        RealNVP(4, 1, (4,), "affin")
    with pytest.raises(InputValueError, match=r"holds 378 features, the input has 392"):
        ConvEncoder(392, (14, 27))
    with pytest.raises(InputValueError, match=r"\(H, W\) for one channel or \(H, W, C\)"):
        ConvEncoder(392, (14, 28, 1, 1))
    with pytest.raises(InputValueError, match="positive integers"):
        ConvEncoder(392, (14.0, 28))
