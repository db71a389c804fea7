"""Every analyzer, what it takes and how to call it: the one list that `probe.analyzers`, `probe
analyze`, its `--help` and the contract and fuzz test suites all read.

A new analyzer is its own module plus one `Entry` in REGISTRY below, for example

    Entry(name="alignment_uniformity", function=alignment_uniformity, needs=PAIRED,
          calls=({"z": "all_z", "paired": "all_paired"},), headline=("alignment", "uniformity"))

`calls` says which parameter of the function gets which part of the user's data (`Inputs`);
`probe analyze` passes the options (`Options`: seed, n_bootstrap, ...) that the function's
signature names. From the same Entry the test suites build valid inputs, corrupt each one and
check the documented errors (tests/analyzer_specs.py), so no test needs editing for a new entry.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import xarray as xr

from probe.analyzers.bounds import mi_bounds
from probe.analyzers.jacobian import condition_numbers
from probe.analyzers.ksg import ksg_mi
from probe.analyzers.linear import linear_probe
from probe.analyzers.mi_estimate import mi_estimate
from probe.analyzers.representation_geometry import geometry
from probe.analyzers.triplets import triplet_margins
from probe.analyzers.usable_information import v_information

KSG_AUTO_MAX_DIMS = 20  # KSG's bias grows with dimension: auto mode runs it only below this


class Need(enum.Enum):
    """What an analyzer needs besides the embeddings."""

    LABELS = "labels"
    PAIRED = "paired"
    MODEL = "a model"


# `Entry.needs` is a set of alternatives: any one of them suffices; the empty set: embeddings alone.
NOTHING: frozenset[Need] = frozenset()
LABELS = frozenset({Need.LABELS})
PAIRED = frozenset({Need.PAIRED})
LABELS_OR_PAIRED = frozenset({Need.LABELS, Need.PAIRED})
MODEL = frozenset({Need.MODEL})


@dataclass(frozen=True)
class Inputs:
    """Saved embeddings and what comes with them. `z`, `y`, `paired` are the training part and
    `test_*` the held-out part (given, or split off with the seed); `all_*` are every row, for
    the analyzers that make their own split or need none."""

    all_z: np.ndarray
    all_y: np.ndarray | None = None
    all_paired: np.ndarray | None = None
    z: np.ndarray | None = None
    y: np.ndarray | None = None
    paired: np.ndarray | None = None
    test_z: np.ndarray | None = None
    test_y: np.ndarray | None = None
    test_paired: np.ndarray | None = None

    @property
    def has_labels(self) -> bool:
        return self.all_y is not None

    @property
    def has_paired(self) -> bool:
        return self.all_paired is not None


LABEL_FIELDS = ("all_y", "y", "test_y")  # the Inputs fields that hold class labels (1-D); the rest are (n, d)
INPUT_FIELDS = tuple(f.name for f in dataclasses.fields(Inputs))


@dataclass(frozen=True)
class Options:
    """The settings `probe analyze` passes on (each analyzer gets the ones its signature names)."""

    seed: int = 0
    protocol: str = "paper"
    steps: int | None = None        # None: mi_bounds chooses from the data's shape
    batch_size: int | None = None
    test_fraction: float = 0.2
    n_bootstrap: int = 0            # > 0: a `<var>_ci` interval on every analyzer that has one


def _no_reason(inputs: Inputs) -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One analyzer: its name and function, what it needs and how `probe analyze` calls it."""

    name: str
    function: Callable[..., xr.Dataset]
    needs: frozenset[Need] = NOTHING
    # Ways to call `function` on saved embeddings, tried in order: {parameter: Inputs field}. The first
    # whose data are all present is used; a field marked optional ("all_y?") is passed when present.
    calls: tuple[Mapping[str, str], ...] = ()
    # Which Options fields to pass (None: every one the function's signature names).
    options: tuple[str, ...] | None = None
    auto: bool = True                    # run by `--analyzers auto` whenever the inputs suit it
    # Why auto mode leaves it out although it could run (cost, bias), or None.
    auto_reason: Callable[[Inputs], str | None] = _no_reason
    # Why these inputs do not suit the analyzer beyond `needs` (a shape, a size), or None.
    check: Callable[[Inputs], str | None] = _no_reason
    # A call that `calls` cannot express (e.g. a choice made from the data's shape); None: from `calls`.
    run: Callable[[Callable, Inputs, Options], xr.Dataset] | None = None
    headline: tuple[str, ...] = ()       # the variables a reader looks at first
    intervals: tuple[str, ...] = ()      # the variables that get a `<var>_ci` with n_bootstrap > 0
    min_rows: int = 2                    # fewer rows are refused (the function's own minimum)
    # Small settings for the contract and fuzz suites (e.g. fewer critic steps): test speed only.
    example_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parameters = inspect.signature(self.function).parameters
        for call in self.calls:
            for parameter, source in call.items():
                source = source.removesuffix("?")
                if parameter not in parameters:
                    raise TypeError(f"registry: {self.name}.calls names {parameter!r}, which {self.function.__name__} "
                                    f"does not take (it takes {', '.join(parameters)}).")
                if source not in INPUT_FIELDS:
                    raise TypeError(f"registry: {self.name}.calls maps {parameter!r} to {source!r}; an Inputs field "
                                    f"is required ({', '.join(INPUT_FIELDS)}).")
        if Need.MODEL not in self.needs and not self.calls and self.run is None:
            raise TypeError(f"registry: {self.name} gives neither `calls` nor `run`: say how to call it on embeddings.")

    @property
    def on_embeddings(self) -> bool:
        """Whether it runs on saved embeddings (False: it needs a model, from Python)."""
        return Need.MODEL not in self.needs

    def fits(self, inputs: Inputs) -> bool:
        """Whether `inputs` hold what this analyzer needs."""
        return self.unfit_reason(inputs) is None

    def unfit_reason(self, inputs: Inputs) -> str | None:
        """Why this analyzer cannot run on `inputs` ("needs labels: pass --labels"), or None."""
        if not self.on_embeddings:
            return f"needs a model, not saved embeddings; call probe.analyzers.{self.name} from Python"
        has = {Need.LABELS: inputs.has_labels, Need.PAIRED: inputs.has_paired}
        if self.needs and not any(has[need] for need in self.needs):
            return f"needs {' or '.join(n.value for n in self._needs())}: pass {describe_needs(self)}"
        if inputs.all_z.shape[0] < self.min_rows:
            return f"needs at least {self.min_rows} rows (the embeddings have {inputs.all_z.shape[0]})"
        return self.check(inputs)

    def skip_reason(self, inputs: Inputs) -> str | None:
        """Why `--analyzers auto` does not run this analyzer on `inputs`, or None to run it."""
        reason = self.unfit_reason(inputs)
        if reason is None and not self.auto:
            reason = self.auto_reason(inputs) or "not run in auto mode"
            reason += f"; ask for it with --analyzers {self.name}"
        return reason

    def _needs(self) -> list[Need]:
        return [need for need in Need if need in self.needs]  # a fixed order for messages

    def arguments(self, inputs: Inputs) -> dict[str, Any]:
        """The data arguments of the first of `calls` that `inputs` can fill."""
        for call in self.calls:
            values = {p: getattr(inputs, source.removesuffix("?")) for p, source in call.items()}
            if all(values[p] is not None for p, source in call.items() if not source.endswith("?")):
                return {p: v for p, v in values.items() if v is not None}
        raise ValueError(f"{self.name}: none of its calls fits these inputs")

    def option_arguments(self, options: Options) -> dict[str, Any]:
        """The Options fields this analyzer takes, by the names in its signature."""
        parameters = inspect.signature(self.function).parameters
        names = self.options if self.options is not None else [f.name for f in dataclasses.fields(Options)]
        return {name: getattr(options, name) for name in names if name in parameters}

    def __call__(self, inputs: Inputs, options: Options) -> xr.Dataset:
        if self.run is not None:
            return self.run(self.function, inputs, options)
        return self.function(**self.arguments(inputs), **self.option_arguments(options))


def _small_joint(d: Inputs) -> bool:
    return d.has_paired and _joint_dims(d) <= KSG_AUTO_MAX_DIMS


def _joint_dims(d: Inputs) -> int:
    return d.all_z.shape[1] + d.all_paired.shape[1]


def _same_width(d: Inputs) -> bool:
    return d.has_paired and d.all_paired.ndim == 2 and d.all_paired.shape[1] == d.all_z.shape[1]


def _triplets(f: Callable, d: Inputs, o: Options) -> xr.Dataset:
    # A positive is the other view of the anchor only when both views live in one space (same width);
    # otherwise, with labels, it is another anchor of the same class.
    positives = d.all_paired if _same_width(d) else None
    return f(d.all_z, positives, labels=d.all_y, seed=o.seed, n_bootstrap=o.n_bootstrap)


def _triplets_check(d: Inputs) -> str | None:
    if d.has_labels or _same_width(d):
        return None
    return (f"needs --paired of the embeddings' width ({d.all_paired.shape[1]} features vs "
            f"{d.all_z.shape[1]}: distances between the views need one space) or --labels")


PAIRED_VIEWS = ({"x": "all_z", "y": "all_paired"},)

REGISTRY: tuple[Entry, ...] = (
    Entry(name="linear_probe", function=linear_probe, needs=LABELS,
          calls=({"train_z": "z", "train_y": "y", "test_z": "test_z?", "test_y": "test_y?"},),
          headline=("accuracy",), intervals=("accuracy", "cross_entropy")),
    Entry(name="v_information", function=v_information, needs=LABELS_OR_PAIRED,
          calls=({"z": "z", "y": "y", "test_z": "test_z?", "test_y": "test_y?"},
                 {"z": "z", "target": "paired", "test_z": "test_z?", "test_target": "test_paired?"}),
          headline=("v_information",), intervals=("v_information",)),
    Entry(name="triplet_margins", function=triplet_margins, needs=LABELS_OR_PAIRED,
          calls=({"anchors": "all_z", "positives": "all_paired"}, {"anchors": "all_z", "labels": "all_y"}),
          run=_triplets, check=_triplets_check, headline=("margin_mean", "violation_fraction"),
          intervals=("margin_mean", "violation_fraction"), example_options={"n_triplets": 300}),
    Entry(name="condition_numbers", function=condition_numbers, needs=MODEL, headline=("log_condition_number",)),
    # With a paired view, auto mode measures I(z; paired) once, with mi_estimate (the largest reliable of
    # the Gaussian copula, KSG and a held-out InfoNCE bound, with an interval and a verdict); mi_bounds
    # and ksg_mi, which it draws on, run when asked for by name. Its own bootstrap always runs (>= 1
    # resample), so --n-bootstrap 0 is not passed on to it.
    Entry(name="mi_estimate", function=mi_estimate, needs=PAIRED, calls=PAIRED_VIEWS, options=("seed",),
          headline=("mutual_information",), min_rows=20),
    Entry(name="mi_bounds", function=mi_bounds, needs=PAIRED, calls=PAIRED_VIEWS, auto=False,
          auto_reason=lambda d: "mi_estimate already reports a held-out InfoNCE bound where it is the best estimate",
          headline=("bound",), intervals=("bound",), example_options={"steps": 15, "batch_size": 16}),
    Entry(name="ksg_mi", function=ksg_mi, needs=PAIRED, calls=PAIRED_VIEWS, auto=False,
          auto_reason=lambda d: "mi_estimate already runs KSG where the dimension allows"
                                + ("" if _small_joint(d) else f" ({_joint_dims(d)} joint dimensions here, above the "
                                   f"{KSG_AUTO_MAX_DIMS} where KSG's nearest-neighbour bias stays small)"),
          headline=("mutual_information",)),
    Entry(name="geometry", function=geometry, calls=({"z": "all_z", "labels": "all_y?", "paired": "all_paired?"},),
          headline=("effective_rank", "uniformity", "alignment"),
          intervals=("effective_rank", "uniformity", "linear_cka", "alignment", "knn_accuracy")),
)


def entries() -> dict[str, Entry]:
    return {entry.name: entry for entry in REGISTRY}


def describe_needs(entry: Entry) -> str:
    """'--labels', '--paired' or '--labels or --paired': the options that give what `entry` needs."""
    return " or ".join(f"--{need.value}" for need in entry._needs() if need is not Need.MODEL)


__all__: list[Any] = ["Entry", "Inputs", "Need", "Options", "REGISTRY", "entries", "describe_needs",
                      "KSG_AUTO_MAX_DIMS", "NOTHING", "LABELS", "PAIRED", "LABELS_OR_PAIRED", "MODEL"]
