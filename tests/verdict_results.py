"""Synthetic study results for the verdicts' tests, built like a real results.nc.

A real result (probe.results.combine_cells) has each variable over (grid dims..., seed, step
[, quantile]), a `status` per cell and seed, and the run's attributes (study, preset, seeds,
settings_json). `results` builds one whose answer is known by construction; `reordered`,
`with_seeds` and `diverged` make the variants a verdict must not be fooled by.
"""
from __future__ import annotations

import inspect
import json

import numpy as np
import xarray as xr

SEEDS = (0, 1, 2)
STEPS = (0, 500, 1000)
QUANTILES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def results(study: str, grid: dict[str, list], variables: dict, *, seeds=SEEDS, steps=STEPS,
            noise: float | dict[str, float] = 1e-3,
            rng: int = 0, preset: str = "quick", settings: dict | None = None) -> xr.Dataset:
    """A result with dims (grid..., seed, step[, quantile]).

    `variables` maps a name to fn(ids, step_index[, seed]) -> float; a name ending in '@q' is
    over `quantile` too and its fn takes a `quantile` keyword. Each value gets N(0, noise²) added
    (`noise` a number, or {name: sd} with 0 for the names it leaves out).
    """
    random = np.random.default_rng(rng)
    names = list(grid)
    shape = [len(grid[n]) for n in names]
    data = {}
    for key, fn in variables.items():
        name, over_q = (key[:-2], True) if key.endswith("@q") else (key, False)
        takes_seed = "seed" in inspect.signature(fn).parameters
        full = shape + [len(seeds), len(steps)] + ([len(QUANTILES)] if over_q else [])
        values, sd = np.empty(full), noise.get(name, 0.0) if isinstance(noise, dict) else noise
        for index in np.ndindex(*full):
            ids = {n: grid[n][i] for n, i in zip(names, index)}
            kwargs = {"quantile": QUANTILES[index[-1]]} if over_q else {}
            if takes_seed:
                kwargs["seed"] = seeds[index[len(names)]]
            values[index] = fn(ids, index[len(names) + 1], **kwargs) + sd * random.standard_normal()
        data[name] = (names + ["seed", "step"] + (["quantile"] if over_q else []), values)
    data["status"] = (names + ["seed"], np.full(shape + [len(seeds)], "ok", dtype=object))
    coords = {**grid, "seed": list(seeds), "step": list(steps)}
    if any(k.endswith("@q") for k in variables):
        coords["quantile"] = list(QUANTILES)
    attrs = {"study": study, "preset": preset, "seeds": ",".join(str(s) for s in seeds)}
    if settings is not None:
        attrs["settings_json"] = json.dumps(settings, sort_keys=True)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def reordered(ds: xr.Dataset) -> xr.Dataset:
    """The same result with every coordinate in reverse order (steps and seeds too) and the dims transposed."""
    ds = ds.isel({d: slice(None, None, -1) for d in ds.dims})
    return ds.transpose(*reversed(list(ds.dims)))


def with_seeds(ds: xr.Dataset, n: int) -> xr.Dataset:
    """`ds` with `n` seeds: seed k a copy of seed k mod (ds's seed count)."""
    parts = [ds.isel(seed=[k % ds.sizes["seed"]]).assign_coords(seed=[k]) for k in range(n)]
    out = xr.concat(parts, "seed", data_vars="minimal")
    return out.assign_attrs(ds.attrs, seeds=",".join(str(s) for s in range(n)))


def diverged(ds: xr.Dataset, seed: int, **where) -> xr.Dataset:
    """`ds` with one seed's run (of the cells in `where`, every cell if none) diverged after step 0:
    NaN from the second evaluation on, status 'failed', as the runner records it."""
    ds = ds.copy(deep=True)
    steps = sorted(ds["step"].values)[1:]
    for name, var in ds.data_vars.items():
        if name == "status":
            var.loc[{"seed": seed, **where}] = "failed"
        elif "step" in var.dims and "seed" in var.dims and np.issubdtype(var.dtype, np.floating):
            var.loc[{"seed": seed, "step": steps, **where}] = np.nan
    return ds
