"""mi_estimate's wall time and memory on one thread at the sizes of issue 19's speed goals.

    python bench/mi_speed.py                  # all cases (about 5 min on one free core)
    python bench/mi_speed.py --cases fashion  # one of: gaussian, tanh, fashion

Cases (the goals: 20,000 x (256 + 256) in <= 120 s, 60,000 x (392 + 392) in <= 180 s, each
process under 4 GiB):

- gaussian: 20,000 rows of 256 + 256 Gaussian "embeddings" sharing a 32-d latent (the copula's
  case: its scores pass the Gaussian check, a critic is trained beside it as a check);
- tanh: the same pushed through tanh of a random mixing matrix (the scores are not Gaussian,
  so the critic's lower bound is what is left);
- fashion: the 60,000 Fashion-MNIST training images cut into top and bottom halves (392 + 392
  pixels, the paper's two views; tied pixel columns, constant ones) from
  /usr/share/datasets/fashion-mnist or --fashion DIR.

Each line gives the wall and CPU seconds of the whole call and of each candidate (timed by
wrapping the functions mi_estimate calls), the peak resident memory of this process, the
machine's load average, and what mi_estimate returned.
"""
from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import probe  # noqa: E402,F401

# The module, not the function of the same name that probe.analyzers exports.
module = importlib.import_module("probe.analyzers.mi_estimate")
PARTS = ("plug_in_candidate", "gaussian_candidate", "mixture_candidate", "ksg_candidate", "radial_candidate",
         "neural_candidates", "prepare_view", "select")
TIMES: dict[str, float] = {}


def _timed(name, function):
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - start
    return run


for _part in PARTS:
    setattr(module, _part, _timed(_part, getattr(module, _part)))


def embeddings(n: int, d: int, latent: int, nonlinear: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent))
    views = []
    for _ in range(2):
        a = z @ rng.standard_normal((latent, d)) / np.sqrt(latent) + 0.5 * rng.standard_normal((n, d))
        views.append(np.tanh(a @ rng.standard_normal((d, d)) / np.sqrt(d)) if nonlinear else a)
    return views[0], views[1]


def fashion_halves(folder: str) -> tuple[np.ndarray, np.ndarray]:
    from probe.data import load_dataset, split_views

    top, bottom = split_views(load_dataset(data_dir=folder).train.images)
    return top.reshape(top.shape[0], -1).astype(np.float64), bottom.reshape(bottom.shape[0], -1).astype(np.float64)


def run(name: str, x: np.ndarray, y: np.ndarray, goal: float) -> None:
    TIMES.clear()
    start, cpu = time.perf_counter(), time.process_time()
    ds = module.mi_estimate(x, y, seed=0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    parts = ", ".join(f"{k.replace('_candidates', '').replace('_candidate', '')} {v:.1f}" for k, v in TIMES.items())
    lower, upper = (float(v) for v in ds.mutual_information_ci.values)
    print(f"{name}: {x.shape[0]:,} x ({x.shape[1]} + {y.shape[1]}): wall {wall:.1f} s (goal <= {goal:.0f} s: "
          f"{'met' if wall <= goal else 'NOT met'}), CPU {cpu:.1f} s, peak RSS {peak:.2f} GiB, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    print(f"    parts (wall s): {parts}")
    print(f"    {ds.kind.item()} {float(ds.mutual_information):.3f} nats [{lower:.3f}, {upper:.3f}] by "
          f"{ds.method.item()}, reliable {int(ds.reliable)}; constant columns dropped "
          f"{ds.constant_columns.values.tolist()}; {ds.unreliable_reason.item()[:200]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="gaussian,tanh,fashion")
    parser.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for case in args.cases.split(","):
        if case in ("gaussian", "tanh"):
            run(case, *embeddings(20_000, 256, 32, nonlinear=case == "tanh"), goal=120)
        elif case == "fashion":
            run(case, *fashion_halves(args.fashion), goal=180)
        else:
            parser.error(f"unknown case {case!r}; choose from gaussian, tanh, fashion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
