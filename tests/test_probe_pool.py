"""The paper's SAGA probe fitted in a pool of processes while training goes on (issue 11):
the same numbers as inline, complete records in every checkpoint and result, the defaults."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch
import xarray as xr
from interrupting import Killed, killed_at
from pair_data import latent_pairs

import studies.adversarial_encoder as adversarial
import studies.invertible_encoders as invertible
from probe.critics import make_critic
from probe.devices import cores
from probe.encoders import MLPEncoder
from probe.errors import InputValueError
from probe.results import load_dataset
from probe.runner import RunOptions, run_study
from probe.runner.executors import local_probe_workers
from probe.training import TrainConfig, seeded_init, train_pair
from probe.training.members import train_members
from probe.training.probe_pool import (
    AUTO_MIN_ROWS,
    PendingProbe,
    ProbeFits,
    auto_probe_workers,
    background_probes,
    fit_probe,
)


def _mlps(seed, d):
    with seeded_init(seed):
        return MLPEncoder(d, (16,), 6), MLPEncoder(d, (16,), 6), make_critic("bilinear", 6, 6)


CONFIG = TrainConfig(estimator="infonce", steps=12, batch_size=32, learning_rate=3e-3, eval_every=4,
                     analyzers=False, jacobian_inputs=0)


def _same(a, b):
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        if name != "wall_time":
            np.testing.assert_array_equal(np.asarray(a.variables[name][1]), np.asarray(b.variables[name][1]),
                                          err_msg=name)


def test_training_with_the_pool_gives_the_inline_numbers():
    data = latent_pairs(n=256)
    configs = [CONFIG, dataclasses.replace(CONFIG, estimator="nwj", grad_clip=1.0)]
    inline = train_pair(*_mlps(0, data.dim), data, CONFIG, seed=0)
    inline_group = train_members([_mlps(s, data.dim) for s in (0, 1)], data, configs, [0, 1])
    with background_probes(1):  # min_rows 0: every fit goes to the pool
        pooled = train_pair(*_mlps(0, data.dim), data, CONFIG, seed=0)
        pooled_group = train_members([_mlps(s, data.dim) for s in (0, 1)], data, configs, [0, 1])
    assert inline.status == pooled.status == "ok"
    assert np.isfinite(pooled.variables["probe_accuracy"][1]).all()
    assert len(pooled.variables["probe_accuracy"][1]) == 4  # steps 0, 4, 8, 12: every record settled
    _same(pooled, inline)
    for a, b in zip(pooled_group, inline_group):
        _same(a, b)


def test_a_record_is_complete_once_the_next_fit_is_handed_over_or_settle_is_called():
    data = latent_pairs(n=256)
    z, z_test = data.train1[:, :6], data.test1[:, :6]
    with background_probes(1):
        fits = ProbeFits(len(data.train1), "paper")
        assert fits.pool is not None
        first, second = {"step": 0}, {"step": 1}
        fits.fit_into(first, z, data.train_labels, z_test, data.test_labels, seed=0)
        fits.fit_into(second, z, data.train_labels, z_test, data.test_labels, seed=0)
        assert "probe_accuracy" in first  # settled when the second fit was handed over
        fits.settle()
    assert second["probe_accuracy"] == first["probe_accuracy"]
    assert first == {"step": 0, **fit_probe(z, data.train_labels, z_test, data.test_labels, "paper", 0)}


def test_fits_below_min_rows_and_the_converged_probe_stay_inline():
    with background_probes(1, min_rows=AUTO_MIN_ROWS):
        assert ProbeFits(AUTO_MIN_ROWS - 1, "paper").pool is None
        assert ProbeFits(AUTO_MIN_ROWS, "paper").pool is not None
        assert ProbeFits(AUTO_MIN_ROWS, "converged").pool is None  # torch, on the training device
    assert ProbeFits(AUTO_MIN_ROWS, "paper").pool is None  # no pool outside the block


def test_a_fit_whose_worker_died_is_redone_inline():
    data = latent_pairs(n=256)
    broken: Future = Future()
    broken.set_exception(BrokenProcessPool("a worker died"))
    args = (data.train1, data.train_labels, data.test1, data.test_labels, "paper", 0)
    assert PendingProbe(broken, args).result() == fit_probe(*args)


@pytest.mark.parametrize("threads, cores, cuda, expected", [
    (2, 2, False, 0),    # training takes every core: inline
    (1, 2, False, 1),
    (1, 16, False, 4),   # at most MAX_PROBE_WORKERS
    (16, 16, True, 4),   # on CUDA the CPU threads do not train
    (1, 1, True, 0),
])
def test_auto_probe_workers(threads, cores, cuda, expected):
    assert auto_probe_workers(threads, cores, cuda) == expected


def test_probe_workers_is_checked_and_an_explicit_count_wins():
    with pytest.raises(InputValueError, match="--probe-workers is -1"):
        RunOptions(probe_workers=-1)
    with pytest.raises(InputValueError, match="applies to the local executor"):
        RunOptions(probe_workers=2, executor="processes")
    assert local_probe_workers(RunOptions(probe_workers=3, device="cpu")) == 3
    torch_threads = torch.get_num_threads()
    assert local_probe_workers(RunOptions(device="cpu")) == auto_probe_workers(torch_threads, cores(), False)


def _numbers(ds: xr.Dataset) -> dict:
    return {name: ds[name].values for name in ds.data_vars if name != "wall_time"}


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    one, other = _numbers(a), _numbers(b)
    assert one.keys() == other.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], other[name], err_msg=name)


def _killed_at(study, step, monkeypatch):
    """killed_at for a study the runner trains through train_members (it hooks run_cell and run_members)."""
    import probe.runner.groups as groups

    def hooked(*args, on_step=None, **kwargs):
        def hook(s, last):
            if s == step:
                raise Killed(f"killed at step {s}")
            on_step(s, last)
        return train_members(*args, on_step=hook, **kwargs)

    if study.member is None:
        return killed_at(study, step)
    monkeypatch.setattr(groups, "train_members", hooked)
    return study


@pytest.mark.parametrize("study, seeds", [(invertible.STUDY, 1), (adversarial.STUDY, 2)],
                         ids=["invertible", "adversarial"])  # groups of 2: estimators, seeds
def test_a_run_killed_with_fits_in_the_pool_resumes_to_the_inline_numbers(study, seeds, tmp_path, monkeypatch):
    """Checkpoints at 5 and 10 of 20 steps, evaluations at 0, 10, 20: the kill at 12 leaves the
    fit of step 10 in flight unless the checkpoint at 10 settled it."""
    common = dict(progress=False, log=lambda m: None, checkpoint_every=5, seeds=seeds)
    inline = load_dataset(run_study(study, "smoke", out=tmp_path / "inline", probe_workers=0, **common))
    with monkeypatch.context() as patched, pytest.raises(Killed):
        run_study(_killed_at(study, 12, patched), "smoke", out=tmp_path / "pooled", probe_workers=1, **common)
    saved = torch.load(next((tmp_path / "pooled").rglob("group-*.ckpt.pt")), weights_only=True)
    assert saved["step"] == 10
    assert all("probe_accuracy" in record for member in saved["records"] for record in member)
    resumed = load_dataset(run_study(study, "smoke", out=tmp_path / "pooled", probe_workers=1, **common))
    _assert_same(resumed, inline)


# The child answers Ctrl-C as an interactive python would, even when this test runs from a shell
# that ignores SIGINT (`( pytest & )`, nohup, CI wrappers): an ignored signal is inherited.
_CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from probe.cli import main; sys.argv[0] = 'probe'; main()")


def _start_run_with_a_pool(tmp_path) -> subprocess.Popen:
    command = [sys.executable, "-c", _CLI,
               "run-study", "invertible-encoders", "--preset", "smoke", "--steps", "100000", "--seeds", "1",
               "--threads", "1", "--probe-workers", "1", "--no-progress", "--no-report", "--yes", "--out", str(tmp_path)]
    # --yes: 100,000 steps are projected over the 3 h a CPU run may take without asking, and the run
    # must still be running when it is interrupted. A session of its own: the whole group (the run, its pool worker, the resource tracker) can be ended at once.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_the_pool(run: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None and not _descendants(run.pid, 2):
        time.sleep(0.2)  # the pool's worker (and the spawn tracker) start at the first evaluation's fit
    assert run.poll() is None, run.communicate()[1]
    assert _descendants(run.pid, 2), "the run started no probe worker within 120 s"


def _end_group(run: subprocess.Popen) -> list[int]:
    """Kill whatever is left of the run's process group; the pids that were still alive."""
    alive = _group(run.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.communicate(timeout=10)
    return alive


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads a process's children from /proc (Linux)")
def test_ctrl_c_with_a_pool_ends_the_run_with_its_message_and_no_worker_traceback(tmp_path):
    run = _start_run_with_a_pool(tmp_path)
    try:
        _wait_for_the_pool(run)
        time.sleep(1.0)
        os.killpg(run.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        _, err = run.communicate(timeout=120)
        assert run.returncode == 130, err
        assert "Traceback" not in err, err
        assert "interrupted" in err.lower() or "saved" in err.lower(), err
        assert _gone(run.pid), f"left behind after Ctrl-C: {_group(run.pid)}"
    finally:
        _end_group(run)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads a process's children from /proc (Linux)")
def test_a_killed_run_takes_its_pool_worker_and_resource_tracker_with_it(tmp_path):
    run = _start_run_with_a_pool(tmp_path)
    try:
        _wait_for_the_pool(run)
        assert len(_group(run.pid)) >= 3  # the run, its probe worker, the resource tracker
        os.kill(run.pid, signal.SIGKILL)  # the run alone, as the OOM killer or kill -9 would
        run.communicate(timeout=30)
        assert _gone(run.pid), f"left behind by the killed run: {_group(run.pid)}"
    finally:
        _end_group(run)


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def _gone(pgid: int, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _group(pgid)


def _descendants(pid: int, at_least: int) -> bool:
    seen, todo = 0, [pid]
    while todo:
        here = todo.pop()
        for task in os.listdir(f"/proc/{here}/task") if os.path.exists(f"/proc/{here}/task") else []:
            try:
                children = open(f"/proc/{here}/task/{task}/children").read().split()
            except OSError:
                continue
            seen += len(children)
            todo += [int(c) for c in children]
    return seen >= at_least
