"""mi_estimate on families that nobody used to tune or score it (issue 19: "checked on families and
data that you have not seen"), each with a closed-form or quadrature truth.

Written after every limit of mi_estimate was set, to look for what the ground-truth suite does
not cover: copies and noiseless maps (I = inf), duplicated and rank-deficient columns, scales of
1e6 and 1e-6, heavy tails, a circle, sum and product channels, atoms (zero-inflated, a rare
Bernoulli, 1% outliers at 1e9), 40 noisy categories, 50 + 50 independent and 20 + 20 correlated
Gaussians. Scored with `probe.ground_truth.scoring` (x1.5, x1.25 for discrete and mixed pairs;
coverage among reliable cells; an infinite truth is solved by nothing, so a copy can only be
flagged). One thread.

Usage: python bench/mi_unseen.py [--n 500,2000,5000] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import integrate, special, stats  # noqa: E402

import probe  # noqa: E402,F401
from probe.analyzers import mi_estimate  # noqa: E402
from probe.ground_truth.scoring import family_table, format_table, score  # noqa: E402


def gauss_mi(rho: float, d: int = 1) -> float:
    return -0.5 * d * math.log(1 - rho**2)


def correlated(n: int, rho: float, d: int, rng) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, d))
    return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))


def product_truth(noise: float) -> float:
    """y = a b + noise e, a, b ~ N(0, 1): y | a ~ N(0, a² + noise²), p(y) by quadrature over a."""
    def p(v):
        return 2 * integrate.quad(lambda a: stats.norm.pdf(a) * stats.norm.pdf(v, 0, math.sqrt(a * a + noise**2)),
                                  0, 12, limit=200, points=[0.0, 0.1, 0.5])[0]
    h = integrate.quad(lambda v: -p(v) * math.log(p(v)), -40, 40, limit=400, points=[-0.1, 0.0, 0.1])[0]
    return h - 0.5 * math.log(2 * math.pi * math.e * noise**2)


def rare_bernoulli_truth(share: float, shift: float) -> float:
    """x ~ Bernoulli(share), y = shift x + N(0, 1): h(y) of the two-Gaussian mixture - h(N(0, 1))."""
    def f(v):
        return (1 - share) * stats.norm.pdf(v) + share * stats.norm.pdf(v, shift)
    h = integrate.quad(lambda v: -f(v) * math.log(max(f(v), 1e-300)), -12, shift + 12, limit=400, points=[0.0, shift])[0]
    return h - 0.5 * math.log(2 * math.pi * math.e)


def cases(n: int, rng) -> list[tuple[str, str, np.ndarray, np.ndarray, float]]:
    """(name, family, x, y, true MI in nats)."""
    out = []
    x, y = correlated(n, 0.8, 1, rng)
    out.append(("duplicated-column", "continuous", np.hstack([x, x]), y, gauss_mi(0.8)))
    x, y = correlated(n, 0.8, 2, rng)
    out.append(("scaled-1e6-and-1e-6", "continuous", x * [1e6, 1e-6], y * [1e-6, 1e6], gauss_mi(0.8, 2)))
    x, y = correlated(n, 0.7, 2, rng)
    out.append(("rank-2-in-5-columns", "continuous", x @ rng.standard_normal((2, 5)), y, gauss_mi(0.7, 2)))
    out.append(("independent-cauchy-3+3", "continuous", rng.standard_cauchy((n, 3)), rng.standard_cauchy((n, 3)), 0.0))
    x, y = correlated(n, 0.9, 1, rng)
    out.append(("lognormal-multiplicative", "continuous", np.exp(x), 3.0 * np.exp(y), gauss_mi(0.9)))
    x, y = correlated(n, 0.999, 1, rng)
    out.append(("gaussian-rho-0.999", "continuous", x, y, gauss_mi(0.999)))
    x, y = correlated(n, 0.95, 5, rng)
    out.append(("gaussian-5+5-rho-0.95", "continuous", x, y, gauss_mi(0.95, 5)))
    x = rng.standard_normal((n, 2))
    out.append(("copy", "continuous", x, x.copy(), math.inf))
    out.append(("noiseless-monotone-map", "continuous", x, np.exp(x) + x**3, math.inf))
    x, y = correlated(n, 0.6, 1, rng)
    out.append(("rounded-to-0.01", "continuous", np.round(x, 2), np.round(y, 2), gauss_mi(0.6)))  # rounding moves I < 1e-3
    x, y = correlated(n, 0.5, 1, rng)
    out.append(("1%-outliers-at-1e9", "mixed", np.where(rng.random((n, 1)) < 0.01, 1e9, x), y, 0.99 * gauss_mi(0.5)))
    kappa, theta = 4.0, rng.uniform(0, 2 * math.pi, n)
    phi = theta + rng.vonmises(0, kappa, n)
    out.append(("circle-von-mises-4", "continuous", np.c_[np.cos(theta), np.sin(theta)], np.c_[np.cos(phi), np.sin(phi)],
                kappa * special.i1(kappa) / special.i0(kappa) - math.log(special.i0(kappa))))
    x = rng.standard_normal((n, 2))
    out.append(("sum-channel", "continuous", x, (x.sum(1) + 0.5 * rng.standard_normal(n))[:, None], 0.5 * math.log(9)))
    out.append(("product-channel", "continuous", x, (x[:, 0] * x[:, 1] + 0.1 * rng.standard_normal(n))[:, None],
                product_truth(0.1)))
    g, kept = rng.standard_normal(n), rng.random(n) < 0.8
    out.append(("zero-inflated", "mixed", np.where(kept, g, 0.0)[:, None], (g + 0.5 * rng.standard_normal(n))[:, None],
                0.8 * 0.5 * math.log(5)))
    bits = (rng.random(n) < 0.02).astype(float)
    out.append(("rare-bernoulli", "mixed", bits[:, None], (3 * bits + rng.standard_normal(n))[:, None],
                rare_bernoulli_truth(0.02, 3.0)))
    cats = rng.integers(0, 40, n)
    kept_share = 0.7 + 0.3 / 40
    out.append(("40-noisy-categories", "discrete", cats[:, None].astype(float),
                np.where(rng.random(n) < 0.7, cats, rng.integers(0, 40, n))[:, None].astype(float),
                math.log(40) + kept_share * math.log(kept_share) + 39 * (0.3 / 40) * math.log(0.3 / 40)))
    out.append(("independent-50+50", "continuous", rng.standard_normal((n, 50)), rng.standard_normal((n, 50)), 0.0))
    x, y = correlated(n, 0.5, 20, rng)
    out.append(("gaussian-20+20-rho-0.5", "continuous", x, y, gauss_mi(0.5, 20)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="500,2000,5000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    print("| case | n | truth | reported | kind | reliable | interval | scored | s |\n|---|---|---|---|---|---|---|---|---|")
    for n in (int(v) for v in args.n.split(",")):
        for name, family, x, y, truth in cases(n, np.random.default_rng([args.seed, n])):
            start = time.perf_counter()
            ds = mi_estimate(x, y, seed=args.seed)
            lower, upper = (float(v) for v in ds.mutual_information_ci.values)
            record = score({"task": name, "family": family, "n": n, "estimate": float(ds.mutual_information),
                            "truth": truth, "truth_se": 0.0, "reliable": int(ds.reliable), "lower": lower, "upper": upper})
            records.append(record)
            verdict = ("reliable and WRONG" if record["reliable_wrong"] else "solved" if record["solved"] else "flagged")
            if record["reliable"] and not record["covered"]:
                verdict += ", interval MISSES"
            print(f"| {name} | {n} | {truth:.4g} | {record['estimate']:.4g} ({ds.method.values}) | {ds.kind.values} | "
                  f"{record['reliable']} | [{lower:.3g}, {upper:.3g}] | {verdict} | {time.perf_counter() - start:.1f} |",
                  flush=True)
    print("\nBy n:")
    for n in sorted({r["n"] for r in records}):
        rows = [r for r in records if r["n"] == n]
        print(f"n = {n}: " + format_table(family_table([{**r, "family": "all"} for r in rows])).splitlines()[-1])
    print("\nBy family (all n):\n" + format_table(family_table(records)))


if __name__ == "__main__":
    main()
