"""Each bound against a plain double loop, and against the closed-form MI of correlated Gaussians."""
import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch

from probe.data import correlated_gaussian, gaussian_mi
from probe.errors import InputTypeError, InputValueError, UnknownNameError
from probe.estimators import ESTIMATORS, get_estimator


def naive(name: str, s: list[list[float]], tau: float = 5.0) -> float:
    """The bound written out as a double loop in 60-digit decimal arithmetic (no overflow at
    e^1000, no cancellation), rounded to a float only at the end: +-inf when the true value is
    beyond the float64 range."""
    with localcontext() as ctx:
        ctx.prec = 60
        e = Decimal(1).exp()
        d = [[Decimal(v) for v in row] for row in s]
        k = len(d)
        diag = sum(d[i][i] for i in range(k)) / k
        off = [d[i][j] for i in range(k) for j in range(k) if i != j]
        mean_exp_off = sum(v.exp() for v in off) / len(off)
        if name == "infonce":
            value = sum(d[i][i] - sum(d[i][j].exp() for j in range(k)).ln() for i in range(k)) / k + Decimal(k).ln()
        elif name in ("nwj", "js"):  # js reports NWJ(S), as Poole et al.'s and Song & Ermon's code
            value = diag - mean_exp_off / e
        elif name == "dv":
            value = diag - mean_exp_off.ln()
        elif name in ("tuba", "js_shifted"):  # tuba with baseline 0 = NWJ(S + 1)
            value = 1 + diag - mean_exp_off
        elif name == "smile":
            t = Decimal(tau)
            clip = [min(max(v, -t), t) for v in off]
            value = diag - (sum(v.exp() for v in clip) / len(clip)).ln()
        else:
            raise AssertionError(name)
        return float(value)


def test_naive_reference_on_a_hand_computed_case():
    # S = [[1, 0], [0, 1]]: diag mean 1, both negatives 0, so mean e^{S_ij} over i != j is 1.
    s = [[1.0, 0.0], [0.0, 1.0]]
    assert naive("infonce", s) == pytest.approx(1 - math.log(math.e + 1) + math.log(2), abs=1e-15)
    assert naive("nwj", s) == pytest.approx(1 - 1 / math.e, abs=1e-15)
    assert naive("js", s) == pytest.approx(1 - 1 / math.e, abs=1e-15)
    assert naive("js_shifted", s) == naive("tuba", s) == pytest.approx(1.0, abs=1e-15)
    assert naive("dv", s) == pytest.approx(1.0, abs=1e-15)
    assert naive("smile", [[9.0, 7.0], [7.0, 9.0]]) == pytest.approx(9 - 5, abs=1e-15)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("k", [2, 3, 7])
def test_matches_naive_loop(name, k):
    g = torch.Generator().manual_seed(k)
    s = torch.randn(k, k, generator=g, dtype=torch.float64) * 3
    assert float(get_estimator(name)(s)) == pytest.approx(naive(name, s.tolist()), rel=1e-10, abs=1e-10)


def large_scores(kind: str, k: int = 8) -> torch.Tensor:
    """|S| ~ 1e3 score matrices whose bounds are all within the float32 range (float64 master copy)."""
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(k, k, generator=g, dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.float64)
    if kind == "confident":  # positives +1e3, negatives -1e3: a critic that separates perfectly
        return 1000 * (2 * eye - 1) + noise
    if kind == "positives_large":  # positives +1e3, negatives O(1)
        return 1000 * eye + noise
    if kind == "all_negative":  # every pair -1e3: the O(1) result sits far below the scores' ulp
        return -1000 + 0.5 * noise
    if kind == "mixed":  # spread over +-3e3, negatives capped at 60 so e^{S_ij} fits float32
        s = 1000 * noise
        return torch.where(eye.bool(), s, s.clamp(max=60.0))
    raise AssertionError(kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["confident", "positives_large", "all_negative", "mixed"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_large_scores_finite_and_correct(name, kind, dtype):
    s = large_scores(kind).to(dtype).requires_grad_(True)
    value = get_estimator(name)(s)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    s64 = s.detach().double().requires_grad_(True)
    get_estimator(name)(s64).backward()
    # Against the exact value for the exact (rounded) inputs, within what rounding each score
    # by one ulp can move it: eps * sum_ij |dI/dS_ij| |S_ij| (the bound's condition), x16.
    eps = torch.finfo(dtype).eps
    expected = naive(name, s64.detach().tolist())
    sensitivity = float((s64.grad.abs() * s64.detach().abs()).sum())
    assert float(value.detach()) == pytest.approx(expected, rel=16 * eps, abs=16 * eps * (sensitivity + 1))
    # The float32 gradient agrees with the float64 one (same estimator, same inputs).
    assert torch.allclose(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["nwj", "tuba", "js", "js_shifted"])
def test_overflowing_bound_is_minus_inf_not_nan(name):
    # Negatives at +300: NWJ is about -e^{299}, finite in float64 and beyond float32's range.
    s = torch.full((8, 8), 300.0, dtype=torch.float64) + torch.eye(8, dtype=torch.float64)
    expected = naive(name, s.tolist())
    assert math.isfinite(expected) and float(get_estimator(name)(s)) == pytest.approx(expected, rel=1e-12)
    s32 = s.float().requires_grad_(True)
    value = get_estimator(name)(s32)
    value.backward()
    assert float(value.detach()) == -math.inf and not torch.isnan(s32.grad).any()
    if name.startswith("js"):  # trained on the JS objective: its gradient stays finite
        assert torch.isfinite(s32.grad).all()


def test_infonce_capped_at_log_k():
    s = torch.eye(16) * 1e3
    assert float(get_estimator("infonce")(s)) == pytest.approx(math.log(16), abs=1e-6)


@pytest.mark.parametrize("name", ["js", "js_shifted", "smile"])
def test_js_gradient_is_the_jensen_shannon_objective(name):
    k = 5
    s = torch.randn(k, k, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    get_estimator(name)(s).backward()
    ref = s.detach().clone().requires_grad_(True)
    # f-GAN JS (Nowozin et al. 2016) as a loop: mean_i -softplus(-S_ii) - mean_{i != j} softplus(S_ij).
    softplus = torch.nn.functional.softplus
    joint = sum(-softplus(-ref[i, i]) for i in range(k)) / k
    marginal = sum(softplus(ref[i, j]) for i in range(k) for j in range(k) if i != j) / (k * (k - 1))
    (joint - marginal).backward()
    assert torch.allclose(s.grad, ref.grad, rtol=1e-12, atol=1e-14)


def gaussian_log_ratio(x: np.ndarray, y: np.ndarray, rho: float) -> np.ndarray:
    """log p(x_i, y_j) / (p(x_i) p(y_j)) for all pairs: the optimal critic, in closed form."""
    c = 1 - rho**2
    xx = (x**2).sum(1)[:, None]
    yy = (y**2).sum(1)[None, :]
    xy = x @ y.T
    d = x.shape[1]
    return -0.5 * d * np.log(c) - (rho**2 * xx - 2 * rho * xy + rho**2 * yy) / (2 * c)


@pytest.mark.parametrize("mi", [0.5, 2.0])
def test_closed_form_gaussian(mi):
    dim, k, batches = 4, 128, 200
    rho = float(np.sqrt(1 - np.exp(-2 * mi / dim)))
    assert gaussian_mi(rho, dim) == pytest.approx(mi)
    rng = np.random.default_rng(0)
    values = {name: [] for name in ("infonce", "nwj", "dv", "js", "js_shifted")}
    for _ in range(batches):
        x, y = correlated_gaussian(k, dim, rho, rng)
        s = torch.from_numpy(gaussian_log_ratio(x.astype(np.float64), y.astype(np.float64), rho))
        values["infonce"].append(float(get_estimator("infonce")(s)))
        values["nwj"].append(float(get_estimator("nwj")(s + 1.0)))  # NWJ's optimal critic is 1 + log ratio
        values["dv"].append(float(get_estimator("dv")(s)))
        for name in ("js", "js_shifted"):  # the log ratio is the JS-optimal critic
            values[name].append(float(get_estimator(name)(s)))
    mean = {name: float(np.mean(v)) for name, v in values.items()}
    sem = {name: float(np.std(v) / np.sqrt(batches)) for name, v in values.items()}
    # InfoNCE is a lower bound, tight when MI << log K (4.85 nats): within 0.1 nats at 0.5, 0.25 at 2.
    assert mean["infonce"] <= mi + 3 * sem["infonce"]
    assert mean["infonce"] >= mi - (0.1 if mi < 1 else 0.25)
    # NWJ with the optimal critic is unbiased; DV is close to it for large K.
    assert abs(mean["nwj"] - mi) < 4 * sem["nwj"] + 0.02
    assert abs(mean["dv"] - mi) < 0.1
    # At the JS optimum the published JS estimate (NWJ of the critic) is loose by exactly 1/e;
    # js_shifted (NWJ of the critic + 1) is unbiased.
    assert abs(mean["js"] - (mi - 1 / math.e)) < 4 * sem["js"] + 0.02
    assert abs(mean["js_shifted"] - mi) < 4 * sem["js_shifted"] + 0.02


@pytest.mark.parametrize("bad,error", [
    (torch.zeros(1, 1), InputValueError),
    (torch.zeros(3, 4), InputValueError),
    (torch.zeros(3), InputValueError),
    (np.zeros((3, 3)), InputTypeError),
    (torch.zeros(3, 3, dtype=torch.int64), InputTypeError),
])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_scores_are_named(name, bad, error):
    with pytest.raises(error, match=name):
        get_estimator(name)(bad)


def test_unknown_estimator_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'infonce'"):
        get_estimator("infoNCE")
