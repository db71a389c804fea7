"""Measurements that mutual information does not see.

One module per analyzer, named for what it holds rather than for its function, so that
`import probe.analyzers.triplets` never resolves to the function `triplet_margins`. The
analyzers and what each takes are listed once, in `probe.analyzers.registry.REGISTRY`; this
package exposes each of them by its name (`probe.analyzers.linear_probe`, ...).

Each analyzer takes numpy arrays (and, for the Jacobian, an encoder), calls the shared
validator in `probe.validation` first, and returns an `xarray.Dataset` whose variables carry
`long_name` and `units` and whose attributes record the analyzer, its parameters and the
method variant; every output can be written with `to_netcdf` and read back unchanged.

The analyzers (each one's first docstring line; `probe analyze --help` lists them too):
"""
from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from probe.analyzers.registry import REGISTRY
from probe.errors import unknown_name

Analyzer = Callable[..., xr.Dataset]

# Every analyzer by name, in the registry's order.
ANALYZERS: dict[str, Analyzer] = {entry.name: entry.function for entry in REGISTRY}
globals().update(ANALYZERS)  # probe.analyzers.<name>, for every registered analyzer
__doc__ += "\n" + "\n".join(f"    {name:<18} {(f.__doc__ or '').strip().splitlines()[0] if f.__doc__ else ''}"
                            for name, f in ANALYZERS.items()) + "\n"


def get_analyzer(name: str) -> Analyzer:
    """Return the analyzer registered under `name` (did-you-mean on a typo)."""
    try:
        return ANALYZERS[name]
    except (KeyError, TypeError):
        raise unknown_name("analyzer", name, list(ANALYZERS)) from None


__all__ = ["ANALYZERS", "REGISTRY", "get_analyzer", *ANALYZERS]
