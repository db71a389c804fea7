"""V-information's C walk on all training rows against the same walk on a subsample of them.

The question behind it: can a cheaper first C search (issue 21, item 4) keep V-information
within 1e-3 nats and take at most 3x the paper-protocol probe? For each embedding of
Fashion-MNIST's top halves (60,000 training rows, 10,000 test), one thread:
- "all rows": `v_information`'s protocol, step by step with its own functions (`walk_C`):
  standardise, split the training rows 75 / 25 (seeded, stratified), walk C_GRID from strong to
  weak penalty at tol 1e-4 with warm starts and stop at the first worse validation
  cross-entropy, then fit all training rows at the chosen C from the walk's fit (tol 1e-6);
- "1/f": the same walk with only a random 1/f of the 45,000 walk rows (the validation rows
  unchanged), then the same final fit from the subsample's fit at its C.
It prints each walk's validation cross-entropies, the chosen C, the change in V-information
(subsample's minus all rows'; 0 when both pick the same C) and the CPU seconds of walk + final fit.

Embeddings: raw pixels, pixels plus Gaussian noise, random projections to 16, 64 and 128
dimensions, a tanh of the pixels, and hard-to-invert's 5-layer residual MLP at initialisation.

Usage: python bench/vinfo_c_walk.py [--data-dir DIR] [--fractions 4,8]
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from vinfo_solver import DEBIAN, load

import probe  # noqa: F401  (before torch and BLAS: passive OpenMP waiting)
from probe.analyzers._common import held_out_cross_entropy, split_indices
from probe.analyzers.usable_information import FINAL_TOL, _fit, walk_C
from probe.encoders import ResidualMLPEncoder


def embeddings(rng: np.random.Generator) -> dict:
    torch.manual_seed(0)
    resmlp = ResidualMLPEncoder(392, 5, 1e-4)
    cases = {"raw pixels": lambda z: z,
             "pixels + noise 0.3": lambda z: z + 0.3 * rng.standard_normal(z.shape).astype(np.float32)}
    for k in (16, 64, 128):
        projection = rng.standard_normal((392, k)).astype(np.float32) / np.sqrt(392)
        cases[f"random projection to {k}"] = lambda z, p=projection: z @ p
    cases["tanh(3 (pixels - 0.5))"] = lambda z: np.tanh(3 * (z - 0.5))
    cases["residual MLP at init"] = lambda z: resmlp(torch.from_numpy(z)).detach().numpy()
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEBIAN)
    parser.add_argument("--fractions", default="4,8", help="subsample sizes as 1/f of the walk's rows")
    args = parser.parse_args()
    fractions = [int(f) for f in args.fractions.split(",")]
    z0, y, tz0, ty = load(args.data_dir)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| embedding | walk | validation cross-entropies | C | V-info change (nats) | CPU s |")
    print("|---|---|---|---:|---:|---:|")
    with threadpool_limits(1), torch.no_grad():
        for name, embed in embeddings(rng).items():
            both = embed(np.concatenate([z0, tz0]))
            z, tz = both[: len(z0)], both[len(z0):]
            mean, std = z.mean(axis=0), z.std(axis=0)
            std[std < 1e-8] = 1.0
            x = torch.as_tensor(((z - mean) / std).astype(np.float64))
            tx = torch.as_tensor(((tz - mean) / std).astype(np.float64))
            train, validation = split_indices(x.shape[0], 0.25, 0, labels=y, caller="bench")

            runs = [("all rows", train)] + [(f"1/{f}", np.sort(rng.permutation(train)[: len(train) // f]))
                                            for f in fractions]
            reference = None
            for label, rows in runs:
                start = time.process_time()
                C, fit, entropies = walk_C(x[torch.as_tensor(rows)], y[rows], x[torch.as_tensor(validation)],
                                           y[validation])
                final, classes = _fit(x, y, C, FINAL_TOL, fit)  # all training rows, from the walk's fit
                entropy = held_out_cross_entropy(final.predict_proba(tx), classes, ty)
                seconds = time.process_time() - start
                reference = entropy if reference is None else reference
                shown = ", ".join(f"{e:.4f}" for e in entropies)
                print(f"| {name} | {label} | {shown} | {C:g} | {reference - entropy:+.5f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
