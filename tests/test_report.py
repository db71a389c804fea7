"""probe.report: one self-contained HTML page per study result, and probe.reference."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr

from probe import reference
from probe.errors import DataFormatError, DataUnavailableError, InputTypeError, InputValueError, ProbeError
from probe.report import write_report
from probe.report.arrange import BAND_REACH, describe, robust_range
from probe.report.page import heading
from probe.verdict import HELD, NOT_HELD, PARTLY, Verdict

MALICIOUS = "</script><script>alert(1)</script>"


def make_result(
    *,
    grid: dict[str, list[str]] | None = None,
    seeds: int = 3,
    steps: int = 6,
    dataset: str = "mnist",
    study: str = "invertible-encoders",
    preset: str = "quick",
    quantiles: bool = True,
    failed: bool = True,
) -> xr.Dataset:
    """A synthetic study result with the layout the study runner writes."""
    grid = {"estimator": ["infonce", "nwj"]} if grid is None else grid
    rng = np.random.default_rng(0)
    step = np.arange(steps) * 1000 * (20 // max(steps - 1, 1))
    shape = tuple(len(v) for v in grid.values()) + (seeds, steps)
    dims = tuple(grid) + ("seed", "step")
    progress = 1 - np.exp(-np.arange(steps) / 2)

    def curve(start: float, gain: float, noise: float) -> np.ndarray:
        return start + gain * progress + noise * rng.standard_normal(shape)

    variables = {
        "probe_accuracy": (dims, curve(0.86, 0.035, 0.004), {"long_name": "linear-probe accuracy", "units": "1"}),
        "bound_test": (dims, curve(-1.0, 5.5, 0.1), {"long_name": "bound on held-out pairs", "units": "nats"}),
        "bound_train": (dims, curve(-1.0, 5.6, 0.1), {"long_name": "bound on training batches", "units": "nats"}),
        "v_information": (dims, curve(1.5, 0.4, 0.02), {"long_name": "V-information of labels", "units": "nats"}),
        "wall_time": (dims, np.cumsum(np.full(shape, 2.0), axis=-1), {"long_name": "wall time", "units": "s"}),
    }
    status = np.full(shape[:-1], "ok", dtype=object)
    if failed:
        variables["probe_accuracy"][1][..., 1, 3:] = np.nan
        status[(0,) * len(grid) + (1,)] = "non-finite loss at step 2345"
    if quantiles:
        kappa = np.sort(rng.gamma(2, 1, shape[:-2] + (6,) + shape[-2:]), axis=len(grid)) * progress
        variables["log_condition_number"] = (
            tuple(grid) + ("quantile", "seed", "step"), kappa, {"long_name": "ln condition number of the Jacobian", "units": "1"})
    variables["status"] = (tuple(grid) + ("seed",), status, {"long_name": "run status", "units": ""})
    variables["pixel_probe_accuracy"] = (("seed",), np.full(seeds, 0.851), {"long_name": "pixel probe accuracy", "units": "1"})
    coords = {**grid, "seed": np.arange(seeds), "step": step}
    if quantiles:
        coords["quantile"] = np.linspace(0, 1, 6)
    attrs = {
        "study": study, "title": "Bijective encoders", "preset": preset, "dataset": dataset,
        "dataset_sha256": "ab12cd34ef56" + "0" * 52, "seeds": ",".join(map(str, range(seeds))),
        "device": "cpu", "probe_version": "0.1.0", "torch_version": "2.4.0", "eval_batch_size": 128,
        "total_wall_time": 3725.0, "created": "2025-01-02T03:04:05", "settings_json": json.dumps({"steps": 20000}),
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def external_urls(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", page, flags=re.IGNORECASE)


def chart_payload(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="probe-charts">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def title_text(chart: dict) -> str:
    """A chart's title as one string (a wrapped title is a list of lines)."""
    text = chart["spec"]["title"]["text"]
    return " ".join(text) if isinstance(text, list) else text


def subtitle_lines(chart: dict) -> list[str]:
    sub = chart["spec"]["title"].get("subtitle", [])
    return [sub] if isinstance(sub, str) else sub


def chart_titled(page: str, title: str) -> dict:
    return next(c for c in chart_payload(page)["charts"] if title_text(c) == title)


def y_domain(chart: dict) -> list | None:
    """The explicit y domain of a layered chart (None: Vega picks it from all the data)."""
    for layer in chart["spec"]["layer"]:
        domain = layer.get("encoding", {}).get("y", {}).get("scale", {}).get("domain")
        if domain is not None:
            return domain
    return None


def summary_table(page: str) -> tuple[list[str], list[list[str]]]:
    table = re.search(r"<h2>First and last evaluation</h2>.*?<table[^>]*>(.*?)</table>", page, re.S).group(1)
    head = re.findall(r"<th>(.*?)</th>", table)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table.split("</thead>")[1])]
    return head, rows


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    out = write_report(make_result(), tmp_path_factory.mktemp("r") / "page.html")
    return out.read_text(encoding="utf-8")


def test_page_is_self_contained_and_small(page):
    assert "<script src=" not in page.lower()
    assert external_urls(page) == []
    assert "vegaEmbed" in page and "<link" not in page
    assert len(page.encode()) < 2_000_000


def test_full_size_study_stays_under_2_mb(tmp_path):
    grid = {"encoder": ["convnet", "mlp"], "target": ["2", "4"], "estimator": ["infonce", "nwj"]}
    out = write_report(make_result(grid=grid, seeds=20, steps=21, study="encoder-architecture", quantiles=False),
                       tmp_path / "big.html")
    page = out.read_text(encoding="utf-8")
    assert len(page.encode()) < 2_000_000
    assert "0–19 (20 runs per cell)" in page
    payload = json.dumps(chart_payload(page), ensure_ascii=False)
    assert "3000 of 3360 points drawn" in payload  # 8 cells x 20 seeds x 21 steps
    assert "0.905" in payload and "convnet · 4 · nwj" in payload  # paper value matched to its cell


def test_paper_percentiles_on_condition_number_chart(tmp_path):
    page = write_report(make_result(study="hard-to-invert"), tmp_path / "h.html").read_text(encoding="utf-8")
    payload = json.dumps(chart_payload(page))
    assert "log_condition_number:max" in payload and "6.7" in payload


def test_header_values(page):
    for text in ("Bijective encoders", "invertible-encoders", "quick", "ab12cd34ef56", "0,1,2", "1 h 02 min",
                 "2025-01-02T03:04:05", "Reduced preset", "128", "2.4.0", "Fig. 1a/b"):
        assert text in page, text
    assert "ab12cd34ef560" not in page  # only the first 12 characters of the hash


def test_one_chart_per_variable(page):
    payload = chart_payload(page)
    specs = json.dumps(payload["charts"])
    titles = [title_text(c) for c in payload["charts"]]
    for long_name in ("linear-probe accuracy", "bound on held-out pairs", "bound on training batches",
                      "V-information of labels", "wall time"):
        assert long_name in titles
    assert "ln condition number of the Jacobian · infonce" in titles  # one percentile chart per cell
    assert titles[0] == "linear-probe accuracy"  # accuracy first
    assert "pixels 0.851" in json.dumps(payload["datasets"])
    assert any("vs held-out bound" in t for t in titles)
    assert "Pearson r =" in specs and "Spearman" in specs
    # every referenced dataset is shipped once
    for chart in payload["charts"]:
        assert set(chart["datasets"]) <= set(payload["datasets"])


def test_paper_values_shown_for_mnist(page):
    payload = json.dumps(chart_payload(page))
    assert "paper (Tschannen et al. 2020)" in payload
    assert "0.896" in payload  # InfoNCE accuracy at 20k [F]
    assert "5.3-6.1" in page  # NWJ band in the final table


def test_a_short_run_ends_beside_the_papers_last_values(tmp_path):
    short = make_result().isel(step=slice(0, 2))  # steps 0 and 4,000: the paper's 20k is off its axis
    page = write_report(short, tmp_path / "short.html").read_text(encoding="utf-8")
    assert "End of training: ours beside the paper" in page
    payload = chart_payload(page)
    rows = [row for data in payload["datasets"].values() for row in data if isinstance(row, dict)]
    paper = {(r["label"], r["value"]) for r in rows if str(r.get("source", "")).startswith("paper, step 20,000")}
    assert ("infonce", 0.896) in paper and ("nwj", 0.89) in paper      # accuracy at 20k [F]
    assert any(r.get("source") == "ours, step 4000" and r["label"] == "nwj" for r in rows)
    assert any("5.3-6.1" in str(r.get("source", "")) for r in rows)    # the NWJ band at 20k, as a range


def test_paper_values_absent_for_digits(tmp_path):
    ds = make_result(dataset="digits", quantiles=False)
    before = ds.copy(deep=True)
    out = write_report(ds, tmp_path / "digits.html")
    xr.testing.assert_identical(ds, before)  # the input is not mutated
    page = out.read_text(encoding="utf-8")
    assert "paper (Tschannen et al. 2020)" not in json.dumps(chart_payload(page))
    assert "are for MNIST" in page and "digits" in page
    assert "End of training: ours beside the paper" not in page  # no paper values to set beside ours
    assert "End of training, per grid cell" in page             # the cells side by side instead


def test_failed_runs_listed_and_band_uses_remaining_seeds(page):
    assert "non-finite loss at step 2345" in page
    assert 'id="status"' in page


def test_malicious_strings_are_escaped(tmp_path):
    ds = make_result(grid={"estimator": ["infonce", MALICIOUS]}, quantiles=False)
    for key in ("title", "study", "dataset", "device", "created", "settings_json"):
        ds.attrs[key] = MALICIOUS
    ds["status"].values[1, 0] = MALICIOUS
    ds["bound_test"].attrs["long_name"] = MALICIOUS
    page = write_report(ds, tmp_path / "x.html").read_text(encoding="utf-8")
    assert MALICIOUS not in page
    assert "<script>alert" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the spec still parses and carries the raw string as data, to be drawn as text by Vega
    assert MALICIOUS in json.dumps(chart_payload(page), ensure_ascii=False)
    assert page.lower().count("<script") == page.lower().count("</script")
    assert (tmp_path / "x.html").exists() and not list(tmp_path.glob("*.tmp"))


def test_netcdf_round_trip_and_default_path(tmp_path, monkeypatch):
    path = tmp_path / "result.nc"
    make_result(grid={"estimator": ["infonce"], "critic": ["bilinear", "concat"]}, study="critic-capacity",
                preset="paper").to_netcdf(path, engine="netcdf4")
    monkeypatch.chdir(tmp_path)
    out = write_report(str(path))
    assert out == tmp_path / "reports" / "critic-capacity.html"
    page = out.read_text(encoding="utf-8")
    assert "Reduced preset" not in page
    assert "estimator = infonce" in page  # the one estimator is said once, not on every label
    assert "0.856" in json.dumps(chart_payload(page))  # concat critic InfoNCE at 20k [F]


def test_single_seed_and_no_grid_draws_no_band(tmp_path):
    ds = make_result(grid={}, seeds=1, quantiles=False, failed=False, study="adversarial-encoder")
    page = write_report(ds, tmp_path).read_text(encoding="utf-8")  # a directory: <study>.html inside
    payload = chart_payload(page)
    marks = json.dumps([layer.get("mark") for c in payload["charts"] for layer in c["spec"].get("layer", [])])
    assert '"area"' not in marks and "one seed" in json.dumps(payload)
    assert (tmp_path / "adversarial-encoder.html").exists()


def test_missing_step_is_a_clear_error(tmp_path):
    ds = make_result().isel(step=0, drop=True)
    with pytest.raises(InputValueError, match="no 'step' dimension"):
        write_report(ds, tmp_path / "a.html")
    path = tmp_path / "nostep.nc"
    ds.drop_vars("status").to_netcdf(path, engine="netcdf4")
    with pytest.raises(DataFormatError, match=r"nostep\.nc.*no 'step' dimension"):
        write_report(path, tmp_path / "a.html")


def test_other_bad_inputs(tmp_path):
    only_status = make_result()[["status", "pixel_probe_accuracy"]].assign_coords(step=[0, 1, 2, 3, 4, 5])
    with pytest.raises(InputValueError, match="no numeric variable over 'step'"):
        write_report(only_status, tmp_path / "a.html")
    junk = tmp_path / "junk.nc"
    junk.write_text("not a netcdf file")
    with pytest.raises(DataFormatError, match=r"junk\.nc.*not a readable netCDF"):
        write_report(junk, tmp_path / "a.html")
    with pytest.raises(DataUnavailableError, match="does not exist"):
        write_report(tmp_path / "missing.nc")
    with pytest.raises(InputTypeError, match="xarray.Dataset"):
        write_report([1, 2, 3])
    assert issubclass(DataFormatError, ProbeError)


def test_reference_covers_the_paper():
    for study in ("invertible-encoders", "adversarial-encoder", "hard-to-invert", "critic-capacity",
                  "encoder-architecture", "noniid-negatives"):
        entry = reference.paper_values(study)
        assert entry is not None and entry["takeaway"] and entry["notes"] is not None
        for variable, series in entry["values"].items():
            assert variable in entry["tags"]
            for label, points in series.items():
                assert len(label.split("·")) == max(len(entry["grid"]), 1) or not entry["grid"]
                assert all(isinstance(s, int) and np.isfinite(v) for s, v in points)
    assert reference.paper_values("nope") is None
    nwj = reference.paper_values("invertible-encoders")["values"]["bound_test"]["nwj"]
    assert 0 not in [s for s, _ in nwj]  # "< -5" is a note, not a number
    assert reference.paper_values("critic-capacity", "cifar10")["baselines"]["pixels"]["value"] == 0.24
    entry = reference.paper_values("invertible-encoders")
    entry["values"].clear()
    assert reference.paper_values("invertible-encoders")["values"]  # a copy each time


@pytest.mark.parametrize("attr, family", [("mnist", "mnist"), ("folder:mnist-5k", "mnist"), ("digits", None),
                                          ("fashion-mnist", None), ("folder:CIFAR-10", "cifar10"), (None, None)])
def test_paper_dataset(attr, family):
    assert reference.paper_dataset(attr) == family


def test_label_matching():
    grid = ("encoder", "target", "estimator")
    assert reference.label_matches("convnet · 4 · nwj", grid, {"estimator": "NWJ", "target": "t=4", "encoder": "ConvNet"})
    assert reference.label_matches("* · 2 · *", grid, {"estimator": "nwj", "target": "2", "encoder": "mlp"})
    assert not reference.label_matches("mlp · 2 · nwj", grid, {"estimator": "nwj", "target": "4", "encoder": "mlp"})
    assert not reference.label_matches("concat", ("critic",), {"estimator": "nwj"})
    assert reference.label_matches("", (), {"estimator": "nwj"})
    assert reference.comparable_paper_values("noniid-negatives", "gaussian")[0] is not None


# ------------------------------------------------------------------ readable charts and tables

def test_robust_range_sets_one_excursion_off_scale():
    curve = np.array([-1.0, 1.3, 2.6, 3.3, 3.8, 4.2])
    means = np.concatenate([curve, curve + 0.05])
    assert robust_range(means) is None  # nothing off-scale: Vega picks the scale
    means[8] = -155.0  # one NWJ excursion
    lo, hi = robust_range(means, means - 1, means + 1)
    assert -5 < lo < -1 and 4.2 < hi < 8
    assert robust_range(means, means - 1, means + 1, keep=np.array([5.7]))[1] >= 5.7  # paper values stay in view


def test_robust_range_sets_a_cluster_of_excursions_off_scale():
    # matched-targets quick: three diverged resmlp NWJ cells end at -55 among 60 curve points near 0-3.
    rng = np.random.default_rng(0)
    means = np.concatenate([rng.uniform(-1.0, 3.0, 57), [-54.6, -55.6, -56.6]])
    lo, hi = robust_range(means)
    assert -3 < lo < -0.9 and 2.9 < hi < 5
    means[:57] = np.linspace(-56.0, 3.0, 57)  # a real spread: nothing is an outlier
    assert robust_range(means) is None


def test_robust_range_draws_whole_bands_around_close_means():
    # invertible-encoders on digits: two estimators 0.007 apart, sd 0.012 and 0.018.
    means, sds = np.array([0.808, 0.801]), np.array([0.012, 0.018])
    domain = robust_range(means, means - sds, means + sds)
    assert domain is None or (domain[0] <= 0.783 and domain[1] >= 0.820)


def test_robust_range_keeps_a_real_start_and_caps_bands():
    # hard-to-invert's training bound: NWJ starts at -9.4 and rises to 5; that start is the story, not an outlier.
    means = np.array([-1.3, 4.5, 4.7, 4.7, 4.8, 4.8, 4.8, -9.4, 3.5, 4.1, 4.2, 5.0, 4.9, 4.2])
    assert robust_range(means) is None
    lo, hi = robust_range(means, means - 300, means + 100)  # sd bands wider than the curves
    span = 5.0 - (-9.4)
    assert lo == pytest.approx(-9.4 - BAND_REACH * span) and hi == pytest.approx(5.0 + BAND_REACH * span)
    assert robust_range(np.array([0.0, 1.0, 500.0])) is None  # too few points to call one an outlier


def test_an_outlier_does_not_squash_its_chart(tmp_path):
    ds = make_result(failed=False)
    ds["bound_train"].values[1, 0, 2] = -400.0  # one NWJ seed at step 8,000
    page = write_report(ds, tmp_path / "o.html").read_text(encoding="utf-8")
    chart = chart_titled(page, "bound on training batches")
    lo, hi = y_domain(chart)
    assert -8 < lo < -1 and 4 < hi < 10
    note = [line for line in subtitle_lines(chart) if "off-scale" in line]
    assert note and "nwj at step 8,000" in note[0]
    edge = [layer for layer in chart["spec"]["layer"] if layer["encoding"]["y"]["field"] == "edge"]
    assert len(edge) == 1  # a triangle at the axis edge where the excursion left the chart
    assert all(layer["mark"]["clip"] for layer in chart["spec"]["layer"] if layer not in edge)
    assert y_domain(chart_titled(page, "bound on held-out pairs")) is None  # untouched charts keep Vega's scale


def test_long_titles_wrap(tmp_path):
    ds = make_result(quantiles=False, failed=False)
    ds["v_information"].attrs["long_name"] = "V-information of the labels under a multinomial logistic family V"
    page = write_report(ds, tmp_path / "t.html").read_text(encoding="utf-8")
    chart = chart_titled(page, "V-information of the labels under a multinomial logistic family V")
    assert isinstance(chart["spec"]["title"]["text"], list) and len(chart["spec"]["title"]["text"]) == 2
    y_titles = {json.dumps(layer["encoding"]["y"].get("title")) for layer in chart["spec"]["layer"]}
    assert all(len(line) <= 40 for title in y_titles for line in json.loads(title))  # the axis title wraps too
    assert chart_payload(page)["config"]["axis"]["labelOverlap"] is True


MATCHED = {"encoder": ["convnet", "mlp", "resmlp"], "target": ["2.0"], "estimator": ["infonce"]}


def matched_result() -> xr.Dataset:
    ds = make_result(grid=MATCHED, study="matched-targets", quantiles=True, failed=False)
    ds["target_gap"] = abs(ds["bound_test"] - 2.0)
    ds["target_gap"].attrs.update(long_name="L_t = |I_EST - t| on held-out pairs", units="nats")
    return ds


def test_coordinates_with_one_value_leave_the_labels(tmp_path):
    ds = matched_result()
    study = describe(ds, "the dataset")
    assert study.labels == ["convnet", "mlp", "resmlp"]
    assert study.varying == ("encoder",) and study.fixed == {"target": "2.0", "estimator": "infonce"}
    page = write_report(ds, tmp_path / "m.html").read_text(encoding="utf-8")
    payload = json.dumps(chart_payload(page), ensure_ascii=False)
    assert "· 2.0" not in payload and "· infonce" not in payload
    legends = {json.dumps(layer["encoding"]["color"].get("legend"), ensure_ascii=False)
               for c in chart_payload(page)["charts"] for layer in c["spec"].get("layer", [c["spec"]])
               if "color" in layer.get("encoding", {}) and "field" in layer["encoding"]["color"]}
    assert legends == {json.dumps({"symbolOpacity": 1, "symbolType": "circle", "title": "encoder"})}
    assert "target = 2.0, estimator = infonce" in page  # said once, in the header
    assert "ln condition number of the Jacobian · convnet" in [title_text(c) for c in chart_payload(page)["charts"]]
    one_cell = describe(make_result(grid={"estimator": ["nwj"], "critic": ["concat"]}), "the dataset")
    assert one_cell.labels == ["nwj · concat"]  # a single cell keeps its full name


def test_correlation_subtitles_one_line_per_cell_and_no_tautology(tmp_path):
    page = write_report(matched_result(), tmp_path / "m.html").read_text(encoding="utf-8")
    titles = [title_text(c) for c in chart_payload(page)["charts"]]
    assert "L_t = |I_EST - t| on held-out pairs" in titles  # its curve stays
    assert not any(t.startswith("L_t") and "vs held-out bound" in t for t in titles)  # |bound - t| vs bound: gone
    lines = subtitle_lines(chart_titled(page, "linear-probe accuracy vs held-out bound"))
    assert lines[0].startswith("all cells: Pearson r =")
    for label in MATCHED["encoder"]:
        assert sum(line.startswith(f"{label}: r = ") for line in lines) == 1, lines


def test_summary_table_has_units_and_no_empty_columns(tmp_path, page):
    short = make_result().isel(step=slice(0, 2))  # steps 0 and 4,000: the paper reports nothing at 4,000
    short_page = write_report(short, tmp_path / "s.html").read_text(encoding="utf-8")
    head, rows = summary_table(short_page)
    assert head == ["variable", "units", "grid cell", "step 0", "paper @ 0", "step 4000"]
    units = {re.sub("<.*?>", "", row[0]): row[1] for row in rows}
    assert units["bound_test"] == "nats" and units["wall_time"] == "s" and units["probe_accuracy"] == "dimensionless"
    assert all(len(row) == len(head) for row in rows)
    assert summary_table(page)[0][-1] == "paper @ 20000"  # kept where the paper has values


@pytest.mark.parametrize("outcome, asserted", [(HELD, True), (PARTLY, False), (NOT_HELD, False), (None, False)])
def test_the_heading_states_the_claim_only_when_the_run_showed_it(tmp_path, outcome, asserted):
    title = "Bijective encoders: the bound and the accuracy rise while the true MI stays constant"
    verdict = None if outcome is None else Verdict(claim="the bound and the accuracy rise", outcome=outcome,
                                                   evidence=("infonce: 0.846 -> 0.805",), decided_by="probe_accuracy")
    ds = make_result(quantiles=False, seeds=2, steps=3)
    ds.attrs["title"] = title
    page = write_report(ds, tmp_path / "h.html", verdict=verdict).read_text(encoding="utf-8")
    h1 = re.search(r"<h1>(.*?)</h1>", page).group(1)
    document_title = re.search(r"<title>(.*?)</title>", page).group(1)
    if asserted:
        assert h1 == document_title == title and "The paper&#x27;s claim" not in page
    else:
        assert h1 == document_title == "Bijective encoders"
        claim = re.search(r'<p class="claim">(.*?)</p>', page).group(1)
        assert "the bound and the accuracy rise while the true MI stays constant" in claim
        assert claim.endswith(f"This run: {outcome or 'not judged'}.")
    assert heading("Estimator validation", None) == ("Estimator validation", "")  # no claim, nothing to hold back


def _number_pattern(value: float) -> str:
    """0.89 matches "0.89" and "0.890", not "0.895" or "10.89"."""
    text = f"{value:g}"
    return rf"(?<![\d.]){re.escape(text)}{'0*' if '.' in text else ''}(?![\d])"


def test_docs_reference_holds_every_number_the_pages_draw():
    """docs/reference.md is the record the code cites: every paper value and range end is on it."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    prose = text.replace("−", "-").replace(",", "")
    for table in (reference.PAPER, reference.PAPER_CIFAR10):
        for study, entry in table.items():
            assert f"`{study}`" in text or entry["dataset"] == "cifar10", study
            numbers = [v for series in entry["values"].values() for points in series.values() for _, v in points]
            numbers += [v for series in entry["bands"].values() for points in series.values()
                        for _, lo, hi in points for v in (lo, hi)]
            numbers += [b["value"] for b in entry["baselines"].values()]
            missing = [v for v in numbers if not re.search(_number_pattern(v), prose)]
            assert missing == [], f"{study}: {missing} not in docs/reference.md"
    assert "/work/" not in text and "REFERENCE.md" not in text


def test_analysis_page_tables_name_their_units():
    from probe.report.analysis import analysis_page

    ds = xr.Dataset({"v_information": ((), 1.2, {"units": "nats", "long_name": "V-information"}),
                     "linear_probe_accuracy": ((), 0.9, {"units": "1", "long_name": "accuracy"}),
                     "count": ((), 3, {"long_name": "a count"})}, attrs={"method": "m"})
    page = analysis_page({"v_information": ds}, "probe analyze: z.npz", {"labels": "y"})
    rows = {re.findall(r"<td>(.*?)</td>", row)[0]: re.findall(r"<td>(.*?)</td>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", page) if "<td>" in row}
    units = re.findall(r"<th>(.*?)</th>", re.search(r"<tr><th>variable</th>.*?</tr>", page).group(0)).index("units")
    assert rows["v_information"][units] == "nats" and rows["linear_probe_accuracy"][units] == "dimensionless"
    assert rows["count"][units] == "—"
    assert "<th>setting</th><th>value</th>" in page and "<th>units</th>" in page


def test_a_variable_pooled_over_seeds_does_not_break_the_page(tmp_path):
    """log_condition_number_pooled has no seed axis: the correlation charts must leave it out
    (a 3-seed quick run crashed there), the percentile chart still draws it."""
    ds = make_result(seeds=3, steps=4)
    q = ds["quantile"].values if "quantile" in ds.dims else [0.0, 0.5, 1.0]
    dims = [d for d in ds["bound_test"].dims if d != "seed"]
    values = np.random.default_rng(0).random([ds.sizes[d] for d in dims] + [len(q)])
    ds = ds.assign_coords(quantile=q)
    ds["log_condition_number_pooled"] = (tuple(dims) + ("quantile",), values)
    page = write_report(ds, tmp_path / "pooled.html").read_text(encoding="utf-8")
    assert "log_condition_number_pooled" in page


# ------------------------------------------------------------------ the trial's rough edges (issue 21)

def test_the_bands_of_the_curves_in_view_are_drawn_whole_and_an_excursions_band_is_not():
    # training loss: NWJ's seeds spread from -2.7 up to -1.2 at one step; no mean is an outlier.
    means = np.array([-4.3, -4.5, -4.6, -4.7, -4.7, -4.7, -3.0, -2.7, -3.9, -4.1, -4.8, -4.5])
    sds = np.array([0.05] * 6 + [0.3, 1.5, 0.4, 0.5, 0.3, 0.6])
    domain = robust_range(means, means - sds, means + sds)
    assert domain is None or (domain[0] <= (means - sds).min() and domain[1] >= (means + sds).max())
    means[3] = -155.0  # an excursion: its own band never widens the axis
    lo, hi = robust_range(means, means - 100, means + 1)
    assert lo > -10 and hi >= -1.7 - 1e-9


def test_a_variable_with_one_value_everywhere_is_named_not_drawn(tmp_path):
    ds = make_result(failed=False)
    ds["jacobian_rank_deficient"] = (ds["probe_accuracy"].dims, np.zeros(ds["probe_accuracy"].shape),
                                     {"long_name": "fraction of Jacobians rank deficient", "units": "1"})
    page = write_report(ds, tmp_path / "c.html").read_text(encoding="utf-8")
    assert "so not drawn: <code>jacobian_rank_deficient</code> (fraction of Jacobians rank deficient) = 0" in page
    assert "jacobian_rank_deficient · mean" not in page  # no chart of a flat line


def test_pooled_percentiles_say_pooled_and_seeds_are_counted_in_words(tmp_path):
    ds = make_result(failed=False)
    pooled = ds["log_condition_number"].isel(seed=0, drop=True)
    ds["log_condition_number_pooled"] = pooled.assign_attrs(long_name="pooled ln cond", units="nats")
    page = write_report(ds, tmp_path / "q.html").read_text(encoding="utf-8")
    assert "seed(s)" not in page and "1 seed" not in page
    assert "log_condition_number_pooled · pooled over 3 seeds × inputs" in page
    spec = page[page.index('id="probe-charts"'):]
    opacity = re.search(r'"opacity":(\{"field":"band".*?"type":"(\w+)"\})', spec)
    assert opacity and opacity.group(2) == "ordinal" and '"sort":' in opacity.group(1)  # nominal made Vega warn
