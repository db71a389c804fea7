"""Ensembles trained as one vectorised model: each member must follow the run it would make alone.

The reference is `train_pair`'s loop (torch.optim.Adam, clip_grad_norm_, add_view_noise, the
"batches" and "train-noise" streams), written out below and, once, `train_pair` itself.
"""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from probe.critics import make_critic
from probe.encoders import ConvEncoder, MLPEncoder, RealNVP, ResidualMLPEncoder
from probe.errors import InputTypeError, InputValueError, UnknownNameError
from probe.estimators import ESTIMATORS, get_estimator
from probe.training import BatchSampler, PairData, TrainConfig, add_view_noise, seeded_generator, stream_rng, train_pair
from probe.training import ensemble as ens_mod
from probe.training.ensemble import Ensemble, MemberBatches
from probe.training.ensemble_optim import BatchedAdam, EnsembleTrainer, batched_estimator, clip_rows_, member_grad_norms

K, STEPS = 16, 20

# name -> (data dim, factory(dim) -> (g1, g2, critic)); small, so each test takes well under a second.
ARCHITECTURES = {
    "flow-additive": (8, lambda d: (RealNVP(d, 2, (16,), "additive", 0.1), RealNVP(d, 2, (16,), "additive", 0.1),
                                    make_critic("bilinear", d, d))),
    "flow-affine": (8, lambda d: (RealNVP(d, 2, (16,), "affine", 0.1), RealNVP(d, 2, (16,), "affine", 0.1),
                                  make_critic("bilinear", d, d))),
    "mlp-separable": (8, lambda d: (MLPEncoder(d, (16,), 8), MLPEncoder(d, (16,), 8),
                                    make_critic("separable", 8, 8, hidden=(8,), out=8))),
    "mlp-concat": (8, lambda d: (MLPEncoder(d, (16,), 8), MLPEncoder(d, (16,), 8), make_critic("concat", 8, 8, hidden=(8,)))),
    "resmlp-bilinear": (8, lambda d: (ResidualMLPEncoder(d, 2, 0.1), ResidualMLPEncoder(d, 2, 0.1),
                                      make_critic("bilinear", d, d))),
    "convnet-bilinear": (32, lambda d: (ConvEncoder(d, (4, 8), (2, 4), out=8), ConvEncoder(d, (4, 8), (2, 4), out=8),
                                        make_critic("bilinear", 8, 8))),
    "critic-only": (1, lambda d: (nn.Identity(), nn.Identity(), make_critic("concat", 1, 1, hidden=(10, 10)))),
}
# Four members with different estimators, learning rates, targets, clipping and seeds. The targets
# stay out of reach within STEPS (InfoNCE <= log K = 2.77 < 4; NWJ starts near 0 > -5): where
# |I - t| crosses 0 the sign of its gradient rests on rounding and the runs part ways.
MIXED = {"estimators": ["infonce", "nwj", "infonce", "js"], "lrs": [1e-3, 3e-3, 1e-3, 2e-3],
         "targets": [None, -5.0, 4.0, None], "grad_clips": [None, 0.5, None, 1.0], "seeds": [10, 11, 12, 13]}
# The same without InfoNCE, whose invariance to row-constant scores leaves directions with no gradient.
NO_INFONCE = {**MIXED, "estimators": ["nwj", "js", "nwj", "js"]}


def members(arch: str, n: int, first_seed: int = 0) -> list:
    dim, factory = ARCHITECTURES[arch]
    out = []
    for i in range(n):
        torch.manual_seed(first_seed + i)
        out.append(factory(dim))
    return out


def data(dim: int, n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, dim), dtype=np.float32), rng.random((n, dim), dtype=np.float32)


def train_alone(triple, train1, train2, *, estimator, lr, target, grad_clip, seed, noise_std, coupled, steps=STEPS):
    """train_pair's update loop, without its evaluations. Returns the per-step losses and, per
    parameter, the largest |gradient| each element received."""
    g1, g2, critic = triple
    params = [p for m in triple for p in m.parameters() if p.requires_grad]
    optimizer, bound_fn = torch.optim.Adam(params, lr=lr), get_estimator(estimator)
    sampler = BatchSampler(len(train1), K, stream_rng(seed, "batches"))
    noise_gen = seeded_generator(seed, "train-noise")
    t1, t2, losses = torch.from_numpy(train1), torch.from_numpy(train2), []
    largest = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        idx = torch.from_numpy(next(sampler))
        x1, x2 = add_view_noise(t1[idx], t2[idx], noise_std, coupled, noise_gen)
        bound = bound_fn(critic(g1(x1), g2(x2)))
        loss = -bound if target is None else (bound - target).abs()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        largest = [torch.maximum(a, p.grad.abs()) for a, p in zip(largest, params)]
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return np.asarray(losses), largest


def train_ensemble(triples, train1, train2, settings, *, noise_std, coupled, steps=STEPS, engine="native"):
    ensemble = Ensemble.from_modules(triples, engine=engine)
    trainer = EnsembleTrainer(ensemble, settings["estimators"], settings["lrs"], settings["targets"],
                              settings["grad_clips"])
    batches = MemberBatches(train1, train2, settings["seeds"], K, noise_std=noise_std, noise_coupled=coupled)
    for _ in range(steps):
        trainer.step(*next(batches))
    return ensemble, trainer


def assert_same_parameters(a, b, **tol) -> None:
    for ma, mb in zip(a, b):
        for (name, pa), (_, pb) in zip(ma.named_parameters(), mb.named_parameters()):
            torch.testing.assert_close(pa, pb, msg=lambda m, name=name: f"{name}: {m}", **tol)


def assert_same_trained_parameters(a, b, largest_grad, lr, atol=1e-5, steps=STEPS) -> None:
    """As assert_same_parameters, but an element whose gradient was zero up to rounding (below 1e-6
    of the largest) is driven by that rounding: Adam steps it by ~lr whatever the gradient's size,
    so it only has to stay within Adam's bound on a step (3.2 lr) of the other run."""
    pa = [p for m in a for p in m.parameters()]
    pb = [p for m in b for p in m.parameters()]
    scale = max(float(g.max()) for g in largest_grad)
    for i, (x, y, g) in enumerate(zip(pa, pb, largest_grad)):
        noise = g <= 1e-6 * scale
        torch.testing.assert_close(x[~noise], y[~noise], rtol=1e-4, atol=atol, msg=lambda m, i=i: f"parameter {i}: {m}")
        assert float((x[noise] - y[noise]).abs().amax().detach()) <= 3.2 * lr * steps if noise.any() else True


def ensemble_gradients(trainer: EnsembleTrainer, x1, x2) -> list[torch.Tensor]:
    """Each member's raw gradient (before clipping) of its loss on this batch, (M, *shape) per parameter."""
    ens = trainer.ensemble
    loss = trainer.objective.losses(trainer.objective.bounds(ens.scores(x1, x2)))
    return list(torch.autograd.grad(loss.sum(), list(ens.params.values())))


def member_gradients(triple, x1, x2, estimator, target) -> list[torch.Tensor]:
    g1, g2, critic = triple
    bound = get_estimator(estimator)(critic(g1(x1), g2(x2)))
    loss = -bound if target is None else (bound - target).abs()
    return list(torch.autograd.grad(loss, [p for m in triple for p in m.parameters()]))


def pick(settings: dict, rows: list[int]) -> dict:
    return {k: [v[i] for i in rows] for k, v in settings.items()}


# ----------------------------------------------------------------------- the key test
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_member_trained_in_ensemble_matches_member_trained_alone(arch):
    """Four mixed members, STEPS steps in one ensemble vs each trained alone (train_pair's loop).

    At every step each member's gradient must be its solo gradient (same parameters, same batch)
    to rounding. Over the whole run NWJ and JS members match their solo runs to 1e-5. InfoNCE
    members match to O(lr) only: InfoNCE ignores a constant added to a row of scores, so some
    directions (g2's output bias, the concat critic's last bias) have a gradient that is pure
    rounding, which Adam turns into steps of ~lr. Any change of summation order moves them: the
    same solo loop run with 1 vs 2 threads ends up to 1e-2 apart (ConvNet; 2.3e-3 critic-only).
    """
    dim = ARCHITECTURES[arch][0]
    train1, train2 = data(dim)
    noise_std, coupled = (0.05, arch == "resmlp-bilinear") if arch != "critic-only" else (0.0, False)
    triples = members(arch, 4)
    alone = [copy.deepcopy(t) for t in triples]
    ensemble = Ensemble.from_modules(triples)
    trainer = EnsembleTrainer(ensemble, MIXED["estimators"], MIXED["lrs"], MIXED["targets"], MIXED["grad_clips"])
    batches = MemberBatches(train1, train2, MIXED["seeds"], K, noise_std=noise_std, noise_coupled=coupled)
    for step in range(STEPS):
        x1, x2 = next(batches)
        grads = ensemble_gradients(trainer, x1, x2) if step % 4 == 0 else []
        for m in range(4 if grads else 0):
            solo = member_gradients(ensemble.member_modules(m), x1[m], x2[m], MIXED["estimators"][m], MIXED["targets"][m])
            scale = max(float(g.abs().max()) for g in solo)
            for g, ref in zip(grads, solo):
                torch.testing.assert_close(g[m], ref, rtol=1e-4, atol=1e-5 * scale)
        trainer.step(x1, x2)
    losses = trainer.read_losses()
    assert losses.shape == (4, STEPS)
    assert trainer.statuses() == ["ok"] * 4
    for m in range(4):
        lr, infonce = MIXED["lrs"][m], MIXED["estimators"][m] == "infonce"
        reference, largest = train_alone(alone[m], train1, train2, estimator=MIXED["estimators"][m], lr=lr,
                                         target=MIXED["targets"][m], grad_clip=MIXED["grad_clips"][m],
                                         seed=MIXED["seeds"][m], noise_std=noise_std, coupled=coupled)
        np.testing.assert_allclose(losses[m], reference, rtol=1e-4, atol=1e-4 if infonce else 1e-5,
                                   err_msg=f"member {m} losses")
        assert_same_trained_parameters(ensemble.member_modules(m), alone[m], largest, lr,
                                       atol=5 * lr if infonce else 1e-5)
    # The members did learn (the comparison is not between untouched initial values).
    start = Ensemble.from_modules(members(arch, 4)).flat
    assert (ensemble.flat - start).abs().max() > 1e-3


def test_ensemble_member_matches_train_pair_itself():
    train1, train2 = data(8, n=64)
    rng = np.random.default_rng(1)
    test1, test2 = rng.random((32, 8), dtype=np.float32), rng.random((32, 8), dtype=np.float32)
    pair_data = PairData(train1, train2, test1, test2, np.arange(64) % 3, np.arange(32) % 3, (2, 4))
    settings = {"estimators": ["nwj", "js"], "lrs": [1e-3, 3e-3], "targets": [None, -5.0],
                "grad_clips": [1.0, 1.0], "seeds": [4, 5]}
    triples = members("mlp-separable", 2)
    alone = [copy.deepcopy(t) for t in triples]
    ensemble, trainer = train_ensemble(triples, train1, train2, settings, noise_std=0.05, coupled=False)
    losses = trainer.read_losses()
    for m in range(2):
        config = TrainConfig(estimator=settings["estimators"][m], steps=STEPS, batch_size=K,
                             learning_rate=settings["lrs"][m], eval_every=STEPS, target=settings["targets"][m],
                             grad_clip=1.0, noise_std=0.05, analyzers=False, checkpoint_every=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = train_pair(*alone[m], pair_data, config, seed=settings["seeds"][m])
        assert result.status == "ok"
        assert_same_parameters(ensemble.member_modules(m), alone[m], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(losses[m, -1], result.variables["loss"][1][-1], rtol=1e-4, atol=1e-5)


def test_vmap_engine_matches_native_engine():
    train1, train2 = data(8)
    a, _ = train_ensemble(members("flow-affine", 4), train1, train2, NO_INFONCE, noise_std=0.05, coupled=False)
    b, _ = train_ensemble(members("flow-affine", 4), train1, train2, NO_INFONCE, noise_std=0.05, coupled=False,
                          engine="vmap")
    torch.testing.assert_close(a.flat, b.flat, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- non-finite members
def test_diverging_member_is_frozen_and_the_others_are_unchanged():
    train1, train2 = data(8)
    settings = {**MIXED, "estimators": ["infonce", "nwj", "infonce", "nwj"], "lrs": [1e-3, 3e-3, 1e-2, 1e3],
                "grad_clips": [None, 0.5, None, None]}
    big, trainer = train_ensemble(members("mlp-separable", 4), train1, train2, settings, noise_std=0.05, coupled=False)
    small, _ = train_ensemble(members("mlp-separable", 3), train1, train2, pick(settings, [0, 1, 2]), noise_std=0.05,
                              coupled=False)
    assert trainer.alive.tolist() == [True, True, True, False]
    status = trainer.statuses()[3]
    assert status.startswith("non-finite") and int(status.rsplit(" ", 1)[1]) == int(trainer.first_bad_step[3])
    losses = trainer.read_losses()
    bad = int(trainer.first_bad_step[3])
    assert not np.isfinite(losses[3, bad]) and np.isnan(losses[3, bad + 1:]).all() and np.isfinite(losses[3, :bad]).all()
    torch.testing.assert_close(big.flat[:3], small.flat, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(big.flat[3]).all()


def test_member_frozen_at_the_step_its_loss_turns_nan():
    train1, train2 = data(8)
    ensemble = Ensemble.from_modules(members("flow-additive", 3))
    trainer = EnsembleTrainer(ensemble, ["infonce", "nwj", "infonce"], [1e-2, 1e-2, 1e-2])
    batches = MemberBatches(train1, train2, [0, 1, 2], K)
    snapshots = []
    for step in range(8):
        x1, x2 = next(batches)
        if step == 3:
            x1 = x1.clone()
            x1[1, 0, 0] = math.nan
        trainer.step(x1, x2)
        snapshots.append((ensemble.flat.clone(), trainer.optimizer.exp_avg.clone(), trainer.optimizer.exp_avg_sq.clone()))
    assert trainer.statuses() == ["ok", "non-finite loss at step 3", "ok"]
    assert trainer.first_bad_step.tolist() == [-1, 3, -1] and trainer.failure.tolist() == [0, 1, 0]
    for later in snapshots[3:]:  # after 3 updates member 1 never changes again, bit for bit
        for before, after in zip(snapshots[2], later):
            assert torch.equal(before[1], after[1])
    assert not torch.equal(snapshots[2][0][0], snapshots[-1][0][0])  # the others go on


def test_non_finite_gradient_with_finite_loss_freezes_the_member():
    class SqrtCritic(nn.Module):  # d sqrt(x)/dx at 0 is inf, the score itself is finite
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, x, y):
            return torch.sqrt(x * self.weight) @ y.T

    x = torch.rand(2, K, 1)
    x[1, 0, 0] = 0.0
    ensemble = Ensemble.from_modules([(nn.Identity(), nn.Identity(), SqrtCritic()) for _ in range(2)])
    trainer = EnsembleTrainer(ensemble, "infonce", 1e-2)
    trainer.step(x, torch.rand(2, K, 1))
    assert trainer.statuses() == ["ok", "non-finite gradient at step 0"]
    assert ensemble.flat[1].item() == 1.0 and ensemble.flat[0].item() != 1.0
    assert np.isfinite(trainer.read_losses()).all()


# --------------------------------------------------------------------------- components
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_batched_estimator_matches_each_member(name):
    gen = torch.Generator().manual_seed(0)
    scores = (torch.randn(3, 6, 6, generator=gen) * 2).requires_grad_()
    options = {"tau": 2.0} if name == "smile" else {}
    batched = batched_estimator(name, **options)(scores)
    grads, = torch.autograd.grad(batched.sum(), [scores])
    for m in range(3):
        single_scores = scores[m].detach().clone().requires_grad_()
        single = get_estimator(name)(single_scores, **options)
        grad, = torch.autograd.grad(single, [single_scores])
        torch.testing.assert_close(batched[m], single, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grads[m], grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("lrs", [[1e-3, 1e-2, 3e-4], [1e-3] * 3])
def test_batched_adam_matches_torch_adam_and_leaves_inactive_rows_unchanged(lrs):
    gen = torch.Generator().manual_seed(0)
    flat = torch.randn(3, 7, generator=gen)
    singles = [flat[m].clone().requires_grad_() for m in range(3)]
    optimizers = [torch.optim.Adam([p], lr=lr) for p, lr in zip(singles, lrs)]
    adam = BatchedAdam(flat, torch.tensor(lrs))
    frozen = None
    for step in range(12):
        grads = torch.randn(3, 7, generator=gen)
        active = torch.tensor([True, step < 5, True])
        if step == 5:
            frozen = (flat[1].clone(), adam.exp_avg[1].clone(), adam.exp_avg_sq[1].clone())
        if step >= 5:
            grads[1] = 0.0  # as the trainer passes a frozen member's gradient
        adam.step(grads.clone(), active)  # step overwrites its gradient buffer
        for m in (0, 2) if step >= 5 else range(3):
            singles[m].grad = grads[m].clone()
            optimizers[m].step()
    for m in (0, 2):
        torch.testing.assert_close(flat[m], singles[m].detach(), rtol=1e-6, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(frozen, (flat[1], adam.exp_avg[1], adam.exp_avg_sq[1])))


def test_clip_rows_matches_clip_grad_norm():
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 10, generator=gen) * torch.tensor([[0.1], [5.0], [5.0]])
    expected = []
    for row, max_norm in zip(grads, (1.0, 1.0, math.inf)):
        p = nn.Parameter(torch.zeros(10))
        p.grad = row.clone()
        torch.nn.utils.clip_grad_norm_([p], max_norm)
        expected.append(p.grad)
    halves = [grads[:, :4].reshape(3, 2, 2), grads[:, 4:]]
    torch.testing.assert_close(member_grad_norms(halves), grads.norm(dim=1))
    norms = clip_rows_(grads, torch.tensor([1.0, 1.0, math.inf]))
    torch.testing.assert_close(grads, torch.stack(expected))
    assert norms.shape == (3,)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("engine", ["native", "vmap"])
def test_scores_match_each_members_own_forward(arch, engine):
    triples = members(arch, 3)
    dim = ARCHITECTURES[arch][0]
    x1, x2 = torch.rand(3, K, dim), torch.rand(3, K, dim)
    scores = Ensemble.from_modules(triples, engine=engine).scores(x1, x2)
    for m, (g1, g2, critic) in enumerate(triples):
        torch.testing.assert_close(scores[m], critic(g1(x1[m]), g2(x2[m])), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loop_above", [0, 1 << 40], ids=["member-by-member", "batched"])
@pytest.mark.parametrize("arch", ["mlp-concat", "critic-only"])
def test_concat_critic_scores_and_gradients_match_each_member_on_both_paths(arch, loop_above, monkeypatch):
    """Large pair stages run member by member (CONCAT_LOOP_ABOVE), small ones batched: both are
    each member's own forward and backward."""
    monkeypatch.setattr(ens_mod, "CONCAT_LOOP_ABOVE", loop_above)
    triples = members(arch, 3)
    dim = ARCHITECTURES[arch][0]
    x1, x2 = torch.rand(3, K, dim), torch.rand(3, K, dim)
    ensemble = Ensemble.from_modules(triples)
    scores = ensemble.scores(x1, x2)
    scores.square().sum().backward()
    for m, (g1, g2, critic) in enumerate(triples):
        own = critic(g1(x1[m]), g2(x2[m]))
        torch.testing.assert_close(scores[m], own, rtol=1e-5, atol=1e-5)
        own.square().sum().backward()
        for name, param in critic.named_parameters():
            torch.testing.assert_close(ensemble.params[f"critic.{name}"].grad[m], param.grad, rtol=1e-4, atol=1e-5)


def test_a_batched_forward_that_drifted_from_the_module_falls_back_to_vmap(monkeypatch):
    monkeypatch.setitem(ens_mod._NATIVE, ens_mod.critics.BilinearCritic, lambda run, m, p, x, y: torch.bmm(x, y.mT))
    triples = members("flow-additive", 2)
    ensemble = Ensemble.from_modules(triples)
    x1, x2 = torch.rand(2, K, 8), torch.rand(2, K, 8)
    with pytest.warns(UserWarning, match="using engine='vmap'"):
        scores = ensemble.scores(x1, x2)
    assert ensemble.engine == "vmap"
    g1, g2, critic = triples[1]
    torch.testing.assert_close(scores[1], critic(g1(x1[1]), g2(x2[1])), rtol=1e-5, atol=1e-5)


def test_step_reads_nothing_back_to_the_host(monkeypatch):
    train1, train2 = data(8)
    ensemble = Ensemble.from_modules(members("mlp-concat", 3))
    trainer = EnsembleTrainer(ensemble, ["infonce", "nwj", "js"], 1e-3, [None, 1.0, None], [1.0, None, None])
    batches = MemberBatches(train1, train2, [0, 1, 2], K, noise_std=0.05)
    trainer.step(*next(batches))  # the first call checks the batched forward once, which reads values
    batch_list = [next(batches) for _ in range(3)]

    def refuse(*args, **kwargs):
        raise AssertionError("a value was read back to the host inside step()")

    for method in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    for x1, x2 in batch_list:
        trainer.step(x1, x2)
    monkeypatch.undo()
    assert trainer.read_losses().shape == (3, 4)


def test_member_modules_are_independent_copies():
    triples = members("flow-affine", 2)
    ensemble = Ensemble.from_modules(triples)
    g1, g2, critic = ensemble.member_modules(1)
    assert isinstance(g1, RealNVP) and isinstance(critic, nn.Module)
    x = torch.rand(5, 8)
    torch.testing.assert_close(g1(x), triples[1][0](x))
    torch.testing.assert_close(g1.inverse(g1(x)), x, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        next(g1.parameters()).add_(1.0)
    torch.testing.assert_close(ensemble.member_modules(1)[0](x), triples[1][0](x))


def test_losses_buffer_grows_and_read_resets(monkeypatch):
    monkeypatch.setattr(EnsembleTrainer, "LOSS_CHUNK", 4)
    ensemble = Ensemble.from_modules(members("critic-only", 2))
    trainer = EnsembleTrainer(ensemble, "infonce", 1e-3)
    x = torch.randn(2, K, 1)
    for _ in range(10):
        trainer.step(x, x)
    losses = trainer.read_losses()
    assert losses.shape == (2, 10) and np.isfinite(losses).all()
    trainer.step(x, x)
    assert trainer.read_losses().shape == (2, 1) and trainer.steps_done == 11


def test_state_dict_round_trip_resumes_exactly():
    train1, train2 = data(8)

    def run(split: bool) -> torch.Tensor:
        ensemble = Ensemble.from_modules(members("resmlp-bilinear", 2))
        trainer = EnsembleTrainer(ensemble, ["infonce", "nwj"], [1e-3, 1e-2], grad_clips=[1.0, None])
        batches = MemberBatches(train1, train2, [0, 1], K, noise_std=0.05)
        for step in range(10):
            if split and step == 5:  # a new process: fresh objects, then the saved state
                state = copy.deepcopy({"trainer": trainer.state_dict(), "batches": batches.state_dict()})
                ensemble = Ensemble.from_modules(members("resmlp-bilinear", 2, first_seed=50))
                trainer = EnsembleTrainer(ensemble, ["infonce", "nwj"], [1e-3, 1e-2], grad_clips=[1.0, None])
                trainer.load_state_dict(state["trainer"])
                batches = MemberBatches(train1, train2, [7, 8], K, noise_std=0.05)
                batches.load_state_dict(state["batches"])
            trainer.step(*next(batches))
        return ensemble.flat

    assert torch.equal(run(False), run(True))


# ------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors():
    triples = members("mlp-separable", 2)
    with pytest.raises(InputValueError, match=r"members\[1\] differs from members\[0\] in its parameters"):
        Ensemble.from_modules([triples[0], (MLPEncoder(8, (32,), 8), triples[1][1], triples[1][2])])
    with pytest.raises(InputValueError, match="in its module types"):
        Ensemble.from_modules([triples[0], (triples[1][0], triples[1][1], make_critic("bilinear", 8, 8))])
    with pytest.raises(InputTypeError, match="non-empty list"):
        Ensemble.from_modules([])
    with pytest.raises(InputTypeError, match=r"members\[0\] is not a \(g1, g2, critic\) triple"):
        Ensemble.from_modules([(triples[0][0], triples[0][1])])
    ensemble = Ensemble.from_modules(triples)
    with pytest.raises(UnknownNameError, match="Did you mean 'infonce'"):
        EnsembleTrainer(ensemble, "infoNCE", 1e-3)
    with pytest.raises(InputValueError, match="lrs has 3 value"):
        EnsembleTrainer(ensemble, "infonce", [1e-3] * 3)
    with pytest.raises(InputValueError, match=r"lrs\[1\] is -0.1; a positive finite number"):
        EnsembleTrainer(ensemble, "infonce", [1e-3, -0.1])
    with pytest.raises(InputValueError, match=r"targets\[0\] is nan"):
        EnsembleTrainer(ensemble, "infonce", 1e-3, targets=[math.nan, None])
    trainer = EnsembleTrainer(ensemble, "infonce", 1e-3)
    with pytest.raises(InputValueError, match=r"shape \(3, 16, 8\); \(M, K, d\) with M = 2"):
        trainer.step(torch.rand(3, K, 8), torch.rand(3, K, 8))
    with pytest.raises(InputValueError, match="torch.float64 on cpu; the ensemble is torch.float32"):
        trainer.step(torch.rand(2, K, 8, dtype=torch.float64), torch.rand(2, K, 8))
    with pytest.raises(InputValueError, match="must pair up"):
        trainer.step(torch.rand(2, K, 8), torch.rand(2, K + 1, 8))
    with pytest.raises(InputValueError, match=r"an integer in \[0, 2\)"):
        ensemble.member_modules(2)


# --------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ensemble_matches_cpu_without_host_syncs():
    train1, train2 = data(8)
    cpu, _ = train_ensemble(members("flow-affine", 4), train1, train2, MIXED, noise_std=0.05, coupled=False)
    ensemble = Ensemble.from_modules(members("flow-affine", 4), device="cuda")
    trainer = EnsembleTrainer(ensemble, MIXED["estimators"], MIXED["lrs"], MIXED["targets"], MIXED["grad_clips"])
    batches = MemberBatches(train1, train2, MIXED["seeds"], K, noise_std=0.05, device="cuda")
    trainer.step(*next(batches))
    batch_list = [next(batches) for _ in range(STEPS - 1)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x1, x2 in batch_list:
            trainer.step(x1, x2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.statuses() == ["ok"] * 4
    torch.testing.assert_close(ensemble.flat.cpu(), cpu.flat, rtol=1e-3, atol=1e-4)
