"""CUDA checks: skipped on machines without a GPU (CI), run where one is lent.

The studies and analyzers take numpy inputs and modules wherever they live; these tests
check that nothing assumes the CPU (a CUDA encoder with numpy inputs, every study's smoke
cell on the GPU) and that the GPU gives the CPU's numbers where the arithmetic is the same.

A cell's variables are numbers or text (mi-ground-truth records each estimate's `method` and
`unreliable_reason`): numbers are compared as numbers, text as text.
"""

import numpy as np
import pytest
import torch

from probe import analyzers
from probe.data import load_image_pairs
from probe.encoders import RealNVP
from probe.results import CellResult
from studies import find_study, list_studies

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLOCKS = frozenset({"wall_time"})  # time, not arithmetic: never the same twice


def is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuf"


def assert_cells_match(expected: CellResult, actual: CellResult, *, rtol: float, atol: float = 0.0) -> None:
    """Two results of one cell hold the same variables over the same dims and steps: numbers within
    `rtol`/`atol` (NaN where the other is NaN), text (strings, objects) exactly; clocks are left out."""
    assert actual.status == expected.status
    np.testing.assert_array_equal(actual.steps, expected.steps)
    assert set(actual.variables) == set(expected.variables)
    for name in sorted(set(expected.variables) - CLOCKS):
        (dims, want), (got_dims, got) = expected.variables[name], actual.variables[name]
        want, got = np.asarray(want), np.asarray(got)
        assert got_dims == dims and got.shape == want.shape, name
        if is_numeric(want) and is_numeric(got):
            np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=name)
        else:
            assert [str(v) for v in got.ravel()] == [str(v) for v in want.ravel()], name


def _smoke_cell(name: str, device: torch.device, ids: dict | None = None) -> CellResult:
    study = find_study(name)
    settings = study.settings("smoke")
    data, _ = (study.load_data or load_image_pairs)(settings, None, None)
    ids = ids or {dim: values[0] for dim, values in study.grid(settings).items()}
    return study.run_cell(settings, ids, settings.seeds[0], data, device)


def test_condition_numbers_of_a_cuda_encoder_from_numpy_inputs_match_the_cpu():
    torch.manual_seed(0)
    flow = RealNVP(16, n_couplings=4, hidden=(32,), coupling="affine", init_std=0.1).double()
    x = np.random.default_rng(0).standard_normal((8, 16))
    cpu = analyzers.condition_numbers(flow, x)["log_condition_number"].values
    gpu = analyzers.condition_numbers(flow.cuda(), x)["log_condition_number"].values
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9)


@pytest.mark.parametrize("name", [s.name for s in list_studies()])
def test_every_study_trains_a_smoke_cell_on_the_gpu(name):
    result = _smoke_cell(name, torch.device("cuda"))
    assert result.status == "ok", result.status
    for var, (_dims, values) in result.variables.items():
        values = np.atleast_1d(np.asarray(values))
        if is_numeric(values):  # text (a method's name, a reason) has nothing to be finite about
            assert np.isfinite(values.astype(float)[1:]).all(), var


def test_mi_ground_truth_cells_give_the_cpus_numbers_on_the_gpu():
    """Its estimators take numpy arrays and run where they always do, so the device a cell is
    handed changes nothing: every smoke cell (seed 0) matches the CPU's, numbers and text."""
    study = find_study("mi-ground-truth")
    grid = study.grid(study.settings("smoke"))
    for task in grid["task"]:
        for estimator in grid["estimator"]:
            ids = {"task": task, "estimator": estimator}
            cpu = _smoke_cell("mi-ground-truth", torch.device("cpu"), ids)
            gpu = _smoke_cell("mi-ground-truth", torch.device("cuda"), ids)
            assert_cells_match(cpu, gpu, rtol=1e-9)
