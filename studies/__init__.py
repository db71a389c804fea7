"""The study catalogue: every study `probe` runs, in the paper's order.

A new study is one module here plus one line in STUDY_MODULES. Each module defines `STUDY`, a
`probe.study.Study`: its presets, grid, `run_cell`, verdict and the names and units of its own
variables. The generic tests (tests/test_catalogue.py) run every study listed here.

Loading the catalogue checks each study's settings: a field that neither `TrainConfig` (which
copies the fields it shares with the settings, `TrainConfig.from_settings`), nor the runner, nor
the study's own code reads is a mistake (a misspelt `noise_sd` beside `noise_std` would train
without noise, silently), so it is an error naming the field and its close matches.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib
import inspect
from types import ModuleType

from probe.errors import InputValueError, unknown_name
from probe.study import Study
from probe.training.config import TrainConfig

STUDY_MODULES = (
    "invertible_encoders",
    "estimator_validation",
    "adversarial_encoder",
    "hard_to_invert",
    "critic_capacity",
    "encoder_architecture",
    "noniid_negatives",
    "matched_targets",
    "mi_ground_truth",
)

# Settings fields the runner and the data loaders read (probe.runner, probe.data.pairs).
RUNNER_READS = frozenset({"seeds", "steps", "eval_every", "batch_size", "dataset", "noise_std", "views"})


def list_studies() -> list[Study]:
    """Every study, in the order of STUDY_MODULES (each one's settings checked, see the module docstring)."""
    return [_load(name) for name in STUDY_MODULES]


def find_study(name: str) -> Study:
    """The study called `name` ("invertible-encoders"; underscores work too), did-you-mean on a typo."""
    studies = {s.name: s for s in list_studies()}
    key = name.replace("_", "-")
    if key not in studies:
        raise unknown_name("study", name, list(studies))
    return studies[key]


@functools.cache
def _load(module_name: str) -> Study:
    module = importlib.import_module(f"studies.{module_name}")
    study = module.STUDY
    check_settings_are_read(study, module)
    return study


def check_settings_are_read(study: Study, module: ModuleType) -> None:
    """Raise if a field of a preset's settings is read by nothing (see the module docstring)."""
    read = _names_read(module) | {f.name for f in dataclasses.fields(TrainConfig)} | RUNNER_READS
    for preset, settings in study.presets.items():
        for field in dataclasses.fields(settings):
            if field.name not in read:
                close = difflib.get_close_matches(field.name, sorted(read), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise InputValueError(
                    f"studies.{module.__name__.rpartition('.')[2]}: {field.name} is read by nothing{hint}. It is a "
                    f"field of {type(settings).__name__} (preset {preset!r}), but neither TrainConfig, the runner nor "
                    "the study's code uses it, so setting it would change nothing. Rename it, or read it in the study."
                )


def _names_read(module: ModuleType, seen: set[str] | None = None) -> set[str]:
    """Attribute names (`settings.noise_std`) and identifier strings (`getattr(s, "noise_std")`) in the
    module's code and in the studies modules it imports (a variant reads through the study it varies)."""
    seen = set() if seen is None else seen
    if module.__name__ in seen:
        return set()
    seen.add(module.__name__)
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            found.add(node.value)
        imported: list[str] = []
        if isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "studies":  # from studies import invertible_encoders
            imported = [f"studies.{alias.name}" for alias in node.names if alias.name in STUDY_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported = [node.module]
        for name in imported:
            if name.startswith("studies.") and name != module.__name__:
                found |= _names_read(importlib.import_module(name), seen)
    return found
