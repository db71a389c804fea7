"""--tf32: the flag reaches the training of every cell (alone or trained together), is recorded
in the cells' and the results' attrs, gets its own run folder, and torch's global TF32 flags are
what they were once the run ends (on a CPU the flags change no number, but they are still set)."""
import dataclasses

import pytest
import torch
from click.testing import CliRunner

import studies.invertible_encoders as invertible
from probe.cli import main
from probe.results import load_dataset
from probe.runner import run_study
from probe.runner.cells import tf32_mode
from studies import find_study

STUDY = find_study("invertible-encoders")


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.fixture()
def saved_flags():
    """Leave torch's flags as this test found them (the legacy API: the one tf32_mode sets)."""
    before = _flags()
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def recording_study(seen: list):
    """The study, noting the TF32 flags while each cell (or group) is built for training."""
    def run_cell(settings, ids, seed, data, device, on_step=None):
        seen.append(_flags())
        return invertible.run_cell(settings, ids, seed, data, device, on_step)

    def member(settings, ids, seed, data):
        seen.append(_flags())
        return invertible.build_member(settings, ids, seed, data)

    return dataclasses.replace(STUDY, run_cell=run_cell, member=member)


@pytest.mark.parametrize("ensemble", [True, False])
@pytest.mark.parametrize("tf32", [True, False])
def test_the_flag_reaches_training_is_recorded_and_restored(tmp_path, saved_flags, tf32, ensemble):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32  # the opposite of the run's
    seen: list = []
    path = run_study(recording_study(seen), "smoke", steps=2, progress=False, out=tmp_path, tf32=tf32,
                     ensemble=ensemble, log=lambda m: None)
    assert seen and set(seen) == {(tf32, tf32)}, seen  # matmuls and convolutions, for every cell
    assert _flags() == (not tf32, not tf32)  # what they were before the run
    results = load_dataset(path)
    assert results.attrs["tf32"] == int(tf32)
    cells = [load_dataset(p).attrs for p in (path.parent / "cells").glob("*.nc")]
    assert len(cells) == 2 and {a["tf32"] for a in cells} == {int(tf32)}
    assert {a.get("trained_with_members") for a in cells} == ({2} if ensemble else {None})
    assert path.parent.name.endswith("-tf32") == tf32


def test_a_tf32_run_never_reuses_the_cells_of_an_fp32_one(tmp_path, saved_flags):
    paths = [run_study(STUDY, "smoke", steps=2, progress=False, out=tmp_path, tf32=flag, log=lambda m: None)
             for flag in (False, True)]
    assert paths[0].parent != paths[1].parent
    keys = {load_dataset(p).attrs["run_key"] for path in paths for p in (path.parent / "cells").glob("*.nc")}
    assert len(keys) == 2  # the checkpoints' identity too


def test_restored_after_a_failing_cell(saved_flags):
    torch.backends.cuda.matmul.allow_tf32 = False
    with pytest.raises(RuntimeError, match="boom"), tf32_mode(True):
        assert _flags() == (True, True)
        raise RuntimeError("boom")
    assert torch.backends.cuda.matmul.allow_tf32 is False


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9: no new API")
def test_a_caller_on_torchs_new_api_gets_its_settings_back():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    try:
        matmul.fp32_precision = conv.fp32_precision = "tf32"  # the legacy flags are unreadable from here on
        with tf32_mode(False):
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_cli_flag_explains_and_records(tmp_path, saved_flags):
    runner = CliRunner()
    help_text = " ".join(runner.invoke(main, ["run-study", "--help"]).output.split())
    assert "--tf32" in help_text and "Ampere" in help_text and "changes the numbers slightly" in help_text
    result = runner.invoke(main, ["run-study", "invertible-encoders", "--preset", "smoke", "--steps", "2",
                                  "--no-progress", "--no-report", "--tf32", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [results] = tmp_path.glob("invertible-encoders/*-tf32/results.nc")
    assert load_dataset(results).attrs["tf32"] == 1
