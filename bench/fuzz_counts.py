"""Run the fuzz cases of tests/test_fuzz.py and print their counts as one JSON line.

    python bench/fuzz_counts.py            # every case
    python bench/fuzz_counts.py --verbose  # also one line per failing case (kind, error, detail) on stderr

The cases, their generators and the per-case deadline are the test suite's own (seeded, so
the counts are reproducible); "failures" lists the cases that end in a raw exception, a silent
NaN or a timeout (tests/test_fuzz.py marks them xfail with the reason).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv: list[str]) -> int:
    import test_fuzz
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    verbose = "--verbose" in argv
    started = time.perf_counter()
    outcomes = []
    with threadpool_limits(1), tempfile.TemporaryDirectory() as scratch:
        for i, case in enumerate(test_fuzz.all_cases()):
            workdir = Path(scratch) / str(i)
            workdir.mkdir()
            outcome = test_fuzz.run_case(case, workdir)
            outcomes.append((case, outcome))
            if verbose and not outcome.passed(case):
                print(f"FAIL {case.id}: {outcome.kind} {outcome.error}\n    "
                      + outcome.detail.replace("\n", "\n    "), file=sys.stderr)
    summary = test_fuzz.counts(outcomes)
    summary["known_failures"] = len(test_fuzz.KNOWN_FAILURES)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
