"""Where one evaluation of a `paper`-preset run spends its time, part by part.

Builds the study's models on the top/bottom halves of an IDX folder (g1, g2: the paper's
30-coupling flow of matched-targets, or hard-to-invert's 5-layer residual MLP; a 392 x 392
bilinear critic), and runs probe's own `Evaluator` (held-out bounds, paper-protocol probe,
V-information, triplet margins, 128 Jacobians) twice: at step 0, the run's first evaluation,
and after 1,000 InfoNCE steps at the paper's learning rate (1e-4), its second. Each part is
timed by wrapping the function the Evaluator calls, so the script times whatever version of
probe is on the path (PYTHONPATH=<an older checkout>: the "before" column); an Evaluator with
`reuse_fits` gets it. The trained weights are cached (--cache), so that two versions evaluate
the same models.

One thread (torch and BLAS). Times are CPU seconds of this process, which on a shared machine
measure the work whatever the neighbours do; wall seconds beside them.

Usage: python bench/evaluation_profile.py --data-dir /usr/share/datasets/fashion-mnist
           [--encoder flow|resmlp] [--train-steps 1000] [--cache /tmp/evaluation-profile]
"""
from __future__ import annotations

import argparse
import inspect
import pathlib
import time
from collections import defaultdict

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import probe  # noqa: F401  (before torch: passive OpenMP waiting)
import probe.analyzers
import probe.analyzers.usable_information
from probe.critics import make_critic
from probe.data import load_image_pairs
from probe.encoders import RealNVP, ResidualMLPEncoder
from probe.estimators import get_estimator
from probe.training import TrainConfig
from probe.training.evaluation import Evaluator

SPENT: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # part -> [cpu s, wall s]
LAST: dict[str, object] = {}  # part -> what its function returned last
# The functions an evaluation calls, by part; a version lacking one (label_v_information) skips it.
PARTS = {"paper probe": [(probe.analyzers, "linear_probe")],
         "V-information": [(probe.analyzers, "v_information"),
                           (probe.analyzers.usable_information, "label_v_information")],
         "triplets": [(probe.analyzers, "triplet_margins")],
         "128 Jacobians": [(probe.analyzers, "condition_numbers")],
         "of which SVDs": [(torch.linalg, "svdvals")]}


def timing(part: str, function):
    def timed(*args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            LAST[part] = function(*args, **kwargs)
            return LAST[part]
        finally:
            SPENT[part][0] += time.process_time() - cpu
            SPENT[part][1] += time.perf_counter() - wall
    return timed


def models(encoder: str, dim: int):
    torch.manual_seed(0)
    make = {"flow": lambda: RealNVP(dim, 30, (512, 512), "additive", 1e-4),
            "resmlp": lambda: ResidualMLPEncoder(dim, 5, 1e-4)}[encoder]
    return make(), make(), make_critic("bilinear", dim, dim)


def trained(triple, data, steps: int, cache: pathlib.Path) -> None:
    """`steps` InfoNCE steps (Adam 1e-4, batch 128), or their result from `cache`."""
    if cache.exists():
        for module, state in zip(triple, torch.load(cache, weights_only=True)):
            module.load_state_dict(state)
        return
    params = [p for m in triple for p in m.parameters()]
    optimizer, estimator = torch.optim.Adam(params, lr=1e-4), get_estimator("infonce")
    rng = np.random.default_rng(0)
    x1, x2 = torch.from_numpy(data.train1), torch.from_numpy(data.train2)
    g1, g2, critic = triple
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x1), 128))
        loss = -estimator(critic(g1(x1[idx]), g2(x2[idx])))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save([m.state_dict() for m in triple], cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--encoder", choices=("flow", "resmlp"), default="flow")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("/tmp/evaluation-profile"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, info = load_image_pairs(argparse.Namespace(dataset=None), None, args.data_dir)
    triple = models(args.encoder, data.dim)
    for module, name in ((m, n) for parts in PARTS.values() for m, n in parts):
        if hasattr(module, name):
            setattr(module, name, timing(next(p for p, fs in PARTS.items() if (module, name) in fs),
                                         getattr(module, name)))
    config = TrainConfig(estimator="infonce", steps=args.train_steps, batch_size=128, jacobian_inputs=128)
    options = {"reuse_fits": True} if "reuse_fits" in inspect.signature(Evaluator).parameters else {}
    evaluate = Evaluator(data, config, seed=0, device=torch.device("cpu"), **options)
    print(f"{info['dataset']}: {data.train1.shape[0]} training / {data.test1.shape[0]} test rows of {data.dim}; "
          f"{args.encoder}; probe from {pathlib.Path(probe.__file__).parent}; Evaluator options {options}", flush=True)
    columns = []
    cache = args.cache / f"{args.encoder}-{pathlib.Path(args.data_dir).resolve().name}-{args.train_steps}.pt"
    for label, step in (("first evaluation", 0), (f"after {args.train_steps} steps", args.train_steps)):
        if step:
            trained(triple, data, step, cache)
        SPENT.clear()
        with threadpool_limits(1):
            cpu, wall = time.process_time(), time.perf_counter()
            record = evaluate(*triple, step=step)
            total = (time.process_time() - cpu, time.perf_counter() - wall)
        measured = [SPENT[p] for p in ("paper probe", "V-information", "triplets", "128 Jacobians")]
        rest = [total[i] - sum(m[i] for m in measured) for i in (0, 1)]
        columns.append({"encode + bounds": rest, **{p: SPENT[p] for p in PARTS}, "whole evaluation": total})
        C = record.get("v_information_C", getattr(LAST.get("V-information"), "attrs", {}).get("C_selected"))
        print(f"{label}: V-information {record['v_information']:.5f} nats (C {C:g}), "
              f"probe accuracy {record['probe_accuracy']:.4f}, median ln cond "
              f"{float(np.median(record['log_condition_number_input'])):.4f}", flush=True)
    print("\n| part | first evaluation, CPU s (wall) | after training, CPU s (wall) |\n|---|---|---|")
    for part in columns[0]:
        print(f"| {part} | " + " | ".join(f"{c[part][0]:.2f} ({c[part][1]:.2f})" for c in columns) + " |")


if __name__ == "__main__":
    main()
