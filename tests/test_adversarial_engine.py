"""adversarial-encoder's own step loop: a cell (or a group of cells) killed mid-cell and rerun
gives exactly the numbers of an uninterrupted run; a member trained inside the vectorised group
gives what it gives alone; a member that turns non-finite is frozen while the others go on."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from interrupting import Killed, killed_at

import studies.adversarial_encoder as adversarial
from probe.data import PairData
from probe.results import load_dataset
from probe.runner import run_study
from probe.training.adversarial import AdversarialConfig, _Stack, train_adversarial, train_adversarial_members

STUDY = adversarial.STUDY
# The smoke preset: 20 encoder steps, evaluated at 0, 10, 20; checkpoints at 5, 10, 15.
BOTH_SOURCES = {"lr_sources": "notebook,paper_text"}


def run(study=STUDY, **kwargs):
    logs = []
    path = run_study(study, "smoke", progress=False, log=logs.append, checkpoint_every=5, seeds=3,
                     set_values=BOTH_SOURCES, **kwargs)
    return path, logs


def assert_same_numbers(a: xr.Dataset, b: xr.Dataset) -> None:
    """Every variable but the wall time, exactly (NaN where NaN)."""
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name != "wall_time":
            np.testing.assert_array_equal(a[name].values, b[name].transpose(*a[name].dims).values, err_msg=name)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Uninterrupted runs of the 6 smoke cells (3 seeds x 2 learning-rate sources): alone and grouped."""
    alone, _ = run(out=tmp_path_factory.mktemp("alone"), ensemble=False)
    grouped, logs = run(out=tmp_path_factory.mktemp("grouped"))
    assert "6 cells in 1 group(s) trained together" in "\n".join(logs)
    return load_dataset(alone), load_dataset(grouped)


def test_a_cell_killed_twice_resumes_to_identical_numbers(whole, tmp_path):
    with pytest.raises(Killed):
        run(killed_at(STUDY, 7), out=tmp_path, ensemble=False)      # last checkpoint: step 5
    ckpt = next(tmp_path.rglob("*.ckpt.pt"))
    assert torch.load(ckpt, weights_only=True)["step"] == 5
    with pytest.raises(Killed):
        run(killed_at(STUDY, 17), out=tmp_path, ensemble=False)     # resumes at 5, last checkpoint: 15
    assert torch.load(ckpt, weights_only=True)["step"] == 15
    path, logs = run(out=tmp_path, ensemble=False)
    assert "1 resuming mid-cell" in logs[0]
    assert not ckpt.exists()
    cells = {load_dataset(p).attrs["resumed_from_step"] for p in (path.parent / "cells").glob("*.nc")}
    assert cells == {0, 15}
    assert_same_numbers(load_dataset(path), whole[0])


def test_a_group_killed_twice_resumes_to_identical_numbers(whole, tmp_path):
    with pytest.raises(Killed):
        run(killed_at(STUDY, 7), out=tmp_path)
    ckpt = next(tmp_path.rglob("group-*.ckpt.pt"))
    assert torch.load(ckpt, weights_only=True)["step"] == 5
    with pytest.raises(Killed):
        run(killed_at(STUDY, 17), out=tmp_path)
    assert torch.load(ckpt, weights_only=True)["step"] == 15
    path, _ = run(out=tmp_path)
    assert not ckpt.exists()
    for cell in (path.parent / "cells").glob("*.nc"):
        attrs = load_dataset(cell).attrs
        assert attrs["resumed_from_step"] == 15 and attrs["trained_with_members"] == 6
    resumed = load_dataset(path)
    assert_same_numbers(resumed, whole[1])
    assert resumed.attrs["stream_seeds_json"] == whole[1].attrs["stream_seeds_json"] == whole[0].attrs["stream_seeds_json"]


def test_each_member_of_the_group_matches_its_cell_alone(whole):
    alone, grouped = whole
    assert (alone["status"] == "ok").all() and (grouped["status"] == "ok").all()
    for name in alone.data_vars:
        if name in ("wall_time", "status"):
            continue
        a, b = alone[name].values, grouped[name].transpose(*alone[name].dims).values
        if name == "probe_accuracy":  # a held-out example or two may flip between engines
            np.testing.assert_allclose(a, b, atol=2 / 450 + 1e-12, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
    # Each member is its own run, not a copy of member 0.
    loss = grouped["classifier_loss"].sel(lr_source="notebook").isel(step=-1).values
    assert len(set(loss.tolist())) == len(loss)


def _data(n=256, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n + 96)
    x = (rng.standard_normal((n + 96, d)) + 2.0 * np.eye(classes, d)[y]).astype(np.float32)
    return PairData(x[:n], x[:n], x[n:], x[n:], y[:n], y[n:], (1, d))


def test_a_non_finite_member_is_frozen_and_the_others_go_on():
    data = _data()
    settings = dataclasses.replace(adversarial.PRESETS["smoke"], jacobian_inputs=0)
    config = AdversarialConfig(1e-2, 1e-3, steps=8, batch_size=32, warmup_steps=5, classifier_steps=2,
                               eval_every=4, checkpoint_every=None)
    seeds = [0, 1, 2]

    def models(seed):
        flow, classifier = adversarial._models(settings, seed, data)
        if seed == 1:
            with torch.no_grad():
                classifier.weight[0, 0] = float("nan")  # the adversary's logits, then the encoder's loss, are NaN
        return flow, classifier

    def evaluate():
        return adversarial._Evaluation(settings, data, torch.device("cpu"))

    built = [models(s) for s in seeds]
    grouped = train_adversarial_members([f for f, _ in built], [c for _, c in built], data, [config] * 3, seeds,
                                        evaluators=[evaluate() for _ in seeds])
    for seed, result in zip(seeds, grouped):
        alone = train_adversarial(*models(seed), data, config, seed=seed, evaluate=evaluate())
        assert result.status == alone.status
        for name, (_, values) in alone.variables.items():
            if name != "wall_time":
                np.testing.assert_allclose(result.variables[name][1], values, rtol=1e-4, atol=1e-6, err_msg=name)
    assert [r.status for r in grouped] == ["ok", "non-finite encoder loss at step 1", "ok"]
    accuracy = grouped[1].variables["probe_accuracy"][1]
    assert np.isfinite(accuracy[0]) and np.isnan(accuracy[1:]).all()  # evaluated at 0, then never again
    assert np.isfinite(grouped[2].variables["probe_accuracy"][1]).all()


def test_stacked_flows_and_classifiers_compute_each_members_own_forward_and_gradient():
    data = _data()
    settings = dataclasses.replace(adversarial.PRESETS["smoke"], init_std=0.3)  # couplings far from the identity
    built = [adversarial._models(settings, s, data) for s in range(3)]
    flows, classifiers = (_Stack([b[i] for b in built], torch.device("cpu")) for i in (0, 1))
    x = torch.from_numpy(data.train1[:96]).view(3, 32, -1)
    logits = classifiers(flows(x))
    assert flows.native and classifiers.native
    alive = torch.tensor([True, False, True])
    grad = flows.gradient(adversarial.uniform_target_loss(logits), alive).clone()
    for m, (flow, classifier) in enumerate(built):
        own = classifier(flow(x[m]))
        torch.testing.assert_close(logits[m], own, rtol=1e-5, atol=1e-6)
        flow.zero_grad()
        adversarial.uniform_target_loss(own).backward()
        expected = torch.cat([p.grad.reshape(-1) for p in flow.parameters()])
        torch.testing.assert_close(grad[m], expected if alive[m] else torch.zeros_like(expected), rtol=1e-4, atol=1e-7)
    flows.native = classifiers.native = False  # the vmap fallback gives the same
    torch.testing.assert_close(classifiers(flows(x)), logits.detach(), rtol=1e-5, atol=1e-6)
