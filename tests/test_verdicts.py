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


# Invertibility is judged in float64 (a bijection); the float32 round trip is stated, never a condition:
# (0.3, 5.0, 1e-12) was "partly held" while float32 counted.
@pytest.mark.parametrize("drop, error32, error64, expected", [
    (0.3, 1e-6, 1e-12, v.HELD), (0.3, 5.0, 1e-12, v.HELD), (0.3, 1e-6, 5.0, v.PARTLY), (0.3, 5.0, 5.0, v.PARTLY),
    (0.01, 5.0, 5.0, v.NOT_HELD), (0.01, 5.0, 1e-12, v.PARTLY)])
def test_adversarial_verdict_needs_a_collapse_and_a_float64_bijection(drop, error32, error64, expected):
    ds = grid_dataset("adversarial-encoder", {"lr_source": ["notebook"]}, {
        "probe_accuracy": lambda ids, s: 0.85 - drop * s / 2,
        "inverse_round_trip_error": lambda ids, s: error32 * s / 2,
        "inverse_round_trip_error_float64": lambda ids, s: error64 * s / 2,
    }, noise=0.0)
    verdict = judge("adversarial-encoder", ds)
    assert verdict.outcome == expected
    assert "round-trip error" in verdict.evidence[0] and "not part of the verdict" in verdict.evidence[0]
    assert ("not invertible in float32" in verdict.evidence[0]) == (error32 > 1e-3)


def test_adversarial_verdict_states_a_non_finite_float32_round_trip_without_deciding_by_it():
    ds = grid_dataset("adversarial-encoder", {"lr_source": ["notebook"]}, {
        "probe_accuracy": lambda ids, s: 0.85 - 0.2 * s,
        "inverse_round_trip_error": lambda ids, s: np.nan,
        "inverse_round_trip_error_float64": lambda ids, s: 0.0,
    }, noise=0.0)
    verdict = judge("adversarial-encoder", ds)
    assert verdict.outcome == v.HELD
    assert "in float32 inf (not invertible in float32" in verdict.evidence[0]
    ds["inverse_round_trip_error_float64"][:] = np.nan  # the bijection itself non-finite: not shown
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


def test_hard_to_invert_verdict_reads_the_pooled_percentiles_not_per_seed_averages():
    # Seed 0's Jacobians become ill-conditioned (ln cond 5), seeds 1 and 2 stay at 0.2: the per-seed
    # medians average to 1.8 (grew by >= 1 nat: "held"), the pooled median over all inputs is 0.2.
    from probe.results import cell_dataset, collect_records, combine_cells

    cells = []
    for est in ("infonce", "nwj"):
        for seed, end in enumerate((5.0, 0.2, 0.2)):
            records = [{"log_condition_number": np.full(len(QUANTILES), value), "quantile": np.array(QUANTILES),
                        "log_condition_number_input": np.full(8, value), "probe_accuracy": 0.85}
                       for value in (0.01, end / 2, end)]
            cells.append(cell_dataset(collect_records(np.array(STEPS), records, "ok"), {"estimator": est, "seed": seed}))
    ds = combine_cells(cells)
    averaged = judge("hard-to-invert", ds.drop_vars(["log_condition_number_pooled", "log_condition_number_input"]))
    assert averaged.outcome == v.HELD and "per-seed percentiles averaged" in averaged.evidence[0]
    pooled = judge("hard-to-invert", ds)
    assert pooled.outcome == v.NOT_HELD
    assert pooled.evidence[0].startswith("infonce: p40 0.01 → 0.20, max 5.00 (pooled over 24 Jacobians")
    ds["log_condition_number_input"].loc[{"seed": [1, 2], "step": 1000}] = 5.0  # every seed ill-conditioned
    ds["log_condition_number_pooled"] = combine_cells(
        [ds.drop_vars("log_condition_number_pooled")])["log_condition_number_pooled"]
    assert judge("hard-to-invert", ds).outcome == v.HELD


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


# Only (estimator, t) where both encoders matched t count. Before, every line below was "held" or
# "partly held" whatever L_t was.
@pytest.mark.parametrize("gap_t4, mlp_wins_t2, expected", [
    (0.1, False, v.HELD), (0.9, False, v.PARTLY), (0.9, True, v.NOT_HELD), (0.1, True, v.PARTLY)])
def test_encoder_architecture_verdict_counts_only_matched_cells(gap_t4, mlp_wins_t2, expected):
    ds = grid_dataset("encoder-architecture", {"encoder": ["convnet", "mlp"], "target": [2.0, 4.0],
                                               "estimator": ["infonce"]}, {
        # The ConvNet wins at t = 4; at t = 2 it wins unless mlp_wins_t2.
        "probe_accuracy": lambda ids, s: 0.85 + (0.05 if (ids["encoder"] == "convnet") != (
            mlp_wins_t2 and ids["target"] == 2.0) else 0.0),
        "target_gap": lambda ids, s: gap_t4 if ids["target"] == 4.0 else 0.1,
    }, noise=0.0)
    verdict = judge("encoder-architecture", ds)
    assert verdict.outcome == expected
    assert "(matched); L_t 0.10 / 0.10" in verdict.evidence[0]
    if gap_t4 > 0.5:
        assert "not matched: L_t 0.90 / 0.90 > 0.5; left out" in verdict.evidence[1]


def test_encoder_architecture_verdict_is_undecided_when_nothing_matched():
    ds = grid_dataset("encoder-architecture", {"encoder": ["convnet", "mlp"], "target": [2.0, 4.0],
                                               "estimator": ["infonce"]}, {
        "probe_accuracy": lambda ids, s: 0.9 if ids["encoder"] == "convnet" else 0.85,  # was "held"
        "target_gap": lambda ids, s: 0.83 if ids["encoder"] == "convnet" else 0.53,  # the quick run's t = 4
    })
    verdict = judge("encoder-architecture", ds)
    assert verdict.outcome == v.UNDECIDED
    assert verdict.evidence[-1] == "no (estimator, t) has both encoders matched"
    # A seed that diverged (NaN L_t) is left out of the mean; all seeds NaN never counts as matched.
    ds["target_gap"][:] = 0.1
    ds["target_gap"].loc[{"encoder": "mlp"}] = np.nan
    assert judge("encoder-architecture", ds).outcome == v.UNDECIDED


@pytest.mark.parametrize("noniid, iid, expected", [
    (0.19, 0.019, v.HELD), (0.19, 0.19, v.PARTLY), (0.02, 0.019, v.PARTLY)])
def test_noniid_verdict_against_the_true_mi(noniid, iid, expected):
    ds = grid_dataset("noniid-negatives", {"estimator": ["infonce", "nwj"], "negatives": ["iid", "noniid"]}, {
        "bound_train_smoothed": lambda ids, s: noniid if ids["negatives"] == "noniid" else iid,
    })
    ds["true_mi"] = xr.full_like(ds["bound_train_smoothed"].isel(step=0, drop=True), 0.0204)
    assert judge("noniid-negatives", ds).outcome == expected


def with_jacobians(ds, shapes, deficient=()):
    """`ds` with each family's Jacobian shape (d_out, d_in) and rank-deficient fraction (1 for `deficient`)."""
    families = [str(e) for e in ds["encoder"].values]
    like = ds["probe_accuracy"]
    shape = xr.DataArray([list(shapes[e]) for e in families], dims=("encoder", "jacobian_axis"),
                         coords={"encoder": families, "jacobian_axis": ["d_out", "d_in"]})
    rank = xr.DataArray([float(e in deficient) for e in families], dims="encoder", coords={"encoder": families})
    return ds.assign(jacobian_shape=shape.broadcast_like(like), jacobian_rank_deficient=rank.broadcast_like(like))


SQUARE = {f: (392, 392) for f in ("realnvp-additive", "realnvp-affine", "resmlp", "mlp", "convnet")}


def matched_targets_dataset(offset, gap=None, cond=None, bound=None):
    """Three families at t = 2: accuracy and V-information shifted by `offset[family]`, ln cond
    1 + cond[family] + quantile, L_t gap[family] (0.05), held-out bound bound[family] (2 - L_t)."""
    families = list(offset)
    gap = gap or {}
    return grid_dataset("matched-targets", {"encoder": families, "target": [2.0], "estimator": ["infonce"]}, {
        "probe_accuracy": lambda ids, s: 0.8 + offset[ids["encoder"]],
        "v_information": lambda ids, s: 1.5 + offset[ids["encoder"]],
        "log_condition_number@q": lambda ids, s, quantile: 1 + (cond or offset)[ids["encoder"]] * 10 + quantile,
        "target_gap": lambda ids, s: gap.get(ids["encoder"], 0.05),
        "bound_test": lambda ids, s: (bound or {}).get(ids["encoder"], 2 - gap.get(ids["encoder"], 0.05)),
    })


@pytest.mark.parametrize("spread, expected", [(0.05, v.HELD), (0.0, v.NOT_HELD)])
def test_matched_targets_verdict_is_an_anova_across_families(spread, expected):
    families = ["realnvp-additive", "resmlp", "mlp"]
    offset = {f: spread * i for i, f in enumerate(families)}
    ds = with_jacobians(matched_targets_dataset(offset), SQUARE)
    verdict = judge("matched-targets", ds)
    assert verdict.outcome == expected
    if spread:
        assert "accuracy 0.8 (realnvp-additive) to 0.9 (mlp)" in verdict.evidence[0]
        # Without the Jacobians' shapes conditioning is not compared, so the claim holds only in part.
        bare = judge("matched-targets", ds.drop_vars(["jacobian_shape", "jacobian_rank_deficient"]))
        assert bare.outcome == v.PARTLY and "records no jacobian_shape" in bare.evidence[0]


# Families that missed t are left out. Before, each of these was "held" (every family counted).
@pytest.mark.parametrize("offset, expected", [
    ({"realnvp-additive": 0.0, "resmlp": 0.0, "mlp": 0.1}, v.NOT_HELD),      # only mlp differed, and it missed t
    ({"realnvp-additive": 0.0, "resmlp": 0.05, "mlp": 0.1}, v.PARTLY)])      # the matched two still differ
def test_matched_targets_verdict_leaves_out_families_that_missed_t(offset, expected):
    ds = with_jacobians(matched_targets_dataset(offset), SQUARE)
    assert judge("matched-targets", ds).outcome == v.HELD
    ds = with_jacobians(matched_targets_dataset(offset, gap={"mlp": 0.9}), SQUARE)
    verdict = judge("matched-targets", ds)
    assert verdict.outcome == expected
    assert "2 families matched t" in verdict.evidence[0]
    assert "left out, not matched (> 0.5): mlp L_t 0.90" in verdict.evidence[0]


def test_matched_targets_verdict_reports_the_spread_of_the_achieved_bounds():
    offset = {"realnvp-additive": 0.0, "resmlp": 0.05, "mlp": 0.1}
    ds = with_jacobians(matched_targets_dataset(offset, bound={"realnvp-additive": 1.55, "resmlp": 1.8,
                                                                "mlp": 1.95}), SQUARE)
    evidence = judge("matched-targets", ds).evidence[0]
    assert "3 families matched t, held-out I_EST 1.55 (realnvp-additive) to 1.95 (mlp), a spread of 0.40 nats" \
        in evidence


def test_matched_targets_verdict_is_undecided_when_fewer_than_two_families_matched():
    offset = {"realnvp-additive": 0.0, "resmlp": 0.05, "mlp": 0.1}
    ds = with_jacobians(matched_targets_dataset(offset, gap={"resmlp": 0.7, "mlp": 0.9}), SQUARE)
    verdict = judge("matched-targets", ds)
    assert verdict.outcome == v.UNDECIDED
    assert "fewer than 2 families matched t (> 0.5: resmlp L_t 0.70; mlp L_t 0.90)" in verdict.evidence[0]


# ln cond compares only full-rank Jacobians of one shape. Before, mlp's round-off ln cond of 18
# made "families differ in ln cond" (and the claim) hold.
@pytest.mark.parametrize("mlp_shape, mlp_deficient, reason", [
    ((100, 392), True, "mlp (rank-deficient Jacobians: ln cond is float32 round-off)"),
    ((100, 392), False, "mlp (the only full-rank 100×392 Jacobian)"),
    ((392, 392), True, "mlp (rank-deficient Jacobians: ln cond is float32 round-off)")])
def test_matched_targets_verdict_compares_conditioning_among_full_rank_jacobians_of_one_shape(
        mlp_shape, mlp_deficient, reason):
    offset = {"realnvp-additive": 0.0, "resmlp": 0.05, "mlp": 0.1}
    cond = {"realnvp-additive": 0.0, "resmlp": 0.0, "mlp": 1.7}   # ln cond 1 + q, 1 + q, 18 + q
    ds = matched_targets_dataset(offset, cond=cond)
    square = with_jacobians(ds, SQUARE)
    assert judge("matched-targets", square).outcome == v.HELD
    shapes = {**SQUARE, "mlp": mlp_shape}
    verdict = judge("matched-targets", with_jacobians(ds, shapes, deficient=("mlp",) if mlp_deficient else ()))
    assert verdict.outcome == v.PARTLY           # accuracy and V-information differ, ln cond does not
    assert f"ln cond left out: {reason}" in verdict.evidence[0]
    assert "ln cond p40 (392×392)" in verdict.evidence[0]
    # Where the two comparable families do differ in conditioning, the claim holds again.
    cond = {"realnvp-additive": 0.0, "resmlp": 0.3, "mlp": 1.7}
    ds = with_jacobians(matched_targets_dataset(offset, cond=cond), shapes, deficient=("mlp",) if mlp_deficient else ())
    assert judge("matched-targets", ds).outcome == v.HELD


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
