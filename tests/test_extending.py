"""docs/extending.md is true: its two recipes, applied to a copy of this repository exactly as the
page writes them, give a suite in which the generic tests run and pass on the new analyzer and
the new study (and nothing else had to change)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"```python (file|insert)=(\S+)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def _insert(text: str, where: str, code: str) -> str:
    """`code` after the last `from probe.analyzers.` import ("imports"), or before the `)` that closes
    the tuple assigned to `where` (REGISTRY, STUDY_MODULES)."""
    lines = text.splitlines(keepends=True)
    if where == "imports":
        last = max(i for i, line in enumerate(lines) if line.startswith("from probe.analyzers."))
        return "".join(lines[:last + 1]) + code + "".join(lines[last + 1:])
    start = next(i for i, line in enumerate(lines) if re.match(rf"{where}\b.*= \($", line))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip() == ")")
    return "".join(lines[:end]) + code + "".join(lines[end:])


def test_the_page_has_both_recipes():
    kinds = {(kind, target.split(":")[0]) for kind, target, _ in blocks()}
    assert ("insert", "probe/analyzers/registry.py") in kinds and ("insert", "studies/__init__.py") in kinds
    assert any(kind == "file" and target.startswith("studies/") for kind, target in kinds)


def test_the_recipes_applied_to_a_copy_pass_the_generic_suites(tmp_path):
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for part in ("probe", "studies", "tests", "docs"):
        shutil.copytree(ROOT / part, copy / part, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy)
    for kind, target, code in blocks():
        path, _, where = target.partition(":")
        if kind == "file":
            assert not (copy / path).exists(), f"{path} exists already: the recipe must add a new module"
            (copy / path).write_text(code)
        else:
            (copy / path).write_text(_insert((copy / path).read_text(), where, code))
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_analyzers_contract.py",
               "tests/test_fuzz.py", "tests/test_analyzers_cca.py", "tests/test_catalogue.py", "tests/test_layout.py",
               "-k", "cca or noisy or test_layout or in_the_catalogue"]
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                                                  signal.SIG_DFL))
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output[-4000:]
    summary = output.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed > 100 and "failed" not in summary, summary  # the contract, fuzz and study checks ran
