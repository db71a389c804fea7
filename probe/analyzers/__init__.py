"""Measurements that mutual information does not see.

One module per analyzer (bounds, jacobian, ksg, linear, representation_geometry, triplets,
usable_information), named for what it holds rather than for its function, so that
`import probe.analyzers.triplets` never resolves to the function `triplet_margins`.

Each analyzer takes numpy arrays (and, for the Jacobian, an encoder), calls the shared
validator in `probe.validation` first, and returns an `xarray.Dataset` whose variables carry
`long_name` and `units` and whose attributes record the analyzer, its parameters and the
method variant; every output can be written with `to_netcdf` and read back unchanged.

    linear_probe       linear evaluation accuracy (Tschannen et al. 2020 protocol)
    v_information      predictive V-information (Xu et al. 2020)
    triplet_margins    triplet margin distribution (metric-learning view of InfoNCE)
    condition_numbers  ln(σ_max / σ_min) of the encoder Jacobian
    mi_bounds          held-out variational MI lower bounds (InfoNCE, NWJ, ...)
    ksg_mi             Kraskov-Stögbauer-Grassberger MI for low-dimensional data
    mi_estimate        probe's best estimate of I(X; Y), with an interval and a verdict
    geometry           effective rank, alignment, uniformity, linear CKA, k-NN accuracy
"""
from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from probe.analyzers.bounds import mi_bounds
from probe.analyzers.jacobian import condition_numbers
from probe.analyzers.ksg import ksg_mi
from probe.analyzers.linear import linear_probe
from probe.analyzers.mi_estimate import mi_estimate
from probe.analyzers.registry import REGISTRY
from probe.analyzers.representation_geometry import geometry
from probe.analyzers.triplets import triplet_margins
from probe.analyzers.usable_information import v_information
from probe.errors import unknown_name

Analyzer = Callable[..., xr.Dataset]

# Every analyzer by name (probe.analyzers.registry says what each takes).
ANALYZERS: dict[str, Analyzer] = {entry.name: entry.function for entry in REGISTRY}
ANALYZERS.setdefault("mi_estimate", mi_estimate)  # Python API; `probe analyze` lists REGISTRY's entries


def get_analyzer(name: str) -> Analyzer:
    """Return the analyzer registered under `name` (did-you-mean on a typo)."""
    try:
        return ANALYZERS[name]
    except (KeyError, TypeError):
        raise unknown_name("analyzer", name, list(ANALYZERS)) from None


__all__ = ["ANALYZERS", "REGISTRY", "get_analyzer", "condition_numbers", "geometry", "ksg_mi", "linear_probe",
           "mi_bounds", "mi_estimate", "triplet_margins", "v_information"]
