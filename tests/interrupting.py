"""A study that stops mid-cell at a given step, alone or in a group: kill -9 for resume tests."""
from __future__ import annotations

import dataclasses

from probe.study import Study


class Killed(Exception):
    """Stands in for kill -9: the run stops mid-cell, nothing after the last checkpoint is kept."""


def killed_at(study: Study, step: int) -> Study:
    """`study` with its cells (run alone or through `run_members`) raising `Killed` at `step`."""
    def hooked(on_step):
        def hook(s, last):
            if s == step:
                raise Killed(f"killed at step {s}")
            if on_step is not None:
                on_step(s, last)
        return hook

    def run_cell(settings, ids, seed, data, device, on_step=None):
        return study.run_cell(settings, ids, seed, data, device, hooked(on_step))

    def run_members(settings, ids_list, seeds, data, device, on_step=None, member_context=None):
        return study.run_members(settings, ids_list, seeds, data, device, hooked(on_step), member_context)

    return dataclasses.replace(study, run_cell=run_cell,
                               run_members=run_members if study.run_members is not None else None)
