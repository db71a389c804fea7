"""What a study is: settings presets, a grid of cells, and the function that runs one cell.

A study module in `studies/` declares a `Study`: settings presets (frozen dataclasses), the
grid as readable ids, `run_cell`, its verdict and the names and units of its own variables.
`studies/__init__.py` lists them; `probe.runner` runs them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import xarray as xr

from probe.errors import InputValueError, unknown_name
from probe.results import CellResult


@dataclass(frozen=True)
class Cell:
    ids: dict[str, Any]      # grid ids, e.g. {"estimator": "nwj"}
    seed: int

    @property
    def label(self) -> str:
        return " · ".join(str(v) for v in self.ids.values()) + f" · seed {self.seed}"

    def filename(self) -> str:
        parts = [f"{k}={v}" for k, v in self.ids.items()] + [f"seed={self.seed}"]
        return "_".join(parts).replace("/", "-") + ".nc"


# Where a study comes from, which decides how its pages speak of its claim:
# "paper"   one of Tschannen et al.'s own experiments: "the paper's claim", the paper's numbers beside ours;
# "own"     probe's own question or another paper's benchmark: "this study's claim", its own references;
# "variant" a changed copy of another study (the default): "this study's claim", and no paper numbers,
#           even where it reuses the verdict of the study it varies.
ORIGINS = ("paper", "own", "variant")


@dataclass(frozen=True)
class Study:
    name: str                   # "invertible-encoders"
    title: str
    figure: str                 # "Fig. 1a/b"
    description: str            # one line for `probe list-studies`
    presets: dict[str, Any]     # preset name -> settings dataclass
    grid: Callable[[Any], dict[str, list]]
    run_cell: Callable[..., CellResult]
    load_data: Callable[[Any, str | None, str | None], tuple[Any, dict]] | None = None
    # Did a run show the paper's effect? `results Dataset -> probe.verdict.Verdict`, for the index page.
    verdict: Callable[[xr.Dataset], Any] | None = None
    # The study's own variables, {name: (long_name, units)}, on top of probe.results.VARIABLE_ATTRS.
    variables: dict[str, tuple[str, str]] = field(default_factory=dict)
    # `member(settings, ids, seed, data) -> probe.training.members.Member`: lets the runner train the
    # cells that differ only in `member_axes` (and seed) together, as one ensemble.
    member: Callable[..., Any] | None = None
    member_axes: tuple[str, ...] = ("estimator",)
    # For a study with its own step loop (no `member`): `run_members(settings, ids_list, seeds, data,
    # device, on_step, member_context) -> [CellResult]` trains the same groups of cells together and
    # returns one result per cell, each as `run_cell` would return it alone. `member_context(m)` is
    # entered around everything drawn for member m alone (its seeds are recorded under it).
    run_members: Callable[..., list[CellResult]] | None = None
    origin: str = "variant"     # one of ORIGINS

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise unknown_name("study origin", self.origin, list(ORIGINS))

    @property
    def claim_owner(self) -> str:
        """Whose claim its verdict tests: "the paper's" or "this study's"."""
        return "the paper's" if self.origin == "paper" else "this study's"

    def settings(self, preset: str) -> Any:
        if preset not in self.presets:
            raise unknown_name("preset", preset, list(self.presets))
        return self.presets[preset]


def apply_overrides(settings: Any, values: dict[str, str]) -> Any:
    """Settings with `--set KEY=VALUE` applied, each VALUE parsed to the field's current type
    (tuples as comma-separated lists); names and estimator/critic ids are checked here, before
    any training starts."""
    from probe.critics import CRITICS
    from probe.estimators import get_estimator

    fields = {f.name for f in dataclasses.fields(settings)}
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise unknown_name("setting", key, sorted(fields))
        current = getattr(settings, key)
        try:
            parsed[key] = _parse_like(current, raw)
        except ValueError:
            raise InputValueError(
                f"--set {key}={raw}: cannot be read as {type(current).__name__} (current value {current!r})."
            ) from None
    settings = dataclasses.replace(settings, **parsed)
    for name in getattr(settings, "estimators", ()):
        get_estimator(name)
    for name in getattr(settings, "critics", ()) or ((settings.critic,) if hasattr(settings, "critic") else ()):
        if name not in CRITICS:
            raise unknown_name("critic", name, list(CRITICS))
    return settings


def _parse_like(current: Any, raw: str) -> Any:
    if isinstance(current, tuple):
        items = [v.strip() for v in raw.split(",") if v.strip()]
        if not items:
            raise ValueError(raw)
        kind = type(current[0]) if current else str
        return tuple(_parse_like(kind(), v) if kind is not str else v for v in items)
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float) or current is None:
        return None if raw.lower() == "none" else float(raw)
    return raw


def settings_json(settings: Any) -> str:
    return json.dumps(dataclasses.asdict(settings), sort_keys=True, default=str)
