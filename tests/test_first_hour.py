"""A researcher's first hour: the commands the README gives, what they print and where, how long
they say they will take, what Ctrl-C leaves behind, and the files they write."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import probe.runner.executors as executors
import probe.runner.progress as progress
from probe.cli import main
from probe.io import atomic_write_text
from probe.runner.progress import StepClock, eval_schedule

ROOT = Path(__file__).resolve().parent.parent
ONE_CELL = ["--preset", "smoke", "--no-progress", "--seeds", "1", "--set", "estimators=infonce", "--device", "cpu"]


# ------------------------------------------------------------------------ setup, from a fresh shell

def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_test_command_is_what_ci_runs_and_needs_no_activated_venv():
    command = _readme_block("Tests").strip().splitlines()[0]
    assert command.startswith(".venv/bin/python -m pytest"), command  # works in a new shell, no `activate`
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(command)}$", ci, re.M), "CI must run exactly the README's test command"
    assert "python3 -m venv" in ci and ".venv-ci" not in ci  # the same .venv the command names


def test_importing_the_cli_loads_neither_torch_nor_numpy():
    code = "import sys, probe.cli; print(sorted(m for m in ('torch', 'numpy', 'xarray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "[]", out


def test_quick_is_the_default_preset_and_help_says_so():
    result = CliRunner().invoke(main, ["run-study", "--help"])
    text = " ".join(result.output.split())
    assert "--preset TEXT quick (the default)" in text and "[default: quick]" in text
    assert "--yes" in text


# ------------------------------------------------------------------------ ETA and projection

def _drive(clock: StepClock, steps: int, startup: float, step_s: float, eval_s: float, every: int) -> float:
    """Feed `clock` a cell whose evaluation at step s runs before on_step(s) (train_pair's order)."""
    now = 0.0
    clock.start_cell(now)
    for step in range(1, steps + 1):
        now += step_s + (startup if step == 1 else 0.0) + (eval_s if step % every == 0 else 0.0)
        clock.tick(step, now)
    return now


def test_step_clock_counts_the_evaluations_left_and_waits_for_a_few_steps():
    clock = StepClock(100, frozenset(range(0, 101, 10)))
    now = 0.0
    clock.start_cell(now)
    for step in range(1, 51):
        now += 0.1 + (5.0 if step == 1 else 0.0) + (2.0 if step % 10 == 0 else 0.0)
        clock.tick(step, now)
        if step <= 5:  # the start-up and 4 plain steps: no ETA yet (tqdm's would be 5 s a step here)
            assert clock.eta_s(0) is None
    # 50 steps of 0.1 s and the evaluations at 60, 70, 80, 90, 100 (2 s each) remain
    assert clock.eta_s(0) == pytest.approx(50 * 0.1 + 5 * 2.0, rel=1e-6)
    # a next cell adds its start-up (with its first step), its 100 steps and its 10 evaluations after step 0
    assert clock.eta_s(1) == pytest.approx(15.0 + 5.1 + 9.9 + 10 * 2.0, rel=1e-6)


def test_step_clock_projects_a_whole_cell():
    clock = StepClock(200, eval_schedule(type("S", (), {"steps": 200, "eval_every": 50})()))
    elapsed = _drive(clock, 200, startup=3.0, step_s=0.05, eval_s=1.0, every=50)
    assert clock.cell_s() == pytest.approx(elapsed, rel=1e-6)
    assert eval_schedule(type("S", (), {"steps": 30})()) == {0}  # no eval_every: only the start


def test_one_step_cells_get_an_eta_from_the_mean_cell():
    """mi-ground-truth's cells are one estimate each: there are no steps to time, so the ETA
    (and the projection) come from whole cells, not from a step clock that never fills."""
    clock = StepClock(1, frozenset({0}))
    now, durations = 0.0, [1.0, 3.0, 2.0, 6.0]
    for i, seconds in enumerate(durations):
        clock.start_cell(now)
        now += seconds
        clock.tick(1, now)
        if i + 1 < progress.MIN_TIMED_CELLS:
            assert clock.eta_s(10) is None and "3 cells" in clock.not_ready_text
    assert clock.eta_s(10) == pytest.approx(10 * np.mean(durations))  # the cell in progress has ended
    lines: list[str] = []
    projection = progress.Projection(cells=4000)
    with pytest.raises(progress.RunTooLong, match="3.0 s a cell"):
        projection.check(clock, on_cpu=True, label="task · seed 0", log=lines.append)
    assert "about 3.3 h for 4000 cell(s) (3.0 s a cell" in lines[0]
    assert StepClock(100, frozenset({0})).not_ready_text == "ETA after 5 timed steps"


def _gate_everything(patch: pytest.MonkeyPatch) -> None:
    """Every CPU run counts as too long, decided after 5 timed steps."""
    patch.setattr(progress, "ASK_ABOVE_S", 0.0)
    patch.setattr(progress, "PROJECTION_STEPS", 5)


def test_a_cpu_run_projected_too_long_stops_before_it_goes_on(tmp_path, monkeypatch):
    _gate_everything(monkeypatch)
    result = CliRunner().invoke(main, ["run-study", "invertible-encoders", *ONE_CELL, "--steps", "10", "--no-report",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    message = " ".join(result.stderr.split())
    assert "projected wall time on this CPU is about" in message
    for needle in ("--preset smoke", "--device cuda", "--yes"):
        assert needle in message
    assert "Traceback" not in result.output and not list(tmp_path.rglob("*.nc"))


# ------------------------------------------------------------------------ Ctrl-C

def test_ctrl_c_says_what_was_saved_and_that_rerunning_resumes(tmp_path, monkeypatch):
    real = executors.run_cell_job
    calls = []

    def interrupted_second_cell(job, *args, **kwargs):
        calls.append(job.cell.label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, *args, **kwargs)

    monkeypatch.setattr(executors, "run_cell_job", interrupted_second_cell)
    args = ["run-study", "invertible-encoders", "--preset", "smoke", "--no-progress", "--seeds", "1", "--steps", "10",
            "--no-report", "--no-ensemble", "--out", str(tmp_path)]  # cell by cell: the second one is cut
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert "Interrupted. Saved in" in result.stderr and "1 of 2 cell(s) finished" in result.stderr
    assert "no mid-cell checkpoint" in result.stderr and "Rerun the same command to resume" in result.stderr
    assert "Aborted!" not in result.output
    monkeypatch.setattr(executors, "run_cell_job", real)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "1 already done" in result.stderr, result.output


# ------------------------------------------------------------------------ stdout, stderr and files

@pytest.fixture(scope="module")
def one_cell_run(tmp_path_factory):
    """A one-cell smoke run through the command line under umask 0022, with --yes past the gate."""
    folder = tmp_path_factory.mktemp("first-hour")
    previous = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as patch:  # a run the gate would stop, gone on with --yes
            _gate_everything(patch)
            result = CliRunner().invoke(main, ["run-study", "invertible-encoders", *ONE_CELL, "--yes",
                                               "--out", str(folder)])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    return folder, result


def test_results_go_to_stdout_and_progress_to_stderr(one_cell_run):
    folder, result = one_cell_run
    run_dir = next(folder.glob("invertible-encoders/*/results.nc")).parent
    assert f"results: {run_dir / 'results.nc'}" in result.stdout
    assert f"report: {run_dir / 'report.html'}" in result.stdout  # beside the run, keyed by it
    assert "verdict: not judged (smoke preset: too short to decide)" in result.stdout  # a smoke run is not judged
    assert "infonce: accuracy" in result.stdout
    assert "already done" in result.stderr and "already done" not in result.stdout
    assert "projected wall time: about" in result.stderr  # --yes went on past the gate, and said how long
    assert "verdict" not in result.stderr and "results:" not in result.stderr


def test_a_report_that_fails_never_hides_the_results_or_the_verdict(one_cell_run, monkeypatch):
    import probe.report

    def broken(*args, **kwargs):
        raise RuntimeError("a chart bug")

    folder, _ = one_cell_run
    monkeypatch.setattr(probe.report, "write_report", broken)
    previous = os.umask(0o022)  # it rewrites the fixture's results.nc, whose mode another test checks
    try:
        result = CliRunner().invoke(main, ["run-study", "invertible-encoders", *ONE_CELL, "--out", str(folder)])
    finally:
        os.umask(previous)
    assert isinstance(result.exception, RuntimeError)  # a bug keeps its traceback ...
    assert "1 already done" in result.stderr           # (the finished run, reassembled)
    assert "results: " in result.stdout and "verdict: not judged" in result.stdout  # ... after the outcome
    assert "The results are saved; write the page later with: probe report" in result.stderr


def test_result_files_respect_the_umask(one_cell_run, tmp_path):
    folder, _ = one_cell_run
    run_dir = next(folder.glob("invertible-encoders/*/results.nc")).parent
    for path in (run_dir / "results.nc", run_dir / "cells" / "estimator=infonce_seed=0.nc", run_dir / "report.html"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    previous = os.umask(0o077)
    try:
        private = atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert private.stat().st_mode & 0o777 == 0o600


def test_two_runs_of_a_study_get_two_report_pages(one_cell_run):
    folder, _ = one_cell_run
    result = CliRunner().invoke(main, ["run-study", "invertible-encoders", *ONE_CELL, "--steps", "10",
                                       "--out", str(folder)])
    assert result.exit_code == 0, result.output
    pages = sorted(folder.glob("invertible-encoders/*/report.html"))
    assert len(pages) == 2 and pages[0].read_text() != pages[1].read_text()


def _result(seeds: int, steps: list[int], accuracy: float, preset: str) -> xr.Dataset:
    shape = (1, seeds, len(steps))
    values = np.full(shape, accuracy) + np.linspace(0, 0.05, len(steps))
    return xr.Dataset({"probe_accuracy": (("estimator", "seed", "step"), values),
                       "bound_test": (("estimator", "seed", "step"), np.ones(shape))},
                      coords={"estimator": ["infonce"], "seed": list(range(seeds)), "step": steps},
                      attrs={"study": "invertible-encoders", "preset": preset, "dataset": f"{preset}-data",
                             "seeds": ",".join(map(str, range(seeds)))})


def test_report_all_gives_the_study_page_to_its_fullest_run(tmp_path):
    runs = tmp_path / "runs"
    full, smoke = runs / "invertible-encoders" / "quick-x" / "results.nc", runs / "invertible-encoders" / "smoke-x" / "results.nc"
    for path, ds in ((full, _result(3, [0, 750, 1500], 0.8, "quick")), (smoke, _result(1, [0, 10, 20], 0.5, "smoke"))):
        path.parent.mkdir(parents=True)
        ds.to_netcdf(path, engine="netcdf4")
    os.utime(smoke, (full.stat().st_mtime + 60,) * 2)  # the smoke run is the newer one
    result = CliRunner().invoke(main, ["report", "--all", str(runs), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "site" / "invertible-encoders.html").read_text()
    assert "quick-data" in page and "smoke-data" not in page
    listed = [line.split("report: ", 1)[1] for line in result.stdout.splitlines() if line.startswith("report: ")]
    assert sorted(Path(p).name for p in listed) == ["invertible-encoders-smoke-1.html", "invertible-encoders.html"]
    assert "index: " in result.stdout


# ------------------------------------------------------------------------ small things

def test_datasets_columns_line_up(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path))
    lines = CliRunner().invoke(main, ["datasets"]).stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("dataset "))
    table = lines[header:]
    assert len(table) >= 4
    for column in ("state", "train / test", "image", "download", "description"):
        at = table[0].index(column)
        for row in table[1:]:
            assert row[at - 2:at] == "  " and row[at] != " ", (column, row)


def test_the_quick_start_time_is_one_number_in_the_readme_and_in_help():
    """The README's quick start and `probe --help` quote the same measured time (bench/quick_start.py)."""
    readme = (ROOT / "README.md").read_text()
    heading = re.search(r"^## Quick start \((.*)\)$", readme, re.M).group(1)
    said = re.findall(r"about ([\w .,-]+?) on 2 CPU cores", heading)
    help_text = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert said and f"about {said[0]} on 2 CPU cores" in help_text, (said, help_text)
    assert len(set(re.findall(r"quick start[^.]*?about ([\w .,-]+?) on 2 CPU cores", readme, re.I))) <= 1


def test_a_progress_bar_written_to_a_file_redraws_seldom(monkeypatch, tmp_path):
    """Under nohup or CI the bar is a log: a line every LOG_BAR_INTERVAL_S, not a redraw per step."""
    import sys

    from probe.runner.progress import LOG_BAR_INTERVAL_S, bar_options

    with open(tmp_path / "log", "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert bar_options()["mininterval"] == LOG_BAR_INTERVAL_S and bar_options()["file"] is log

    class Terminal:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bar_options()["mininterval"] < 1


def test_one_step_cells_project_again_after_a_tenth_of_them():
    """The first projection of a grid of one-step cells rests on one cell; a tenth later (at
    least 10 cells, if that is at most half the run) the mean cell gives a second one."""
    import time

    from probe.runner.progress import Projection, StepClock, refine_at, refined_text

    assert refine_at(12) is None and refine_at(20) == 10 and refine_at(630) == 63
    clock = StepClock(1, frozenset({0}))
    for cost in (1.0, 3.0):  # two cells timed: 2 s a cell on average
        clock.start_cell(now=0.0)
        clock.tick(1, now=cost)
    projection = Projection(cells=10, started_at=time.time() - 4.0)
    text = refined_text(clock, projection, 2, 10, end_s=0.0)
    assert text.startswith("projected wall time after 2 of 10 cells: about 20 s") and "2.0 s a cell" in text
