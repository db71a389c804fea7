"""The study catalogue: every study `probe` runs, in the paper's order.

A new study is one module here plus one line in STUDY_MODULES. Each module defines `STUDY`, a
`probe.study.Study`: its presets, grid, `run_cell`, verdict and the names and units of its own
variables.
"""
from __future__ import annotations

import importlib

from probe.errors import unknown_name
from probe.study import Study

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


def list_studies() -> list[Study]:
    """Every study, in the order of STUDY_MODULES."""
    return [importlib.import_module(f"studies.{name}").STUDY for name in STUDY_MODULES]


def find_study(name: str) -> Study:
    """The study called `name` ("invertible-encoders"; underscores work too), did-you-mean on a typo."""
    studies = {s.name: s for s in list_studies()}
    key = name.replace("_", "-")
    if key not in studies:
        raise unknown_name("study", name, list(studies))
    return studies[key]
