"""Every analyzer with the inputs it takes, so `probe analyze` can call any of them generically.

A new analyzer is its own module plus one `Entry` below: its name, its function, what it needs
besides the embeddings (labels, a paired view, or a model), whether `--analyzers auto` runs it
for given inputs, and how to call it on saved embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Options:
    """The settings `probe analyze` passes on (each analyzer takes the ones it uses)."""

    seed: int = 0
    protocol: str = "paper"
    steps: int | None = None        # None: mi_bounds chooses from the data's shape
    batch_size: int | None = None
    test_fraction: float = 0.2
    n_bootstrap: int = 0            # > 0: a `<var>_ci` interval on every analyzer that has one


@dataclass(frozen=True)
class Entry:
    name: str
    function: Callable[..., xr.Dataset]
    needs: str                                   # "", "labels", "paired", "labels or paired", or "a model"
    auto: Callable[[Inputs], bool] = lambda inputs: False
    run: Callable[[Callable, Inputs, Options], xr.Dataset] | None = None  # None: needs a model
    # Why these inputs do not suit the analyzer beyond `needs` (a shape, a size), or None.
    check: Callable[[Inputs], str | None] = lambda inputs: None
    # Why auto mode leaves it out although it could run (cost, bias), or None.
    auto_reason: Callable[[Inputs], str | None] = lambda inputs: None

    def fits(self, inputs: Inputs) -> bool:
        """Whether `inputs` hold what this analyzer needs."""
        return self.unfit_reason(inputs) is None

    def unfit_reason(self, inputs: Inputs) -> str | None:
        """Why this analyzer cannot run on `inputs` ("needs labels: pass --labels"), or None."""
        if self.run is None:
            return f"needs a model, not saved embeddings; call probe.analyzers.{self.name} from Python"
        has = {"": True, "labels": inputs.has_labels, "paired": inputs.has_paired,
               "labels or paired": inputs.has_labels or inputs.has_paired}[self.needs]
        if not has:
            return f"needs {self.needs}: pass {describe_needs(self)}"
        return self.check(inputs)

    def skip_reason(self, inputs: Inputs) -> str | None:
        """Why `--analyzers auto` does not run this analyzer on `inputs`, or None to run it."""
        reason = self.unfit_reason(inputs)
        if reason is None and not self.auto(inputs):
            reason = self.auto_reason(inputs) or "not run in auto mode"
            reason += f"; ask for it with --analyzers {self.name}"
        return reason

    def __call__(self, inputs: Inputs, options: Options) -> xr.Dataset:
        return self.run(self.function, inputs, options)


def _v_information(f: Callable, d: Inputs, o: Options) -> xr.Dataset:
    if d.y is not None:
        return f(d.z, d.y, test_z=d.test_z, test_y=d.test_y, seed=o.seed, n_bootstrap=o.n_bootstrap)
    return f(d.z, target=d.paired, test_z=d.test_z, test_target=d.test_paired, seed=o.seed, n_bootstrap=o.n_bootstrap)


def _small_joint(d: Inputs) -> bool:
    return d.has_paired and _joint_dims(d) <= KSG_AUTO_MAX_DIMS


def _joint_dims(d: Inputs) -> int:
    return d.all_z.shape[1] + d.all_paired.shape[1]


def _same_width(d: Inputs) -> bool:
    return d.has_paired and d.all_paired.ndim == 2 and d.all_paired.shape[1] == d.all_z.shape[1]


MI_ESTIMATE_MIN_ROWS = 20  # mi_estimate's own minimum


def _enough_rows(minimum: int) -> Callable[[Inputs], str | None]:
    def check(d: Inputs) -> str | None:
        n = d.all_z.shape[0]
        return None if n >= minimum else f"needs at least {minimum} rows (the embeddings have {n})"
    return check


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


REGISTRY: tuple[Entry, ...] = (
    Entry("linear_probe", linear_probe, "labels", lambda d: d.has_labels,
          lambda f, d, o: f(d.z, d.y, d.test_z, d.test_y, protocol=o.protocol, seed=o.seed, n_bootstrap=o.n_bootstrap)),
    Entry("v_information", v_information, "labels or paired", lambda d: d.has_labels or d.has_paired, _v_information),
    Entry("triplet_margins", triplet_margins, "labels or paired", lambda d: d.has_labels or d.has_paired,
          _triplets, check=_triplets_check),
    Entry("condition_numbers", condition_numbers, "a model"),
    # With a paired view, auto mode measures I(z; paired) once, with mi_estimate (the largest reliable of
    # the Gaussian copula, KSG and a held-out InfoNCE bound, with an interval and a verdict); mi_bounds
    # and ksg_mi, which it draws on, run when asked for by name.
    Entry("mi_estimate", mi_estimate, "paired", lambda d: d.has_paired,
          lambda f, d, o: f(d.all_z, d.all_paired, seed=o.seed), check=_enough_rows(MI_ESTIMATE_MIN_ROWS)),
    Entry("mi_bounds", mi_bounds, "paired", lambda d: False,
          lambda f, d, o: f(d.all_z, d.all_paired, steps=o.steps, batch_size=o.batch_size,
                            test_fraction=o.test_fraction, seed=o.seed, n_bootstrap=o.n_bootstrap),
          auto_reason=lambda d: "mi_estimate already reports a held-out InfoNCE bound where it is the best estimate"),
    Entry("ksg_mi", ksg_mi, "paired", lambda d: False, lambda f, d, o: f(d.all_z, d.all_paired, seed=o.seed),
          auto_reason=lambda d: "mi_estimate already runs KSG where the dimension allows"
                                + ("" if _small_joint(d) else f" ({_joint_dims(d)} joint dimensions here, above the "
                                   f"{KSG_AUTO_MAX_DIMS} where KSG's nearest-neighbour bias stays small)")),
    Entry("geometry", geometry, "", lambda d: True,
          lambda f, d, o: f(d.all_z, labels=d.all_y, paired=d.all_paired, seed=o.seed, n_bootstrap=o.n_bootstrap)),
)


def entries() -> dict[str, Entry]:
    return {entry.name: entry for entry in REGISTRY}


def describe_needs(entry: Entry) -> str:
    """'--labels', '--paired' or '--labels or --paired': the options that give what `entry` needs."""
    return " or ".join(f"--{need}" for need in entry.needs.split(" or ")) if entry.needs else ""


__all__: list[Any] = ["Entry", "Inputs", "Options", "REGISTRY", "entries", "describe_needs", "KSG_AUTO_MAX_DIMS"]
