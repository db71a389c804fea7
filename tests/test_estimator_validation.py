"""studies/estimator_validation.py: the staircase against its closed form, the per-level bias and
sd against a naive loop, the smoke preset end to end (no CLI), the markdown table; its cells
trained together give each cell's numbers alone, and a run killed mid-cell resumes exactly."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr
from interrupting import Killed, killed_at

import studies.estimator_validation as ev
from probe.data import correlated_gaussian, gaussian_mi
from probe.errors import InputValueError, UnknownNameError
from probe.results import load_dataset
from probe.runner import run_study
from studies import find_study

SMOKE = ev.PRESETS["smoke"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = run_study(find_study("estimator-validation"), "smoke", out=tmp_path_factory.mktemp("runs"),
                     progress=False, log=lambda m: None)
    return path, load_dataset(path)


def test_staircase_is_the_closed_form():
    settings = dataclasses.replace(SMOKE, steps=41, data_dims=(1, 5, 20))
    data = ev.staircase(settings)
    assert list(data.boundaries) == [0, 20, 41]
    assert list(data.level_of(np.array([0, 19, 20, 40]))) == [0, 0, 1, 1]
    for dim, rhos in data.rhos.items():
        assert [gaussian_mi(float(r), dim) for r in rhos] == pytest.approx(list(settings.mi_levels), rel=1e-9)


def test_level_stats_match_a_naive_loop():
    settings = dataclasses.replace(SMOKE, steps=40, mi_levels=(2.0, 6.0), window_fraction=0.25)
    data = ev.staircase(settings)
    estimates = np.random.default_rng(0).normal(size=40) + np.repeat([1.5, 4.0], 20)
    mean, sd = ev._level_stats(settings, data, estimates)
    for i, (_lo, hi) in enumerate([(0, 20), (20, 40)]):
        window = [estimates[t] for t in range(hi - 5, hi)]  # the last quarter of 20 steps
        m = sum(window) / len(window)
        assert mean[i] == pytest.approx(m)
        assert sd[i] == pytest.approx(math.sqrt(sum((w - m) ** 2 for w in window) / (len(window) - 1)))
    estimates[37] = np.nan  # a run that stopped inside the last window: that level has no number
    mean, sd = ev._level_stats(settings, data, estimates)
    assert np.isfinite(mean[0]) and np.isnan(mean[1]) and np.isnan(sd[1])


@pytest.mark.parametrize("name", ev.TRANSFORMS)
def test_transforms_are_bijections_of_y(name):
    transform = ev.TRANSFORMS[name]
    y = torch.randn(64, 3, dtype=torch.float64) * 3
    torch.testing.assert_close(transform.inverse(transform.forward(y)), y)
    line = torch.linspace(-4, 4, 101, dtype=torch.float64)[:, None]
    assert (torch.diff(transform.forward(line)[:, 0]) > 0).all()  # elementwise and increasing


def test_optimal_critic_matches_a_naive_loop():
    from scipy.stats import norm

    rho, rng = 0.7, np.random.default_rng(0)
    x, y = (torch.from_numpy(a) for a in correlated_gaussian(5, 3, rho, rng))
    critic = ev.OptimalCritic(ev.TRANSFORMS["cubic"], offset=0.0)
    critic.rho = rho
    scores = critic(x, y ** 3)
    s = math.sqrt(1 - rho ** 2)
    for i in range(5):
        for j in range(5):
            expected = sum(norm.logpdf(float(y[j, k]), rho * float(x[i, k]), s) - norm.logpdf(float(y[j, k]))
                           for k in range(3))
            assert float(scores[i, j]) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_optimal_critic_recovers_the_closed_form():
    # With the true log density ratio, DV and NWJ (at 1 + log ratio) are tight in expectation and
    # InfoNCE is capped at log K: the data and the estimators agree with the closed form.
    from probe.estimators import dv, infonce, nwj

    k, dim, mi, rng = 64, 5, 2.0, np.random.default_rng(1)
    rho = ev.staircase(dataclasses.replace(SMOKE, data_dims=(dim,), mi_levels=(mi,))).rhos[dim][0]
    values = {"dv": [], "nwj": [], "infonce": []}
    for name, fn, offset in (("dv", dv, 0.0), ("nwj", nwj, 1.0), ("infonce", infonce, 0.0)):
        critic = ev.OptimalCritic(ev.TRANSFORMS["identity"], offset=offset)
        critic.rho = rho
        for _ in range(100):
            x, y = (torch.from_numpy(a) for a in correlated_gaussian(k, dim, rho, rng))
            values[name].append(float(fn(critic(x, y))))
    assert np.mean(values["dv"]) == pytest.approx(mi, abs=0.1)
    assert np.mean(values["nwj"]) == pytest.approx(mi, abs=0.1)
    assert mi - 0.4 < np.mean(values["infonce"]) < mi and max(values["infonce"]) <= math.log(k)


def test_smoke_results_layout(smoke):
    _, ds = smoke
    dims = ("estimator", "critic", "transform", "data_dim", "seed")
    assert ds["estimate"].dims == dims + ("step",)
    assert ds["bias"].dims == dims + ("mi_level",)
    assert sorted(ds["estimator"].values) == sorted(SMOKE.estimators)
    assert list(ds["mi_level"].values) == list(SMOKE.mi_levels)
    for name in ("estimate", "estimate_smoothed", "true_mi", "infonce_cap", "estimate_mean", "bias", "estimate_sd",
                 "optimal_critic_estimate", "optimal_critic_bias", "optimal_critic_estimate_sd"):
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"] == "nats", name
    status = ds["status"].squeeze(["data_dim", "seed"])
    assert (status.sel(estimator="infonce") == "ok").all()
    # NWJ's e^f on heavy-tailed scores (y³) overflows even float64 at once, for the bilinear critic
    # and, at the notebook's Glorot init (scores about 8x wider than torch's default gave), for the
    # separable one: the cell is recorded as failed, its values are NaN from that step on, and the
    # sweep goes on. On y itself every cell trains.
    for critic in ("bilinear", "separable"):
        failed = str(status.sel(estimator="nwj", critic=critic, transform="cubic").values)
        assert failed.startswith("non-finite estimate at step"), (critic, failed)
    assert (status.sel(transform="identity") == "ok").all()
    assert ds.attrs["dataset"] == "correlated-gaussian" and len(ds.attrs["dataset_sha256"]) == 64
    assert ds.attrs["eval_batch_size"] == SMOKE.batch_size


def test_smoke_truth_cap_and_bias(smoke):
    _, ds = smoke
    steps = ds["step"].values
    # 40 steps over 2 levels: the truth is 2 nats before step 20 and 6 nats from it on.
    assert (ds["true_mi"].isel(estimator=0, critic=0, transform=0, data_dim=0, seed=0).values
            == np.where(steps < 20, 2.0, 6.0)).all()
    assert np.allclose(ds["infonce_cap"], math.log(SMOKE.batch_size))
    # InfoNCE can never exceed log K on any batch.
    assert float(ds["estimate"].sel(estimator="infonce").max()) <= math.log(SMOKE.batch_size) + 1e-9
    np.testing.assert_allclose(ds["bias"], ds["estimate_mean"] - ds["mi_level"])
    ok = ds["estimate_sd"].where(ds["status"] == "ok")
    assert np.isfinite(ok.sel(estimator="infonce")).all() and (ok.fillna(0) >= 0).all()
    assert np.isnan(ds["bias"].sel(estimator="nwj", critic="bilinear", transform="cubic")).all()


def test_optimal_critic_is_blind_to_the_bijection(smoke):
    # Same batches, y or y³: the closed-form critic undoes the bijection, so its estimates agree;
    # and they do not depend on which critic the cell trains.
    _, ds = smoke
    optimal = ds["optimal_critic_estimate"].sel(critic="separable", estimator="infonce")  # NWJ·cubic fails at once
    np.testing.assert_allclose(optimal.sel(transform="cubic"), optimal.sel(transform="identity"), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(optimal, ds["optimal_critic_estimate"].sel(critic="bilinear", estimator="infonce"))


def test_same_seed_same_numbers():
    data = ev.staircase(SMOKE)
    ids = {"estimator": "nwj", "critic": "separable", "transform": "cubic", "data_dim": 5}
    a = ev.run_cell(SMOKE, ids, 0, data, torch.device("cpu"))
    b = ev.run_cell(SMOKE, ids, 0, data, torch.device("cpu"))
    np.testing.assert_array_equal(a.variables["estimate"][1], b.variables["estimate"][1])
    c = ev.run_cell(SMOKE, ids, 1, data, torch.device("cpu"))
    assert not np.array_equal(a.variables["estimate"][1], c.variables["estimate"][1])


def test_bias_variance_table(smoke):
    path, ds = smoke
    table = ev.bias_variance_table(path)
    lines = table.splitlines()
    assert lines[0] == ("| data_dim | transform | estimator | critic | true MI | mean estimate | bias | sd | "
                        "bias, optimal critic | sd, optimal critic | log K |")
    n_cells = len(SMOKE.estimators) * len(SMOKE.critics) * len(SMOKE.transforms) * len(SMOKE.data_dims)
    assert len(lines) == 2 + n_cells * len(SMOKE.mi_levels)
    assert table == ev.bias_variance_table(ds)
    row = next(line for line in lines if "| identity | infonce | separable | 6 |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected = ds["bias"].sel(transform="identity", critic="separable", estimator="infonce", mi_level=6.0).mean()
    assert float(cells[6]) == pytest.approx(float(expected), abs=5e-4)
    assert cells[-1] == f"{math.log(SMOKE.batch_size):.3f}"


def test_user_errors():
    with pytest.raises(InputValueError, match="--dataset mnist does not apply"):
        ev.load_data(SMOKE, "mnist", None)
    with pytest.raises(UnknownNameError, match="Did you mean 'cubic'"):
        ev.load_data(dataclasses.replace(SMOKE, transforms=("cubik",)), None, None)
    with pytest.raises(InputValueError, match="at least one step per MI level"):
        ev.staircase(dataclasses.replace(SMOKE, steps=1))


def test_report_draws_truth_and_cap(smoke, tmp_path):
    from probe.report import write_report

    page = write_report(smoke[0], tmp_path / "ev.html").read_text(encoding="utf-8")
    for name in ("true_mi", "estimate"):
        assert f"{name} · " in page, name
    # log K is one value in every cell: named in the line of constants rather than drawn flat.
    assert "so not drawn: <code>infonce_cap</code> (" in page


def test_paper_preset_is_poole_et_al():
    paper = ev.PRESETS["paper"]
    assert 20 in paper.data_dims and paper.batch_size == 64 and paper.learning_rate == 5e-4
    assert paper.mi_levels == (2.0, 4.0, 6.0, 8.0, 10.0) and paper.steps == 5 * 4_000
    assert paper.hidden == (256, 256) and paper.embedding == 32
    assert set(paper.estimators) == {"infonce", "nwj", "dv", "js", "smile"}
    assert set(paper.critics) == {"bilinear", "separable", "concat"}


# ------------------------------------------------------------ cells trained together, checkpoints

def _run(out, study=None, **options):
    return run_study(study or find_study("estimator-validation"), "smoke", seeds=2, out=out, progress=False,
                     checkpoint_every=10, log=lambda m: None, **options)




def _numeric(ds):
    return ds[[n for n, v in ds.data_vars.items() if v.dtype.kind in "fiu" and n != "wall_time"]].drop_attrs(deep=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The smoke preset with 2 seeds, trained together (a group per critic) and cell by cell."""
    out = tmp_path_factory.mktemp("ensemble")
    return {flag: _run(out / str(flag), ensemble=flag) for flag in (True, False)}


def test_cells_trained_together_match_the_cells_alone(runs):
    together, alone = (load_dataset(runs[flag]) for flag in (True, False))
    grouped = [load_dataset(p).attrs["trained_with_members"] for p in runs[True].parent.glob("cells/*.nc")]
    assert grouped == [8] * 16  # per critic: every estimator, transform and seed as one model
    assert set(together.data_vars) == set(alone.data_vars)
    for name in together.data_vars:  # today's dims and variables
        assert together[name].dims == alone[name].dims, name
    assert (together["status"].values == alone["status"].values).all()
    for name in ("estimate", "estimate_smoothed", "optimal_critic_estimate", "bias", "estimate_sd",
                 "optimal_critic_bias", "optimal_critic_estimate_sd"):
        np.testing.assert_allclose(together[name], alone[name], rtol=1e-3, atol=1e-4, err_msg=name)
    assert together.attrs["stream_seeds_json"] == alone.attrs["stream_seeds_json"]


def test_a_diverging_member_is_frozen_while_the_others_of_its_group_finish(runs):
    # NWJ on y³ overflows float64 within a few steps for seed 0: those cells stop there, recorded
    # with their status and NaN from then on, while every other member of their group trains on.
    ds = load_dataset(runs[True])
    status = ds["status"].squeeze("data_dim")
    failed = status.sel(estimator="nwj", transform="cubic", seed=0)
    assert all(str(s).startswith("non-finite estimate at step") for s in failed.values.ravel())
    assert (status.where((status.estimator != "nwj") | (status.transform != "cubic"), "ok") == "ok").all()
    last = ds["estimate"].squeeze("data_dim").isel(step=-1)
    assert np.isnan(last.sel(estimator="nwj", transform="cubic", seed=0)).all()
    assert np.isfinite(last.sel(estimator="infonce")).all() and np.isfinite(last.sel(transform="identity")).all()


@pytest.mark.parametrize("ensemble", [True, False])
def test_killed_mid_cell_resumes_to_identical_numbers(runs, ensemble, tmp_path):
    with pytest.raises(Killed):
        _run(tmp_path, killed_at(find_study("estimator-validation"), 25), ensemble=ensemble)  # last checkpoint: step 20
    checkpoints = list(tmp_path.rglob("*.ckpt.pt"))
    assert len(checkpoints) == 1 and torch.load(checkpoints[0], weights_only=True)["step"] == 20
    path = _run(tmp_path, ensemble=ensemble)
    assert not checkpoints[0].exists()
    resumed = [load_dataset(p).attrs["resumed_from_step"] for p in path.parent.glob("cells/*.nc")]
    assert sorted(resumed) == ([0] * 8 + [20] * 8 if ensemble else [0] * 15 + [20])  # a group, or one cell
    xr.testing.assert_identical(_numeric(load_dataset(path)), _numeric(load_dataset(runs[ensemble])))
