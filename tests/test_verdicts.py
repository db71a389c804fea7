"""probe.verdict's shared statistics (against naive loops and closed forms), the "not judged"
rule for runs too short to decide, and the pages that show verdicts (`probe run-study`, `probe
report --all`). Each study's own flips are in tests/test_verdict_flips.py."""
import re

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy import stats
from verdict_results import results

from probe import verdict as v
from probe.cli import main
from studies import find_study, list_studies


def grid_dataset(study, grid, variables, noise=1e-3, preset="quick"):
    return results(study, grid, variables, noise=noise, preset=preset)


def judge(name, ds):
    return find_study(name).verdict(ds)


# ------------------------------------------------------------------------ intervals

@pytest.mark.parametrize("values", [[0.1, 0.3, 0.2], [1.0, 2.0, 4.0, 8.0, 16.0], [5.0, 5.0]])
def test_t_interval_is_the_textbook_one(values):
    n = len(values)
    m = sum(values) / n
    sd = (sum((x - m) ** 2 for x in values) / (n - 1)) ** 0.5
    half = stats.t.ppf(0.975, n - 1) * sd / n ** 0.5
    got = v.t_interval(np.array(values + [np.nan]))   # a diverged seed is left out, never read as a value
    assert got.n == n and got.mean == pytest.approx(m)
    assert (got.low, got.high) == pytest.approx((m - half, m + half))
    if sd > 0:
        ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
        assert (got.low, got.high) == pytest.approx((ci.low, ci.high))


def test_paired_differences_pair_by_seed_label_and_drop_non_finite_pairs():
    a = xr.DataArray([1.0, 2.0, 4.0, np.nan], dims="seed", coords={"seed": [0, 1, 2, 3]})
    b = xr.DataArray([np.nan, 3.5, 1.5, 0.5], dims="seed", coords={"seed": [3, 2, 1, 0]})  # same runs, reversed
    got = v.paired(a, b)
    assert got.n == 3 and got.mean == pytest.approx(np.mean([1.0 - 0.5, 2.0 - 1.5, 4.0 - 3.5]))
    assert v.paired(a, 1.0).how == "t" and v.paired(a, 1.0).mean == pytest.approx(np.mean([0.0, 1.0, 3.0]))
    assert v.t_interval(np.array([np.nan])).n == 0 and v.t_interval(np.array([1.0])).text() == \
        "+1.000 (t, n = 1: no interval)"


@pytest.mark.parametrize("interval, minimum, expected", [
    (v.Interval(0.03, 0.01, 0.05, 3), 0.01, v.HELD), (v.Interval(0.03, -0.01, 0.07, 3), 0.01, v.NOT_HELD),
    (v.Interval(0.005, 0.001, 0.009, 3), 0.01, v.NOT_HELD), (v.Interval(0.03, 0.01, 0.05, 2), 0.0, v.UNDECIDED),
    (-v.Interval(-0.03, -0.05, -0.01, 3), 0.0, v.HELD)])
def test_exceeds_needs_the_interval_above_zero_the_size_and_three_seeds(interval, minimum, expected):
    assert v.exceeds(interval, minimum) == expected


@pytest.mark.parametrize("parts, combined, conjunction", [
    ((v.HELD, v.HELD), v.HELD, v.HELD), ((v.HELD, v.NOT_HELD), v.PARTLY, v.NOT_HELD),
    ((v.NOT_HELD, v.NOT_HELD), v.NOT_HELD, v.NOT_HELD), ((v.HELD, v.UNDECIDED), v.UNDECIDED, v.UNDECIDED),
    ((v.NOT_HELD, v.UNDECIDED), v.NOT_HELD, v.NOT_HELD), ((v.PARTLY, v.HELD), v.PARTLY, v.NOT_HELD), ((), v.UNDECIDED,
                                                                                                    v.UNDECIDED)])
def test_combine_and_all_of(parts, combined, conjunction):
    assert v.combine(*parts) == combined and v.all_of(*parts) == conjunction
    assert v.over_cells([v.HELD], 1) == v.PARTLY and v.over_cells([], 0) == v.UNDECIDED


# ------------------------------------------------------------------------ families at equal bound

def _groups(rng, means, slope, centres, n=4):
    out = {}
    for family, (m, c) in enumerate(zip(means, centres)):
        x = c + rng.normal(0, 0.2, n)
        out[f"f{family}"] = (m + slope * x + rng.normal(0, 0.05, n), x)
    return out


def test_ancova_of_two_families_is_the_textbook_adjusted_difference():
    groups = _groups(np.random.default_rng(3), (0.8, 0.9), 0.04, (1.8, 2.2))
    (y1, x1), (y2, x2) = groups["f0"], groups["f1"]
    sxx = sum((x - x1.mean()) ** 2 for x in x1) + sum((x - x2.mean()) ** 2 for x in x2)
    sxy = sum((x - x1.mean()) * (y - y1.mean()) for x, y in zip(x1, y1)) + \
        sum((x - x2.mean()) * (y - y2.mean()) for x, y in zip(x2, y2))
    slope = sxy / sxx                                        # the pooled within-family slope
    difference = (y2.mean() - y1.mean()) - slope * (x2.mean() - x1.mean())
    residual = sum((y - y1.mean() - slope * (x - x1.mean())) ** 2 for x, y in zip(x1, y1)) + \
        sum((y - y2.mean() - slope * (x - x2.mean())) ** 2 for x, y in zip(x2, y2))
    df = len(y1) + len(y2) - 3
    se = (residual / df * (1 / len(y1) + 1 / len(y2) + (x2.mean() - x1.mean()) ** 2 / sxx)) ** 0.5
    fit = v.ancova(groups)
    got = fit.contrast("f1", "f0")
    assert fit.slope == pytest.approx(slope) and fit.df == df
    assert got.mean == pytest.approx(difference)
    assert (got.low, got.high) == pytest.approx((difference - stats.t.ppf(0.975, df) * se,
                                                 difference + stats.t.ppf(0.975, df) * se))
    assert fit.p == pytest.approx(2 * stats.t.sf(abs(difference / se), df))   # k = 2: F = t²


def test_ancova_without_a_bound_is_one_way_anova_and_the_pooled_t():
    rng = np.random.default_rng(4)
    groups = {f"f{i}": (rng.normal(m, 0.05, 5), None) for i, m in enumerate((0.80, 0.82, 0.85))}
    fit = v.ancova(groups)
    assert fit.p == pytest.approx(stats.f_oneway(*(y for y, _ in groups.values())).pvalue)
    ci = stats.ttest_ind(groups["f2"][0], groups["f0"][0]).confidence_interval(0.95)
    pooled = v.ancova({k: groups[k] for k in ("f0", "f2")}).contrast("f2", "f0")
    assert (pooled.low, pooled.high) == pytest.approx((ci.low, ci.high))


def test_ancova_says_why_it_cannot_be_fitted():
    y, x = np.array([0.8, 0.81, 0.79]), np.array([1.5, 1.5, 1.5])
    assert "separate the families" in v.ancova({"a": (y, x), "b": (y + 0.1, x + 0.9)})
    assert v.ancova({"a": (y[:2], x[:2]), "b": (y, x)}) == "a has 2 seed(s) with finite values (needs 3)"
    exact = v.ancova({"a": (0.8 + 0.04 * np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])),
                      "b": (0.8 + 0.04 * np.array([1.5, 2.5, 3.5]), np.array([1.5, 2.5, 3.5]))})
    assert exact.p == 1.0 and exact.contrast("a", "b").mean == pytest.approx(0.0, abs=1e-12)  # y follows the bound


def test_matching_is_per_seed_and_a_diverged_seed_never_matched():
    ds = results("encoder-architecture", {"encoder": ["mlp"], "target": [2.0], "estimator": ["infonce"]},
                 {"target_gap": lambda ids, s, seed: {0: 0.1, 1: 0.6, 2: np.nan}[seed]}, noise=0.0)
    assert v.matched_seeds(ds, encoder="mlp", target=2.0, estimator="infonce").values.tolist() == [True, False, False]
    assert v.gap_text(ds, encoder="mlp", target=2.0, estimator="infonce") == \
        "L_t 0.10, 0.60, n/a (1 of 3 seeds matched)"
    two = ds.expand_dims(views=["a", "b"])
    with pytest.raises(ValueError, match=r"target_gap still varies over \['views'\]"):
        v.per_seed(two, "target_gap", encoder="mlp")   # every dimension but seed must be picked
    assert v.per_seed(two, "target_gap", views="a").dims == ("seed",)  # those of one value need not be
    unknown = v.judge(find_study("invertible-encoders"), _invertible().expand_dims(views=["a", "b"]))
    assert unknown.outcome == v.UNDECIDED and "still varies over ['views']" in unknown.evidence[0]


# ------------------------------------------------------------------------ not judged

def _invertible(preset="quick", settings=None):
    return results("invertible-encoders", {"estimator": ["infonce"]},
                   {"probe_accuracy": lambda ids, s: 0.8 + 0.03 * s, "bound_test": lambda ids, s: s},
                   preset=preset, settings=settings)


def test_a_smoke_run_or_a_shortened_one_is_not_judged():
    study = find_study("invertible-encoders")
    held = v.judge(study, _invertible())
    assert held.outcome == v.HELD and held.label == v.HELD and held.reason == ""
    smoke = v.judge(study, _invertible(preset="smoke"))
    assert smoke.outcome == v.NOT_JUDGED and smoke.label == "not judged (smoke preset: too short to decide)"
    assert smoke.evidence == held.evidence and smoke.claim == held.claim       # the numbers are kept
    short = v.judge(study, _invertible(settings={"steps": 1_000}))
    assert short.outcome == v.NOT_JUDGED
    assert short.reason == "1,000 training steps, fewer than the 1,500 of the quick preset: too short to decide"
    assert v.judge(study, _invertible(settings={"steps": 1_500})).outcome == v.HELD


def test_the_ground_truth_study_s_smoke_run_is_not_judged_either():
    study = find_study("mi-ground-truth")
    ds = xr.Dataset(attrs={"study": "mi-ground-truth", "preset": "smoke"})
    assert v.judge(study, ds).label == "not judged (smoke preset: too short to decide)"
    assert v.judge(study, ds.assign_attrs(preset="quick")).outcome == v.UNDECIDED


def test_run_study_prints_and_renders_not_judged_for_a_smoke_run(tmp_path):
    result = CliRunner().invoke(main, ["run-study", "noniid-negatives", "--preset", "smoke", "--no-progress",
                                       "--threads", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "verdict: not judged (smoke preset: too short to decide): With one shared Z" in result.stdout
    [page] = tmp_path.glob("noniid-negatives/*/report.html")
    text = page.read_text(encoding="utf-8")
    assert "This run: not judged (smoke preset: too short to decide).</strong>" in text
    assert "This run: not judged (smoke preset: too short to decide).</p>" in text   # under the paper's claim


def test_the_index_shows_a_smoke_run_as_not_judged(tmp_path):
    runs = tmp_path / "runs"
    _save(_invertible(preset="smoke"), runs / "invertible-encoders" / "smoke-a" / "results.nc")
    result = CliRunner().invoke(main, ["report", "--all", str(runs), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert ">not judged<" in index and "smoke preset: too short to decide" in index and ">held<" not in index


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


def test_an_exploded_value_reads_in_powers_of_ten_and_an_ordinary_one_in_decimals():
    from probe.verdict import Interval, fmt

    assert fmt(np.array([1e8, 5e8, 2e8])) == "2.67e+08 ± 2.08e+08"  # a diverged NWJ's sd, not 266666666.667
    assert fmt(np.array([0.81, 0.82])) == "0.815 ± 0.007"
    assert Interval(2.8e8, -9e8, 1.5e9, 3).text() == "+2.80e+08 [-9.00e+08, +1.50e+09] (paired t, n = 3)"
    assert Interval(0.023, 0.014, 0.031, 3).text() == "+0.023 [+0.014, +0.031] (paired t, n = 3)"
