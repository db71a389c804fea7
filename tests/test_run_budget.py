"""Runs that fit the machine (issue 21): the memory projection and the groups split to fit it,
the decision before a big group's step-0 evaluations, and timing that changes no number."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pair_data import latent_pairs

import probe.runner.executors as executors
import probe.runner.preflight as preflight
import probe.runner.progress as progress
import studies.invertible_encoders as invertible
from probe.cli import main
from probe.critics import make_critic
from probe.encoders import MLPEncoder
from probe.errors import InputValueError
from probe.results import load_dataset
from probe.runner import RunOptions, RunTooLong, run_study
from probe.runner.options import parse_size
from probe.runner.progress import Projection, StepClock
from probe.training import TrainConfig, seeded_init
from probe.training.ensemble import Ensemble, MemberBatches
from probe.training.ensemble_optim import EnsembleTrainer
from probe.training.evaluation import Evaluator
from probe.training.members import train_members
from probe.training.memory import PARAMETER_COPIES, MemoryProjection, evaluator_bytes, project_memory
from probe.training.timing import TimedStart, reporting_start, wants_start


def _mlps(seed, d=12):
    with seeded_init(seed):
        return MLPEncoder(d, (16,), 6), MLPEncoder(d, (16,), 6), make_critic("bilinear", 6, 6)


CONFIG = TrainConfig(estimator="infonce", steps=8, batch_size=32, learning_rate=3e-3, eval_every=4, analyzers=False)
ONE_RUN = dict(progress=False, log=lambda m: None, seeds=2)


# ------------------------------------------------------------------------ sizes

@pytest.mark.parametrize("text, size", [("8GiB", 8 * 2**30), ("8 GB", 8 * 10**9), ("512MiB", 512 * 2**20),
                                        ("1.5g", 1_500_000_000), (4096, 4096)])
def test_sizes_parse_as_the_units_say(text, size):
    assert parse_size(text) == size
    assert RunOptions(max_memory=text).max_memory == size


@pytest.mark.parametrize("bad", ["8XB", "", "GiB", "-1GiB", "0", True, 2.5])
def test_a_bad_size_names_the_option_and_an_example(bad):
    with pytest.raises(InputValueError, match=r"--max-memory .*8GiB"):
        RunOptions(max_memory=bad)


# ------------------------------------------------------------------------ timing changes nothing

def _trainer(members=2, data=None):
    data = data or latent_pairs()
    ensemble = Ensemble.from_modules([_mlps(s) for s in range(members)])
    return EnsembleTrainer(ensemble, "infonce", [3e-3] * members, grad_clips=[1.0] * members), \
        MemberBatches(data.train1, data.train2, list(range(members)), 32)


def test_dry_steps_leave_the_parameters_moments_streams_and_records_as_they_were():
    trainer, batches = _trainer()
    trainer.step(*next(batches))  # a real step first: moments that are not zero
    before = trainer.state_dict()
    streams = batches.state_dict()
    with trainer.dry_run():
        for k in range(3):
            trainer.step(*batches.throwaway(k))
    after = trainer.state_dict()
    assert torch.equal(before["ensemble"]["flat"], after["ensemble"]["flat"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(before["optimizer"][key], after["optimizer"][key])
    assert after["optimizer"]["step_count"] == before["optimizer"]["step_count"] == 1
    assert after["steps_done"] == 1 and trainer.unread_steps == 1 and trainer.statuses() == ["ok", "ok"]
    assert all(np.array_equal(a["order"], b["order"]) and a["pos"] == b["pos"]
               for a, b in zip(streams["samplers"], batches.state_dict()["samplers"]))
    # The same step (and its real update) with or without dry steps before it.
    other, other_batches = _trainer()
    other.step(*next(other_batches))
    trainer.step(*next(batches))
    other.step(*next(other_batches))
    assert torch.equal(trainer.ensemble.flat, other.ensemble.flat)


def test_a_step_that_would_freeze_a_member_in_a_dry_run_freezes_nothing():
    trainer, batches = _trainer()
    x1, x2 = batches.throwaway()
    with trainer.dry_run():
        trainer.step(x1, x2)  # the ensemble checks its batched forward on a first, finite batch
        trainer.step(torch.full_like(x1, math.inf), x2)
    assert trainer.statuses() == ["ok", "ok"] and bool(trainer.alive.all())


def test_a_group_timed_at_its_start_trains_to_the_same_numbers_and_reports_before_its_other_evaluations(monkeypatch):
    data = latent_pairs()
    plain = train_members([_mlps(s) for s in range(3)], data, [CONFIG] * 3, [0, 1, 2])
    calls, heard = [], []
    real = Evaluator.__call__
    monkeypatch.setattr(Evaluator, "__call__", lambda self, *a, **k: calls.append(k.get("step")) or real(self, *a, **k))
    assert not wants_start()
    with reporting_start(lambda timed: heard.append((timed, len(calls)))):
        assert wants_start()
        timed_run = train_members([_mlps(s) for s in range(3)], data, [CONFIG] * 3, [0, 1, 2])
    (timed, evaluations_before), = heard
    assert evaluations_before == 1  # only member 0's step-0 evaluation came before the report
    assert timed.members == 3 and timed.step_s > 0 and timed.first_eval_s > 0 and timed.setup_s > 0
    for a, b in zip(plain, timed_run):
        for name in a.variables:
            if name != "wall_time":
                np.testing.assert_array_equal(a.variables[name][1], b.variables[name][1], err_msg=name)


# ------------------------------------------------------------------------ the memory projection

def test_the_projection_counts_every_copy_of_the_parameters_and_grows_by_one_member_at_a_time():
    data = latent_pairs()
    triple = _mlps(0)
    projection = project_memory(triple, data, CONFIG, "cpu")
    params = sum(p.numel() for m in triple for p in m.parameters())
    assert projection.parameters == params and projection.copies == PARAMETER_COPIES
    assert projection.per_member >= PARAMETER_COPIES * params * 4 + evaluator_bytes(CONFIG, 192, 128, 12)
    assert projection.activations > 32 * 16 * 4  # at least one hidden layer's activations at the batch size
    assert projection.peak(5) - projection.peak(4) == projection.per_member
    noisy = project_memory(triple, data, dataclasses.replace(CONFIG, noise_std=0.1), "cpu")
    assert noisy.per_member - projection.per_member == (192 + 2 * 128) * 12 * 4  # each member's noisy views


def test_members_within_a_budget_is_the_largest_group_that_fits():
    projection = MemoryProjection(fixed=1000, per_member=300, parameters=1, activations=1, evaluation=1)
    assert [projection.members_within(b) for b in (999, 1299, 1300, 1000 + 300 * 7 + 299)] == [0, 0, 1, 7]


def _jobs(tmp_path, seeds=5, **options):
    from probe.runner.cells import CellJob
    from probe.study import Cell

    settings = invertible.PRESETS["smoke"]
    opts = RunOptions(preset="smoke", **options)
    return [CellJob(invertible.STUDY, settings, opts, "", str(tmp_path), "k", Cell({"estimator": "infonce"}, s))
            for s in range(seeds)]


def test_groups_are_split_into_near_equal_parts_that_fit_and_a_member_that_cannot_fit_stops_the_run(tmp_path):
    jobs = _jobs(tmp_path, seeds=7)
    flight = preflight.Preflight({preflight.kind(jobs): MemoryProjection(1000, 300, 1, 1, 1)},
                                 budget=1000 + 3 * 300, budget_source="test")
    parts = preflight.split_to_fit([jobs], flight)
    assert [len(p) for p in parts] == [3, 2, 2] and [j for p in parts for j in p] == jobs
    assert flight.memory_text(parts).startswith("memory: about ") and "per group of 3 members" in flight.memory_text(parts)
    tight = dataclasses.replace(flight, budget=1200)
    with pytest.raises(InputValueError, match=r"needs about .* over the budget .* cannot fit.*--max-memory SIZE"):
        preflight.split_to_fit([jobs], tight)


def test_each_kind_of_group_gets_its_own_projection(tmp_path):
    """matched-targets trains flows and MLPs: a budget sized on the small family must not
    decide the big family's groups."""
    def family(jobs, name):  # a grid id that is not a member axis: another architecture
        return [dataclasses.replace(j, cell=dataclasses.replace(j.cell, ids={**j.cell.ids, "family": name})) for j in jobs]

    small, big = family(_jobs(tmp_path, seeds=4), "mlp"), family(_jobs(tmp_path, seeds=4), "flow")
    flight = preflight.Preflight({preflight.kind(small): MemoryProjection(0, 100, 1, 1, 1),
                                  preflight.kind(big): MemoryProjection(0, 400, 1, 1, 1)}, 800, "test")
    assert [len(p) for p in preflight.split_to_fit([small, big], flight)] == [4, 2, 2]
    assert "per group of 2 members (the largest of the run's groups)" in flight.memory_text([small, big[:2]])


def test_a_run_split_by_a_small_budget_gives_the_numbers_of_one_group(tmp_path, monkeypatch):
    whole = load_dataset(run_study(invertible.STUDY, "smoke", out=tmp_path / "whole", **ONE_RUN))
    # Members of 1,000 bytes, a budget of 2,500: the group of 4 cells trains as 2 groups of 2.
    monkeypatch.setattr(preflight, "project_memory", lambda *a, **k: MemoryProjection(0, 1000, 1, 1, 1))
    sizes = []
    real = executors.split_to_fit
    monkeypatch.setattr(executors, "split_to_fit", lambda g, f: sizes.extend(len(p) for p in real(g, f)) or real(g, f))
    split = load_dataset(run_study(invertible.STUDY, "smoke", out=tmp_path / "split", max_memory=2500, **ONE_RUN))
    assert sizes == [2, 2]
    for name in ("bound_test", "v_information", "triplet_margin_mean"):  # float32 sums in another order
        np.testing.assert_allclose(split[name].values, whole[name].values, rtol=1e-3, atol=2e-3, err_msg=name)
    assert np.nanmax(np.abs(split["probe_accuracy"].values - whole["probe_accuracy"].values)) <= 2 / 450 + 1e-12


def test_the_cli_takes_max_memory_and_a_member_over_it_stops_before_training(tmp_path):
    args = ["run-study", "invertible-encoders", "--preset", "smoke", "--no-progress", "--no-report",
            "--out", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--max-memory", "1MiB"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    text = " ".join(result.stderr.split())
    assert "needs about" in text and "budget of 1 MiB (--max-memory)" in text and "--max-memory SIZE" in text
    assert not list(tmp_path.rglob("*.nc"))
    bad = CliRunner().invoke(main, [*args, "--max-memory", "lots"])
    assert bad.exit_code == 1 and "--max-memory is 'lots'" in bad.stderr


# ------------------------------------------------------------------------ the decision before training

def test_a_big_first_group_is_judged_from_one_member_before_it_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "ASK_ABOVE_S", 0.0)   # every CPU run is too long
    monkeypatch.setattr(preflight, "EARLY_ABOVE_S", 0.0)  # every first group counts as big
    built = []
    real = invertible.STUDY.member
    study = dataclasses.replace(invertible.STUDY, member=lambda *a: built.append(1) or real(*a))
    lines: list[str] = []
    with pytest.raises(RunTooLong, match=r"memory: about .* per group of 4 members"):
        run_study(study, "smoke", out=tmp_path, progress=False, log=lines.append, seeds=2, device="cpu")
    assert len(built) == 1  # the one member of the preflight: no group was built
    assert any("one member alone, before any group was built, before training" in line and "a member" in line
               for line in lines), lines
    assert not list(tmp_path.rglob("*.nc"))


def test_a_group_is_judged_after_member_0s_first_evaluation_not_after_all_of_them(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "ASK_ABOVE_S", 0.0)
    calls = []
    real = Evaluator.__call__
    monkeypatch.setattr(Evaluator, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    lines: list[str] = []
    with pytest.raises(RunTooLong):
        run_study(invertible.STUDY, "smoke", out=tmp_path, progress=False, log=lines.append, seeds=2, device="cpu")
    assert len(calls) == 1  # of the group's 4 step-0 evaluations
    assert any("4 members before training" in line and "the first evaluation" in line for line in lines), lines


# ------------------------------------------------------------------------ the projection's arithmetic

def test_a_reported_start_gives_the_whole_cell_without_a_step_timed():
    clock = StepClock(100, frozenset(range(0, 101, 25)))
    clock.start_cell(0.0)
    start = TimedStart(members=4, first_eval_s=3.0, step_s=0.2, search_s=1.0, setup_s=5.0)
    clock.record_start(start)
    assert clock.ready and clock.projection_ready
    # setup + 4 first evaluations, 99 more steps, 4 later evaluations of 4 members at 3 - 1 s
    assert clock.cell_s() == pytest.approx(5.0 + 4 * 3.0 + 99 * 0.2 + 4 * 4 * 2.0)
    # in the start-up: the 3 other first evaluations, 100 steps, 4 later evaluations
    assert clock.cell_left_s() == pytest.approx(3 * 3.0 + 100 * 0.2 + 4 * 4 * 2.0)


def test_the_probe_pool_costs_an_evaluation_what_training_between_evaluations_does_not_hide():
    clock = StepClock(100, frozenset(range(0, 101, 10)))
    clock.record_start(TimedStart(members=4, first_eval_s=1.0, step_s=0.1, pool_fit_s=5.0, pool_workers=1))
    # 4 fits of 5 s on one worker; meanwhile 10 steps of 0.1 s and 4 evaluations of 1 s
    assert clock.pool_wait_s() == pytest.approx(4 * 5.0 - (10 * 0.1 + 4 * 1.0))
    assert clock.end_s(baseline_fits=0, report=False) == pytest.approx(4 * 5.0)  # the last fits
    clock.record_start(dataclasses.replace(clock.start, pool_workers=4))
    assert clock.pool_wait_s() == 0.0  # 5 s of fits per worker, hidden by 5 s of training


def test_the_projection_adds_the_time_so_far_the_later_groups_by_size_and_the_end(monkeypatch):
    clock = StepClock(10, frozenset({0, 10}))
    clock.start_cell(0.0)
    clock.record_start(TimedStart(members=4, first_eval_s=1.0, step_s=0.5, probe_s=0.25, setup_s=2.0))
    projection = Projection(cells=3, unit_sizes=(4, 4, 2), baseline_fits=3, started_at=1000.0)
    monkeypatch.setattr(progress.time, "time", lambda: 1030.0)
    cell = 2.0 + 4 * 1.0 + 9 * 0.5 + 4 * 1.0
    left = 3 * 1.0 + 10 * 0.5 + 4 * 1.0
    end = 3 * 0.25 + progress.REPORT_S
    assert projection.seconds(clock) == pytest.approx(30.0 + left + cell * (1 + 2 / 4) + end)
    assert projection.seconds(clock, in_progress=False) == pytest.approx(30.0 + cell * (10 / 4) + end)
