"""The projected memory of a group of cells trained together against its measured peak.

Each case is `probe run-study ...` in a fresh process on the mnist-5k folder (`--threads 1`,
the probe inline, no page), cut to 20 steps with evaluations at 0, 10, 20 and a checkpoint at
10, so that every part of the projection happens (the step, the evaluations, the checkpoint).
The script reads the "memory: about ... per group of M members" line the run prints, and the
process's peak resident memory (VmHWM, read at exit). Goal (issue 21): within +-30%.

Cases: quick-flows (invertible-encoders quick: 6 members of 2 flows of 6 couplings of
[256, 256], 0.85 M parameters a member) and paper-flows (invertible-encoders paper, InfoNCE:
3 members of 2 flows of 30 couplings of [512, 512], 26.7 M parameters a member), and
hard-quick (hard-to-invert quick: residual MLPs, 6 members).

Usage: python bench/memory_projection.py [--cases quick-flows,paper-flows] [--data-dir ../shared/data/mnist-5k]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SHORT = ["--steps", "20", "--set", "eval_every=10", "--checkpoint-every", "10", "--probe-workers", "0", "--no-report"]
CASES = {
    "quick-flows": ["invertible-encoders", "--seeds", "3"],
    "paper-flows": ["invertible-encoders", "--preset", "paper", "--seeds", "3", "--set", "estimators=infonce", "--yes"],
    "hard-quick": ["hard-to-invert", "--seeds", "3"],
}
# The CLI, with the process's peak resident memory printed as it exits.
CLI = ("import atexit, sys\n"
       "def peak():\n"
       "    for line in open('/proc/self/status'):\n"
       "        if line.startswith('VmHWM:'): print('peak-rss-kib', line.split()[1], file=sys.stderr)\n"
       "atexit.register(peak)\n"
       "from probe.cli import main; sys.argv[0] = 'probe'; main()")
MEMORY = re.compile(r"memory: about ([\d.]+) (GiB|MiB) (?:per group of (\d+) members|for one member)")


def run_case(args: list[str], out: Path) -> tuple[float, float, int, str]:
    """(projected bytes, peak bytes, members, the memory line) of one fresh `probe run-study`."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", CLI, "run-study", *args, *SHORT, "--threads", "1", "--no-progress", "--out",
               str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"exit {done.returncode}\n{done.stderr[-3000:]}")
    line = next(ln for ln in done.stderr.splitlines() if MEMORY.search(ln))
    size, unit, members = MEMORY.search(line).groups()
    projected = float(size) * (2**30 if unit == "GiB" else 2**20)
    peak = int(re.search(r"peak-rss-kib (\d+)", done.stderr).group(1)) * 1024
    return projected, peak, int(members or 1), line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="quick-flows,paper-flows")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-5k"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/memory-bench"))
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        projected, peak, members, line = run_case([*CASES[name], "--data-dir", args.data_dir], args.out / name)
        rows.append((name, members, projected, peak))
        print(f"{name}: {line}\n  peak resident memory {peak / 2**30:.2f} GiB, projected {projected / 2**30:.2f} GiB "
              f"({projected / peak - 1:+.0%})", flush=True)
    print("\n| case | members | projected | peak RSS | projected / peak |\n|---|---|---|---|---|")
    for name, members, projected, peak in rows:
        print(f"| {name} | {members} | {projected / 2**30:.2f} GiB | {peak / 2**30:.2f} GiB | {projected / peak:.2f} |")


if __name__ == "__main__":
    main()
