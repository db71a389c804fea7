"""Why probe caps BLAS threads in the scikit-learn-based analyzers (probe.analyzers._common.fit_threads).

Times `v_information` and the paper-protocol `linear_probe` on the mnist-5k top halves
(4,000 x 392) under BLAS/OpenMP thread limits 1, 4 and all cores, plus `v_information` as
probe calls it (capped inside). Every run of an analyzer must give the same value: the cap
changes the time, not the result. Prints one line per timing.

Usage: python bench/analyzer_threads.py [--data-dir ../shared/data/mnist-5k]
"""
from __future__ import annotations

import argparse
import os
import time

from threadpoolctl import threadpool_limits

import probe  # noqa: F401  (before torch and BLAS: passive OpenMP waiting)
from probe import analyzers
from probe.analyzers import usable_information
from probe.data import load_dataset, split_views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/mnist-5k")
    args = parser.parse_args()
    data = load_dataset(data_dir=args.data_dir)
    z = split_views(data.train.images)[0].reshape(len(data.train.images), -1)
    tz = split_views(data.test.images)[0].reshape(len(data.test.images), -1)
    raw_v_information = usable_information.v_information.__wrapped__  # without the cap
    print(f"{os.cpu_count()} cores; {z.shape[0]} x {z.shape[1]} training features")
    for limit in (1, 4, None):
        with threadpool_limits(limit):
            start = time.perf_counter()
            v = raw_v_information(z, data.train.labels, test_z=tz, test_y=data.test.labels, seed=0)
            print(f"v_information, BLAS threads {limit or 'all'}: {time.perf_counter() - start:.2f} s, "
                  f"{float(v['v_information']):.4f} nats")
    start = time.perf_counter()
    v = analyzers.v_information(z, data.train.labels, test_z=tz, test_y=data.test.labels, seed=0)
    print(f"v_information as probe calls it (capped): {time.perf_counter() - start:.2f} s, "
          f"{float(v['v_information']):.4f} nats")
    for limit in (1, None):
        with threadpool_limits(limit):
            start = time.perf_counter()
            p = analyzers.linear_probe.__wrapped__(z, data.train.labels, tz, data.test.labels, protocol="paper", seed=0)
            print(f"linear_probe (paper), BLAS threads {limit or 'all'}: {time.perf_counter() - start:.2f} s, "
                  f"accuracy {float(p['accuracy']):.4f}")


if __name__ == "__main__":
    main()
