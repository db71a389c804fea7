"""The README's quick start, as a newcomer runs it: a fresh clone, a fresh HOME, the one command.

Clones the repository (its committed HEAD) into a temporary folder, runs the README's quick-start
command there in a clean environment (`env -i` with a new HOME; `--keep-pip-config` keeps this
machine's pip configuration, which is how its offline CPU wheel of torch is found), and prints,
per round, the install and run wall times, the projection the run printed, and the accuracies of
its verdict lines. The last line is the sentence the README's quick start quotes: the range over
the rounds, with the machine it was measured on.

    python bench/quick_start.py --rounds 2 --keep-pip-config
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_command() -> str:
    """The README's one command for a fresh machine (the first line of the quick start's block)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()[0]


def _environment(home: Path, keep_pip_config: bool) -> dict[str, str]:
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if keep_pip_config:  # this machine's pip settings (the offline torch wheel) live partly in the environment
        env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
        for name in (".config/pip", ".pip"):
            if (Path.home() / name).exists():
                shutil.copytree(Path.home() / name, home / name, dirs_exist_ok=True)
    return env


def one_round(command: str, keep_pip_config: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="probe-quick-start-"))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "probe")], check=True, timeout=300)
        env = _environment(work / "home", keep_pip_config)
        (work / "home").mkdir(exist_ok=True)
        install, run = command.split(" && .venv/bin/probe ", 1)
        started = time.perf_counter()
        subprocess.run(["bash", "-c", install], cwd=work / "probe", env=env, check=True, timeout=3600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        installed = time.perf_counter()
        done = subprocess.run(["bash", "-c", f".venv/bin/probe {run}"], cwd=work / "probe", env=env, timeout=7200,
                              capture_output=True, text=True)
        ended = time.perf_counter()
        projected = re.search(r"projected wall time: about ([^(]+?) for", done.stderr)
        accuracies = re.findall(r"^\s+(\w+): accuracy ([\d.]+)(?: ± [\d.]+)? → ([\d.]+)", done.stdout, re.M)
        venv_mb = sum(f.stat().st_size for f in (work / "probe" / ".venv").rglob("*") if f.is_file()) / 2**20
        return {"install_s": installed - started, "run_s": ended - installed, "rc": done.returncode,
                "projected": projected.group(1).strip() if projected else "none printed",
                "accuracies": accuracies, "venv_mb": venv_mb, "tail": done.stdout[-600:] + done.stderr[-600:]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _minutes(seconds: list[float]) -> str:
    lo, hi = min(seconds) / 60, max(seconds) / 60
    return f"{lo:.0f} min" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep-pip-config", action="store_true",
                        help="keep this machine's pip configuration (its offline CPU torch wheel)")
    args = parser.parse_args()
    command = quick_start_command()
    print(f"command: {command}")
    rounds = []
    for i in range(args.rounds):
        result = one_round(command, args.keep_pip_config)
        rounds.append(result)
        accuracies = ", ".join(f"{e} {a} -> {b}" for e, a, b in result["accuracies"]) or "none"
        print(f"round {i + 1}: rc {result['rc']}, install {result['install_s']:.0f} s ({result['venv_mb']:.0f} MB venv), "
              f"run {result['run_s']:.0f} s, projected '{result['projected']}', {accuracies}", flush=True)
        if result["rc"]:
            print(result["tail"], file=sys.stderr)
    load = os.getloadavg()[0]
    runs = [r["run_s"] for r in rounds]
    firsts = sorted({a for r in rounds for _, a, _ in r["accuracies"]})
    lasts = sorted({b for r in rounds for _, _, b in r["accuracies"]})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load:.1f} at the end")
    print(f"README: the run takes {_minutes(runs)} on 2 CPU cores after the install "
          f"(install {_minutes([r['install_s'] for r in rounds])}); accuracy {'/'.join(firsts)} -> "
          f"{min(lasts)}-{max(lasts)} over {len(rounds)} round(s)")


if __name__ == "__main__":
    main()
