"""The command line through click's CliRunner: the happy path and every user mistake, each a
one-line error without a traceback."""
import gzip

import pytest
from click.testing import CliRunner

from probe.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


def test_help_explains(runner):
    result = runner.invoke(main, ["run-study", "--help"])
    assert result.exit_code == 0
    for text in ("--preset", "--data-dir", "--seeds", "--steps", "--device", "--out", "Examples"):
        assert text in result.output


def test_list_studies_and_datasets(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path))
    result = runner.invoke(main, ["list-studies"])
    assert result.exit_code == 0 and "invertible-encoders" in result.output and "Fig. 1a/b" in result.output
    result = runner.invoke(main, ["datasets"])
    assert result.exit_code == 0 and "digits" in result.output and str(tmp_path) in result.output


def test_run_study_smoke_writes_results_and_report(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["run-study", "invertible-encoders", "--preset", "smoke", "--no-progress",
                                  "--out", "runs", "--seeds", "1"])
    assert result.exit_code == 0, result.output
    [results] = (tmp_path / "runs" / "invertible-encoders").glob("*/results.nc")
    assert (results.parent / "report.html").stat().st_size > 10_000  # beside the run, not reports/<study>.html
    assert not (tmp_path / "reports").exists()
    # the run ends with whether it showed the paper's effect (a smoke run: not judged), and the numbers (on stdout)
    assert "verdict: not judged (smoke preset: too short to decide): " in result.stdout
    assert "infonce: accuracy " in result.stdout


def _fails_cleanly(result, *needles):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for needle in needles:
        assert needle in result.output, result.output


def test_bad_inputs(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path / "cache"))
    base = ["run-study", "invertible-encoders", "--preset", "smoke", "--no-progress", "--out", str(tmp_path / "runs")]
    _fails_cleanly(runner.invoke(main, base + ["--steps", "0"]), "--steps is 0")
    _fails_cleanly(runner.invoke(main, ["run-study", "invertible-encoder"]), "Did you mean 'invertible-encoders'")
    _fails_cleanly(runner.invoke(main, base + ["--data-dir", str(tmp_path / "nowhere")]), "nowhere")
    _fails_cleanly(runner.invoke(main, base + ["--dataset", "mnsit"]), "Did you mean 'mnist'")
    _fails_cleanly(runner.invoke(main, base + ["--seeds", "zero"]), "give a count")
    _fails_cleanly(runner.invoke(main, base + ["--seeds", "3-1"]), "'3-1' is an empty range (3 > 1)", "1-3")
    _fails_cleanly(runner.invoke(main, base + ["--seeds", "0"]), "'0': at least one seed")
    _fails_cleanly(runner.invoke(main, base + ["--dataset", "mnist", "--data-dir", str(tmp_path)]),
                   "--dataset mnist and --data-dir", "Pass one of them")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (corrupt / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 7))
    _fails_cleanly(runner.invoke(main, base + ["--data-dir", str(corrupt)]), "train-images-idx3-ubyte.gz is truncated")

    # A file where the runs folder should go: unwritable for every user, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _fails_cleanly(runner.invoke(main, base[:-2] + ["--out", str(blocker / "runs")]), "--out", "writable")


def test_report_errors(runner, tmp_path):
    _fails_cleanly(runner.invoke(main, ["report", str(tmp_path / "missing.nc")]), "missing.nc", "does not exist")


def test_set_overrides_are_checked_before_training(runner, tmp_path):
    base = ["run-study", "invertible-encoders", "--preset", "smoke", "--no-progress", "--out", str(tmp_path)]
    _fails_cleanly(runner.invoke(main, base + ["--set", "estimators=infonce,nwjj"]), "Did you mean 'nwj'")
    _fails_cleanly(runner.invoke(main, base + ["--set", "learning_rat=1"]), "Did you mean 'learning_rate'")
    _fails_cleanly(runner.invoke(main, base + ["--set", "learning_rate=fast"]), "cannot be read as float")
    _fails_cleanly(runner.invoke(main, base + ["--set", "nonsense"]), "KEY=VALUE")
    assert not list(tmp_path.rglob("*.nc"))


def test_saved_embeddings_feed_probe_analyze(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["run-study", "invertible-encoders", "--preset", "smoke", "--no-progress",
                                  "--no-report", "--set", "estimators=infonce", "--save-embeddings"])
    assert result.exit_code == 0, result.output
    saved = sorted(tmp_path.glob("runs/invertible-encoders/*/embeddings/estimator=infonce_seed=0/step-*.npz"))
    assert [p.name for p in saved] == ["step-000000.npz", "step-000010.npz", "step-000020.npz"]
    result = runner.invoke(main, ["analyze", str(saved[-1]), "--key", "z", "--labels", "y", "--test-key", "z_test",
                                  "--test-labels", "y_test", "--analyzers", "linear_probe", "--out", "analysis"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "analysis" / "analysis.nc").exists()
