"""train_members: a member trained inside a group gives the numbers train_pair gives it alone."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pair_data import latent_pairs

from probe.critics import make_critic
from probe.encoders import MLPEncoder, RealNVP
from probe.errors import InputValueError
from probe.results import CellResult
from probe.training import TrainConfig, seeded_init, train_pair
from probe.training.members import train_members


def max_abs_difference(a: CellResult, b: CellResult, skip: tuple[str, ...] = ()) -> float:
    """The largest |a - b| over the variables both results hold but `skip` and wall_time (NaN where
    both are NaN counts as 0; NaN in one only as inf)."""
    worst = 0.0
    for name in set(a.variables) & set(b.variables):
        if name == "wall_time" or name in skip:
            continue
        x, y = (np.asarray(r.variables[name][1], dtype=float) for r in (a, b))
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.where(both_nan, 0.0, np.abs(x - y))
        worst = max(worst, float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0.0)
    return worst




def _close(grouped, alone, n_test=128):
    """Float32 sums in another order drift by ~1e-4 over a few Adam steps; the probe may then flip
    a held-out example or two."""
    assert max_abs_difference(grouped, alone, skip=("probe_accuracy", "probe_cross_entropy")) < 2e-3
    acc = [np.asarray(r.variables["probe_accuracy"][1]) for r in (grouped, alone)]
    assert np.nanmax(np.abs(acc[0] - acc[1])) <= 2 / n_test + 1e-12


def _flows(seed, d):
    with seeded_init(seed) as init:
        return RealNVP(d, 2, (16,), "additive", 1e-2, generator=init), RealNVP(d, 2, (16,), "additive", 1e-2,
                                                                               generator=init), \
            make_critic("bilinear", d, d)


def _mlps(seed, d):
    with seeded_init(seed):
        return MLPEncoder(d, (16,), 6), MLPEncoder(d, (16,), 6), make_critic("separable", 6, 6)


CONFIG = TrainConfig(estimator="infonce", steps=12, batch_size=32, learning_rate=3e-3, eval_every=6,
                     analyzers=False, jacobian_inputs=0)


@pytest.mark.parametrize("build", [_flows, _mlps], ids=["realnvp", "mlp"])
def test_each_member_matches_train_pair(build):
    data = latent_pairs()
    configs = [CONFIG, dataclasses.replace(CONFIG, estimator="nwj", grad_clip=1.0),
               dataclasses.replace(CONFIG, learning_rate=1e-3, target=1.0)]
    seeds = [0, 1, 2]
    grouped = train_members([build(s, data.dim) for s in seeds], data, configs, seeds)
    for config, seed, result in zip(configs, seeds, grouped):
        alone = train_pair(*build(seed, data.dim), data, config, seed=seed)
        assert result.status == alone.status == "ok"
        _close(result, alone)
        assert np.isfinite(result.variables["probe_accuracy"][1]).all()


def test_a_diverging_member_is_frozen_and_the_others_go_on():
    data = latent_pairs()
    configs = [CONFIG, dataclasses.replace(CONFIG, estimator="nwj", learning_rate=1e6)]
    grouped = train_members([_mlps(s, data.dim) for s in (0, 1)], data, configs, [0, 1])
    alone = train_pair(*_mlps(0, data.dim), data, CONFIG, seed=0)
    assert grouped[0].status == "ok"
    _close(grouped[0], alone)
    assert grouped[1].status.startswith("non-finite"), grouped[1].status
    assert np.isnan(grouped[1].variables["probe_accuracy"][1][-1])


def test_members_of_one_group_share_the_step_loop():
    data = latent_pairs()
    with pytest.raises(InputValueError, match="differs from member 0 in steps"):
        train_members([_mlps(s, data.dim) for s in (0, 1)], data,
                      [CONFIG, dataclasses.replace(CONFIG, steps=6)], [0, 1])


def test_group_checkpoint_resumes_with_the_same_numbers(tmp_path):
    from probe.training.checkpoint import checkpointing

    data = latent_pairs()
    config = dataclasses.replace(CONFIG, checkpoint_every=4)
    build = lambda: [_mlps(s, data.dim) for s in (0, 1)]  # noqa: E731
    whole = train_members(build(), data, [config] * 2, [0, 1])
    path = tmp_path / "group.ckpt.pt"

    class Stop(Exception):
        pass

    def stop_at_8(step, _):
        if step == 8:
            raise Stop

    with pytest.raises(Stop), checkpointing(path, "run/group"):
        train_members(build(), data, [config] * 2, [0, 1], on_step=stop_at_8)
    assert path.exists()
    with checkpointing(path, "run/group") as plan:
        resumed = train_members(build(), data, [config] * 2, [0, 1])
    assert plan.resumed_from == 8
    for a, b in zip(whole, resumed):
        assert max_abs_difference(a, b) == 0.0
    torch.manual_seed(0)


@pytest.mark.parametrize("study_name", ["invertible-encoders", "critic-capacity", "encoder-architecture"])
def test_a_study_run_as_ensembles_matches_the_run_cell_by_cell(study_name, tmp_path):
    """Every study that builds members: the runner's groups give each cell's numbers, statuses and
    stream seeds as training it alone does."""
    from probe.results import load_dataset
    from probe.runner import run_study
    from studies import find_study

    study = find_study(study_name)
    runs = {flag: load_dataset(run_study(study, "smoke", seeds=2, out=tmp_path / str(flag), progress=False,
                                         ensemble=flag, set_values={"steps": "6"}, log=lambda m: None))
            for flag in (True, False)}
    together, alone = runs[True], runs[False]
    grouped = [load_dataset(p).attrs.get("trained_with_members", 1) for p in (tmp_path / "True").rglob("cells/*.nc")]
    assert max(grouped) >= 2, grouped  # the cells really were trained together
    assert (together["status"].values == alone["status"].values).all()
    for name in ("bound_test", "bound_train", "loss"):
        np.testing.assert_allclose(together[name].values, alone[name].values, rtol=2e-3, atol=2e-3, err_msg=name)
    diff = np.abs(together["probe_accuracy"].values - alone["probe_accuracy"].values)
    assert np.nanmax(diff) <= 0.02  # a held-out example or two may flip
    assert together.attrs["stream_seeds_json"] == alone.attrs["stream_seeds_json"]
