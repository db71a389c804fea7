"""Valid inputs for every analyzer, derived from its registry Entry, for the contract and fuzz suites.

Each `Entry.calls` form gives one spec with every input it names, and one more with only its
required inputs when it names optional ones: the parameters, which ones are (n, d) arrays and
which are class labels, which must share their row count, and which may be None, all come from
the Entry and the function's signature. So a new analyzer's module plus its Entry is tested
without editing this file. Only an analyzer that cannot be called on arrays alone (it needs a
model) has its spec written out in OVERRIDES; EXTRA adds option variants worth holding to the
contract too.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from probe.analyzers import get_analyzer
from probe.analyzers.registry import LABEL_FIELDS, REGISTRY, Entry, Inputs

N_ROWS, N_FEATURES, N_CLASSES = 200, 4, 3


@dataclass
class Spec:
    """Valid inputs for one analyzer: `arrays` (2-D float inputs), `labels` (1-D class inputs),
    `groups` (inputs that must have the same number of rows), `other` (non-array arguments)."""

    analyzer: str
    arrays: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    groups: tuple[tuple[str, ...], ...] = ()
    other: dict = field(default_factory=dict)
    min_samples: int = 2
    intervals: tuple[str, ...] | None = None  # the `<var>_ci` with n_bootstrap > 0 (None: not checked here)
    model: Any = None                         # a callable that builds the `encoder` argument, for a model analyzer

    @property
    def parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(get_analyzer(self.analyzer)).parameters)

    def takes(self, name: str) -> bool:
        return name in self.parameters

    def optional(self, name: str) -> bool:
        """Whether the analyzer documents None as a valid value of `name` (its default is None)."""
        return self.parameters[name].default is None

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((group[0], other) for group in self.groups for other in group[1:])

    def kwargs(self, **replace) -> dict:
        return {**self.arrays, **self.labels, **self.other, **replace}

    def call(self, **replace) -> xr.Dataset:
        kwargs = self.kwargs(**replace)
        if self.model is not None:
            kwargs["encoder"] = self.model()
        return get_analyzer(self.analyzer)(**kwargs)


def example_inputs(n: int = N_ROWS, seed: int = 0) -> Inputs:
    """Class blobs z (n, 4) with labels y and a noisy copy as the paired view; the last quarter held out."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    z = rng.standard_normal((N_CLASSES, N_FEATURES))[y] * 2 + rng.standard_normal((n, N_FEATURES))
    paired = z + 0.3 * rng.standard_normal(z.shape)
    cut = n - n // 4
    return Inputs(all_z=z, all_y=y, all_paired=paired, z=z[:cut], y=y[:cut], paired=paired[:cut],
                  test_z=z[cut:], test_y=y[cut:], test_paired=paired[cut:])


def _group(source: str) -> str:
    return "all" if source.startswith("all_") else "test" if source.startswith("test_") else "train"


def _spec(entry: Entry, call: dict[str, str], inputs: Inputs, keep_optional: bool) -> Spec:
    used = {p: s.removesuffix("?") for p, s in call.items() if keep_optional or not s.endswith("?")}
    arrays = {p: getattr(inputs, s) for p, s in used.items() if s not in LABEL_FIELDS}
    labels = {p: getattr(inputs, s) for p, s in used.items() if s in LABEL_FIELDS}
    groups: dict[str, list[str]] = {}
    for p, s in used.items():
        groups.setdefault(_group(s), []).append(p)
    full = keep_optional or used.keys() == call.keys()
    return Spec(entry.name, arrays, labels, tuple(tuple(g) for g in groups.values() if len(g) > 1),
                dict(entry.example_options), entry.min_rows, entry.intervals if full else None)


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def _overrides(inputs: Inputs) -> dict[str, Spec]:
    return {"condition_numbers": Spec("condition_numbers", {"inputs": inputs.all_z[:12]}, other={"batch_size": 5},
                                      min_samples=1, model=_encoder)}


def _extra(inputs: Inputs) -> dict[str, Spec]:
    z, y, paired = inputs.all_z, inputs.all_y, inputs.all_paired
    return {
        "linear_probe[folds]": Spec("linear_probe", {"train_z": z[:40], "test_z": z[40:60]},
                                    {"train_y": y[:40], "test_y": y[40:60]}, (("test_z", "test_y"),),
                                    other={"folds": 2, "protocol": "converged"}),
        "triplet_margins[alpha]": Spec("triplet_margins", {"anchors": z, "positives": paired},
                                       groups=(("anchors", "positives"),), other={"n_triplets": 300, "alpha": [0.0, 0.5]}),
        "triplet_margins[cosine]": Spec("triplet_margins", {"anchors": z}, {"labels": y}, (("anchors", "labels"),),
                                        other={"n_triplets": 300, "distance": "cosine"}),
    }


def analyzer_specs(n: int = N_ROWS, seed: int = 0, *, extra: bool = True) -> dict[str, Spec]:
    """{spec id: Spec} for every registered analyzer ("name", "name[<second input>]" for its other
    call forms, "...[required]" for the required inputs alone), then the overrides and extras."""
    inputs = example_inputs(n, seed)
    overrides = _overrides(inputs)
    specs: dict[str, Spec] = {}
    for entry in REGISTRY:
        if entry.name in overrides:
            specs[entry.name] = overrides[entry.name]
            continue
        for i, call in enumerate(entry.calls):
            key = entry.name if i == 0 else f"{entry.name}[{list(call)[1] if len(call) > 1 else i}]"
            specs[key] = _spec(entry, dict(call), inputs, keep_optional=True)
            if any(s.endswith("?") for s in call.values()):
                specs[f"{key}[required]"] = _spec(entry, dict(call), inputs, keep_optional=False)
    return {**specs, **(_extra(inputs) if extra else {})}


def missing_specs() -> list[str]:
    """Registered analyzers that no spec covers (one that needs a model and has no override)."""
    covered = {spec.analyzer for spec in analyzer_specs(extra=False).values()}
    return [entry.name for entry in REGISTRY if entry.name not in covered]
