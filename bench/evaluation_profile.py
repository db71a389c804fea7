"""Where one `paper`-preset evaluation spends its time, part by part.

Encodes the mnist-5k top halves with the paper's invertible-encoders flow (30 additive
couplings of [512, 512]), then times each analyzer an evaluation runs: the paper-protocol
linear probe, V-information, triplet margins and the Jacobians of 128 inputs, and the two
halves of the last (vmap(jacrev) and the float64 SVDs, on the device and on the CPU).
Prints one line per part.

Usage: python bench/evaluation_profile.py [--device cuda] [--data-dir ../shared/data/mnist-5k]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.func import jacrev, vmap

import probe  # noqa: F401  (before torch: passive OpenMP waiting)
from probe import analyzers
from probe.data import load_dataset, split_views
from probe.devices import resolve_device
from probe.encoders import RealNVP


def timed(label: str, device: torch.device, fn, repeats: int = 1):
    fn()  # warm-up: kernels, caches
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"{label}: {(time.perf_counter() - start) / repeats:.2f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default="../shared/data/mnist-5k")
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(data_dir=args.data_dir)
    x_train = split_views(data.train.images)[0].reshape(len(data.train.images), -1).astype(np.float32)
    x_test = split_views(data.test.images)[0].reshape(len(data.test.images), -1).astype(np.float32)
    flow = RealNVP(x_train.shape[1], n_couplings=30, hidden=(512, 512), coupling="additive", init_std=1e-2).to(device)
    with torch.no_grad():
        z_train, z_test = timed("encode train + test", device, lambda: (
            flow(torch.from_numpy(x_train).to(device)).cpu().numpy(), flow(torch.from_numpy(x_test).to(device)).cpu().numpy()))
    timed("linear_probe (paper protocol)", device, lambda: analyzers.linear_probe(
        z_train, data.train.labels, z_test, data.test.labels, protocol="paper", seed=0))
    timed("v_information", device, lambda: analyzers.v_information(
        z_train, data.train.labels, test_z=z_test, test_y=data.test.labels, seed=0))
    timed("triplet_margins (5,000)", device, lambda: analyzers.triplet_margins(z_test, z_test + 0.1, n_triplets=5000, seed=0))
    timed("condition_numbers (128 inputs)", device, lambda: analyzers.condition_numbers(flow, x_test[:128]))
    single = lambda v: flow(v.unsqueeze(0)).squeeze(0)  # noqa: E731
    inputs = torch.from_numpy(x_test[:128]).to(device)
    jac = timed("  vmap(jacrev), 128 inputs", device, lambda: vmap(jacrev(single))(inputs), repeats=2).detach()
    timed(f"  svdvals float64 on {device.type}", device, lambda: torch.linalg.svdvals(jac.to(torch.float64)), repeats=2)
    if device.type != "cpu":
        timed("  svdvals float64 on cpu", device, lambda: torch.linalg.svdvals(jac.to("cpu", torch.float64)))


if __name__ == "__main__":
    main()
