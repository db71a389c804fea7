"""probe: representation geometry versus mutual information.

Reproduces and extends Tschannen et al., "On Mutual Information Maximization for
Representation Learning" (ICLR 2020). `probe.analyzers` measures what MI does not see.
"""
import os as _os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

# OpenMP threads that spin while waiting make torch's small matmuls 10-20x slower whenever
# another process shares the cores (measured on a loaded 2-core machine: 1,631 vs 92 ms per
# quick-preset step). Passive waiting costs little on an idle machine. Must be set before
# torch loads its OpenMP runtime, so `import probe` before `import torch` (the CLI does).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = _version("probe")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # Lazy: `import probe` stays fast and torch-free until a submodule is needed.
    import importlib

    if name in {"analyzers", "estimators", "critics", "encoders", "data", "results", "training", "report"}:
        return importlib.import_module(f"probe.{name}")
    raise AttributeError(f"module 'probe' has no attribute {name!r}")
