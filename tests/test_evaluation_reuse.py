"""Evaluator: V-information's C chosen once and each fit warm-started, still scikit-learn's value;
its state survives a checkpoint; g1's Jacobians measured for a whole ensemble at once."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from test_analyzers_v_information import _sklearn_v_information
from test_logistic_solver import _one_thread  # noqa: F401 - the same one-thread fixture, autouse here too

from probe import analyzers
from probe.analyzers import usable_information
from probe.critics import make_critic
from probe.data import PairData
from probe.encoders import MLPEncoder, RealNVP
from probe.estimators import get_estimator
from probe.training import TrainConfig, batched_bound, encode, seeded_init
from probe.training.evaluation import Evaluator, member_jacobian_records

CPU = torch.device("cpu")




def _data(n=600, n_test=200, d=12, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n + n_test, 4)).astype(np.float32)
    a = (z @ rng.standard_normal((4, d)) + 0.5 * rng.standard_normal((n + n_test, d))).astype(np.float32)
    b = (z @ rng.standard_normal((4, d)) + 0.5 * rng.standard_normal((n + n_test, d))).astype(np.float32)
    y = (z[:, 0] > 0).astype(np.int64) + 2 * (z[:, 1] > 0)
    return PairData(a[:n], b[:n], a[n:], b[n:], y[:n], y[n:], (1, d))


def _models(seed=0, d=12):
    with seeded_init(seed):
        return MLPEncoder(d, (16,), 6), MLPEncoder(d, (16,), 6), make_critic("bilinear", 6, 6)


@torch.no_grad()
def _train_a_little(modules, seed):
    """Stands in for the training between two evaluations: every weight moves a little."""
    gen = torch.Generator().manual_seed(seed)
    for module in modules:
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))




def _spy(monkeypatch, name: str) -> list:
    """The calls of usable_information.<name> from now on, as argument tuples."""
    calls, function = [], getattr(usable_information, name)

    def spied(*args):
        calls.append(args)
        return function(*args)

    monkeypatch.setattr(usable_information, name, spied)
    return calls


CONFIG = TrainConfig(estimator="infonce", steps=20, batch_size=50, eval_every=10)


def test_c_is_chosen_at_the_first_evaluation_and_later_fits_still_give_scikit_learns_value(monkeypatch):
    data, models = _data(), _models()
    searches, fits = _spy(monkeypatch, "_select_C"), _spy(monkeypatch, "_fit")
    evaluate = Evaluator(data, CONFIG, seed=0, device=CPU, reuse_fits=True)
    first = evaluate(*models, step=0)
    assert len(searches) == 1
    z, tz = encode(models[0], data.train1, CPU), encode(models[0], data.test1, CPU)
    alone = analyzers.v_information(z, data.train_labels, test_z=tz, test_y=data.test_labels, seed=0)
    assert first["v_information"] == float(alone.v_information)  # the first evaluation is v_information's own
    assert first["v_information_C"] == float(alone.attrs["C_selected"]) and first["v_information_C_step"] == 0.0
    records = [first]
    for step in (10, 20):
        _train_a_little(models, step)
        searches.clear()
        fits.clear()
        records.append(evaluate(*models, step=step))
        assert not searches  # C is not searched again
        assert len(fits) == 1 and isinstance(fits[0][-1], usable_information.WarmStart)  # the last fit's weights
        z, tz = encode(models[0], data.train1, CPU), encode(models[0], data.test1, CPU)
        C = records[-1]["v_information_C"]
        expected = _sklearn_v_information(z, data.train_labels, tz, data.test_labels, C)
        assert abs(records[-1]["v_information"] - expected) <= 1e-3, (step, records[-1]["v_information"], expected)
        cold = analyzers.v_information(z, data.train_labels, test_z=tz, test_y=data.test_labels, C=C)
        assert records[-1]["v_information"] == pytest.approx(float(cold.v_information), abs=1e-5)
        assert abs(records[-1]["probe_accuracy"] - float(analyzers.linear_probe(
            z, data.train_labels, tz, data.test_labels, protocol="paper").accuracy)) <= 1e-3
    assert [r["v_information_C"] for r in records] == [first["v_information_C"]] * 3
    assert [r["v_information_C_step"] for r in records] == [0.0, 0.0, 0.0]


def test_without_reuse_every_evaluation_searches_c():
    data, models = _data(), _models()
    evaluate = Evaluator(data, CONFIG, seed=0, device=CPU)
    steps = []
    for step in (0, 10):
        steps.append(evaluate(*models, step=step)["v_information_C_step"])
        _train_a_little(models, step)
    assert steps == [0.0, 10.0]


def test_a_warm_start_from_the_last_fit_takes_fewer_newton_iterations_to_the_same_value():
    data = _data()
    rng = np.random.default_rng(1)
    z, tz, y, ty = data.train1, data.test1, data.train_labels, data.test_labels
    before = usable_information.label_v_information(z, y, tz, ty, C=1.0)
    moved, tmoved = z + 0.05 * rng.standard_normal(z.shape), tz + 0.05 * rng.standard_normal(tz.shape)
    cold = usable_information.label_v_information(moved, y, tmoved, ty, C=1.0)
    warm = usable_information.label_v_information(moved, y, tmoved, ty, C=1.0, warm_start=before.warm_start)
    assert warm.converged and cold.converged and not warm.searched
    assert warm.n_iter < cold.n_iter
    assert warm.v_information == pytest.approx(cold.v_information, abs=1e-6)
    other_classes = usable_information.WarmStart(np.arange(7), before.warm_start.coef, before.warm_start.intercept)
    ignored = usable_information.label_v_information(moved, y, tmoved, ty, C=1.0, warm_start=other_classes)
    assert ignored.n_iter == cold.n_iter  # a start for other labels is not used


def test_a_checkpointed_evaluator_resumes_with_the_same_numbers():
    data = _data()
    config = TrainConfig(estimator="infonce", steps=20, batch_size=50, eval_every=10, noise_std=0.1)
    models = _models()
    whole = Evaluator(data, config, seed=3, device=CPU, reuse_fits=True)
    records = [whole(*models, step=0)]
    saved = io.BytesIO()
    torch.save(whole.state_dict(), saved)  # as a checkpoint holds it
    snapshot = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    for step in (10, 20):
        _train_a_little(models, step)
        records.append(whole(*models, step=step))
    for module, state in zip(models, snapshot):
        module.load_state_dict(state)
    resumed = Evaluator(data, config, seed=3, device=CPU, reuse_fits=True)
    saved.seek(0)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for step, expected in zip((10, 20), records[1:]):
        _train_a_little(models, step)
        again = resumed(*models, step=step)
        assert again.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(again[key], expected[key], err_msg=key)
    assert Evaluator(data, config, seed=3, device=CPU).state_dict() == {}


def test_the_held_out_bound_from_the_encodings_equals_batched_bound():
    data, (g1, g2, critic) = _data(), _models()
    record = Evaluator(data, CONFIG, seed=0, device=CPU)(g1, g2, critic)
    expected = batched_bound(g1, g2, critic, get_estimator("infonce"), data.test1, data.test2, 50, CPU)
    assert record["bound_test"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("noise_std", [0.0, 0.2])
def test_member_jacobian_records_equal_each_evaluators_own(noise_std):
    from probe.training.ensemble import Ensemble

    data = _data(d=8)
    config = TrainConfig(estimator="infonce", steps=20, batch_size=50, jacobian_inputs=6, analyzers=False,
                         noise_std=noise_std)
    members = []
    for seed in (0, 1, 2):
        with seeded_init(seed) as init:
            members.append((RealNVP(8, 2, (16,), "additive", 0.3, generator=init),
                            RealNVP(8, 2, (16,), "additive", 0.3, generator=init), make_critic("bilinear", 8, 8)))
    ensemble = Ensemble.from_modules(members)
    evaluators = [Evaluator(data, config, seed=s, device=CPU) for s in (0, 1, 2)]
    state = {k[3:]: v for k, v in {**ensemble.params, **ensemble.buffers}.items() if k.startswith("g1.")}
    batched = member_jacobian_records(ensemble.template.g1, state, evaluators)
    for m, (evaluate, entry) in enumerate(zip(evaluators, batched)):
        g1, g2, critic = ensemble.member_modules(m)
        own = evaluate(g1, g2, critic)
        given = evaluate(g1, g2, critic, jacobian=entry)
        for key in ("log_condition_number", "log_condition_number_input", "jacobian_rank_deficient",
                    "jacobian_shape", "quantile"):
            np.testing.assert_allclose(entry[key], own[key], rtol=1e-5, atol=1e-6, err_msg=key)
            np.testing.assert_array_equal(given[key], entry[key], err_msg=key)
    if noise_std:  # each seed's noisy inputs: the members' Jacobians are taken at different points
        assert not np.allclose(batched[0]["log_condition_number_input"], batched[1]["log_condition_number_input"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_fits_run_there_and_give_the_cpu_numbers():
    data = _data()
    cpu_models, gpu_models = _models(), [m.cuda() for m in _models()]
    cpu = Evaluator(data, CONFIG, seed=0, device=CPU, reuse_fits=True)(*cpu_models, step=0)
    gpu = Evaluator(data, CONFIG, seed=0, device=torch.device("cuda"), reuse_fits=True)(*gpu_models, step=0)
    assert gpu["v_information_C"] == cpu["v_information_C"]
    assert gpu["v_information"] == pytest.approx(cpu["v_information"], abs=1e-5)
