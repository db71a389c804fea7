"""Confidence intervals on the pages: a variable's `<name>_ci` is drawn wherever one run is shown
(the `probe analyze` page, one-seed study curves and end points, the ground-truth scatter), and a
result without one draws no interval layer."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr
from test_report import chart_payload, make_result, subtitle_lines, title_text

from probe.analyzers._bootstrap import ci_variable
from probe.report import write_report
from probe.report.analysis import analysis_page
from probe.report.intervals import interval_name, interval_text

TEXT = "95 % percentile bootstrap interval over held-out rows; 50 resamples"


def with_interval(ds: xr.Dataset, name: str, half_width: float = 0.3) -> xr.Dataset:
    """`ds` with `<name>_ci` = value ± half_width, as the analyzers write it."""
    value = ds[name]
    ci = ci_variable(value.values - half_width, value.values + half_width, value.attrs.get("long_name", name),
                     value.attrs.get("units", ""), level=0.95, n_bootstrap=50, dims=value.dims,
                     coords={d: ds[d].values for d in value.dims if d in ds.coords})
    return ds.assign({f"{name}_ci": ci})


def interval_layers(chart: dict) -> list[dict]:
    """The layers of a chart spec that encode an interval end (`ci_lo`) on any channel."""
    return [layer for layer in chart["spec"].get("layer", [chart["spec"]])
            if any(isinstance(c, dict) and c.get("field") == "ci_lo" for c in layer.get("encoding", {}).values())]


def layer_rows(payload: dict, layer: dict) -> list[dict]:
    return payload["datasets"][layer["data"]["name"]]


def v_information_result(with_ci: bool) -> xr.Dataset:
    ds = xr.Dataset({"v_information": ((), 1.05, {"units": "nats", "long_name": "predictive V-information"}),
                     "n_iter": ((), 5, {"units": "1", "long_name": "Newton iterations"})}, attrs={"method": "m"})
    if with_ci:
        ds["v_information_ci"] = ci_variable(0.99063, 1.09117, "predictive V-information", "nats", level=0.95,
                                             n_bootstrap=50)
    return ds


# ----------------------------------------------------------------------------- the probe analyze page

def test_analysis_page_draws_a_value_with_its_interval():
    page = analysis_page({"v_information": v_information_result(with_ci=True)}, "probe analyze: z.npz", {})
    payload = chart_payload(page)
    (chart,) = payload["charts"]
    (layer,) = interval_layers(chart)
    assert layer["mark"]["type"] == "rule" and layer["encoding"]["x2"]["field"] == "ci_hi"
    (row,) = layer_rows(payload, layer)
    assert (row["ci_lo"], row["ci_hi"], row["value"]) == (0.99063, 1.0912, 1.05)
    assert row["interval"] == TEXT and f"bar: {TEXT}" in " ".join(subtitle_lines(chart))  # wrapped onto lines
    assert any(t.get("title") == "interval" for t in layer["encoding"]["tooltip"])
    # the table shows the interval in its variable's row; the _ci variable has no row of its own
    assert "<td>v_information</td><td>1.05</td><td>[0.9906, 1.091]</td>" in page
    assert "<td>v_information_ci</td>" not in page


def test_analysis_page_without_intervals_has_no_chart_and_no_script():
    page = analysis_page({"v_information": v_information_result(with_ci=False)}, "probe analyze: z.npz", {})
    assert "<script" not in page and "ci_lo" not in page
    assert "<td>v_information</td><td>1.05</td><td></td>" in page


def test_a_value_over_a_coordinate_gets_one_bar_per_coordinate_and_an_infinite_end_is_left_out():
    ds = xr.Dataset({"violation_fraction": (("alpha",), [0.1, 0.4], {"units": "1", "long_name": "violations"})},
                    coords={"alpha": [0.0, 0.5]})
    ds = with_interval(ds, "violation_fraction", 0.05)
    ds["violation_fraction_ci"][1, 1] = np.inf
    page = analysis_page({"triplet_margins": ds}, "t", {})
    payload = chart_payload(page)
    (chart,) = payload["charts"]
    rows = layer_rows(payload, interval_layers(chart)[0])
    assert [(r["label"], r["ci_lo"], r["ci_hi"]) for r in rows] == [("alpha 0.0", 0.05, 0.15)]
    assert "1 interval(s) not finite, not drawn" in subtitle_lines(chart)
    assert "0.0: [0.05, 0.15], 0.5: [0.35, inf]" in page


def test_interval_names_and_words():
    ds = xr.Dataset({"candidate_estimate": (("candidate",), [0.4, 0.1]), "other": ((), 1.0)},
                    coords={"candidate": ["a", "b"]})
    ds["candidate_ci"] = (("candidate", "interval"), [[0.3, 0.5], [0.0, 0.2]])
    ds["other_ci"] = (("step", "interval"), [[0.0, 2.0]])  # not over other's dims: not its interval
    assert interval_name(ds, "candidate_estimate") == "candidate_ci" and interval_name(ds, "other") is None
    assert interval_text(with_interval(ds, "other")["other_ci"]) == TEXT
    study_ci = xr.DataArray([0.0, 1.0], dims="interval", attrs={"long_name": "the interval of Î (NaN where none)"})
    assert interval_text(study_ci) == "the interval of Î"


# ----------------------------------------------------------------------------- study pages

def one_seed_result(with_ci: bool) -> xr.Dataset:
    ds = make_result(seeds=1, steps=5, failed=False, quantiles=False, study="matched-targets")
    return with_interval(ds, "bound_test") if with_ci else ds


@pytest.fixture(scope="module")
def one_seed_page(tmp_path_factory) -> str:
    return write_report(one_seed_result(True), tmp_path_factory.mktemp("ci") / "p.html").read_text(encoding="utf-8")


def test_a_one_seed_curve_carries_its_interval_as_a_band(one_seed_page):
    payload = chart_payload(one_seed_page)
    curve = next(c for c in payload["charts"] if title_text(c) == "bound on held-out pairs"
                 and subtitle_lines(c)[0].startswith("bound_test ·"))
    (layer,) = interval_layers(curve)
    assert layer["mark"]["type"] == "area" and layer["encoding"]["y2"]["field"] == "ci_hi"
    ds = one_seed_result(True)
    expected = ds["bound_test"].sel(estimator="nwj", seed=0).values
    rows = [r for r in layer_rows(payload, layer) if r["label"] == "nwj"]
    np.testing.assert_allclose([r["ci_lo"] for r in rows], expected - 0.3, rtol=1e-4)
    np.testing.assert_allclose([r["ci_hi"] for r in rows], expected + 0.3, rtol=1e-4)
    assert f"band: {TEXT}" in subtitle_lines(curve)
    assert "bound_test_ci" not in one_seed_page.split("Not plotted")[-1]  # drawn with bound_test, not skipped


def test_a_one_seed_end_point_carries_its_interval_as_a_bar(one_seed_page):
    payload = chart_payload(one_seed_page)
    end = next(c for c in payload["charts"] if title_text(c) == "bound on held-out pairs"
               and "at step" in subtitle_lines(c)[0])
    (layer,) = interval_layers(end)
    assert layer["mark"]["type"] == "rule" and {r["step"] for r in layer_rows(payload, layer)} == {20000}
    others = [c for c in payload["charts"] if "bound on held-out" not in title_text(c)]
    assert others and not any(interval_layers(c) for c in others)


def test_without_intervals_or_over_several_seeds_no_interval_is_drawn(tmp_path):
    plain = write_report(one_seed_result(False), tmp_path / "plain.html").read_text(encoding="utf-8")
    seeds = write_report(with_interval(make_result(seeds=3, steps=5), "bound_test"), tmp_path / "seeds.html")
    for page in (plain, seeds.read_text(encoding="utf-8")):
        charts = chart_payload(page)["charts"]
        assert charts and not any(interval_layers(c) for c in charts)


def ground_truth_result() -> xr.Dataset:
    tasks, estimators, seeds = ["1v1-normal-0.75", "1v1-additive-0.75"], ["mi_estimate", "ksg"], [0, 1]
    shape = (2, 2, 2, 1)
    dims = ("task", "estimator", "seed", "step")
    truth = np.broadcast_to(np.array([0.4, 0.6])[:, None, None, None], shape).copy()
    estimate = truth * 1.1
    ci = np.stack([estimate - 0.05, estimate + 0.05], axis=-1)
    ci[:, 1] = np.nan  # ksg gives no interval
    attrs = {"long_name": "the estimator's confidence interval of Î (NaN where it gives none)", "units": "nats"}
    return xr.Dataset(
        {"estimate": (dims, estimate, {"units": "nats"}), "true_mi": (dims, truth, {"units": "nats"}),
         "solved": (dims, np.ones(shape)), "reliable": (dims, np.ones(shape)),
         "estimate_ci": (dims + ("interval",), ci, attrs)},
        coords={"task": tasks, "estimator": estimators, "seed": seeds, "step": [5000], "interval": ["lower", "upper"]},
        attrs={"study": "mi-ground-truth", "title": "MI estimators"})


def test_the_ground_truth_scatter_carries_the_estimators_intervals(tmp_path):
    page = write_report(ground_truth_result(), tmp_path / "gt.html").read_text(encoding="utf-8")
    payload = chart_payload(page)
    panels = {title_text(c): c for c in payload["charts"] if title_text(c) in ("mi_estimate", "ksg")}
    (layer,) = interval_layers(panels["mi_estimate"])
    assert layer["mark"]["type"] == "rule" and layer["encoding"]["y2"]["field"] == "ci_hi"
    rows = layer_rows(payload, layer)
    assert sorted((r["ci_lo"], r["ci_hi"]) for r in rows) == [(0.39, 0.49)] * 2 + [(0.61, 0.71)] * 2
    assert {r["interval"] for r in rows} == {"the estimator's confidence interval of Î"}
    assert "bars: the estimator's confidence interval of Î" in subtitle_lines(panels["mi_estimate"])
    assert interval_layers(panels["ksg"]) == []  # NaN intervals: no bars
    assert "NaN" not in json.dumps(payload) and re.search(r"vertical bars", page)
