"""The mi-ground-truth study: estimators on the 40 bmi-v1 tasks, its solved rule, verdict and page."""
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


def test_smoke_run_records_every_cell_against_its_truth(smoke):
    _, ds = smoke
    settings = gt.PRESETS["smoke"]
    assert set(ds["task"].values) == set(settings.tasks)
    assert set(ds["estimator"].values) == set(settings.mi_estimators)
    assert ds["step"].values.tolist() == [settings.n_samples]
    assert (ds["status"] == "ok").all()
    for task in settings.tasks:
        np.testing.assert_allclose(ds["true_mi"].sel(task=task).values, TASKS[task].mutual_information)
    est, truth = ds["estimate"].values, ds["true_mi"].values
    assert np.isfinite(est).all()
    np.testing.assert_allclose(ds["estimate_ratio"].values, est / truth)
    np.testing.assert_array_equal(ds["solved"].values, gt.solved(est, truth).astype(float))
    assert ds["estimate"].attrs["units"] == "nats" and ds["wall_time"].attrs["units"] == "s"
    assert (ds["wall_time"].values > 0).all()
    # every estimator of a (task, seed) saw the same pairs: KSG rerun on them gives the cell's value
    x, y = TASKS["1v1-normal-0.75"].sample(settings.n_samples, 0)
    again = gt.ESTIMATORS["ksg"](settings, x, y, 0).value
    assert again == pytest.approx(float(ds["estimate"].sel(task="1v1-normal-0.75", estimator="ksg", seed=0).item()))


def test_estimator_verdicts_are_recorded_and_a_refusal_is_an_unsolved_cell(smoke):
    _, ds = smoke
    cells = ds.sel(estimator="mi_estimate")
    assert set(np.unique(cells["reliable"].values)) <= {0.0, 1.0}
    assert all(str(m) for m in cells["method"].values.ravel())
    assert np.isnan(ds["reliable"].sel(estimator="ksg").values).sum() == 0  # ksg_mi gives its verdict too
    settings = gt.Settings(tasks=("multinormal-sparse-3-3-2-2.0",), mi_estimators=("ksg",), n_samples=200,
                           ksg_max_dims=4)
    tasks, _ = gt.load_data(settings, None, None)
    result = gt.run_cell(settings, {"task": settings.tasks[0], "estimator": "ksg"}, 0, tasks, "cpu")
    values = {name: values for name, (_, values) in result.variables.items()}
    assert np.isnan(values["estimate"][0]) and values["solved"][0] == 0 and values["reliable"][0] == 0
    assert values["unreliable_reason"][0].startswith("refused: ksg_mi: x and y have 3 + 3 = 6 dimensions")


def test_the_smoke_run_resumes_without_rerunning_cells(smoke, tmp_path):
    path, ds = smoke
    again = run_study(STUDY, "smoke", out=str(path.parents[2]), threads=1, progress=False, log=lambda _: None)
    xr.testing.assert_identical(load_dataset(again).drop_attrs(), ds.drop_attrs())


def test_solved_rule_negative_zero_and_non_finite_are_never_solved():
    truth = 2.0
    estimates = np.array([2.0, 2.0 * 1.49, 2.0 / 1.49, 2.0 * 1.5, 2.0 / 1.5, 3.5, 0.0, -2.0, np.nan, np.inf, -np.inf])
    expected = [True, True, True, False, False, False, False, False, False, False, False]
    assert gt.solved(estimates, truth).tolist() == expected
    assert not gt.solved(1.0, 0.0)  # a zero truth has no ratio


def _results(ratios: dict[str, np.ndarray], reliable: dict[str, np.ndarray] | None = None, seeds=3) -> xr.Dataset:
    """A study-shaped Dataset over all 40 tasks: Î = ratio × I per (estimator, task, seed)."""
    tasks = list(TASKS)
    truth = np.array([TASKS[t].mutual_information for t in tasks])
    dims = ("task", "estimator", "seed", "step")
    est = np.stack([ratios[e] for e in ratios], axis=1) * truth[:, None, None]
    est = est[..., None]
    flags = np.stack([(reliable or {}).get(e, np.ones((len(tasks), seeds))) for e in ratios], axis=1)[..., None]
    truth_b = np.broadcast_to(truth[:, None, None, None], est.shape)
    ds = xr.Dataset(
        {"estimate": (dims, est), "true_mi": (dims, truth_b.copy()), "estimate_ratio": (dims, est / truth_b),
         "solved": (dims, gt.solved(est, truth_b).astype(float)), "reliable": (dims, flags.astype(float)),
         "status": (dims[:-1], np.full(est.shape[:-1], "ok", dtype=object))},
        coords={"task": tasks, "estimator": list(ratios), "seed": list(range(seeds)), "step": [5000]})
    ds.attrs.update(study="mi-ground-truth", title="test", preset="smoke")
    return ds


def test_verdict_holds_and_flips_on_unsolved_tasks_and_on_a_reliable_negative():
    n = len(TASKS)
    good = np.ones((n, 3))
    verdict = gt.verdict(_results({"mi_estimate": good, "ksg": good * 3}))
    assert verdict.outcome == v.HELD, verdict
    assert "solved 40 of 40" in verdict.evidence[0] and "ksg 0" in verdict.evidence[2]

    wrong = good.copy()
    wrong[:5, :2] = 2.0             # 5 tasks off by x2 in 2 of 3 seeds: 35 of 40 solved, 36 needed
    verdict = gt.verdict(_results({"mi_estimate": wrong}))
    assert verdict.outcome == v.PARTLY and "solved 35 of 40" in verdict.evidence[0]
    wrong[4, 1] = 1.0               # one of them wrong in a single seed only: solved again, 36 of 40
    assert gt.verdict(_results({"mi_estimate": wrong})).outcome == v.HELD

    negative = good.copy()
    negative[0, 0], negative[1, 0] = -0.5, np.nan   # minority seeds: both tasks still solved
    flags = np.ones((n, 3))
    verdict = gt.verdict(_results({"mi_estimate": negative}, {"mi_estimate": flags}))
    assert verdict.outcome == v.PARTLY and "marked reliable: 2 of 120" in verdict.evidence[1]
    flags[0, 0] = flags[1, 0] = 0.0  # the estimator said not to trust them
    assert gt.verdict(_results({"mi_estimate": negative}, {"mi_estimate": flags})).outcome == v.HELD
    flags[0, 0] = 1.0
    wrong[:5, 1] = 2.0
    wrong[0, 0] = -1.0              # both parts fail
    assert gt.verdict(_results({"mi_estimate": wrong}, {"mi_estimate": flags})).outcome == v.NOT_HELD


def test_verdict_is_undecided_without_mi_estimate_cells():
    ds = _results({"ksg": np.ones((len(TASKS), 2))}, seeds=2)
    assert gt.verdict(ds).outcome == v.UNDECIDED
    assert v.judge(STUDY, ds.assign_attrs(preset="quick")).outcome == v.UNDECIDED
    assert v.judge(STUDY, ds).outcome == v.NOT_JUDGED   # _results is a smoke run


def test_table_marks_unsolved_tasks_and_counts_them():
    ratios = np.ones((len(TASKS), 3))
    ratios[0] = 0.5
    text = gt.table(_results({"mi_estimate": ratios, "ksg": ratios * 1.2}))
    first = next(line for line in text.splitlines() if line.startswith(f"| {next(iter(TASKS))} |"))
    assert "0.50*" in first and "0.60*" in first
    assert text.splitlines()[-1] == "| **solved** | | 39/40 | 39/40 |"


def test_load_data_refuses_image_data_steps_and_unknown_names():
    settings = gt.PRESETS["smoke"]
    with pytest.raises(InputValueError, match="--dataset mnist does not apply"):
        gt.load_data(settings, "mnist", None)
    with pytest.raises(InputValueError, match="--steps 5 does not apply"):
        gt.load_data(gt.Settings(steps=5), None, None)
    with pytest.raises(UnknownNameError, match="1v1-normal-0.75"):
        gt.load_data(gt.Settings(tasks=("1v1-normal-0.7",)), None, None)
    with pytest.raises(UnknownNameError, match="infonce"):
        gt.load_data(gt.Settings(mi_estimators=("infoNCE",)), None, None)
    tasks, info = gt.load_data(settings, None, None)
    assert list(tasks) == list(settings.tasks) and info["dataset"] == "bmi-v1"
    assert gt.load_data(settings, None, None)[1]["dataset_sha256"] == info["dataset_sha256"]
    other = gt.load_data(gt.Settings(tasks=settings.tasks, n_samples=700), None, None)[1]
    assert other["dataset_sha256"] != info["dataset_sha256"]


def test_presets_paper_is_bmi_v1_and_quick_keeps_n():
    paper, quick = gt.PRESETS["paper"], gt.PRESETS["quick"]
    assert paper.tasks == tuple(TASKS) and len(paper.tasks) == 40
    assert paper.n_samples == 5_000 and paper.seeds == tuple(range(10))
    assert quick.n_samples == 5_000 and "mi_estimate" in quick.mi_estimators


def test_the_page_draws_the_heatmap_solved_counts_and_scatter(smoke, tmp_path):
    path, ds = smoke
    page = write_report(path, tmp_path / "page.html", verdict=v.judge(STUDY, ds)).read_text(encoding="utf-8")
    assert "Î / I per task and estimator" in page and "Tasks solved per estimator" in page
    payload = json.loads(re.search(r'<script type="application/json" id="probe-charts">(.*?)</script>',
                                   page, flags=re.S).group(1))
    specs = json.dumps([item["spec"] for item in payload["charts"]])
    assert '"type": "log"' in specs and '"domainMid": 1' in specs and '"mark": {"type": "rect"' in specs
    # one estimate-vs-truth panel per estimator, each with the y = x line and the x1.5 band
    panels = [item for item in payload["charts"] if any(layer.get("mark", {}).get("type") == "area"
                                                        for layer in item["spec"].get("layer", []))]
    assert len(panels) == ds.sizes["estimator"]
    assert "Training curves" not in page  # one estimate per cell: no curves over steps
    for task in ds["task"].values:
        assert task in page
    assert not math.isnan(float(ds["estimate"].mean()))
