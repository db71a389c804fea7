"""Each study's verdict (probe.verdict) on synthetic results whose answer is known by construction,
and the index page that gathers them (`probe report --all`)."""
import re

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from probe import verdict as v
from probe.cli import main
from studies import find_study, list_studies

SEEDS = [0, 1, 2]
STEPS = [0, 500, 1000]
QUANTILES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def grid_dataset(study, grid, variables, rng=None, noise=1e-3):
    """A result with dims (grid..., seed, step[, quantile]); `variables` maps a name to
    value(cell_ids, step_index) -> float (plus a `quantile` kwarg when its name ends in '@q')."""
    rng = rng or np.random.default_rng(0)
    names = list(grid)
    shape = [len(grid[n]) for n in names]
    data = {}
    for key, fn in variables.items():
        name, quantile = (key[:-2], True) if key.endswith("@q") else (key, False)
        full = shape + [len(SEEDS), len(STEPS)] + ([len(QUANTILES)] if quantile else [])
        values = np.empty(full)
        for index in np.ndindex(*full):
            ids = {n: grid[n][i] for n, i in zip(names, index)}
            step = index[len(names) + 1]
            extra = {"quantile": QUANTILES[index[-1]]} if quantile else {}
            values[index] = fn(ids, step, **extra) + noise * rng.standard_normal()
        dims = names + ["seed", "step"] + (["quantile"] if quantile else [])
        data[name] = (dims, values)
    coords = {**grid, "seed": SEEDS, "step": STEPS}
    if any(k.endswith("@q") for k in variables):
        coords["quantile"] = QUANTILES
    return xr.Dataset(data, coords=coords, attrs={"study": study, "preset": "quick", "seeds": "0,1,2"})


def judge(name, ds):
    return find_study(name).verdict(ds)


@pytest.mark.parametrize("grows, expected", [(True, v.HELD), (False, v.NOT_HELD)])
def test_invertible_encoders_verdict_follows_the_accuracy(grows, expected):
    ds = grid_dataset("invertible-encoders", {"estimator": ["infonce", "nwj"]},
                      {"probe_accuracy": lambda ids, s: 0.8 + (0.03 * s if grows else 0.0)})
    assert judge("invertible-encoders", ds).outcome == expected


@pytest.mark.parametrize("drop, error32, error64, expected", [
    (0.3, 1e-6, 1e-12, v.HELD), (0.3, 5.0, 1e-12, v.PARTLY), (0.3, 5.0, 5.0, v.PARTLY), (0.01, 5.0, 5.0, v.NOT_HELD)])
def test_adversarial_verdict_needs_a_collapse_and_an_invertible_encoder(drop, error32, error64, expected):
    ds = grid_dataset("adversarial-encoder", {"lr_source": ["notebook"]}, {
        "probe_accuracy": lambda ids, s: 0.85 - drop * s / 2,
        "inverse_round_trip_error": lambda ids, s: error32 * s / 2,
        "inverse_round_trip_error_float64": lambda ids, s: error64 * s / 2,
    }, noise=0.0)
    verdict = judge("adversarial-encoder", ds)
    assert verdict.outcome == expected
    assert "round-trip error" in verdict.evidence[0]


def test_adversarial_verdict_treats_a_non_finite_round_trip_as_not_invertible():
    ds = grid_dataset("adversarial-encoder", {"lr_source": ["notebook"]}, {
        "probe_accuracy": lambda ids, s: 0.85 - 0.2 * s,
        "inverse_round_trip_error": lambda ids, s: np.nan,
        "inverse_round_trip_error_float64": lambda ids, s: 0.0,
    }, noise=0.0)
    assert judge("adversarial-encoder", ds).outcome == v.PARTLY


@pytest.mark.parametrize("final, expected", [(3.0, v.HELD), (0.6, v.NOT_HELD)])
def test_hard_to_invert_verdict_reads_the_median_band(final, expected):
    ds = grid_dataset("hard-to-invert", {"estimator": ["infonce", "nwj"]}, {
        "log_condition_number@q": lambda ids, s, quantile: final * s / 2 * (0.5 + quantile),
        "probe_accuracy": lambda ids, s: 0.8,
    })
    verdict = judge("hard-to-invert", ds)
    assert verdict.outcome == expected
    assert "p40" in verdict.evidence[0]  # the paper's 0, 20, ..., 100 grid has no p50: as the report's table


@pytest.mark.parametrize("concat_bound, concat_acc, expected", [
    (6.0, 0.85, v.HELD), (6.0, 0.90, v.PARTLY), (4.0, 0.90, v.NOT_HELD)])
def test_critic_capacity_verdict(concat_bound, concat_acc, expected):
    bound = {"bilinear": 5.4, "separable": 5.5, "concat": concat_bound}
    acc = {"bilinear": 0.88, "separable": 0.87, "concat": concat_acc}
    ds = grid_dataset("critic-capacity", {"estimator": ["infonce", "nwj"], "critic": list(bound)}, {
        "bound_test": lambda ids, s: bound[ids["critic"]], "bound_train": lambda ids, s: bound[ids["critic"]],
        "probe_accuracy": lambda ids, s: acc[ids["critic"]],
    })
    assert judge("critic-capacity", ds).outcome == expected


def test_critic_capacity_verdict_separates_held_out_and_training_bounds():
    ds = grid_dataset("critic-capacity", {"estimator": ["nwj"], "critic": ["bilinear", "concat"]}, {
        "bound_test": lambda ids, s: {"bilinear": 3.4, "concat": 2.9}[ids["critic"]],
        "bound_train": lambda ids, s: {"bilinear": 4.1, "concat": 4.6}[ids["critic"]],
        "probe_accuracy": lambda ids, s: {"bilinear": 0.82, "concat": 0.73}[ids["critic"]],
    })
    verdict = judge("critic-capacity", ds)
    assert verdict.outcome == v.PARTLY
    assert any("held-out 2.90" in line and "train 4.60" in line for line in verdict.evidence)


@pytest.mark.parametrize("conv, expected", [(0.90, v.HELD), (0.80, v.NOT_HELD)])
def test_encoder_architecture_verdict(conv, expected):
    ds = grid_dataset("encoder-architecture", {"encoder": ["convnet", "mlp"], "target": [2.0, 4.0],
                                               "estimator": ["infonce"]}, {
        "probe_accuracy": lambda ids, s: conv if ids["encoder"] == "convnet" else 0.85,
        "target_gap": lambda ids, s: 0.1,
    })
    verdict = judge("encoder-architecture", ds)
    assert verdict.outcome == expected
    assert all("(matched)" in line for line in verdict.evidence)


def test_encoder_architecture_verdict_says_when_the_bounds_were_not_matched():
    ds = grid_dataset("encoder-architecture", {"encoder": ["convnet", "mlp"], "target": [4.0],
                                               "estimator": ["infonce"]}, {
        "probe_accuracy": lambda ids, s: 0.9 if ids["encoder"] == "convnet" else 0.85,
        "target_gap": lambda ids, s: 1.2 if ids["encoder"] == "convnet" else 0.6,
    })
    assert "not matched: L_t 1.20 / 0.60" in judge("encoder-architecture", ds).evidence[0]


@pytest.mark.parametrize("noniid, iid, expected", [
    (0.19, 0.019, v.HELD), (0.19, 0.19, v.PARTLY), (0.02, 0.019, v.PARTLY)])
def test_noniid_verdict_against_the_true_mi(noniid, iid, expected):
    ds = grid_dataset("noniid-negatives", {"estimator": ["infonce", "nwj"], "negatives": ["iid", "noniid"]}, {
        "bound_train_smoothed": lambda ids, s: noniid if ids["negatives"] == "noniid" else iid,
    })
    ds["true_mi"] = xr.full_like(ds["bound_train_smoothed"].isel(step=0, drop=True), 0.0204)
    assert judge("noniid-negatives", ds).outcome == expected


@pytest.mark.parametrize("spread, expected", [(0.05, v.HELD), (0.0, v.NOT_HELD)])
def test_matched_targets_verdict_is_an_anova_across_families(spread, expected):
    families = ["realnvp-additive", "resmlp", "mlp"]
    offset = {f: spread * i for i, f in enumerate(families)}
    ds = grid_dataset("matched-targets", {"encoder": families, "target": [2.0], "estimator": ["infonce"]}, {
        "probe_accuracy": lambda ids, s: 0.8 + offset[ids["encoder"]],
        "v_information": lambda ids, s: 1.5 + offset[ids["encoder"]],
        "log_condition_number@q": lambda ids, s, quantile: 1 + 10 * offset[ids["encoder"]] + quantile,
        "target_gap": lambda ids, s: 0.05,
    })
    verdict = judge("matched-targets", ds)
    assert verdict.outcome == expected
    if spread:
        assert "accuracy 0.8 (realnvp-additive) to 0.9 (mlp)" in verdict.evidence[0]


def test_matched_targets_verdict_is_undecided_with_one_seed():
    ds = grid_dataset("matched-targets", {"encoder": ["mlp", "resmlp"], "target": [2.0], "estimator": ["infonce"]},
                      {"probe_accuracy": lambda ids, s: 0.8, "target_gap": lambda ids, s: 0.0}).isel(seed=[0])
    assert judge("matched-targets", ds).outcome == v.UNDECIDED


def test_estimator_validation_verdict():
    levels = [2.0, 10.0]
    ds = grid_dataset("estimator-validation", {"estimator": ["infonce", "nwj"], "critic": ["separable"],
                                               "transform": ["identity"]}, {
        "infonce_cap": lambda ids, s: np.log(64),
    })
    shape = (2, 1, 1, len(SEEDS), len(levels))
    mean = np.empty(shape)
    sd = np.empty(shape)
    mean[0], sd[0] = np.log(64) - 0.1, 0.1   # InfoNCE: just under its cap, quiet
    mean[1], sd[1] = 9.0, 2.0                # NWJ: close to the truth, noisy
    dims = ("estimator", "critic", "transform", "seed", "mi_level")
    ds = ds.assign_coords(mi_level=levels).assign(estimate_mean=(dims, mean), estimate_sd=(dims, sd))
    assert judge("estimator-validation", ds).outcome == v.HELD
    ds["estimate_mean"][0] = np.log(64) + 1.0  # above the cap: impossible for a correct InfoNCE
    assert judge("estimator-validation", ds).outcome == v.PARTLY


def test_a_verdict_missing_its_variables_is_undecided_not_held():
    ds = grid_dataset("hard-to-invert", {"estimator": ["infonce"]}, {"probe_accuracy": lambda ids, s: 0.8})
    assert judge("hard-to-invert", ds).outcome == v.UNDECIDED


def test_every_study_declares_a_verdict():
    assert all(study.verdict is not None for study in list_studies())


def test_fmt_and_mean_sd_ignore_diverged_seeds():
    assert v.fmt(np.array([0.8, np.nan, 0.9])) == "0.850 ± 0.071"
    assert v.fmt(np.array([np.nan])) == "n/a"
    assert v.outcome(True, False) == v.PARTLY and v.outcome(False) == v.NOT_HELD and v.outcome(True) == v.HELD


def _save(ds, path):
    path.parent.mkdir(parents=True)
    ds.to_netcdf(path, engine="netcdf4")


def test_report_all_writes_every_page_and_an_index_with_verdicts(tmp_path):
    runs = tmp_path / "runs"
    held = grid_dataset("invertible-encoders", {"estimator": ["infonce"]},
                        {"probe_accuracy": lambda ids, s: 0.8 + 0.03 * s, "bound_test": lambda ids, s: s})
    _save(held, runs / "invertible-encoders" / "quick-a" / "results.nc")
    (runs / "broken").mkdir()
    (runs / "broken" / "results.nc").write_bytes(b"not netcdf")
    result = CliRunner().invoke(main, ["report", "--all", str(runs), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert (tmp_path / "site" / "invertible-encoders.html").is_file()
    assert 'href="invertible-encoders.html"' in index
    assert ">held<" in index and re.search(r"infonce: accuracy 0\.80\d ± 0\.00\d → 0\.86\d ± 0\.00\d", index)
    assert "probe run-study hard-to-invert --preset quick" in index     # a study with no run yet
    assert "broken" in index and "Skipped" in index                     # an unreadable file is listed
    page = (tmp_path / "site" / "invertible-encoders.html").read_text()
    assert "This run: the claim held." in page


def test_report_all_on_a_folder_without_results_says_what_to_run(tmp_path):
    result = CliRunner().invoke(main, ["report", "--all", str(tmp_path)])
    assert result.exit_code != 0
    assert "no results.nc" in result.output and "probe run-study" in result.output


def test_report_on_a_folder_without_all_points_to_it(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "--all" in result.output


def test_report_all_keeps_two_runs_of_one_study_apart(tmp_path):
    runs = tmp_path / "runs"
    for i, gain in enumerate((0.03, 0.0)):
        ds = grid_dataset("invertible-encoders", {"estimator": ["infonce"]},
                          {"probe_accuracy": lambda ids, s, g=gain: 0.8 + g * s, "bound_test": lambda ids, s: s})
        _save(ds, runs / "invertible-encoders" / f"quick-{i}" / "results.nc")
    result = CliRunner().invoke(main, ["report", "--all", str(runs), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    pages = sorted(p.name for p in (tmp_path / "site").glob("invertible-encoders*.html"))
    assert pages == ["invertible-encoders-quick-1.html", "invertible-encoders.html"]
    index = (tmp_path / "site" / "index.html").read_text()
    assert ">held<" in index and ">did not hold<" in index
