"""`probe analyze` through click's CliRunner on files written in tmp_path."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from test_report import chart_payload, external_urls, title_text
from test_report_intervals import interval_layers, layer_rows
from threadpoolctl import threadpool_limits

from probe.cli.analyze import analyze


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: thread pools fighting slow tests 10-50x
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


def _data(n=240, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    z = rng.standard_normal((3, d))[y] * 2 + rng.standard_normal((n, d))
    return z.astype(np.float32), y, (z + 0.5 * rng.standard_normal((n, d))).astype(np.float32)


def _invoke(*args):
    return CliRunner().invoke(analyze, [str(a) for a in args], catch_exceptions=False)


def test_npz_with_labels_writes_netcdf_and_html(tmp_path):
    z, y, _ = _data()
    np.savez(tmp_path / "emb.npz", z=z, y=y)
    out = tmp_path / "out"
    result = _invoke(tmp_path / "emb.npz", "--labels", "y", "--analyzers",
                     "linear_probe,v_information,triplet_margins", "--out", out)
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "analysis.nc", engine="netcdf4") as ds:
        assert {"linear_probe_accuracy", "v_information", "triplet_margins_margin_mean"} <= set(ds.data_vars)
        assert not any(name.startswith("v_information_v_information") for name in ds.data_vars)
        assert ds.linear_probe_accuracy.item() > 0.8 and ds.linear_probe_accuracy.attrs["units"] == "1"
        assert ds.attrs["linear_probe_protocol"] == "paper" and ds.attrs["analyze_labels"] == "y"
    page = (out / "analysis.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "linear_probe" in page
    # Intervals by default (--n-bootstrap 200): charts with Vega inlined, nothing fetched from anywhere.
    assert "<script src=" not in page.lower() and not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    with xr.open_dataset(out / "analysis.nc", engine="netcdf4") as ds:
        assert ds["linear_probe_accuracy_ci"].attrs["n_bootstrap"] == 200 and ds.attrs["analyze_n_bootstrap"] == 200
    plain = _invoke(tmp_path / "emb.npz", "--labels", "y", "--analyzers", "linear_probe", "--n-bootstrap", "0",
                    "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    page = (tmp_path / "plain" / "analysis.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # no interval: no chart


def test_paired_npy_files_run_mi_bounds_and_v_information(tmp_path):
    z, _, paired = _data()
    np.save(tmp_path / "view1.npy", z)
    np.save(tmp_path / "view2.npy", paired)
    out = tmp_path / "o"
    result = _invoke(tmp_path / "view1.npy", "--paired", tmp_path / "view2.npy", "--analyzers",
                     "mi_bounds,v_information", "--steps", 20, "--batch-size", 16, "--out", out)
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "analysis.nc", engine="netcdf4") as ds:
        assert ds.mi_bounds_bound.dims == ("estimator",) and ds.v_information.item() > 1.0
        assert ds.attrs["v_information_target_kind"] == "target"


def test_default_output_folder_and_auto_analyzers(tmp_path, monkeypatch):
    z, y, paired = _data(d=3)
    np.savez(tmp_path / "small.npz", embeddings=z, other=paired, labels=y)
    monkeypatch.chdir(tmp_path)
    result = _invoke("small.npz", "--labels", "labels", "--paired", "other", "--steps", 10, "--batch-size", 16)
    assert result.exit_code == 0, result.output
    with xr.open_dataset(tmp_path / "runs/analyze" / tmp_path.name / "small/analysis.nc", engine="netcdf4") as ds:
        names = ds.attrs["analyze_analyzers"].split(",")
    _assert_auto_set(names, {"geometry", "linear_probe", "v_information", "triplet_margins", "mi_estimate"})
    assert "skipped mi_bounds: mi_estimate already" in result.stdout


def _assert_auto_set(names, expected):
    """Auto mode ran `expected` and no analyzer that runs only when named (an analyzer registered
    later may run beside them)."""
    from probe.analyzers.registry import REGISTRY

    assert expected <= set(names), names
    assert not set(names) & {e.name for e in REGISTRY if not e.auto or not e.on_embeddings}, names


def test_explicit_test_set_and_netcdf_input(tmp_path):
    z, y, _ = _data()
    xr.Dataset({"z": (("sample", "feature"), z[:180]), "y": ("sample", y[:180])}).to_netcdf(tmp_path / "train.nc")
    np.save(tmp_path / "zt.npy", z[180:])
    np.save(tmp_path / "yt.npy", y[180:])
    result = _invoke(tmp_path / "train.nc", "--labels", "y", "--test-key", tmp_path / "zt.npy", "--test-labels",
                     tmp_path / "yt.npy", "--analyzers", "linear_probe", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    with xr.open_dataset(tmp_path / "r/analysis.nc", engine="netcdf4") as ds:
        assert ds.attrs["linear_probe_n_test"] == 60 and ds.attrs["linear_probe_n_train"] == 180


def test_html_escapes_everything(tmp_path):
    z, y, _ = _data()
    np.savez(tmp_path / "e.npz", z=z, **{"<b>y</b>": y})
    result = _invoke(tmp_path / "e.npz", "--labels", "<b>y</b>", "--analyzers", "geometry", "--out", tmp_path / "h")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "h/analysis.html").read_text()
    assert "<b>y</b>" not in page and "&lt;b&gt;y&lt;/b&gt;" in page


@pytest.mark.parametrize("make,args,code,fragment", [
    (lambda p: np.savez(p / "bad.npz", z=np.array([[1.0, 2.0]] * 5), o=np.array([{}, 1], dtype=object)),
     ["bad.npz"], 1, "holds Python objects"),
    (lambda p: (p / "bad.npz").write_bytes(b"not a zip"), ["bad.npz"], 1, "could not be read"),
    (lambda p: np.savez(p / "bad.npz", a=np.ones((4, 2)), b=np.ones((4, 3))), ["bad.npz"], 1, "name it with --key"),
    (lambda p: np.savez(p / "bad.npz", z=np.ones((4, 2))), ["bad.npz", "--key", "zz"], 1, "Did you mean 'z'"),
    (lambda p: np.savez(p / "bad.npz", z=np.ones((4, 2))), ["bad.npz", "--labels", "yy"], 1, "neither an array"),
    (lambda p: np.savez(p / "bad.npz", z=np.ones((6, 2)), y=np.arange(6) % 2),
     ["bad.npz", "--labels", "y", "--analyzers", "linear_prob"], 2, "Did you mean 'linear_probe'"),
    (lambda p: np.savez(p / "bad.npz", z=np.ones((6, 2))), ["bad.npz", "--analyzers", "linear_probe"], 2, "needs labels"),
    (lambda p: np.savez(p / "bad.npz", z=np.ones((6, 2))), ["bad.npz", "--analyzers", "condition_numbers"], 2, "needs a model"),
    (lambda p: np.savez(p / "bad.npz", z=np.full((6, 2), np.nan), y=np.arange(6) % 2),
     ["bad.npz", "--labels", "y", "--analyzers", "geometry"], 1, "analyze: z in bad.npz contains 12 NaN"),
    (lambda p: np.savez(p / "bad.npz", z=np.ones((6, 2)), y=np.arange(5) % 2),
     ["bad.npz", "--labels", "y"], 1, "labels has 5 entries but the embeddings have 6 rows"),
])
def test_errors_exit_cleanly_without_traceback(tmp_path, make, args, code, fragment):
    make(tmp_path)
    result = CliRunner().invoke(analyze, [str(tmp_path / args[0]), *args[1:], "--out", str(tmp_path / "x")])
    assert result.exit_code == code, result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_help_explains_every_option_with_an_example():
    result = _invoke("--help")
    assert result.exit_code == 0
    options = ("--key", "--labels", "--paired", "--test-key", "--test-labels", "--test-paired", "--analyzers",
               "--protocol", "--steps", "--batch-size", "--seed", "--test-fraction", "--out", "--threads")
    text = " ".join(result.output.split())  # undo click's line wrapping
    for option in options:
        assert f"Example: {option} " in text, option
    assert "probe analyze embeddings.npz --labels y" in text


def test_merge_renames_a_dimension_whose_coordinate_differs_between_analyzers():
    from probe.results import merge_prefixed as _prefixed

    a = xr.Dataset({"q": ("quantile", [1.0, 2.0], {"units": "1", "long_name": "a"})}, coords={"quantile": [0.0, 1.0]},
                   attrs={"seed": 0})
    b = xr.Dataset({"q": ("quantile", [3.0, 4.0, 5.0], {"units": "1", "long_name": "b"})},
                   coords={"quantile": [0.0, 0.5, 1.0]}, attrs={"seed": 1})
    merged = _prefixed({"first": a, "second": b})
    assert merged.first_q.dims == ("quantile",) and merged.second_q.dims == ("second_quantile",)
    assert merged.second_q.attrs["long_name"] == "b" and merged.attrs == {"first_seed": 0, "second_seed": 1}


# ------------------------------------------------------------------ the first hour with probe analyze

def test_summary_table_goes_to_stdout(tmp_path):
    z, y, _ = _data()
    np.savez(tmp_path / "emb.npz", z=z, y=y)
    result = _invoke(tmp_path / "emb.npz", "--labels", "y", "--analyzers", "linear_probe,v_information",
                     "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    with xr.open_dataset(tmp_path / "o/analysis.nc", engine="netcdf4") as ds:
        assert float(rows["linear_probe_accuracy"][1]) == pytest.approx(ds.linear_probe_accuracy.item(), abs=1e-3)
        ci = ds["v_information_ci"].values
        # value, interval, units: the interval as the saved bounds, then the units
        assert rows["v_information"][2:5] == [f"[{ci[0]:.4g},", f"{ci[1]:.4g}]", "nats"]
    assert "running linear_probe" in result.stderr and "running" not in result.stdout


def test_an_earlier_analysis_is_never_overwritten_silently(tmp_path, monkeypatch):
    z, y, _ = _data(n=60)
    np.savez(tmp_path / "emb.npz", z=z, y=y)
    monkeypatch.chdir(tmp_path)
    args = ("emb.npz", "--labels", "y", "--analyzers", "geometry")
    assert _invoke(*args).exit_code == 0 and _invoke(*args).exit_code == 0
    base = tmp_path / "runs" / "analyze" / tmp_path.name
    assert (base / "emb" / "analysis.nc").exists() and (base / "emb-2" / "analysis.nc").exists()
    first = _invoke(*args, "--out", "mine")
    again = _invoke(*args, "--out", "mine")
    assert first.exit_code == 0 and again.exit_code == 2 and "--overwrite" in again.output
    assert _invoke(*args, "--out", "mine", "--overwrite").exit_code == 0


def test_auto_runs_what_fits_and_writes_what_finished(tmp_path, monkeypatch):
    """Labels and a paired view of another width (16 and 8): triplets fall back to labels, KSG is
    left to mi_estimate, and an analyzer that fails costs only itself."""
    import dataclasses

    import probe.analyzers.registry as registry
    from probe.errors import InputValueError

    rng = np.random.default_rng(1)
    y = np.arange(120) % 3
    z = (rng.standard_normal((3, 16))[y] * 2 + rng.standard_normal((120, 16))).astype(np.float32)
    np.savez(tmp_path / "emb.npz", z=z, y=y)
    np.save(tmp_path / "v2.npy", z[:, :8] + rng.standard_normal((120, 8)).astype(np.float32))
    args = [tmp_path / "emb.npz", "--labels", "y", "--paired", tmp_path / "v2.npy", "--steps", 10]
    result = _invoke(*args, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    with xr.open_dataset(tmp_path / "o/analysis.nc", engine="netcdf4") as ds:
        finished = set(ds.attrs["analyze_analyzers"].split(","))
        _assert_auto_set(finished, {"linear_probe", "v_information", "triplet_margins", "mi_estimate", "geometry"})
        assert ds.attrs["triplet_margins_method"].startswith("same-class positives")  # not the 8-wide view
    assert "skipped ksg_mi: mi_estimate already runs KSG where the dimension allows (24 joint dimensions" \
        in result.stdout

    def broken(f, d, o):
        raise InputValueError("geometry: something about these inputs")

    patched = tuple(dataclasses.replace(e, run=broken) if e.name == "geometry" else e for e in registry.REGISTRY)
    monkeypatch.setattr(registry, "REGISTRY", patched)
    result = _invoke(*args, "--analyzers", "auto", "--out", tmp_path / "p")
    assert result.exit_code == 0 and "skipped geometry: something about these inputs" in result.stdout
    with xr.open_dataset(tmp_path / "p/analysis.nc", engine="netcdf4") as ds:
        assert set(ds.attrs["analyze_analyzers"].split(",")) == finished - {"geometry"}
    # Asked for by name, a failure is an error, but the analyzers that finished are still written.
    result = CliRunner().invoke(analyze, [str(a) for a in args] + ["--analyzers", "linear_probe,geometry",
                                                                    "--out", str(tmp_path / "q")])
    assert result.exit_code == 1 and "geometry failed" in result.output and "Traceback" not in result.output
    with xr.open_dataset(tmp_path / "q/analysis.nc", engine="netcdf4") as ds:
        assert ds.attrs["analyze_analyzers"] == "linear_probe"


def test_triplets_on_a_paired_view_of_another_width_say_what_they_need(tmp_path):
    z, _, _ = _data(n=60, d=6)
    np.save(tmp_path / "a.npy", z)
    np.save(tmp_path / "b.npy", z[:, :3])
    result = CliRunner().invoke(analyze, [str(tmp_path / "a.npy"), "--paired", str(tmp_path / "b.npy"),
                                          "--analyzers", "triplet_margins", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs --paired of the embeddings' width (3 features vs 6" in result.output


def test_nan_error_names_the_row_of_the_users_file(tmp_path):
    z, y, _ = _data(n=60)
    z[5, 2] = np.nan
    np.savez(tmp_path / "emb.npz", z=z, y=y)
    result = CliRunner().invoke(analyze, [str(tmp_path / "emb.npz"), "--labels", "y", "--analyzers", "linear_probe",
                                          "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "z in emb.npz contains 1 NaN value(s) (first at row 5" in result.output
    assert "training" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("shape,ok", [((60, 1), True), ((60, 3), False)])
def test_labels_may_be_a_column(tmp_path, shape, ok):
    z, y, _ = _data(n=60)
    labels = np.repeat(y[:, None], shape[1], axis=1)
    np.savez(tmp_path / "emb.npz", z=z, y=labels)
    result = CliRunner().invoke(analyze, [str(tmp_path / "emb.npz"), "--labels", "y", "--analyzers", "linear_probe",
                                          "--out", str(tmp_path / "o")])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1 and "shape (n,) or (n, 1)" in result.output and "(60, 3)" in result.output


def test_default_folders_of_two_cells_step_files_differ(tmp_path, monkeypatch):
    z, y, _ = _data(n=60)
    for cell in ("estimator=infonce_seed=0", "estimator=nwj_seed=0"):
        (tmp_path / cell).mkdir()
        np.savez(tmp_path / cell / "step-000020.npz", z=z, y=y)
    monkeypatch.chdir(tmp_path)
    for cell in ("estimator=infonce_seed=0", "estimator=nwj_seed=0"):
        assert _invoke(f"{cell}/step-000020.npz", "--analyzers", "geometry").exit_code == 0
        assert (tmp_path / "runs" / "analyze" / cell / "step-000020" / "analysis.nc").exists()


@pytest.mark.parametrize("dependent", [True, False])
def test_paired_auto_prints_mi_estimate_with_its_interval_and_verdict(tmp_path, dependent):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    y = x + 0.5 * rng.standard_normal((200, 2)) if dependent else rng.standard_normal((200, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    result = _invoke(tmp_path / "x.npy", "--paired", tmp_path / "y.npy", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if line.startswith("mi_estimate_mutual_information ")]
    value, lo, hi = (float(t) for t in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", row)[:3])
    assert lo <= value <= hi and "nats" in row
    # each candidate's row carries its interval too (candidate_ci belongs to candidate_estimate)
    [candidate] = [line for line in result.stdout.splitlines()
                   if line.startswith("mi_estimate_candidate_estimate[gaussian_copula]")]
    assert re.search(r"\[-?[\d.e-]+, -?[\d.e-]+\]", candidate), candidate
    with xr.open_dataset(tmp_path / "o/analysis.nc", engine="netcdf4") as ds:
        assert float(ds.mi_estimate_mutual_information) == pytest.approx(value, rel=1e-3, abs=1e-4)
        reason = str(ds.mi_estimate_unreliable_reason.values)
    if dependent:
        assert row.rstrip().endswith("reliable") and "UNRELIABLE" not in row
    else:  # no dependence: the value is near 0 and said to be unreliable, with the analyzer's reason
        assert f"UNRELIABLE: {reason}" in row and reason
    # the page draws the same interval as an error bar, and still opens offline
    page = (tmp_path / "o/analysis.html").read_text(encoding="utf-8")
    payload = chart_payload(page)
    chart = next(c for c in payload["charts"] if title_text(c) == "probe's best estimate of I(X; Y)")
    (row,) = layer_rows(payload, interval_layers(chart)[0])
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((lo, hi), rel=1e-3, abs=1e-4)
    assert external_urls(page) == []


def _mi_bounds_spy(monkeypatch) -> list[dict]:
    """Record the keyword arguments `probe analyze` hands to mi_bounds (which then runs as usual)."""
    import dataclasses
    import functools

    import probe.analyzers.registry as registry

    calls: list[dict] = []

    @functools.wraps(registry.mi_bounds)  # the registry reads which options to pass from the signature
    def spy(x, y, **kwargs):
        calls.append(kwargs)
        return registry.mi_bounds(x, y, **kwargs)

    patched = tuple(dataclasses.replace(e, function=spy) if e.name == "mi_bounds" else e for e in registry.REGISTRY)
    monkeypatch.setattr(registry, "REGISTRY", patched)
    return calls


@pytest.mark.parametrize("options,steps,batch_size", [((), None, None), (("--steps", 300, "--batch-size", 16), 300, 16)])
def test_mi_bounds_sizes_itself_to_the_data_unless_told(tmp_path, monkeypatch, options, steps, batch_size):
    """Without --steps or --batch-size mi_bounds gets None and picks them from the data's shape
    (here 160 rows: batches of 8, not the 128 that would leave 32 held-out rows under one batch)."""
    from probe.analyzers.bounds import default_settings, three_way_split

    calls = _mi_bounds_spy(monkeypatch)
    z, _, paired = _data(n=160, d=2)
    np.savez(tmp_path / "e.npz", z=z, p=paired)
    result = _invoke(tmp_path / "e.npz", "--paired", "p", "--analyzers", "mi_bounds", *options, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert [(c["steps"], c["batch_size"]) for c in calls] == [(steps, batch_size)]
    train, validation, test = three_way_split(160, 0.2, 0.2, 0)
    chosen = default_settings(train.size, min(validation.size, test.size), 2, 2)
    with xr.open_dataset(tmp_path / "o/analysis.nc", engine="netcdf4") as ds:
        assert ds.attrs["mi_bounds_steps"] == (steps or chosen["steps"]) != 2000
        assert ds.attrs["mi_bounds_batch_size"] == (batch_size or chosen["batch_size"]) != 128


def test_help_says_mi_bounds_settings_are_chosen_from_the_data():
    text = " ".join(_invoke("--help").output.split())
    for option, following in (("--steps", "--batch-size"), ("--batch-size", "--seed")):
        described = text.split(f"{option} INTEGER RANGE", 1)[1].split(f"{following} INTEGER RANGE", 1)[0]
        assert "[default: (chosen from the data's shape)" in described, described


# ------------------------------------------------------------------- messages that lead somewhere (issue 21)

def test_a_one_dimensional_array_says_how_to_reshape_it(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3000))
    result = CliRunner().invoke(analyze, [str(tmp_path / "one.npy")])
    assert result.exit_code != 0
    assert "one.npy must be 2-D (n, d); got shape (3000,); reshape a single feature per row with x[:, None]" \
        in result.output and "--key" not in result.output


def test_an_empty_array_says_it_has_0_rows(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    result = CliRunner().invoke(analyze, [str(tmp_path / "empty.npy")])
    assert result.exit_code != 0 and "has 0 rows (shape=(0, 5))" in result.output


def test_labels_of_shape_n_1_beside_the_embeddings_are_recognised(tmp_path):
    z, y, _ = _data(n=150)
    np.savez(tmp_path / "e.npz", emb=z, y=y[:, None])  # two 2-D arrays, but y is a column of class ids
    result = CliRunner().invoke(analyze, [str(tmp_path / "e.npz"), "--analyzers", "auto", "--n-bootstrap", "0",
                                          "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "using y (150, 1) in e.npz as the labels" in result.stderr
    with xr.open_dataset(tmp_path / "o/analysis.nc", engine="netcdf4") as ds:
        assert "linear_probe_accuracy" in ds and ds.attrs["analyze_labels"] == "y"


def test_inputs_are_checked_before_an_output_folder_is_named_and_paired_files_name_it(tmp_path, monkeypatch):
    z, _, paired = _data(n=150)
    np.save(tmp_path / "view1.npy", z)
    np.save(tmp_path / "view2.npy", paired)
    np.save(tmp_path / "bad.npy", paired[:, 0])
    monkeypatch.chdir(tmp_path)
    ok = CliRunner().invoke(analyze, ["view1.npy", "--paired", "view2.npy", "--analyzers", "geometry"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "runs/analyze" / tmp_path.name / "view1+view2/analysis.nc").is_file()
    bad = CliRunner().invoke(analyze, ["view1.npy", "--paired", "bad.npy", "--analyzers", "geometry"])
    assert bad.exit_code != 0 and "bad.npy must be 2-D" in bad.output
    assert "writing to" not in bad.output and not (tmp_path / "runs/analyze" / tmp_path.name / "view1+bad").exists()


def test_a_long_text_value_goes_below_the_table_instead_of_widening_every_row():
    import xarray as xr

    from probe.cli.table import WIDEST_VALUE, table

    method = "normal interval from the standard error of the per-row terms (delta method), widened"
    ds = xr.Dataset({"accuracy": ((), 0.8), "ci_method": ((), method)})
    lines = table({"linear_probe": ds}, {}).splitlines()
    assert max(len(line) for line in lines[:3]) < 40 + WIDEST_VALUE  # the rows stay narrow
    [row] = [line for line in lines if line.startswith("linear_probe_ci_method")]
    assert "[1] below" in row and lines[3] == f"[1] linear_probe_ci_method: {method}"
