"""bench/gpu_check.py, issue 22's prepared GPU run.

Its CPU dry run (`--device cpu --tiny`: every section at tiny sizes, then a second call that
resumes the fig1 run from its checkpoint) on a Python where netCDF4, altair, vl-convert and dask
are absent, as on the GPU machine; and the parts whose answers are known: the projection's
formula, the fig1 deadline's decisions, the resampled data, the JSON, the input errors.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probe.data import PairData
from probe.errors import InputValueError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
MNIST_5K = ROOT.parent / "shared" / "data" / "mnist-5k"
ABSENT = ("netCDF4", "altair", "vl_convert", "dask", "distributed", "h5netcdf")  # not on the GPU machine

spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up
spec.loader.exec_module(gpu_check)

# Imported first in every process of the dry run (the probe pool's spawned workers too): the
# packages the GPU machine lacks cannot be found, as there; each lookup is logged.
HIDE = textwrap.dedent(f"""
    import os, sys
    ABSENT = {set(ABSENT)!r}

    class _Hidden:
        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ABSENT:
                with open(os.environ["GPU_CHECK_LOOKUPS"], "a") as log:
                    log.write(name + "\\n")
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.finder, attr)

    sys.meta_path[:] = [_Hidden(f) for f in sys.meta_path]
""")


def run_script(args: list[str], tmp: Path, hide: bool = True, timeout: float = 300) -> tuple[int, str, dict | None]:
    """bench/gpu_check.py in a subprocess of its own group (killed in the finally); rc, output, JSON."""
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDE if hide else "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "GPU_CHECK_LOOKUPS": str(tmp / "lookups.txt")}
    env.pop("OUT", None)
    command = [sys.executable, str(SCRIPT), *args, "--out", str(tmp / "out"), "--state-dir", str(tmp / "state")]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    written = [line for line in output.splitlines() if line.startswith("written: ")]
    result = json.loads(Path(written[-1].split(": ", 1)[1]).read_text()) if written else None
    return process.returncode, output, result


def data_args() -> list[str]:
    return ["--data", str(MNIST_5K)] if MNIST_5K.is_dir() else ["--data", "digits", "--tiny"]  # digits needs --tiny


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The dry run as issue 22 asks: a first call of every section, its fig1 run stopped at step 20
    of 40 after a checkpoint, then a second call of fig1 alone that resumes it. The first forces
    TF32 (on a CPU its flags change no number) so that its paths run, and the second, on auto,
    must keep the first call's precision to resume."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    base = ["--device", "cpu", "--tiny", "--threads", "1", *data_args()]
    first = run_script([*base, "--fig1-stop-at", "20", "--precision", "tf32"], tmp)
    checkpoints = sorted(p.name for p in (tmp / "state").glob("*.ckpt.pt"))
    second = run_script([*base, "--sections", "fig1"], tmp)
    lookups = (tmp / "lookups.txt").read_text().split() if (tmp / "lookups.txt").exists() else []
    return SimpleNamespace(first=first, second=second, checkpoints=checkpoints, lookups=lookups, tmp=tmp)


def test_the_dry_run_passes_every_section_where_the_report_libraries_are_absent(dry_run):
    rc, output, result = dry_run.first
    assert rc == 0, output[-3000:]
    assert {k: v["status"] for k, v in result["sections"].items()} == dict.fromkeys(gpu_check.SECTIONS, "ok")
    assert not {name.split(".")[0] for name in dry_run.lookups} - set(ABSENT)
    assert result["device"] == "cpu" and result["torch"]["version"] == torch.__version__
    assert result["dtype"].startswith("float32, TF32") and result["seconds_total"] > 0
    assert result["precision"]["modes"]["tf32"]["trajectory_nats"] == 0  # a CPU has no TF32
    assert set(result["flow_step_ms"]) == {"1", "2", "4"} and min(result["flow_step_ms"].values()) > 0
    assert result["precision"]["modes"]["bf16"]["usable"] is False  # the engine has no bf16 path
    assert result["precision"]["fp32_vs_fp64_nats"] < 1e-4
    assert set(result["eval_s"]) == {"rows", "member_first", "member_later", "group4_first", "group4_later"}
    assert result["evaluation"]["first"]["members_timed"] == 4 and result["evaluation"]["jacobians"]["seconds"] > 0
    assert {m: sorted(v) for m, v in result["cuda_graph_fwd_bwd"].items()} == dict.fromkeys(["4", "2", "1"],
                                                                                           ["eager_ms", "graph"])
    minutes = result["projection"]["minutes"]
    assert math.isclose(result["projected_fig1_paper_min"], sum(minutes.values()), rel_tol=1e-4)
    fig1 = result["fig1_paper_measured"]
    assert fig1["status"] == "stopped at step 20 by the budget" and fig1["steps_done"] == 20
    assert fig1["evaluations"]["steps"] == [0, 10, 20] and "verdict" not in fig1
    assert dry_run.checkpoints == [Path(fig1["checkpoint"]).name]
    accuracy = fig1["evaluations"]["by_estimator"]["infonce"]["probe_accuracy"]["mean"]
    assert all(0 < a <= 1 for a in accuracy)


def test_a_second_call_resumes_the_fig1_run_from_its_checkpoint(dry_run):
    rc, output, result = dry_run.second
    assert rc == 0, output[-3000:]
    assert list(result["sections"]) == ["fig1"] and result["sections"]["fig1"]["status"] == "ok"
    fig1, before = result["fig1_paper_measured"], dry_run.first[2]["fig1_paper_measured"]
    assert fig1["status"] == "complete" and fig1["resumed_from"] == 20 and fig1["seeds_why"].startswith("resuming")
    assert fig1["precision"] == "tf32"  # the first call's
    assert fig1["evaluations"]["steps"] == [0, 10, 20, 30, 40]
    for member, accuracy in before["evaluations"]["probe_accuracy_by_member"].items():
        assert fig1["evaluations"]["probe_accuracy_by_member"][member][:3] == accuracy  # restored, not retrained
    assert fig1["verdict"]["outcome"] in ("held", "partly held", "did not hold", "undecided")  # judged, whichever way
    assert not list((dry_run.tmp / "state").glob("*.ckpt.pt"))  # a finished run leaves no checkpoint


def test_the_projection_is_the_formula_in_the_docstring():
    paper = gpu_check.PAPER
    check = SimpleNamespace(settings=gpu_check.fig1_study.PRESETS["paper"], sizes=paper, mode="fp32", result={
        "steps": {"setup_s": {"40": 12.0}, "checkpoint": {"save_s": 20.0, "members": 40}},
        "flow_step_ms": {"1": 5.0, "8": 9.0, "40": 30.0},
        "eval_s": {"rows": 60_000, "group40_first": 100.0, "group40_later": 40.0}})
    out = gpu_check.section_projection(check, 0.0)
    # 20,000 steps, 21 evaluations, a checkpoint every 1,000 steps but the last (19).
    assert (out["steps"], out["evaluations"], out["checkpoints"]) == (20_000, 21, 19)
    assert math.isclose(check.result["projected_fig1_paper_min"], (12 + 20_000 * 0.030 + 100 + 20 * 40 + 19 * 20) / 60)
    del check.result["eval_s"]
    with pytest.raises(InputValueError, match="needs the steps .* and eval sections"):
        gpu_check.section_projection(check, 0.0)


def drive(clock, steps: range, seconds_per_step: float) -> tuple[int, bool] | None:
    now = [0.0]
    clock.clock = lambda: now[0]
    for step in steps:
        now[0] = step * seconds_per_step
        try:
            clock.on_step(step, {})
        except gpu_check.Deadline as stop:
            return stop.step, stop.saved
    return None


def test_the_fig1_run_stops_after_the_last_checkpoint_whose_next_segment_would_not_fit():
    # 3 s a step, a checkpoint every 10 steps: segments of 27-30 s; the deadline at 100 s leaves no room after step 30.
    assert drive(gpu_check.SegmentClock(100.0, 10, 40), range(1, 41), 3.0) == (30, True)
    assert drive(gpu_check.SegmentClock(1e9, 10, 40), range(1, 41), 3.0) is None  # no checkpoint at the last step
    assert drive(gpu_check.SegmentClock(1e9, 10, 40, stop_at=15), range(1, 41), 3.0) == (20, True)
    assert drive(gpu_check.SegmentClock(25.0, 10, 40), range(1, 41), 3.0) == (9, False)  # past it mid-segment
    noted = []
    resumed = gpu_check.SegmentClock(1e9, 10, 40, on_checkpoint=noted.append)
    drive(resumed, range(21, 41), 3.0)
    assert resumed.segments == [27.0] and noted == [30]  # timed from this call's first update (step 21)


class FakeEvaluator:
    """Advances a fake clock: `cost` seconds a call, `fit` seconds to settle its probe."""

    def __init__(self, now: list, cost: float, fit: float):
        self.now, self.cost, self.fit, self.pending = now, cost, fit, False

    def __call__(self, g1, g2, critic, step):
        self.now[0] += self.cost
        self.pending = True

    def settle(self):
        self.now[0] += self.fit if self.pending else 0.0
        self.pending = False


def test_a_group_evaluation_cut_short_is_scaled_to_the_whole_group_from_its_other_members():
    now = [0.0]
    evaluators = [FakeEvaluator(now, 4.0, 1.0)] + [FakeEvaluator(now, 2.0, 0.25) for _ in range(39)]
    ensemble = SimpleNamespace(member_modules=lambda m: (None, None, None))
    out = gpu_check.evaluate_group(evaluators, ensemble, 0, deadline=11.0, clock=lambda: now[0])
    # member 0 alone 4 + 1 s; members 1-4 start before 11 s, 2 s each; their probes drain in 4 x 0.25 s.
    assert out["member_s"] == 5.0 and out["calls_s"] == [5.0, 2.0, 2.0, 2.0, 2.0] and out["drain_s"] == 1.0
    assert out["members_timed"] == 5 and out["extrapolated"] and out["group_s"] == 5.0 + (8.0 + 1.0) * 39 / 4
    now[0] = 0.0
    whole = gpu_check.evaluate_group(evaluators, ensemble, 0, deadline=1e9, clock=lambda: now[0])
    assert not whole["extrapolated"] and whole["group_s"] == 5.0 + 39 * 2.0 + 39 * 0.25


def pairs(n_train: int, n_test: int) -> PairData:
    rng = np.random.default_rng(0)
    x = rng.random((n_train + n_test, 6)).astype(np.float32)
    y = np.arange(n_train + n_test) % 10
    return PairData(x[:n_train, :3], x[:n_train, 3:], x[n_train:, :3], x[n_train:, 3:], y[:n_train], y[n_train:], (1, 3))


def test_resized_subsets_larger_splits_and_resamples_smaller_ones_with_their_labels():
    data = pairs(50, 20)
    assert gpu_check.resized(data, 50, 20, seed=0).train1 is data.train1
    small = gpu_check.resized(data, 30, 10, seed=0)
    rows = [int(np.flatnonzero((data.train1 == r).all(1))[0]) for r in small.train1]
    assert len(set(rows)) == 30 and (data.train_labels[rows] == small.train_labels).all()
    assert (data.train2[rows] == small.train2).all()
    big = gpu_check.resized(data, 500, 60, seed=0)
    assert big.train1.shape == (500, 3) and big.test2.shape == (60, 3) and big.train1.dtype == np.float32
    nearest = np.abs(big.train1[:, None, :] - data.train1[None]).sum(-1).argmin(1)
    assert (data.train_labels[nearest] == big.train_labels).all()
    jitter = big.train1 - data.train1[nearest]
    assert 0.005 < jitter.std() < 0.015 and not np.isin(big.train1, data.train1).any()


def test_the_json_is_plain():
    out = gpu_check.jsonable({"a": np.float32(0.123456789), "b": [np.nan, np.inf], "c": np.arange(3), 1: (True, 2e-9)})
    assert out == {"a": 0.123457, "b": [None, None], "c": [0, 1, 2], "1": [True, 2e-9]}
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("args, says", [
    (["--data", "/no/such/folder"], "--data /no/such/folder: not a folder; the IDX folder of mnist-5k is required"),
    (["--sections", "steps,bogus"], "bogus unknown; choose from precision, steps, eval, projection, fig1, graphs"),
    (["--fig1-seeds", "0"], "--fig1-seeds 0: give a number of seeds"),
    (["--eval-data", "/no/such/folder"], "--eval-data /no/such/folder: not a folder"),
])
def test_bad_arguments_say_what_is_wrong_and_what_to_do(args, says, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse([*data_args(), *args] if args[0] != "--data" else args)
    assert says in " ".join(capsys.readouterr().err.split())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_dry_run_on_a_gpu_times_with_events_tf32_and_a_cuda_graph(tmp_path):
    rc, output, result = run_script(["--device", "cuda", "--tiny", *data_args()], tmp_path, hide=False)
    assert rc == 0, output[-3000:]
    assert set(result["precision"]["modes"]) == {"tf32", "bf16"}
    assert all("speedup" in v for v in result["cuda_graph_fwd_bwd"].values()), output[-3000:]
