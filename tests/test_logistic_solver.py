"""probe.analyzers.logistic: scikit-learn's optimum, autograd's derivatives, batched = one by one."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from probe.analyzers.logistic import LogisticFit, _Objective, fit_logistic


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: thread pools fighting slow tests 10x
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


def _blobs(n=400, d=5, n_classes=4, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.standard_normal((n_classes, d))[y] * spread + rng.standard_normal((n, d)) + 3.0  # off-centre on purpose
    return x, y


def _sklearn(x, y, C, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, tol=tol, max_iter=10_000).fit(x, y)


def _held_out(proba, y):
    return float(np.mean(proba.argmax(1) == y)), float(-np.mean(np.log(proba[np.arange(y.size), y])))


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_optimum_is_scikit_learns(C, n_classes):
    x, y = _blobs(n_classes=n_classes)
    model = _sklearn(x[:300], y[:300], C, tol=1e-10)
    fit = fit_logistic(x[:300], y[:300], C, tol=1e-10)
    assert fit.converged and fit.grad_max.max() <= 1e-10
    proba = fit.predict_proba(x[300:])
    np.testing.assert_allclose(proba, model.predict_proba(x[300:]), atol=1e-6)
    if n_classes == 2:  # scikit-learn's binomial w is our W_1 - W_0
        np.testing.assert_allclose(fit.coef[1] - fit.coef[0], model.coef_[0], rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(fit.coef.numpy(), model.coef_, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fit.intercept.numpy(), model.intercept_, rtol=1e-4, atol=1e-5)


def test_digits_at_scikit_learns_own_tolerance_agree_to_1e_3():
    images, labels = load_digits(return_X_y=True)
    scaler = StandardScaler().fit(images[:1400])
    x, tx = scaler.transform(images[:1400]), scaler.transform(images[1400:])
    for C in (0.01, 1.0):
        model = _sklearn(x, labels[:1400], C, tol=1e-6)
        fit = fit_logistic(x, labels[:1400], C, tol=1e-6)
        ours, theirs = _held_out(fit.predict_proba(tx), labels[1400:]), _held_out(model.predict_proba(tx), labels[1400:])
        assert fit.converged
        assert abs(ours[0] - theirs[0]) <= 1e-3 and abs(ours[1] - theirs[1]) <= 1e-3, (C, ours, theirs)


def test_gradient_and_hessian_vector_product_match_autograd():
    x, y = _blobs(n=60, d=3, n_classes=3)
    xt = torch.as_tensor(x)
    objective = _Objective(xt, torch.as_tensor(y), torch.tensor([0.7], dtype=torch.float64), 3)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 3, dtype=torch.float64, generator=gen)
    b = torch.randn(1, 3, dtype=torch.float64, generator=gen)

    def f(w, b):  # the scikit-learn objective, written out naively, divided by C n
        logits = xt @ w[0].T + b[0]
        loss = sum(-(logits[i, y[i]] - torch.logsumexp(logits[i], 0)) for i in range(len(y)))
        return (0.7 * loss + 0.5 * (w**2).sum()) / (0.7 * len(y))

    value, grad_w, grad_b, p = objective.value_grad(w, b)
    auto_w, auto_b = torch.autograd.grad(f(w.requires_grad_(), b.requires_grad_()), (w, b))
    assert value.item() == pytest.approx(f(w, b).item(), rel=1e-12)
    torch.testing.assert_close(grad_w, auto_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_b, auto_b, rtol=1e-10, atol=1e-12)
    vw, vb = torch.randn(1, 3, 3, dtype=torch.float64, generator=gen), torch.randn(1, 3, dtype=torch.float64, generator=gen)
    _, (hess_w, hess_b) = torch.autograd.functional.hvp(f, (w.detach(), b.detach()), (vw, vb))
    ours_w, ours_b = objective.hvp(p.to(torch.float32), vw, vb)  # float32 products by design
    torch.testing.assert_close(ours_w, hess_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_b, hess_b, rtol=1e-5, atol=1e-6)


def test_members_over_C_and_over_data_sets_equal_one_by_one_fits():
    x, y = _blobs()
    Cs = [0.01, 0.3, 10.0]
    together = fit_logistic(x, y, Cs, tol=1e-9)
    assert together.coef.shape == (3, 4, 5) and together.intercept.shape == (3, 4) and together.converged
    for i, C in enumerate(Cs):
        alone = fit_logistic(x, y, C, tol=1e-9)
        torch.testing.assert_close(together.coef[i], alone.coef, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(together.intercept[i], alone.intercept, rtol=1e-6, atol=1e-8)
    x2, y2 = _blobs(seed=1)
    stacked = fit_logistic(np.stack([x, x2]), np.stack([y, y2]), 1.0, tol=1e-9)
    for i, (xi, yi) in enumerate(((x, y), (x2, y2))):
        torch.testing.assert_close(stacked.coef[i], fit_logistic(xi, yi, 1.0, tol=1e-9).coef, rtol=1e-6, atol=1e-8)


def test_warm_start_from_the_optimum_takes_no_step_and_a_nearby_start_fewer():
    x, y = _blobs(spread=2.0)
    cold = fit_logistic(x, y, 1.0, tol=1e-8)
    assert fit_logistic(x, y, 1.0, tol=1e-8, init=cold).n_iter == 0
    near = fit_logistic(x, y, 2.0, tol=1e-8, init=(cold.coef, cold.intercept))
    far = fit_logistic(x, y, 2.0, tol=1e-8)
    assert near.n_hvp < far.n_hvp
    torch.testing.assert_close(near.coef, far.coef, rtol=1e-4, atol=1e-5)


def test_iteration_limit_reports_no_convergence():
    x, y = _blobs(spread=0.3)
    fit = fit_logistic(x, y, 100.0, tol=1e-12, max_iter=1)
    assert fit.n_iter == 1 and not fit.converged and fit.grad_max.max() > 1e-12
    assert isinstance(fit, LogisticFit)


def test_memory_layout_does_not_change_a_single_bit():
    x, y = _blobs()
    reference = fit_logistic(x, y, 1.0)
    for layout in (np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        again = fit_logistic(layout, y, 1.0)
        assert torch.equal(again.coef, reference.coef) and torch.equal(again.intercept, reference.intercept)


def test_mismatched_shapes_raise():
    x, y = _blobs()
    with pytest.raises(ValueError, match="do not match"):
        fit_logistic(x, y[:-1], 1.0)
    with pytest.raises(ValueError, match="do not match"):
        fit_logistic(np.stack([x, x]), np.stack([y, y]), [1.0, 2.0, 3.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_answer():
    x, y = _blobs()
    cpu, gpu = fit_logistic(x, y, 1.0, tol=1e-9), fit_logistic(x, y, 1.0, tol=1e-9, device="cuda")
    assert gpu.coef.device.type == "cuda"
    torch.testing.assert_close(gpu.coef.cpu(), cpu.coef, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ the exact class blocks

def _blocks_at_random_weights(n=50, d=3, n_classes=3, C=0.7, scale=1.0):
    """An objective at random weights (scaled: confident predictions) and its class blocks."""
    from probe.analyzers._curvature import ClassBlocks

    x, y = _blobs(n=n, d=d, n_classes=n_classes)
    objective = _Objective(torch.as_tensor(x), torch.as_tensor(y), torch.tensor([C], dtype=torch.float64), n_classes)
    gen = torch.Generator().manual_seed(1)
    w = scale * torch.randn(1, n_classes, d, dtype=torch.float64, generator=gen)
    b = scale * torch.randn(1, n_classes, dtype=torch.float64, generator=gen)
    *_, p = objective.value_grad(w, b)
    blocks = ClassBlocks(objective)
    assert blocks.update(p)
    return objective, w, b, blocks


def test_class_blocks_are_the_hessians_diagonal_blocks(monkeypatch):
    from probe.analyzers import _curvature

    monkeypatch.setattr(_curvature, "BLOCK_SLACK", 0.0)  # no row left out: exact
    objective, w, b, blocks = _blocks_at_random_weights()

    def f(wb):  # the objective of (W_k, b_k) for k = 0..2 in one vector, as _Objective defines it
        w_, b_ = wb[:, :3][None], wb[:, 3][None]
        return objective.value_grad(w_, b_)[0].sum()

    hessian = torch.autograd.functional.hessian(f, torch.cat([w[0], b[0][:, None]], dim=1))  # (3, 4, 3, 4)
    for k in range(3):
        torch.testing.assert_close(blocks.blocks[0, k], hessian[k, :, k, :], rtol=1e-5, atol=1e-6)


def test_class_blocks_leave_out_light_rows_within_their_slack_of_the_penalty():
    from probe.analyzers import _curvature

    # Confident predictions (weights scaled up): most rows have p (1 - p) ~ 0 for most classes.
    objective, w, b, pruned = _blocks_at_random_weights(n=400, d=6, n_classes=4, C=0.05, scale=4.0)
    exact = _curvature.ClassBlocks(objective)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_curvature, "BLOCK_SLACK", 0.0)
        assert exact.update(objective.value_grad(w, b)[3])
    difference = pruned.blocks[0] - exact.blocks[0]  # (K, d + 1, d + 1)
    alpha = float(objective.alpha[0])
    assert difference.abs().amax() > 1e-4 * alpha  # rows were left out, or this test proves nothing
    # The diagonal and the intercept's row are over all rows; the rest moves by at most slack * alpha.
    torch.testing.assert_close(torch.diagonal(pruned.blocks[0], dim1=1, dim2=2),
                               torch.diagonal(exact.blocks[0], dim1=1, dim2=2), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(pruned.blocks[0, :, -1], exact.blocks[0, :, -1], rtol=1e-5, atol=1e-9)
    assert float(torch.linalg.matrix_norm(difference, ord=2).max()) <= 2 * _curvature.BLOCK_SLACK * alpha


def test_the_symmetric_rank_k_update_is_the_product():
    from probe.analyzers import _curvature

    a = torch.randn(300, 7, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_curvature.gram(a), a.T @ a, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_fits_on_the_class_blocks_reach_scikit_learns_optimum(n_classes, monkeypatch):
    from probe.analyzers import logistic

    formed = []
    update = logistic.ClassBlocks.update
    monkeypatch.setattr(logistic.ClassBlocks, "update", lambda self, p: formed.append(1) or update(self, p))
    x, y = _blobs(n_classes=n_classes, spread=0.5)
    kronecker_only = fit_logistic(x[:300], y[:300], 1.0, tol=1e-10)
    assert not formed  # a small easy problem never needs them
    model = _sklearn(x[:300], y[:300], 1.0, tol=1e-10)
    for reform in (0, 10**9):  # re-formed at every iteration, or formed once
        monkeypatch.setattr(logistic, "SWITCH_CG", 0)
        monkeypatch.setattr(logistic, "REFORM_COST", reform)
        formed.clear()
        fit = fit_logistic(x[:300], y[:300], 1.0, tol=1e-10)
        assert fit.converged and formed
        np.testing.assert_allclose(fit.predict_proba(x[300:]), model.predict_proba(x[300:]), atol=1e-6)
        torch.testing.assert_close(fit.coef, kronecker_only.coef, rtol=1e-5, atol=1e-6)


def test_members_on_the_class_blocks_equal_one_by_one_fits(monkeypatch):
    from probe.analyzers import logistic

    monkeypatch.setattr(logistic, "SWITCH_CG", 0)
    x, y = _blobs()
    x2, y2 = _blobs(seed=1)
    together = fit_logistic(x, y, [0.01, 10.0], tol=1e-9)
    stacked = fit_logistic(np.stack([x, x2]), np.stack([y, y2]), 1.0, tol=1e-9)
    for i, C in enumerate((0.01, 10.0)):
        torch.testing.assert_close(together.coef[i], fit_logistic(x, y, C, tol=1e-9).coef, rtol=1e-6, atol=1e-8)
    for i, (xi, yi) in enumerate(((x, y), (x2, y2))):
        torch.testing.assert_close(stacked.coef[i], fit_logistic(xi, yi, 1.0, tol=1e-9).coef, rtol=1e-6, atol=1e-8)


def test_digits_on_the_class_blocks_agree_with_scikit_learn_to_1e_3(monkeypatch):
    from probe.analyzers import logistic

    monkeypatch.setattr(logistic, "SWITCH_CG", 0)
    images, labels = load_digits(return_X_y=True)
    scaler = StandardScaler().fit(images[:1400])
    x, tx = scaler.transform(images[:1400]), scaler.transform(images[1400:])
    for C in (0.01, 1.0):
        fit, model = fit_logistic(x, labels[:1400], C, tol=1e-6), _sklearn(x, labels[:1400], C, tol=1e-6)
        ours, theirs = _held_out(fit.predict_proba(tx), labels[1400:]), _held_out(model.predict_proba(tx), labels[1400:])
        assert fit.converged
        assert abs(ours[0] - theirs[0]) <= 1e-3 and abs(ours[1] - theirs[1]) <= 1e-3, (C, ours, theirs)


def test_a_start_off_the_class_mean_plane_converges_on_the_class_blocks(monkeypatch):
    from probe.analyzers import logistic

    monkeypatch.setattr(logistic, "SWITCH_CG", 0)
    x, y = _blobs()
    cold = fit_logistic(x, y, 1.0, tol=1e-9)
    shifted = fit_logistic(x, y, 1.0, tol=1e-9, init=(np.ones((4, 5)), np.full(4, 3.0)))  # sum_k W_k != 0
    assert shifted.converged
    torch.testing.assert_close(shifted.coef, cold.coef, rtol=1e-6, atol=1e-8)
