"""How well KSG's standard error describes its spread over seeds: per-row terms against disjoint blocks.

KSG's per-row terms share neighbours, so their standard error (std / sqrt(n)) is not that of
their mean. For each pair below, the script draws `--seeds` data sets, computes KSG-1 (k = 3) on
each, and prints the spread of the estimates over seeds against three standard errors:
- terms: the per-row terms' std / sqrt(n), with a normal quantile (what probe used before);
- blocks: the spread of KSG over 8 disjoint random blocks of rows / sqrt(8), t with 7 dof;
- larger: the larger of the two, t with 7 dof (`probe.analyzers.ksg.block_standard_error`).
"Coverage" is the share of seeds whose 95% interval holds the mean over seeds: it measures the
standard error alone (bias is left out). None of these pairs is a ground-truth task.

Usage: python bench/ksg_se.py [--seeds 80]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.stats import t as student_t

from probe.analyzers.ksg import SE_BLOCKS, _prepare, block_standard_error, ksg_terms

K = 3


def pair(kind: str, n: int, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, d))
    if kind == "gaussian":  # rho 0.7 per coordinate
        return x, 0.7 * x + math.sqrt(1 - 0.49) * rng.standard_normal((n, d))
    if kind == "student":  # a shared chi-square scale, 3 dof: heavy tails
        scale = np.sqrt(rng.chisquare(3, (n, 1)) / 3)
        return x / scale, (0.5 * x + math.sqrt(0.75) * rng.standard_normal((n, d))) / scale
    if kind == "uniform":  # uniform signal, uniform noise
        u = rng.uniform(-1, 1, (n, d))
        return u, u + 0.3 * rng.uniform(-1, 1, (n, d))
    if kind == "sign-mixture":  # y = ±0.9 x + noise, a random sign per row: zero correlation
        sign = rng.choice([-1.0, 1.0], (n, 1))
        return x, sign * 0.9 * x + math.sqrt(0.19) * rng.standard_normal((n, d))
    raise ValueError(kind)


CASES = [("gaussian", 500, 1), ("gaussian", 2000, 2), ("gaussian", 5000, 3), ("student", 2000, 2),
         ("student", 5000, 1), ("uniform", 2000, 1), ("sign-mixture", 2000, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=80)
    args = parser.parse_args()
    z = 1.959964
    t_blocks = float(student_t.ppf(0.975, SE_BLOCKS - 1))
    print(f"KSG-1, k = {K}, {args.seeds} seeds a case; spread = sd of the estimate over seeds\n")
    print("| pair | n | dims | spread | spread / terms se | spread / blocks se | spread / larger se | "
          "coverage: terms | blocks | larger |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, n, d in CASES:
        rows = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(5000 + seed)
            x, y = pair(kind, n, d, rng)
            xs, ys = _prepare(x, rng, True), _prepare(y, rng, True)
            terms = ksg_terms(xs, ys, K)
            order = np.random.default_rng([seed, 0x5EB]).permutation(n)
            blocks = [ksg_terms(xs[np.sort(b)], ys[np.sort(b)], K).mean() for b in np.array_split(order, SE_BLOCKS)]
            larger, _ = block_standard_error(terms, lambda r, xs=xs, ys=ys: ksg_terms(xs[r], ys[r], K), K, seed)
            rows.append((terms.mean(), terms.std(ddof=1) / math.sqrt(n), np.std(blocks, ddof=1) / math.sqrt(SE_BLOCKS),
                         larger))
        a = np.array(rows)
        values, spread = a[:, 0], a[:, 0].std(ddof=1)
        off = np.abs(values - values.mean())
        cover = [np.mean(off <= q * a[:, i]) for q, i in ((z, 1), (t_blocks, 2), (t_blocks, 3))]
        ratios = [spread / a[:, i].mean() for i in (1, 2, 3)]
        print(f"| {kind} | {n} | {d} + {d} | {spread:.4f} | {ratios[0]:.2f} | {ratios[1]:.2f} | {ratios[2]:.2f} | "
              f"{cover[0]:.0%} | {cover[1]:.0%} | {cover[2]:.0%} |", flush=True)


if __name__ == "__main__":
    main()
