"""Training-step throughput of the paper's encoder configuration vs the machine's matmul peak.

Prints one JSON line. Both figures are measured in the same run, so the ratio is meaningful
on a shared, noisy machine where absolute times are not:
  - matmul_peak_gflops: best fp32 GEMM rate (n x n, several sizes), the machine's practical peak;
  - train_step_*: one Adam step of the `paper` preset of invertible-encoders (two RealNVP flows
    of 30 additive couplings [512, 512] on 392 features, bilinear 392x392 critic, InfoNCE,
    batch 128), with its FLOPs counted analytically (forward matmuls x 3 for backward);
  - linear_probe_s: one paper-protocol linear evaluation (SAGA, tol 0.1, C = 10, min-max) on
    60,000 x 392 (the paper's training-set size) and on the 4,000-image mnist-5k folder.

Usage: python bench/train_throughput.py [--device cpu|cuda] [--steps 20] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import probe  # noqa: F401  (before torch: sets passive OpenMP waiting, see probe/__init__.py)
from probe.critics import make_critic
from probe.encoders import RealNVP
from probe.estimators import infonce


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, seconds: float = 2.0) -> float:
    best = 0.0
    for n in (512, 1024, 2048, 4096 if device.type == "cuda" else 1536):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b
        sync(device)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 4:
            a @ b
            reps += 1
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def step_flops(flow: RealNVP, batch: int, dim: int) -> float:
    linear = sum(m.in_features * m.out_features for m in flow.modules() if isinstance(m, torch.nn.Linear))
    forward = 2 * batch * (2 * linear) + 2 * batch * dim * dim + 2 * batch * batch * dim  # g1, g2, critic
    return 3.0 * forward


def train_step_time(device: torch.device, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    dim, batch = 392, 128
    g1, g2 = RealNVP(dim, 30, (512, 512)).to(device), RealNVP(dim, 30, (512, 512)).to(device)
    critic = make_critic("bilinear", dim, dim).to(device)
    opt = torch.optim.Adam([*g1.parameters(), *g2.parameters(), *critic.parameters()], lr=1e-4)
    x, y = torch.rand(batch, dim, device=device), torch.rand(batch, dim, device=device)
    times = []
    for i in range(steps + 3):
        sync(device)
        start = time.perf_counter()
        loss = -infonce(critic(g1(x), g2(y)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times)), step_flops(g1, batch, dim)


def probe_time(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> tuple[float, float]:
    from probe.analyzers import linear_probe

    start = time.perf_counter()
    result = linear_probe(x, y, xt, yt, protocol="paper")
    return time.perf_counter() - start, float(result["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist-5k"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    peak = matmul_peak(device)
    step_s, flops = train_step_time(device, args.steps)
    out = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": round(peak, 1),
        "train_step_s": round(step_s, 4),
        "train_step_gflop": round(flops / 1e9, 2),
        "train_step_gflops": round(flops / step_s / 1e9, 1),
        "train_fraction_of_peak": round(flops / step_s / 1e9 / peak, 3),
        "paper_run_hours_estimate": round(20_000 * step_s / 3600, 2),
    }
    from probe.data import load_dataset, split_views

    if Path(args.data_dir).is_dir():
        images = load_dataset(data_dir=args.data_dir)
        x, _ = split_views(images.train.images)
        xt, _ = split_views(images.test.images)
        y, yt = images.train.labels, images.test.labels
        out["linear_probe_mnist5k_s"], out["linear_probe_mnist5k_accuracy"] = (
            round(v, 3) for v in probe_time(x, y, xt, yt))
    else:
        images = load_dataset("digits")
        x, _ = split_views(images.train.images)
        xt, _ = split_views(images.test.images)
        y, yt = images.train.labels, images.test.labels
    # The paper fits the probe on 60,000 training images: tile what we have to that size.
    rng = np.random.default_rng(0)
    reps = int(np.ceil(60_000 / len(x)))
    big = np.tile(x, (reps, 1))[:60_000]
    big = np.clip(big + rng.normal(0, 0.05, big.shape).astype(np.float32), 0, 1)
    out["linear_probe_60k_s"], _ = (round(v, 3) for v in probe_time(big, np.tile(y, reps)[:60_000], xt, yt))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
