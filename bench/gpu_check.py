"""One prepared GPU run (issue 22): Fig. 1's paper flow ensemble timed on CUDA, one evaluation at
60,000 rows, the paper preset's projected wall time, and as much of the paper preset on mnist-5k
as the minutes left allow (resumable from its checkpoint by a second call).

Sections, in this order, each with a share of --budget (what one leaves goes to the next); a
section that fails records its error and the others go on; the JSON is rewritten after every
section, under --out and under $OUT when that is set, so a killed run still returns what it measured:

  precision   TF32 and bf16 against IEEE fp32 (and fp32 against fp64) on a trained 2-member
              ensemble: the held-out bounds at the same weights, and after more steps from the
              same state. A mode is used only if both differ from fp32 by at most 1e-3 nats, and
              only TF32 can be: the engine has no bf16 path (EnsembleTrainer takes tf32 only).
  steps       ms of one training step (next batch + EnsembleTrainer.step, what train_members does
              per update) of invertible-encoders' paper members at M = 1, 8, 40, median over
              steps timed with CUDA events after warm-up, per precision mode; the set-up of the group
              (building its members on the CPU, as the runner does, and stacking them) and the
              save of its checkpoint (probe.training.checkpoint.atomic_save).
  eval        one Evaluator call (held-out and training bounds, the paper's SAGA probe in the
              runner's probe pool, V-information, triplet margins: what the paper preset asks;
              it measures no Jacobians) of one member alone and of a group of 40, at a first
              and a later evaluation, on 60,000 training rows (--eval-data: Fashion-MNIST's;
              else mnist-5k resampled to 60,000 rows with jitter, said so in the JSON); a group
              cut short by the budget is scaled to 40 from the members it reached; g1's 128
              Jacobians apart (other studies measure them).
  projection  the paper preset of Fig. 1 (40 members, 20,000 steps, 21 evaluations) from those:
                minutes = (setup + steps * step(40) + first_eval(40) + (evals - 1) * later_eval(40)
                           + checkpoints * save(40)) / 60
              checkpoints: one every TrainConfig.checkpoint_every (1,000) updates but the last,
              as the runner saves them.
  fig1        the paper preset on --data (mnist-5k) through train_members, as the runner trains
              the group, checkpointing every eval_every steps; it stops after the last
              checkpoint the budget allows and a second call resumes it (on the same machine).
              --fig1-seeds auto: the most seeds of 20, 10, 5, 3 whose full run is projected to
              fit, else 3 seeds and as many steps as fit.
  graphs      the step's forward+backward at each M, eager against one replayed CUDA graph (does
              a graph help?); last, so that a capture gone wrong costs no other section.

Usage: PYTHONPATH=$PWD python3 bench/gpu_check.py [--device cuda] [--budget 540] [--sections a,b]
       python bench/gpu_check.py --device cpu --tiny    # the dry run: every path at tiny sizes
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import statistics
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import probe  # noqa: F401
import studies.invertible_encoders as fig1_study
from probe.data import PairData, load_image_pairs
from probe.devices import cores, resolve_device, set_threads
from probe.errors import InputValueError
from probe.io import atomic_write_text
from probe.results import cell_dataset, collect_records, combine_cells
from probe.runner.cells import tf32_mode
from probe.study import settings_json
from probe.training.checkpoint import atomic_save, checkpointing, restored
from probe.training.config import TrainConfig, evaluation_steps
from probe.training.ensemble import Ensemble, MemberBatches
from probe.training.ensemble_optim import EnsembleTrainer
from probe.training.evaluation import Evaluator
from probe.training.members import train_members
from probe.training.probe_pool import AUTO_MIN_ROWS, auto_probe_workers, background_probes, settle

TOLERANCE_NATS = 1e-3
SHARES = {"precision": 0.06, "steps": 0.15, "eval": 0.33, "projection": 0.0, "fig1": 0.43, "graphs": 0.03}
KEYS = {"precision": "precision", "steps": "steps", "eval": "evaluation", "projection": "projection",
        "fig1": "fig1_paper_measured", "graphs": "cuda_graph_fwd_bwd"}  # where each section's result goes
RESERVE_S = 10.0  # left at the end for the last write


@dataclasses.dataclass(frozen=True)
class Sizes:
    members: tuple[int, ...]         # M timed, the group (the projection's) first
    group: int                       # the evaluated group: Fig. 1's 2 estimators x 20 seeds
    eval_rows: tuple[int, int]       # training / test rows of the evaluation's timing
    train_steps: int                 # precision: fp32 steps before the check, then steps per mode
    timed_steps: int                 # steps: timed steps per M and mode (after 3 warm-up steps)
    model: dict                      # changes to the paper preset's settings
    fig1_seeds: tuple[int, ...]      # --fig1-seeds auto: candidates, most first
    jacobians: int = 128             # g1's Jacobians timed in the eval section
    fig1_rows: tuple[int, int] | None = None  # fig1 data cut to this size (None: all of --data)


PAPER = Sizes((40, 8, 1), 40, (60_000, 10_000), 200, 30, {}, (20, 10, 5, 3))
TINY = Sizes((4, 2, 1), 4, (600, 200), 3, 5, {"n_couplings": 2, "hidden": (32,), "steps": 40, "eval_every": 10},
             (2,), 8, (800, 256))


class Check:
    """One call's settings, data, members (built once) and the JSON it writes."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.sizes = args, TINY if args.tiny else PAPER
        self.device = resolve_device(args.device)
        self.cuda = self.device.type == "cuda"
        self.settings = dataclasses.replace(fig1_study.PRESETS["paper"], **self.sizes.model)
        # The precision of every later section: fp32 unless forced, or the precision section finds TF32 agrees.
        self.mode = "fp32" if args.precision == "auto" else args.precision
        self.state_dir = Path(args.state_dir)
        self.end = time.perf_counter() + args.budget - since_start() - RESERVE_S
        self._data: dict = {}
        self._members: dict = {}
        self.build_s: dict = {}  # (estimator, seed) -> seconds its modules took to build (on the CPU)
        stamp = dt.datetime.now(dt.timezone.utc)
        subset = "" if args.sections == ",".join(SECTIONS) else "-" + args.sections.replace(",", "-")
        self.name = f"gpu-{stamp:%Y-%m-%d}{'-tiny' if args.tiny else ''}{subset}.json"
        self.result: dict = {
            "script": "bench/gpu_check.py", "created": stamp.isoformat(timespec="seconds"), "tiny": args.tiny,
            "device": torch.cuda.get_device_name(self.device) if self.cuda else "cpu",
            "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version() if self.cuda else None},
            "python": platform.python_version(), "dtype": "float32", "cpu_cores": cores(),
            "torch_threads": torch.get_num_threads(), "budget_s": args.budget, "sections": {}}

    def left(self, deadline: float) -> float:
        return deadline - time.perf_counter()

    def data(self, what: str = "fig1") -> tuple[PairData, dict]:
        """--data (fig1, steps, precision) or --eval-data, loaded once; fig1's cut to the tiny sizes."""
        if what not in self._data:
            source = self.args.data if what == "fig1" else self.args.eval_data
            folder = Path(source).is_dir()
            data, info = load_image_pairs(self.settings, None if folder else source, source if folder else None)
            if what == "fig1" and self.sizes.fig1_rows:
                data = resized(data, *self.sizes.fig1_rows, seed=0)
            self._data[what] = (data, info)
        return self._data[what]

    def cells(self, m: int) -> list[tuple[str, int]]:
        """m (estimator, seed) cells, estimators alternating, seeds 0, 1, ...: both estimators in every group."""
        n_est = len(self.settings.estimators)
        return [(self.settings.estimators[i % n_est], i // n_est) for i in range(m)]

    def member(self, estimator: str, seed: int):
        """invertible-encoders' paper member (CPU modules), built once: later groups reuse it."""
        if (estimator, seed) not in self._members:
            t = time.perf_counter()
            self._members[(estimator, seed)] = fig1_study.build_member(self.settings, {"estimator": estimator}, seed,
                                                                       self.data()[0])
            self.build_s[(estimator, seed)] = time.perf_counter() - t
        return self._members[(estimator, seed)]

    def group(self, m: int, data: PairData):
        """(trainer, batches, members) of m paper members on `data`, as train_members builds them."""
        cells = self.cells(m)
        members = [self.member(e, s) for e, s in cells]
        ensemble = Ensemble.from_modules([mb.triple for mb in members], device=self.device)
        configs = [mb.config for mb in members]
        trainer = EnsembleTrainer(ensemble, [c.estimator for c in configs], [c.learning_rate for c in configs],
                                  [c.target for c in configs], [c.grad_clip for c in configs])
        batches = MemberBatches(data.train1, data.train2, [s for _, s in cells], self.settings.batch_size,
                                device=self.device)
        return trainer, batches, members

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def write(self) -> list[str]:
        """The JSON under --out and $OUT (when set): the paths written."""
        self.result["seconds_total"] = since_start()
        self.result["dtype"] = "float32" if self.mode == "fp32" else \
            f"float32, TF32 matmuls{'' if self.cuda else ' (its flags only: a CPU has no TF32)'}"
        text = json.dumps(jsonable(self.result), indent=1) + "\n"
        folders = [Path(self.args.out)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
        return [str(atomic_write_text(folder / self.name, text)) for folder in folders]


def precision(mode: str, device: torch.device) -> contextlib.ExitStack:
    """fp32 (IEEE), tf32 (CUDA matmuls and convolutions, as --tf32) or bf16 (autocast), as one context."""
    stack = contextlib.ExitStack()
    stack.enter_context(tf32_mode(mode == "tf32"))
    if mode == "bf16":
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    return stack


def modes(check: Check) -> list[str]:
    """The precision modes timed and checked: TF32 on CUDA, or where --precision tf32 asks for its flags."""
    return ["fp32", "tf32", "bf16"] if check.cuda or check.mode == "tf32" else ["fp32", "bf16"]


# ------------------------------------------------------------------------------ sections
def section_precision(check: Check, deadline: float) -> dict:
    data, _ = check.data()
    trainer, batches, _ = check.group(2, data)
    for _ in range(check.sizes.train_steps):
        trainer.step(*next(batches))
    k = check.settings.batch_size
    n = len(data.test1) // k * k
    tests = [torch.from_numpy(a[:n]).to(check.device).reshape(-1, k, a.shape[1]) for a in (data.test1, data.test2)]

    @torch.no_grad()
    def held_out(ens: Ensemble, mode: str, dtype=torch.float32) -> np.ndarray:
        """Each member's bound on the held-out batches (scores in `mode`, the estimator in float64)."""
        with precision(mode, check.device):
            per_batch = [trainer.objective.bounds(ens.scores(*(t[b].to(dtype).expand(ens.n_members, -1, -1)
                                                                for t in tests)).double())
                         for b in range(len(tests[0]))]
        return torch.stack(per_batch).mean(0).cpu().numpy()

    ens = trainer.ensemble
    fp32 = held_out(ens, "fp32")
    forward = {mode: float(np.abs(held_out(ens, mode) - fp32).max()) for mode in modes(check)[1:]}
    fp64 = held_out(Ensemble.from_modules([tuple(m.double() for m in ens.member_modules(i)) for i in range(2)],
                                          device=check.device), "fp32", torch.float64)
    out = {"bound_fp32": fp32, "fp32_vs_fp64_nats": float(np.abs(fp32 - fp64).max()), "modes": {}}
    start, drawn = trainer.state_dict(), batches.state_dict()
    after = {}
    for mode in modes(check):  # the same steps on the same batches from the same state, in each mode
        trainer.load_state_dict(start)
        batches.load_state_dict(drawn)
        with precision(mode, check.device):
            for _ in range(check.sizes.train_steps):
                trainer.step(*next(batches))
        after[mode] = held_out(ens, "fp32")
    for mode in modes(check)[1:]:
        trajectory = float(np.abs(after[mode] - after["fp32"]).max())
        agrees = max(forward[mode], trajectory) <= TOLERANCE_NATS
        out["modes"][mode] = {"forward_nats": forward[mode], "trajectory_nats": trajectory,
                              "steps": check.sizes.train_steps, "within_1e-3": agrees,
                              "usable": agrees and mode == "tf32"}  # the engine has no bf16 path
    if check.args.precision == "auto" and out["modes"].get("tf32", {}).get("usable"):
        check.mode = "tf32"
    out["chosen"] = check.mode
    return out


def step_ms(check: Check, step, n: int, seconds: float) -> dict:
    """Median ms of `step` over up to n calls (at least 3, else until `seconds` pass), after 3
    warm-up calls; timed with CUDA events on a GPU."""
    for _ in range(3):
        step()
    check.sync()
    times, pairs, start = [], [], time.perf_counter()
    for i in range(n):
        if i >= 3 and time.perf_counter() - start > seconds:
            break
        if check.cuda:
            pairs.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            pairs[-1][0].record()
            step()
            pairs[-1][1].record()
        else:
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1e3)
    check.sync()
    times += [a.elapsed_time(b) for a, b in pairs]
    p10, p90 = np.percentile(times, [10, 90])
    return {"median_ms": statistics.median(times), "p10_ms": p10, "p90_ms": p90, "steps": len(times)}


def section_graphs(check: Check, deadline: float) -> dict:
    """The step's forward and backward at each M, eager and captured as one CUDA graph and replayed:
    whether a graph would pay (the engine uses none; Adam's bias corrections change every step).
    Last, so that a capture that went wrong cannot cost the other sections."""
    out = {}
    for m in check.sizes.members:
        if check.left(deadline) < 0:
            out[str(m)] = "skipped: over the budget"
            continue
        trainer, batches, _ = check.group(m, check.data()[0])
        with precision(check.mode, check.device):
            for _ in range(3):  # the engine's one-time checks, outside the capture
                trainer.step(*next(batches))
            out[str(m)] = graph_fwd_bwd(check, trainer, *next(batches))
        del trainer, batches
        free_device()
    return out


def graph_fwd_bwd(check: Check, trainer: EnsembleTrainer, x1: torch.Tensor, x2: torch.Tensor) -> dict:
    ens, objective = trainer.ensemble, trainer.objective
    params = list(ens.params.values())

    def fwd_bwd():
        loss = objective.losses(objective.bounds(ens.scores(x1, x2))).sum()
        return torch.autograd.grad(loss, params, allow_unused=True)

    eager = step_ms(check, fwd_bwd, check.sizes.timed_steps, 2.0)["median_ms"]
    if not check.cuda:
        return {"eager_ms": eager, "graph": "skipped: CUDA graphs need a GPU"}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graph asks
        for _ in range(3):
            fwd_bwd()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fwd_bwd()
    replay = step_ms(check, graph.replay, check.sizes.timed_steps, 2.0)["median_ms"]
    return {"eager_ms": eager, "graph_ms": replay, "speedup": eager / replay}


def section_steps(check: Check, deadline: float) -> dict:
    data, _ = check.data()
    out = {"by_mode": {mode: {} for mode in modes(check)}, "setup_s": {},
           "setup_note": "building the members' modules (CPU) + stacking them on the device + the batches"}
    for m in check.sizes.members:
        time_group(check, m, data, out, seconds=min(3.0, max(0.5, check.left(deadline) / 20)))
        free_device()
    timed = out["by_mode"][check.mode]
    check.result["flow_step_ms"] = {str(m): timed[str(m)]["median_ms"] for m in sorted(check.sizes.members)
                                    if str(m) in timed}
    return out


def time_group(check: Check, m: int, data: PairData, out: dict, seconds: float) -> None:
    """Set-up, steps per precision mode (each timed for at most `seconds`) and (for the group) its
    checkpoint's save, of m members. The set-up counts every member's build, also one made for an
    earlier M."""
    t, built_before = time.perf_counter(), set(check.build_s)
    trainer, batches, _ = check.group(m, data)
    check.sync()
    builds = [check.build_s[c] for c in check.cells(m)]
    stacking = time.perf_counter() - t - sum(check.build_s[c] for c in check.cells(m) if c not in built_before)
    out["setup_s"][str(m)] = sum(builds) + stacking
    for mode in modes(check):
        with precision(mode, check.device):
            out["by_mode"][mode][str(m)] = step_ms(check, lambda: trainer.step(*next(batches)),
                                                   check.sizes.timed_steps, seconds)
    if m == check.sizes.group:  # what train_members saves every checkpoint_every updates
        check.state_dir.mkdir(parents=True, exist_ok=True)
        path = check.state_dir / "timing.ckpt.pt"
        check.sync()
        t = time.perf_counter()
        atomic_save({"trainer": trainer.state_dict(), "batches": batches.state_dict()}, path)
        out["checkpoint"] = {"members": m, "save_s": time.perf_counter() - t, "bytes": path.stat().st_size}
        path.unlink()


def evaluate_group(evaluators: list, ensemble: Ensemble, step: int, deadline: float,
                   clock=time.perf_counter) -> dict:
    """Each member's Evaluator call in turn, as train_members makes them: member 0's probe settled at
    once (one member alone; at the first evaluation it also waits for the pool's workers to start),
    the others' at the end (the pool drains). When the deadline ends it early, the others' calls and
    drain are scaled to the whole group."""
    calls = []
    for m, evaluator in enumerate(evaluators):
        if m >= 2 and clock() > deadline:
            break
        t = clock()
        evaluator(*ensemble.member_modules(m), step=step)
        if m == 0:
            evaluator.settle()
        calls.append(clock() - t)
    t = clock()
    settle(evaluators[: len(calls)])
    drain = clock() - t
    others = (len(evaluators) - 1) / (len(calls) - 1) if len(calls) > 1 else 0.0
    return {"member_s": calls[0], "group_s": calls[0] + (sum(calls[1:]) + drain) * others,
            "members_timed": len(calls), "extrapolated": len(calls) < len(evaluators), "calls_s": calls,
            "drain_s": drain}


def timed_evaluation(evaluator: Evaluator, ensemble: Ensemble, step: int) -> float:
    """Seconds of member 0's evaluation, its probe settled."""
    t = time.perf_counter()
    evaluator(*ensemble.member_modules(0), step=step)
    evaluator.settle()
    return time.perf_counter() - t


def section_eval(check: Check, deadline: float) -> dict:
    from probe import analyzers

    data, info = check.data("eval")
    if data.dim != check.data()[0].dim:
        raise InputValueError(f"gpu_check: --eval-data {check.args.eval_data} has views of {data.dim} values, --data "
                              f"{check.args.data} of {check.data()[0].dim}; both must be MNIST-sized (28 x 28) images.")
    rows = check.sizes.eval_rows
    real = (len(data.train1), len(data.test1)) == rows
    data = resized(data, *rows, seed=1)
    out = {"rows": {"train": rows[0], "test": rows[1]}, "data": info["dataset"] if real else
           f"synthetic: {info['dataset']} resampled to {rows[0]:,} / {rows[1]:,} rows, N(0, 0.01) jitter"}
    trainer, batches, members = check.group(check.sizes.group, data)
    budget = check.left(deadline)
    # Member 0 on fig1's data, its probe fitted as the fig1 run fits it (inline below AUTO_MIN_ROWS rows).
    own = Evaluator(check.data()[0], members[0].config, 0, check.device, reuse_fits=True)
    workers = auto_probe_workers(torch.get_num_threads(), cores(), check.cuda)
    # The runner's pool; the dry run's fits are too small for it, so it takes every fit there.
    pool = (max(1, workers), 0) if check.args.tiny else (workers, AUTO_MIN_ROWS)
    with background_probes(*pool), precision(check.mode, check.device):
        t = time.perf_counter()
        evaluators = [Evaluator(data, mb.config, seed, check.device, reuse_fits=True)
                      for mb, (_, seed) in zip(members, check.cells(len(members)))]
        out["evaluators_setup_s"] = time.perf_counter() - t
        fig1_data = {"rows": len(check.data()[0].train1), "member_first_s": timed_evaluation(own, trainer.ensemble, 0)}
        out["first"] = evaluate_group(evaluators, trainer.ensemble, 0, time.perf_counter() + 0.45 * budget)
        between, stop = 0, time.perf_counter() + 0.1 * budget  # the paper's eval_every steps, or what fits
        while between < check.settings.eval_every and (between < 3 or time.perf_counter() < stop):
            trainer.step(*next(batches))
            between += 1
        out["steps_between"] = between
        out["later"] = evaluate_group(evaluators, trainer.ensemble, between, deadline - 0.1 * budget)
        out["fig1_data"] = {**fig1_data, "member_later_s": timed_evaluation(own, trainer.ensemble, between)}
        t = time.perf_counter()
        analyzers.condition_numbers(trainer.ensemble.member_modules(0)[0], data.test1[: check.sizes.jacobians])
        out["jacobians"] = {"inputs": check.sizes.jacobians, "seconds": time.perf_counter() - t}
    m = len(members)
    check.result["eval_s"] = {"rows": rows[0], "member_first": out["first"]["member_s"],
                              "member_later": out["later"]["member_s"], f"group{m}_first": out["first"]["group_s"],
                              f"group{m}_later": out["later"]["group_s"]}
    return out


def section_projection(check: Check, deadline: float) -> dict:
    """Fig. 1's paper preset (one group of 40 members) from the steps and eval sections' timings."""
    s, m = check.settings, check.sizes.group
    steps, ev = check.result.get(KEYS["steps"]), check.result.get("eval_s")
    if not steps or not ev or str(m) not in check.result.get("flow_step_ms", {}) or "checkpoint" not in steps:
        raise InputValueError(f"gpu_check: the projection needs the steps (M = {m}) and eval sections' timings "
                              "from this call; run them with it (--sections steps,eval,projection).")
    every = TrainConfig.from_settings(s, estimator=s.estimators[0]).checkpoint_every
    evals = len(evaluation_steps(s.steps, s.eval_every))
    saves = len(range(every, s.steps, every)) if every else 0  # the runner saves none at the last step
    seconds = {"setup": steps["setup_s"][str(m)], "steps": s.steps * check.result["flow_step_ms"][str(m)] / 1e3,
               "first_evaluation": ev[f"group{m}_first"], "later_evaluations": (evals - 1) * ev[f"group{m}_later"],
               "checkpoints": saves * steps["checkpoint"]["save_s"]}
    check.result["projected_fig1_paper_min"] = sum(seconds.values()) / 60
    return {"minutes": {k: v / 60 for k, v in seconds.items()}, "members": m, "steps": s.steps,
            "evaluations": evals, "checkpoints": saves, "evaluation_rows": ev["rows"], "precision": check.mode,
            "formula": "(setup + steps * step(M) + first_eval(M) + (evaluations - 1) * later_eval(M) "
                       "+ checkpoints * save(M)) / 60, M members in one group"}


# ------------------------------------------------------------------------------------ fig1
class Deadline(Exception):
    """The fig1 run stopped at its budget: right after a checkpoint when `saved`, else mid-segment."""

    def __init__(self, step: int, saved: bool):
        super().__init__(f"stopped at step {step}")
        self.step, self.saved = step, saved


class SegmentClock:
    """train_members' on_step: raises Deadline right after a checkpoint when the next segment
    (`every` steps, an evaluation and a save, as long as the last one took) would end past the
    deadline, or at the first checkpoint at or after `stop_at`; mid-segment once the deadline has passed.
    `on_checkpoint(step)` after each checkpoint (the JSON notes the progress, in case the call is killed)."""

    def __init__(self, deadline: float, every: int, total: int, stop_at: int | None = None,
                 clock=time.perf_counter, on_checkpoint=None):
        self.deadline, self.every, self.total, self.stop_at, self.clock = deadline, every, total, stop_at, clock
        self.on_checkpoint = on_checkpoint or (lambda step: None)
        self.boundary, self.segments = None, []

    def on_step(self, step: int, last: dict) -> None:
        now = self.clock()
        if self.boundary is None:  # this call's first update: set-up, a resume and the step-0 evaluation are behind
            self.boundary = now
        if step % self.every == 0 and step < self.total:  # train_members has just saved a checkpoint
            self.segments.append(now - self.boundary)
            self.boundary = now
            self.on_checkpoint(step)
            if (self.stop_at is not None and step >= self.stop_at) or now + 1.1 * self.segments[-1] > self.deadline:
                raise Deadline(step, saved=True)
        elif now > self.deadline:
            raise Deadline(step, saved=False)


def fig1_seeds(check: Check, deadline: float, pointer: Path) -> tuple[int, str]:
    """How many seeds the fig1 run trains, and why: --fig1-seeds, an earlier call's checkpoint, or the
    most seeds whose whole run is projected (from this call's timings) to fit."""
    candidates = check.sizes.fig1_seeds
    if check.args.fig1_seeds != "auto":
        return int(check.args.fig1_seeds), "--fig1-seeds"
    if pointer.exists():
        saved = json.loads(pointer.read_text())
        if (check.state_dir / saved["checkpoint"]).exists() and saved["mode"] == check.mode:
            return int(saved["seeds"]), f"resuming {saved['checkpoint']} of an earlier call"
    steps, ev = check.result.get(KEYS["steps"]) or {}, check.result.get(KEYS["eval"]) or {}
    timed = steps.get("by_mode", {}).get(check.mode, {})
    if str(check.sizes.group) not in timed or "checkpoint" not in steps or "fig1_data" not in ev:
        return candidates[-1], "no step or evaluation timings in this call to project from: the fewest seeds"
    s, known = check.settings, sorted(int(m) for m in timed)
    evals, saves = len(evaluation_steps(s.steps, s.eval_every)), len(range(s.eval_every, s.steps, s.eval_every))
    per_member = (steps["setup_s"][str(check.sizes.group)] / check.sizes.group
                  + saves * steps["checkpoint"]["save_s"] / steps["checkpoint"]["members"]
                  + ev["fig1_data"]["member_first_s"] + (evals - 1) * ev["fig1_data"]["member_later_s"])
    for n in candidates:
        m = n * len(s.estimators)
        step_s = float(np.interp(m, known, [timed[str(k)]["median_ms"] for k in known])) / 1e3
        need = m * per_member + s.steps * step_s
        if need <= 0.9 * check.left(deadline):
            return n, f"the most seeds of {candidates} whose whole run is projected to fit: {need:.0f} s"
    return candidates[-1], f"no whole run of {candidates} seeds is projected to fit: the fewest, as many steps as fit"


def column_stats(values: np.ndarray) -> dict:
    """Mean and sd (ddof 1) of each column over its finite entries; NaN where there are too few."""
    cols = [v[np.isfinite(v)] for v in values.T]
    return {"mean": [float(c.mean()) if c.size else math.nan for c in cols],
            "sd": [float(c.std(ddof=1)) if c.size > 1 else math.nan for c in cols]}


def fig1_summary(results: list, cells: list, estimators: tuple) -> dict:
    """Mean and sd over seeds per estimator at every step evaluated, and each member's accuracy."""
    reached = np.flatnonzero([any(np.isfinite(r.variables["bound_test"][1][i]) for r in results
                                  if "bound_test" in r.variables) for i in range(len(results[0].steps))])
    missing = ((), np.full(len(results[0].steps), np.nan))
    out = {"steps": results[0].steps[reached], "by_estimator": {}, "probe_accuracy_by_member": {},
           "status": {f"{e}/{seed}": r.status for r, (e, seed) in zip(results, cells) if r.status != "ok"}}
    for est in estimators:
        mine = [r for r, (e, _) in zip(results, cells) if e == est]
        out["by_estimator"][est] = {var: column_stats(np.stack([r.variables.get(var, missing)[1][reached] for r in mine]))
                                    for var in ("probe_accuracy", "bound_test", "bound_train", "v_information")}
    for r, (e, seed) in zip(results, cells):
        out["probe_accuracy_by_member"][f"{e}/{seed}"] = np.round(r.variables.get("probe_accuracy", missing)[1][reached], 4)
    return out


def section_fig1(check: Check, deadline: float) -> dict:
    data, info = check.data()
    check.state_dir.mkdir(parents=True, exist_ok=True)
    pointer = check.state_dir / "fig1.json"
    if pointer.exists() and check.args.precision == "auto" and "precision" not in check.result["sections"]:
        check.mode = json.loads(pointer.read_text())["mode"]  # as the earlier call's precision check chose
    n_seeds, why = fig1_seeds(check, deadline, pointer)
    settings = dataclasses.replace(check.settings, seeds=tuple(range(n_seeds)))
    cells = [(e, seed) for e in settings.estimators for seed in settings.seeds]  # the runner's order
    key = hashlib.sha256((settings_json(settings) + info.get("dataset_sha256", "") + check.mode).encode())
    path = check.state_dir / f"fig1-{key.hexdigest()[:10]}.ckpt.pt"
    atomic_write_text(pointer, json.dumps({"seeds": n_seeds, "checkpoint": path.name, "mode": check.mode}))
    members = [check.member(e, seed) for e, seed in cells]
    configs = [mb.config for mb in members]
    every = settings.eval_every  # a checkpoint at every evaluation: the runner's default (1,000) in the paper preset
    out = {"data": info["dataset"], "n_train": len(data.train1), "members": len(cells), "seeds": n_seeds,
           "seeds_why": why, "steps_total": settings.steps, "precision": check.mode, "checkpoint_every": every}

    def progress(step: int) -> None:
        check.result[KEYS["fig1"]] = {**out, "status": f"running: checkpoint at step {step} in {path}",
                                      "steps_done": step, "segments_s": clock.segments}
        check.write()

    clock = SegmentClock(deadline, every, settings.steps, check.args.fig1_stop_at, on_checkpoint=progress)
    workers = auto_probe_workers(torch.get_num_threads(), cores(), check.cuda)
    t = time.perf_counter()
    with checkpointing(path, f"gpu-check/{path.stem}", every) as plan, background_probes(workers, AUTO_MIN_ROWS), \
            precision(check.mode, check.device):
        try:
            results = train_members([mb.triple for mb in members], data, configs, [s for _, s in cells],
                                    device=check.device, on_step=clock.on_step)
            out.update(status="complete", steps_done=settings.steps)
        except Deadline as stop:
            out["status"] = f"stopped at step {stop.step} by the budget" + ("" if stop.saved else ", mid-segment")
            results = None
    out.update(wall_s=time.perf_counter() - t, resumed_from=plan.resumed_from, segments_s=clock.segments)
    if results is None and path.exists():  # the last checkpoint's records: complete up to its step
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        records = restored(saved["records"])
        results = [collect_records(configs[0].eval_steps, records[m], saved["status"][m]) for m in range(len(cells))]
        out.update(steps_done=int(saved["step"]), checkpoint=str(path), checkpoint_bytes=path.stat().st_size,
                   resume="the same command with --sections fig1, on the same machine")
    if results is None:
        return {**out, "steps_done": 0}
    out["evaluations"] = fig1_summary(results, cells, settings.estimators)
    if out["status"] == "complete":
        path.unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)
        parts = [cell_dataset(r, {"estimator": e, "seed": seed}, fig1_study.STUDY.variables)
                 for r, (e, seed) in zip(results, cells)]
        ds = combine_cells(parts, fig1_study.STUDY.variables)
        ds.attrs.update(preset="paper", dataset=info["dataset"], seeds=",".join(map(str, settings.seeds)))
        out["verdict"] = dataclasses.asdict(fig1_study.STUDY.verdict(ds))
    return out


# ---------------------------------------------------------------------------------- helpers
def resized(data: PairData, n_train: int, n_test: int, seed: int) -> PairData:
    """`data` with exactly n_train / n_test rows: a random subset of a larger split; rows drawn
    with replacement plus N(0, 0.01) jitter for a smaller one (synthetic data of the real size)."""
    rng = np.random.default_rng(seed)

    def rows(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, n: int):
        if n == len(x1):
            return x1, x2, y
        idx = rng.choice(len(x1), n, replace=n > len(x1))
        a, b = x1[idx], x2[idx]
        if n > len(x1):
            a, b = (v + rng.normal(0.0, 0.01, v.shape).astype(np.float32) for v in (a, b))
        return a, b, y[idx]

    tr1, tr2, ytr = rows(data.train1, data.train2, data.train_labels, n_train)
    te1, te2, yte = rows(data.test1, data.test2, data.test_labels, n_test)
    return PairData(tr1, tr2, te1, te2, ytr, yte, data.view_shape)


def jsonable(value):
    """Plain JSON: arrays as lists, numpy scalars as numbers (6 significant digits), NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


def since_start() -> float:
    """Wall seconds since this process started (its imports too), from /proc; since import elsewhere."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - IMPORTED


IMPORTED = time.perf_counter()


def free_device() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


SECTIONS = {"precision": section_precision, "steps": section_steps, "eval": section_eval,
            "projection": section_projection, "fig1": section_fig1, "graphs": section_graphs}


def first_folder(*candidates: str) -> str | None:
    return next((c for c in candidates if Path(c).is_dir()), None)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda or cpu")
    parser.add_argument("--tiny", action="store_true", help="the dry run: every section at tiny sizes")
    parser.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds for the whole call")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--data", default=first_folder(".data/mnist-5k", "../shared/data/mnist-5k"),
                        help="the IDX folder (mnist-5k) of fig1, steps and precision; 'digits' with --tiny")
    parser.add_argument("--eval-data", default=first_folder(".data/fashion-mnist"),
                        help="a 60,000-image IDX folder for the evaluation's timing (default: --data resampled)")
    parser.add_argument("--precision", choices=("auto", "fp32", "tf32"), default="auto",
                        help="auto: TF32 only if the precision section finds it within 1e-3 nats of fp32; a fig1 "
                             "resumed alone keeps its first call's")
    parser.add_argument("--fig1-seeds", default="auto", help="seeds of the fig1 run (auto: see the docstring)")
    parser.add_argument("--fig1-stop-at", type=int, default=None,
                        help="stop the fig1 run at its first checkpoint at or after this step")
    parser.add_argument("--out", default="bench/results", help="folder of the JSON (also $OUT when set)")
    parser.add_argument("--state-dir", default="runs/gpu-check", help="the fig1 checkpoint, kept between calls")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: torch's)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections {args.sections}: {', '.join(unknown)} unknown; choose from {', '.join(SECTIONS)}.")
    if not (args.data is not None and Path(args.data).is_dir() or (args.tiny and args.data == "digits")):
        parser.error(f"--data {args.data}: not a folder; the IDX folder of mnist-5k is required (copy it into the "
                     "checkout: mkdir -p .data && cp -r ../shared/data/mnist-5k .data/), or 'digits' with --tiny.")
    if args.eval_data is not None and not Path(args.eval_data).is_dir():
        parser.error(f"--eval-data {args.eval_data}: not a folder; give a 60,000-image IDX folder, or leave it out "
                     "for --data resampled to 60,000 rows.")
    if args.fig1_seeds != "auto" and not (args.fig1_seeds.isdigit() and int(args.fig1_seeds) >= 1):
        parser.error(f"--fig1-seeds {args.fig1_seeds}: give a number of seeds (>= 1) or auto.")
    args.eval_data = args.eval_data or args.data
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        set_threads(args.threads)
    check = Check(args)
    names = args.sections.split(",")
    for i, name in enumerate(names):
        start = time.perf_counter()
        shares = sum(SHARES[n] for n in names[i:])  # what a section leaves goes to the ones after it
        deadline = start + max(0.0, check.end - start) * (SHARES[name] / shares if shares else 1.0)
        entry = {"budget_s": deadline - start}
        try:
            check.result[KEYS[name]] = SECTIONS[name](check, deadline)
            entry["status"] = "ok"
        except Exception as err:  # noqa: BLE001 - recorded; the other sections go on
            entry.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(-4))
        entry["seconds"] = time.perf_counter() - start
        check.result["sections"][name] = entry
        free_device()
        check.result["written"] = check.write()
        print(f"gpu_check: {name} {entry['status']} in {entry['seconds']:.1f} s"
              + (f": {entry['error']}" if "error" in entry else ""), flush=True)
    print(json.dumps(jsonable(check.result), indent=1))
    print(summary(check.result), flush=True)
    return 0 if all(e["status"] == "ok" for e in check.result["sections"].values()) else 1


def summary(result: dict) -> str:
    """The few numbers that matter, printed last (the device call returns the end of the output)."""
    fig1 = result.get(KEYS["fig1"]) or {}
    return "\n".join([
        f"device {result['device']}, torch {result['torch']['version']} (CUDA {result['torch']['cuda']}), "
        f"{result['dtype']}, {result['seconds_total']:.0f} s; sections "
        + ", ".join(f"{k} {v['status']}" for k, v in result["sections"].items()),
        f"flow_step_ms {jsonable(result.get('flow_step_ms'))}",
        f"eval_s {jsonable(result.get('eval_s'))}",
        f"projected_fig1_paper_min {jsonable(result.get('projected_fig1_paper_min'))}",
        f"fig1_paper_measured: {fig1.get('status')}, {fig1.get('steps_done')} of {fig1.get('steps_total')} steps, "
        f"{fig1.get('members')} members, verdict {(fig1.get('verdict') or {}).get('outcome')}",
        f"written: {', '.join(result.get('written', []))}"])


if __name__ == "__main__":
    raise SystemExit(main())
