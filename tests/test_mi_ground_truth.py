"""The mi-ground-truth study: the extended suite's cells, its halves, the verdict on the scoring
half (with a flip test each way), the table and the page."""
import json
import math
import re

import numpy as np
import pytest
import xarray as xr

import studies.mi_ground_truth as gt
from probe import verdict as v
from probe.errors import InputValueError, UnknownNameError
from probe.ground_truth import TASKS
from probe.ground_truth.scoring import solved
from probe.ground_truth.suite import split, suite
from probe.report import write_report
from probe.results import load_dataset
from probe.runner import run_study
from studies import find_study

STUDY = find_study("mi-ground-truth")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    path = run_study(STUDY, "smoke", out=str(out), threads=1, progress=False, log=lambda _: None)
    return path, load_dataset(path)


def test_smoke_run_records_every_cell_against_its_truth_with_its_half_and_family(smoke):
    _, ds = smoke
    settings = gt.PRESETS["smoke"]
    tasks = suite()
    assert set(ds["task"].values) == set(settings.tasks)
    assert set(ds["estimator"].values) == set(settings.mi_estimators)
    assert ds["n_pairs"].values.tolist() == list(settings.sample_sizes)
    assert (ds["status"] == "ok").all()
    halves = split(tasks)
    for task in settings.tasks:
        cell = ds.sel(task=task, estimator="mi_estimate").isel(step=-1)
        np.testing.assert_allclose(cell["true_mi"].values, tasks[task].mutual_information)
        assert {str(h) for h in cell["half"].values.ravel()} == {halves[task]}
        assert {str(f) for f in cell["family"].values.ravel()} == {tasks[task].family}
    assert {halves[t] for t in settings.tasks} == {"tuning", "scoring"}  # the smoke run holds both halves
    est, truth = ds["estimate"].values, ds["true_mi"].values
    assert np.isfinite(est).all()
    np.testing.assert_allclose(ds["estimate_ratio"].values, est / truth)
    assert ds["estimate"].attrs["units"] == "nats" and ds["wall_time"].attrs["units"] == "s"
    kinds = {str(k) for k in ds["kind"].sel(estimator="mi_estimate").values.ravel()}
    assert kinds <= {"estimate", "lower_bound"}
    # every estimator of a (task, n, seed) saw the same pairs: KSG rerun on them gives the cell's value
    x, y = tasks["1v1-normal-0.75"].sample(settings.sample_sizes[0], 0)
    again = gt.ESTIMATORS["ksg"](settings, x, y, 0).value
    assert again == pytest.approx(float(ds["estimate"].sel(task="1v1-normal-0.75", estimator="ksg", seed=0).item()))
    # coverage is recorded for reliable mi_estimate cells only
    cells = ds.sel(estimator="mi_estimate")
    assert np.isnan(cells["covered"].values[cells["reliable"].values != 1]).all()


def test_a_refusal_is_an_unsolved_cell(smoke):
    settings = gt.Settings(tasks=("multinormal-sparse-3-3-2-2.0",), images=False, mi_estimators=("ksg",),
                           sample_sizes=(200,), ksg_max_dims=4)
    data, _ = gt.load_data(settings, None, None)
    result = gt.run_cell(settings, {"task": settings.tasks[0], "estimator": "ksg", "n_pairs": 200}, 0, data, "cpu")
    values = {name: values for name, (_, values) in result.variables.items()}
    assert np.isnan(values["estimate"][0]) and values["solved"][0] == 0 and values["reliable"][0] == 0
    assert values["unreliable_reason"][0].startswith("refused: ksg_mi: x and y have 3 + 3 = 6 dimensions")
    assert values["kind"][0] == "refused" and values["half"][0] == split(suite())[settings.tasks[0]]


def test_the_smoke_run_resumes_without_rerunning_cells(smoke):
    path, ds = smoke
    again = run_study(STUDY, "smoke", out=str(path.parents[2]), threads=1, progress=False, log=lambda _: None)
    xr.testing.assert_identical(load_dataset(again).drop_attrs(), ds.drop_attrs())


def _results(tasks: list[str], ratio: float = 1.0, reliable: float = 1.0, seeds: int = 2,
             sizes: tuple[int, ...] = (500, 5000)) -> xr.Dataset:
    """A study-shaped Dataset of mi_estimate cells: Î = ratio x I, intervals ±5 % around Î."""
    known, halves = suite(), split(suite())
    truth = 0.5 + 0.01 * np.arange(len(tasks))  # any positive truths: the verdict compares Î with them
    shape = (len(tasks), 1, len(sizes), seeds, 1)
    dims = ("task", "estimator", "n_pairs", "seed", "step")
    true = np.broadcast_to(truth[:, None, None, None, None], shape).copy()
    est = true * ratio
    ci = np.stack([est * 0.95, est * 1.05], axis=-1)
    family = np.broadcast_to(np.array([known[t].family for t in tasks], dtype=object)[:, None, None, None, None], shape)
    half = np.broadcast_to(np.array([halves[t] for t in tasks], dtype=object)[:, None, None, None, None], shape)
    ds = xr.Dataset(
        {"estimate": (dims, est), "true_mi": (dims, true), "true_mi_se": (dims, np.zeros(shape)),
         "estimate_ratio": (dims, est / true), "reliable": (dims, np.full(shape, reliable)),
         "solved": (dims, np.ones(shape)), "estimate_ci": (dims + ("interval",), ci),
         "family": (dims, family.copy()), "half": (dims, half.copy()), "kind": (dims, np.full(shape, "estimate", object)),
         "status": (dims[:-1], np.full(shape[:-1], "ok", dtype=object))},
        coords={"task": tasks, "estimator": ["mi_estimate"], "n_pairs": list(sizes), "seed": list(range(seeds)),
                "step": [1], "interval": ["lower", "upper"]})
    ds.attrs.update(study="mi-ground-truth", title="test", preset="quick")
    return ds


ALL = [t for t in suite()]


def test_verdict_holds_on_a_good_result_and_is_decided_on_the_scoring_half_alone():
    ds = _results(ALL)
    verdict = gt.verdict(ds)
    assert verdict.outcome == v.HELD, verdict
    assert all(line and ":" in line for line in verdict.evidence)  # every clause stated, none empty
    assert "reliable and wrong: 0 of" in verdict.evidence[0] and "bmi tasks solved" in verdict.evidence[2]
    tuning = [t for t, h in split(suite()).items() if h == "tuning"]
    bad = ds.copy(deep=True)
    bad["estimate"].loc[{"task": tuning}] *= 2.0  # every tuning cell twice the truth, marked reliable
    assert gt.verdict(bad).outcome == v.HELD  # the tuning half is reported, not judged


def test_verdict_flips_on_a_reliable_wrong_cell_of_the_scoring_half():
    ds = _results(ALL, seeds=3)  # a task is solved in most of its seeds: one bad seed of three leaves it solved
    scoring_mixture = next(t for t, h in split(suite()).items() if h == "scoring" and suite()[t].family == "mixture")
    ds["estimate"].loc[{"task": scoring_mixture, "seed": 0}] *= 2.0  # one seed, still marked reliable
    verdict = gt.verdict(ds)
    assert verdict.outcome in (v.PARTLY, v.NOT_HELD)
    assert "reliable and wrong: 2 of" in verdict.evidence[0] and scoring_mixture in verdict.evidence[0]
    ds["reliable"].loc[{"task": scoring_mixture, "seed": 0}] = 0.0  # the estimator said not to trust it
    assert gt.verdict(ds).outcome == v.HELD


def test_verdict_flips_when_intervals_miss_or_too_few_tasks_are_reliable():
    ds = _results(ALL)
    narrow = ds.copy(deep=True)
    narrow["estimate_ci"].values[..., 0] = narrow["estimate"].values * 1.3  # intervals above the truth, 1.3 x off
    narrow["estimate_ci"].values[..., 1] = narrow["estimate"].values * 1.4
    verdict = gt.verdict(narrow)
    assert verdict.outcome != v.HELD and "coverage: 0 of" in verdict.evidence[-2]
    flagged = ds.copy(deep=True)
    flagged["reliable"].values[:] = 0.0
    verdict = gt.verdict(flagged)
    assert verdict.outcome != v.HELD and any(line.startswith("tasks marked reliable: 0 of") for line in verdict.evidence)


def test_verdict_is_undecided_without_scoring_cells_or_without_mi_estimate():
    tuning = [t for t, h in split(suite()).items() if h == "tuning"]
    verdict = gt.verdict(_results(tuning))
    assert verdict.outcome == v.UNDECIDED and "scoring half" in verdict.evidence[0]
    other = _results(ALL).assign_coords(estimator=["ksg"])
    assert gt.verdict(other).outcome == v.UNDECIDED and v.judge(STUDY, other).outcome == v.UNDECIDED


def test_table_prints_both_halves_by_family():
    text = gt.table(_results(ALL, seeds=1, sizes=(5000,)))
    assert "tuning half, n = 5,000" in text and "scoring half, n = 5,000" in text
    assert "| mixture |" in text and "| all |" in text and "| discrete |" in text


def test_load_data_refuses_image_options_steps_and_unknown_names():
    settings = gt.PRESETS["smoke"]
    with pytest.raises(InputValueError, match="--data-dir /x does not apply.*--set image_dirs=DIR"):
        gt.load_data(settings, None, "/x")
    with pytest.raises(InputValueError, match="--steps 5 does not apply"):
        gt.load_data(gt.Settings(steps=5, images=False), None, None)
    with pytest.raises(UnknownNameError, match="1v1-normal-0.75"):
        gt.load_data(gt.Settings(tasks=("1v1-normal-0.7",), images=False), None, None)
    with pytest.raises(UnknownNameError, match="infonce"):
        gt.load_data(gt.Settings(mi_estimators=("infoNCE",), images=False), None, None)
    data, info = gt.load_data(settings, None, None)
    assert list(data["tasks"]) == list(settings.tasks) and info["dataset"] == gt.DATASET
    scoring = gt.load_data(gt.Settings(tasks=settings.tasks, images=False, half="scoring"), None, None)[0]
    assert set(scoring["tasks"]) == {t for t in settings.tasks if split(suite())[t] == "scoring"}


def test_presets_quick_runs_mi_estimate_on_the_whole_suite_at_three_sizes():
    paper, quick = gt.PRESETS["paper"], gt.PRESETS["quick"]
    assert paper.tasks == () and set(TASKS) <= set(gt.resolve(gt.Settings(images=False))[0])
    assert quick.sample_sizes == (500, 2_000, 5_000) and quick.mi_estimators == ("mi_estimate",)
    assert quick.half == "both"


def test_the_page_shows_the_family_tables_heatmap_and_scatter(smoke, tmp_path):
    path, ds = smoke
    page = write_report(path, tmp_path / "page.html", verdict=v.judge(STUDY, ds)).read_text(encoding="utf-8")
    assert "By family: solved, flagged, reliable and wrong, coverage" in page
    assert "tuning half (set the limits), n = 400" in page and "scoring half (judged), n = 400" in page
    assert "Î / I per task and estimator" in page and "Tasks solved per estimator" in page
    payload = json.loads(re.search(r'<script type="application/json" id="probe-charts">(.*?)</script>',
                                   page, flags=re.S).group(1))
    panels = [item for item in payload["charts"] if any(layer.get("mark", {}).get("type") == "area"
                                                        for layer in item["spec"].get("layer", []))]
    assert len(panels) == ds.sizes["estimator"]
    for task in ds["task"].values:
        assert task in page
    assert not math.isnan(float(ds["estimate"].mean()))
    assert solved(1.3, 1.0, "dense") and not solved(1.3, 1.0, "discrete")
