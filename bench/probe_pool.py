"""Training with the paper's probe fitted inline against fitted in a pool of processes.

One quick-preset member of invertible-encoders (g1, g2: 6 additive couplings of [256, 256];
a 392 x 392 bilinear critic) is trained by `train_pair` on the top/bottom halves of an IDX folder
for --steps InfoNCE steps, evaluated every --eval-every (analyzers off, so that an evaluation is
the bounds and the paper-protocol probe), with the probe fitted inline (--probe-workers 0) and in
`background_probes(1)`. Training runs on one thread; the pool's worker takes another core. The
variants alternate for --rounds; the table gives the median wall time of each and their ratio,
and checks that both give the same probe accuracies.

Usage: python bench/probe_pool.py --data-dir /usr/share/datasets/fashion-mnist
           [--steps 400] [--eval-every 100] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import probe  # noqa: F401  (before torch: passive OpenMP waiting)
from probe.critics import make_critic
from probe.data import load_image_pairs
from probe.encoders import RealNVP
from probe.training import TrainConfig, seeded_init, train_pair
from probe.training.probe_pool import background_probes
from studies.invertible_encoders import PRESETS


def one_run(data, config, pooled: bool) -> tuple[float, np.ndarray]:
    quick = PRESETS["quick"]
    with seeded_init(0) as init:
        flow = lambda: RealNVP(data.dim, quick.n_couplings, quick.hidden, quick.coupling, quick.init_std,  # noqa: E731
                               generator=init)
        g1, g2, critic = flow(), flow(), make_critic("bilinear", data.dim, data.dim)
    start = time.perf_counter()
    with background_probes(1 if pooled else 0):
        result = train_pair(g1, g2, critic, data, config, seed=0)
    return time.perf_counter() - start, np.asarray(result.variables["probe_accuracy"][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, info = load_image_pairs(PRESETS["quick"], None, args.data_dir)
    quick = PRESETS["quick"]
    config = TrainConfig(estimator="infonce", steps=args.steps, batch_size=quick.batch_size,
                         learning_rate=quick.learning_rate, grad_clip=quick.grad_clip, eval_every=args.eval_every,
                         analyzers=False, jacobian_inputs=0, checkpoint_every=None)
    walls: dict[str, list[float]] = {"inline": [], "pool": []}
    accuracies = {}
    for _ in range(args.rounds):
        for name in walls:
            wall, accuracy = one_run(data, config, pooled=name == "pool")
            walls[name].append(wall)
            accuracies[name] = accuracy
    inline, pool = (statistics.median(walls[k]) for k in ("inline", "pool"))
    evaluations = args.steps // args.eval_every + 1
    print(f"{info['dataset']}: {info['n_train']} train / {info['n_test']} test rows; {args.steps} steps, "
          f"{evaluations} evaluations; median of {args.rounds} rounds")
    print(f"{'probe':<8}{'wall s':>10}")
    print(f"{'inline':<8}{inline:>10.1f}")
    print(f"{'pool':<8}{pool:>10.1f}")
    print(f"inline / pool: {inline / pool:.2f}x; same accuracies: "
          f"{bool(np.array_equal(accuracies['inline'], accuracies['pool']))}")
    print(json.dumps({"dataset": info["dataset"], "n_train": info["n_train"], "steps": args.steps,
                      "evaluations": evaluations, "inline_s": walls["inline"], "pool_s": walls["pool"],
                      "ratio": inline / pool}))


if __name__ == "__main__":
    main()
