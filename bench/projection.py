"""The projected wall time against the actual one, for three presets, each run as a user runs it.

Each case is `probe run-study ...` in a fresh process (`--threads 1`, report included); the
script reads the first "projected wall time: about ..." line from its stderr and times the
command from its start to its exit. The projection counts the command's start-up, every
cell's steps and evaluations (the first apart from the later, warm-started ones), the probe
pool, the pixel-probe baseline and the page (probe.runner.progress). Goal (issue 21): the
first projection within +-30% of the wall time.

Cases (names for --cases): quick-digits (invertible-encoders, the README's quick start),
quick-mnist5k (invertible-encoders --data-dir ../shared/data/mnist-5k), noniid-smoke
(noniid-negatives --preset smoke, the one-step-per-evaluation critics), hard-quick-mnist5k.

Usage: python bench/projection.py [--cases quick-digits,quick-mnist5k,noniid-smoke]
           [--data-dir ../shared/data/mnist-5k] [--out /tmp/projection-bench]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "quick-digits": ["invertible-encoders", "--dataset", "digits"],
    "quick-mnist5k": ["invertible-encoders", "--data-dir", "{data_dir}"],
    "noniid-smoke": ["noniid-negatives", "--preset", "smoke"],
    "hard-quick-mnist5k": ["hard-to-invert", "--data-dir", "{data_dir}"],
}
PROJECTED = re.compile(r"projected wall time: about ([^()]+?) for")


def seconds(text: str) -> float:
    """'40 s', '3 min 19 s', '12 min', '2.7 h' -> seconds."""
    total = 0.0
    for number, unit in re.findall(r"([\d.,]+) (s|min|h)\b", text):
        total += float(number.replace(",", "")) * {"s": 1, "min": 60, "h": 3600}[unit]
    return total


def run_case(name: str, args: list[str], out: Path) -> tuple[float, float, str]:
    """(projected s, actual s, the projection's line) of one fresh `probe run-study`."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", "import sys; from probe.cli import main; sys.argv[0] = 'probe'; main()",
               "run-study", *args, "--threads", "1", "--no-progress", "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    line = next((ln for ln in done.stderr.splitlines() if PROJECTED.search(ln)), "")
    match = PROJECTED.search(line)
    return (seconds(match.group(1)) if match else float("nan")), wall, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="quick-digits,quick-mnist5k,noniid-smoke")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-5k"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/projection-bench"))
    args = parser.parse_args()
    rows = []
    for name in args.cases.split(","):
        case = [a.format(data_dir=args.data_dir) for a in CASES[name]]
        load = os.getloadavg()[0]
        projected, wall, line = run_case(name, case, args.out / name)
        rows.append((name, projected, wall, os.getloadavg()[0], load))
        print(f"{name}: projected {projected:.0f} s, actual {wall:.0f} s ({projected / wall - 1:+.0%}); "
              f"load {load:.1f} -> {os.getloadavg()[0]:.1f}\n  {line}", flush=True)
    print("\n| case | projected | actual | projected / actual | load at start, end |\n|---|---|---|---|---|")
    for name, projected, wall, end, start in rows:
        print(f"| {name} | {projected:.0f} s | {wall:.0f} s | {projected / wall:.2f} | {start:.1f}, {end:.1f} |")


if __name__ == "__main__":
    main()
