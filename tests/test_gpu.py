"""CUDA checks: skipped on machines without a GPU (CI), run where one is lent.

The studies and analyzers take numpy inputs and modules wherever they live; these tests
check that nothing assumes the CPU (a CUDA encoder with numpy inputs, every study's smoke
cell on the GPU) and that the GPU gives the CPU's numbers where the arithmetic is the same.
"""

import numpy as np
import pytest
import torch

from probe import analyzers
from probe.data import load_image_pairs
from probe.encoders import RealNVP
from studies import find_study, list_studies

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_condition_numbers_of_a_cuda_encoder_from_numpy_inputs_match_the_cpu():
    torch.manual_seed(0)
    flow = RealNVP(16, n_couplings=4, hidden=(32,), coupling="affine", init_std=0.1).double()
    x = np.random.default_rng(0).standard_normal((8, 16))
    cpu = analyzers.condition_numbers(flow, x)["log_condition_number"].values
    gpu = analyzers.condition_numbers(flow.cuda(), x)["log_condition_number"].values
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9)


@pytest.mark.parametrize("name", [s.name for s in list_studies()])
def test_every_study_trains_a_smoke_cell_on_the_gpu(name):
    study = find_study(name)
    settings = study.settings("smoke")
    data, _ = (study.load_data or load_image_pairs)(settings, None, None)
    ids = {dim: values[0] for dim, values in study.grid(settings).items()}
    result = study.run_cell(settings, ids, settings.seeds[0], data, torch.device("cuda"))
    assert result.status == "ok", result.status
    for var, (_dims, values) in result.variables.items():
        assert np.isfinite(np.atleast_1d(np.asarray(values, dtype=float))[1:]).all(), var
