"""V-information and the converged probe: scikit-learn's L-BFGS against probe's torch Newton-CG.

On Fashion-MNIST top halves (392 pixels; 4,000 and 60,000 training rows, the 10,000 test
rows), one thread, it times and prints, per size:
- "old": V-information as probe computed it before probe.analyzers.logistic (scikit-learn,
  StandardScaler + the same C walk + LogisticRegression(lbfgs, tol 1e-6)), written out here;
- "new": `v_information` (torch Newton-CG, the same objective, walk and tolerance), with
  C="auto" and again with C fixed at the chosen value (the reuse path: no walk);
- the paper-protocol probe (`linear_probe`, scikit-learn SAGA, tol 0.1, C 10) as the yardstick;
- with --converged, the converged probe (min-max features, C 10, tol 1e-6): scikit-learn
  lbfgs against ours.
Values from both sides are printed next to each other: they must agree to 1e-3. Times are
CPU seconds of this process (one thread), not wall time: on a shared machine they measure the
work, not the neighbours.

Data: the Debian package dataset-fashion-mnist (`dpkg -L dataset-fashion-mnist`), or
--data-dir with the four IDX files; --random uses Gaussian blobs of the same shape instead.

Usage: python bench/vinfo_solver.py [--sizes 4000,60000] [--skip-old] [--converged] [--device cpu]
"""
from __future__ import annotations

import argparse
import math
import pathlib
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from threadpoolctl import threadpool_limits

import probe  # noqa: F401  (before torch and BLAS: passive OpenMP waiting)
from probe import analyzers
from probe.analyzers._common import held_out_cross_entropy, split_indices
from probe.analyzers.usable_information import C_GRID
from probe.data import read_idx

DEBIAN = pathlib.Path("/usr/share/datasets/fashion-mnist")


def load(data_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def top(name: str) -> np.ndarray:
        images = read_idx(data_dir / name)
        return (images[:, : images.shape[1] // 2].reshape(len(images), -1) / 255.0).astype(np.float32)

    return (top("train-images-idx3-ubyte.gz"), read_idx(data_dir / "train-labels-idx1-ubyte.gz").astype(np.int64),
            top("t10k-images-idx3-ubyte.gz"), read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64))


def random_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, 392))
    y, ty = rng.integers(0, 10, 60_000), rng.integers(0, 10, 10_000)
    return (centres[y] * 0.3 + rng.standard_normal((60_000, 392)), y,
            centres[ty] * 0.3 + rng.standard_normal((10_000, 392)), ty)


def _sklearn_logistic(C: float, tol: float, max_iter: int = 2000) -> LogisticRegression:
    return LogisticRegression(C=C, solver="lbfgs", tol=tol, max_iter=max_iter, warm_start=True)


def old_v_information(z, y, tz, ty, seed: int = 0) -> tuple[float, float]:
    """probe's V-information before the torch solver (labels, C="auto"): (nats, C chosen)."""
    classes, counts = np.unique(y, return_counts=True)
    h_empty = held_out_cross_entropy(np.tile(counts / counts.sum(), (ty.shape[0], 1)), classes, ty)
    scaler = StandardScaler().fit(z)
    x, tx = scaler.transform(z), scaler.transform(tz)
    tr, va = split_indices(x.shape[0], 0.25, seed, labels=y, caller="bench")
    model, best, best_C = _sklearn_logistic(C_GRID[0], 1e-4), math.inf, C_GRID[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in C_GRID:
            model.set_params(C=C)
            model.fit(x[tr], y[tr])
            ce = held_out_cross_entropy(model.predict_proba(x[va]), model.classes_, y[va])
            if ce >= best:
                break
            best, best_C = ce, C
        final = _sklearn_logistic(best_C, 1e-6).fit(x, y)
    return h_empty - held_out_cross_entropy(final.predict_proba(tx), final.classes_, ty), best_C


def old_converged_probe(z, y, tz, ty) -> float:
    scaler = MinMaxScaler().fit(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _sklearn_logistic(10.0, 1e-6).fit(scaler.transform(z), y)
    return float(np.mean(model.predict(scaler.transform(tz)) == ty))


def timed(fn):
    """(result, CPU seconds): one thread, so process time is the work done, whatever else shares the machine."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEBIAN)
    parser.add_argument("--random", action="store_true", help="Gaussian blobs of the same shape instead")
    parser.add_argument("--sizes", default="4000,60000")
    parser.add_argument("--skip-old", action="store_true", help="do not run the scikit-learn L-BFGS baselines")
    parser.add_argument("--converged", action="store_true", help="also time the converged-protocol probes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    z, y, tz, ty = random_data() if args.random else load(args.data_dir)
    torch.set_num_threads(1)
    print(f"{'random blobs' if args.random else 'Fashion-MNIST top halves'}: train {z.shape}, test {tz.shape}; "
          f"1 thread; torch device {args.device}")
    rows = []
    with threadpool_limits(1):
        for n in (int(s) for s in args.sizes.split(",")):
            zn, yn = z[:n], y[:n]
            paper, t_paper = timed(lambda zn=zn, yn=yn: analyzers.linear_probe(zn, yn, tz, ty, protocol="paper"))
            new, t_new = timed(lambda zn=zn, yn=yn: analyzers.v_information(zn, yn, test_z=tz, test_y=ty, device=args.device))
            chosen = float(new.attrs["C_selected"])
            fixed, t_fixed = timed(lambda zn=zn, yn=yn, chosen=chosen: analyzers.v_information(zn, yn, test_z=tz, test_y=ty, C=chosen,
                                                                   device=args.device))
            line = (f"n={n}: paper probe {t_paper:.1f} s (acc {float(paper.accuracy):.4f}) | "
                    f"V-info new {t_new:.1f} s = {float(new.v_information):.5f} nats (C {chosen:g}, "
                    f"{int(new.n_iter)} Newton its) | new, C fixed {t_fixed:.1f} s = {float(fixed.v_information):.5f}")
            t_old = None
            if not args.skip_old:
                (v_old, c_old), t_old = timed(lambda zn=zn, yn=yn: old_v_information(zn, yn, tz, ty))
                line += (f" || old V-info {t_old:.1f} s = {v_old:.5f} nats (C {c_old:g}), "
                         f"|diff| {abs(v_old - float(new.v_information)):.1e}")
            if args.converged:
                probe_new, t_probe_new = timed(lambda zn=zn, yn=yn: analyzers.linear_probe(zn, yn, tz, ty, protocol="converged",
                                                                              device=args.device))
                line += f" | converged probe new {t_probe_new:.1f} s (acc {float(probe_new.accuracy):.4f})"
                if not args.skip_old:
                    acc_old, t_probe_old = timed(lambda zn=zn, yn=yn: old_converged_probe(zn, yn, tz, ty))
                    line += f", old {t_probe_old:.1f} s (acc {acc_old:.4f})"
            print(line, flush=True)
            rows.append((n, t_paper, t_new, t_fixed, t_old))
    print("\n(CPU seconds)\n| rows | paper probe | V-info old (sklearn) | V-info new, C auto | new, C fixed | new auto / paper |")
    print("|---|---|---|---|---|---|")
    for n, t_paper, t_new, t_fixed, t_old in rows:
        old_cell = f"{t_old:.1f} s" if t_old is not None else "-"
        print(f"| {n} | {t_paper:.1f} s | {old_cell} | {t_new:.1f} s | {t_fixed:.1f} s | {t_new / t_paper:.1f}x |")


if __name__ == "__main__":
    main()
