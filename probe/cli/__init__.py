"""The `probe` command line. `probe.cli:main` is the entry point (pyproject's [project.scripts]).

- `main`: the group and its commands: run-study, report, list-studies, datasets;
- `analyze`: `probe analyze`, the analyzers on saved embeddings.
"""
from probe.cli.main import main

__all__ = ["main"]
