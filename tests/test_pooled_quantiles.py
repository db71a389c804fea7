"""Condition-number percentiles pooled over every seed's Jacobian inputs (the notebook's Fig. 2
bands), next to the per-seed ones: the evaluation records ln cond per input, combine_cells pools."""
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from probe.critics import make_critic
from probe.data import PairData
from probe.results import cell_dataset, collect_records, combine_cells, load_dataset, pool_quantiles, save_dataset
from probe.training import Evaluator, TrainConfig

LEVELS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
STEPS = np.array([0, 10, 20])


def cells(per_input, shape=(3.0, 4.0)):
    """Cell Datasets from `per_input[estimator][seed]` = (steps, inputs) arrays, as train_pair records them
    (the per-seed quantiles beside them, as the Evaluator computes them); NaN rows: steps never reached."""
    out = []
    for est, by_seed in per_input.items():
        for seed, values in enumerate(by_seed):
            records = [{"bound_test": 1.0, "log_condition_number": per_seed(row), "quantile": LEVELS,
                        "log_condition_number_input": row, "jacobian_shape": np.array(shape)}
                       for row in values if not np.isnan(row).all()]
            out.append(cell_dataset(collect_records(STEPS, records, "ok"), {"estimator": est, "seed": seed}))
    return out


def per_seed(row):
    with np.errstate(invalid="ignore"):  # np.quantile between a value and +inf: NaN, the analyzer's is +inf
        return np.quantile(row, LEVELS)


def hand_built(rng):
    return {est: [rng.gamma(2.0, 1.0 + s, size=(3, 5)) for s in range(3)] for est in ("infonce", "nwj")}


def test_pooled_percentiles_equal_np_quantile_over_the_concatenated_inputs():
    per_input = hand_built(np.random.default_rng(0))
    ds = combine_cells(cells(per_input))
    pooled = ds["log_condition_number_pooled"]
    assert pooled.dims == ("estimator", "step", "quantile")
    assert pooled.attrs["units"] == "nats" and "pooled" in pooled.attrs["long_name"]
    np.testing.assert_array_equal(pooled["quantile"].values, LEVELS)
    for est, by_seed in per_input.items():
        for i, step in enumerate(STEPS):
            everything = np.concatenate([values[i] for values in by_seed])  # 3 seeds x 5 inputs
            np.testing.assert_allclose(pooled.sel(estimator=est, step=step).values, np.quantile(everything, LEVELS),
                                       rtol=0, atol=1e-12)
    # The per-seed percentiles stay, over (estimator, seed, step, quantile).
    assert ds["log_condition_number"].dims == ("estimator", "seed", "step", "quantile")
    assert ds["log_condition_number_input"].dims == ("estimator", "seed", "step", "jacobian_input")


def test_pooling_and_per_seed_averaging_differ_where_seeds_differ():
    # Seed 0's Jacobians are all ill-conditioned, seeds 1 and 2 well: averaging per-seed medians
    # puts every band between the seeds, pooling keeps the spread of the inputs themselves.
    rows = [np.full((3, 4), 5.0), np.full((3, 4), 0.2), np.full((3, 4), 0.2)]
    ds = combine_cells(cells({"infonce": rows}))
    averaged = ds["log_condition_number"].mean("seed").sel(estimator="infonce", step=20)
    pooled = ds["log_condition_number_pooled"].sel(estimator="infonce", step=20)
    assert float(averaged.sel(quantile=0.4)) == pytest.approx((5.0 + 0.2 + 0.2) / 3)
    assert float(pooled.sel(quantile=0.4)) == pytest.approx(0.2)     # 8 of 12 inputs are at 0.2
    assert float(pooled.sel(quantile=1.0)) == pytest.approx(5.0)
    assert float(averaged.sel(quantile=0.0)) == pytest.approx(1.8)   # no input has ln cond 1.8
    assert float(pooled.sel(quantile=0.0)) == pytest.approx(0.2)


def test_pooling_leaves_out_steps_a_run_never_reached_and_keeps_inf():
    diverged = np.array([[1.0, 2.0], [np.nan, np.nan], [np.nan, np.nan]])  # stopped after step 0
    rows = [np.array([[1.0, 1.0], [3.0, 4.0], [3.0, np.inf]]), diverged]
    ds = combine_cells(cells({"nwj": rows}))
    pooled = ds["log_condition_number_pooled"].sel(estimator="nwj")
    np.testing.assert_allclose(pooled.sel(step=0).values, np.quantile([1.0, 1.0, 1.0, 2.0], LEVELS))
    np.testing.assert_allclose(pooled.sel(step=10).values, np.quantile([3.0, 4.0], LEVELS))
    # A sigma_min = 0 Jacobian (+inf) makes the top of the band +inf, never NaN.
    assert pooled.sel(step=20).values.tolist() == [3.0] + [np.inf] * 5


def test_pool_quantiles_over_a_grid_of_cells():
    values = xr.DataArray(np.arange(24.0).reshape(2, 3, 4), dims=("encoder", "seed", "jacobian_input"),
                          coords={"encoder": ["mlp", "resmlp"]})
    pooled = pool_quantiles(values, [0.5], over=("seed", "jacobian_input"))
    assert pooled.dims == ("encoder", "quantile")
    np.testing.assert_allclose(pooled.values[:, 0], [5.5, 17.5])
    assert pooled.attrs["pooled_over"] == "seed x jacobian_input"


def test_pooled_result_survives_netcdf(tmp_path):
    ds = combine_cells(cells(hand_built(np.random.default_rng(1))))
    again = load_dataset(save_dataset(ds, tmp_path / "results.nc"))
    xr.testing.assert_identical(again, ds)
    assert again["jacobian_axis"].values.tolist() == ["d_out", "d_in"]


def test_the_evaluator_records_per_input_condition_numbers_and_the_jacobian_shape():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int64)
    data = PairData(x[:256], x[:256] + 0.1, x[256:], x[256:] + 0.1, labels[:256], labels[256:], (2, 3))
    config = TrainConfig(estimator="infonce", steps=1, batch_size=64, jacobian_inputs=5, analyzers=False)
    torch.manual_seed(0)
    g1, g2 = nn.Linear(6, 4), nn.Linear(6, 4)
    record = Evaluator(data, config, seed=0, device=torch.device("cpu"))(g1, g2, make_critic("bilinear", 4, 4))
    # A linear map has one Jacobian, W (4 x 6), at every input.
    sigma = np.linalg.svd(g1.weight.detach().double().numpy(), compute_uv=False)
    np.testing.assert_allclose(record["log_condition_number_input"], np.log(sigma[0] / sigma[-1]), rtol=1e-5)
    assert record["log_condition_number_input"].shape == (5,)
    assert record["jacobian_shape"].tolist() == [4.0, 6.0]
    result = collect_records(np.array([0]), [record], "ok")
    assert result.variables["log_condition_number_input"][0] == ("step", "jacobian_input")
    assert result.variables["jacobian_shape"][0] == ("step", "jacobian_axis")
    assert result.variables["log_condition_number"][0] == ("step", "quantile")
