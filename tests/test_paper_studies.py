"""The paper's studies (Tschannen et al. 2020, experiments 2-6) and probe's matched-targets study:
each smoke preset through the runner, each paper preset against docs/reference.md, and the pieces
with a closed form (the non-i.i.d. sampler, the uniform-target loss, L_t)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

import studies.adversarial_encoder as adversarial
import studies.critic_capacity as critic_capacity
import studies.encoder_architecture as encoder_architecture
import studies.hard_to_invert as hard_to_invert
import studies.matched_targets as matched_targets
import studies.noniid_negatives as noniid
from probe.errors import InputValueError, UnknownNameError
from probe.results import load_dataset
from probe.runner import run_study
from probe.training import CellResult, TrainConfig
from studies import find_study

# study name -> (grid dims in order, variables over step every cell must hold, a quantile variable?)
EXPECTED = {
    "adversarial-encoder": (("lr_source",), ("probe_accuracy", "classifier_loss", "classifier_accuracy",
                                             "encoder_loss", "inverse_round_trip_error",
                                             "inverse_round_trip_error_float64", "loss", "wall_time"), True),
    "hard-to-invert": (("estimator",), ("bound_test", "bound_train", "probe_accuracy", "loss", "wall_time"), True),
    "critic-capacity": (("estimator", "critic"), ("bound_test", "bound_train", "probe_accuracy", "loss"), False),
    "encoder-architecture": (("encoder", "target", "estimator"),
                             ("bound_test", "probe_accuracy", "loss", "target_gap"), False),
    "noniid-negatives": (("estimator", "negatives"), ("bound_train", "bound_train_smoothed", "bound_test",
                                                      "wall_time"), False),
    "matched-targets": (("encoder", "target", "estimator"),
                        ("bound_test", "probe_accuracy", "target_gap", "v_information", "triplet_margin_mean",
                         "triplet_violation_fraction"), True),
}
MODULES = {
    "adversarial-encoder": adversarial, "hard-to-invert": hard_to_invert, "critic-capacity": critic_capacity,
    "encoder-architecture": encoder_architecture, "noniid-negatives": noniid, "matched-targets": matched_targets,
}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {name: load_dataset(run_study(find_study(name), "smoke", out=out, progress=False, log=lambda m: None))
            for name in EXPECTED}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_smoke_preset_runs_into_a_labelled_result(smoke_results, name):
    ds = smoke_results[name]
    grid, variables, quantiles = EXPECTED[name]
    settings = MODULES[name].PRESETS["smoke"]
    assert ds.attrs["study"] == name and ds.attrs["preset"] == "smoke"
    assert (ds["status"] == "ok").all(), ds["status"].values
    for name_ in variables:
        assert ds[name_].dims == (*grid, "seed", "step"), (name_, ds[name_].dims)
        assert ds[name_].attrs.get("long_name") and ds[name_].attrs.get("units") is not None, name_
        assert np.isfinite(ds[name_].isel(step=slice(1, None))).all(), name_
    if quantiles:
        assert ds["log_condition_number"].dims == (*grid, "seed", "step", "quantile")
        assert np.isfinite(ds["log_condition_number"]).all()
    assert int(ds["step"][-1]) == settings.steps
    assert list(ds["seed"].values) == list(settings.seeds)


def test_smoke_grids_use_the_reference_ids(smoke_results):
    # The runner sorts each coordinate; the ids themselves are those probe.reference expects.
    coords = lambda study, dim: sorted(str(v) for v in smoke_results[study][dim].values)  # noqa: E731
    assert coords("critic-capacity", "critic") == ["bilinear", "concat", "separable"]
    assert coords("encoder-architecture", "encoder") == ["convnet", "mlp"]
    assert coords("encoder-architecture", "target") == ["2.0", "4.0"]
    assert coords("noniid-negatives", "negatives") == ["iid", "noniid"]
    assert coords("matched-targets", "encoder") == sorted(matched_targets.FAMILIES)
    assert coords("adversarial-encoder", "lr_source") == ["notebook"]


def test_smoke_results_hold_the_paper_quantities(smoke_results):
    adv = smoke_results["adversarial-encoder"]
    # The flow stays a bijection: the round trip is exact up to float32 rounding.
    assert float(adv["inverse_round_trip_error"].max()) < 1e-3
    assert float(adv["inverse_round_trip_error_float64"].max()) < 1e-10
    gap = smoke_results["encoder-architecture"]
    expected = np.abs(gap["bound_test"] - gap["target"])
    np.testing.assert_allclose(gap["target_gap"].values, expected.transpose(*gap["target_gap"].dims).values)
    nn = smoke_results["noniid-negatives"]
    np.testing.assert_allclose(nn["true_mi"].values, 0.5 * -math.log(1 - 0.04), rtol=1e-12)
    # Synthetic data: no pixel baseline, and the run says which data it drew.
    assert "pixel_probe_accuracy" not in nn and nn.attrs["dataset"] == "synthetic-gaussian"
    assert "pixel_probe_accuracy" in smoke_results["hard-to-invert"]
    # A ConvNet with 8 channels before its 16-d output has Jacobians of rank <= 8: all deficient;
    # a residual MLP near the identity is full rank.
    mt = smoke_results["matched-targets"]
    assert (mt["jacobian_rank_deficient"].sel(encoder="convnet") == 1).all()
    assert (mt["jacobian_rank_deficient"].sel(encoder="resmlp") == 0).all()
    assert (smoke_results["hard-to-invert"]["jacobian_rank_deficient"] == 0).all()


# ------------------------------------------------------------------- paper presets vs docs/reference.md

def _asdict(settings):
    return dataclasses.asdict(settings)


def test_adversarial_paper_preset_is_the_notebook_protocol():
    paper = adversarial.PRESETS["paper"]
    assert _asdict(paper) == _asdict(adversarial.Settings(
        lr_sources=("notebook",), n_couplings=30, hidden=(512, 512), coupling="affine", init_std=1e-4, lr_scale=1.0,
        batch_size=128, warmup_steps=1_000, classifier_steps=10, steps=4_000, eval_every=400,
        seeds=tuple(range(20)), dataset="mnist", probe_protocol="paper", jacobian_inputs=16))
    assert adversarial.LEARNING_RATES == {"notebook": (1e-3, 1e-5), "paper_text": (1e-4, 1e-6)}


def test_hard_to_invert_paper_preset():
    assert _asdict(hard_to_invert.PRESETS["paper"]) == _asdict(hard_to_invert.Settings(
        estimators=("infonce", "nwj"), n_layers=5, init_std=1e-4, noise_std=0.05, noise_coupled=True,
        critic="bilinear", learning_rate=1e-4, grad_clip=None, batch_size=128, steps=20_000, eval_every=1_000,
        seeds=tuple(range(20)), dataset="mnist", jacobian_inputs=128, analyzers=True))


def test_critic_capacity_paper_preset():
    assert _asdict(critic_capacity.PRESETS["paper"]) == _asdict(critic_capacity.Settings(
        estimators=("infonce", "nwj"), critics=("bilinear", "separable", "concat"), hidden=(300, 300), out=100,
        learning_rate=1e-4, grad_clip=None, batch_size=128, steps=20_000, eval_every=1_000,
        seeds=tuple(range(20)), dataset="mnist", jacobian_inputs=0, analyzers=True))
    assert critic_capacity.CRITIC_SIZES["separable"] == {"hidden": (100,), "out": 100}
    assert critic_capacity.CRITIC_SIZES["concat"] == {"hidden": (200,)}


def test_encoder_architecture_paper_preset():
    assert _asdict(encoder_architecture.PRESETS["paper"]) == _asdict(encoder_architecture.Settings(
        estimators=("infonce", "nwj"), encoders=("convnet", "mlp"), targets=(2.0, 4.0), critic="bilinear",
        mlp_hidden=(300, 300), conv_channels=(64, 128), out=100, learning_rate=1e-4, grad_clip=None,
        batch_size=128, steps=20_000, eval_every=1_000, seeds=tuple(range(20)), dataset="mnist",
        jacobian_inputs=0, analyzers=True))


def test_cifar_appendix_paper_presets():
    # App. G: the Sec. 3.2 / 3.3 settings on CIFAR-10, learning rate 1e-5 (not 1e-4), 3x the steps,
    # evaluated every 1k as on MNIST; everything else as the MNIST paper preset.
    assert _asdict(critic_capacity.PRESETS["paper-cifar"]) == _asdict(critic_capacity.Settings(
        estimators=("infonce", "nwj"), critics=("bilinear", "separable", "concat"), hidden=(300, 300), out=100,
        learning_rate=1e-5, grad_clip=None, batch_size=128, steps=60_000, eval_every=1_000,
        seeds=tuple(range(20)), dataset="cifar10", jacobian_inputs=0, analyzers=True))
    assert _asdict(encoder_architecture.PRESETS["paper-cifar"]) == _asdict(encoder_architecture.Settings(
        estimators=("infonce", "nwj"), encoders=("convnet", "mlp"), targets=(2.0, 4.0), critic="bilinear",
        mlp_hidden=(300, 300), conv_channels=(64, 128), out=100, learning_rate=1e-5, grad_clip=None,
        batch_size=128, steps=60_000, eval_every=1_000, seeds=tuple(range(20)), dataset="cifar10",
        jacobian_inputs=0, analyzers=True))
    for module in (critic_capacity, encoder_architecture):
        paper, cifar = module.PRESETS["paper"], module.PRESETS["paper-cifar"]
        assert cifar.steps == 3 * paper.steps and cifar.learning_rate == paper.learning_rate / 10
        assert _asdict(dataclasses.replace(cifar, dataset="mnist", learning_rate=1e-4, steps=20_000)) == _asdict(paper)
        config = TrainConfig.from_settings(cifar, estimator="nwj")
        assert config.learning_rate == 1e-5 and config.eval_steps.tolist() == list(range(0, 60_001, 1_000))


def test_paper_encoders_have_the_papers_parameter_counts():
    from probe.encoders import count_parameters
    from probe.training import PairData

    views = np.zeros((2, 392), np.float32)
    data = PairData(views, views, views, views, np.zeros(2, np.int64), np.zeros(2, np.int64), (14, 28))
    paper = encoder_architecture.PRESETS["paper"]
    assert count_parameters(encoder_architecture.make_pair_encoder("convnet", paper, data)) == 219_748
    assert count_parameters(encoder_architecture.make_pair_encoder("mlp", paper, data)) == 238_300


def test_noniid_paper_preset():
    assert _asdict(noniid.PRESETS["paper"]) == _asdict(noniid.Settings(
        estimators=("infonce", "nwj"), negatives=("iid", "noniid"), sigma_z=(1.0, -0.5, 1.0),
        sigma_eps=(1.0, 0.9, 1.0), hidden=(10, 10, 10, 10, 10), learning_rate=1e-4, batch_size=128, steps=20_000,
        smoothing_sigma=100.0, record_every=100, eval_batches=16, seeds=tuple(range(20))))


def test_matched_targets_paper_preset_uses_the_papers_optimisation_and_architectures():
    assert _asdict(matched_targets.PRESETS["paper"]) == _asdict(matched_targets.Settings(
        estimators=("infonce", "nwj"), encoders=("realnvp-additive", "realnvp-affine", "resmlp", "mlp", "convnet"),
        targets=(1.0, 2.0, 3.0, 4.0), critic="bilinear", n_couplings=30, coupling_hidden=(512, 512),
        resmlp_layers=5, init_std=1e-4, mlp_hidden=(300, 300), conv_channels=(64, 128), out=100,
        learning_rate=1e-4, grad_clip=None, batch_size=128, steps=20_000, eval_every=1_000,
        seeds=tuple(range(20)), dataset="mnist", jacobian_inputs=128, analyzers=True))


@pytest.mark.parametrize("module", list(MODULES.values()), ids=list(MODULES))
def test_presets_are_frozen_and_quick_is_smaller_than_paper(module):
    paper, quick, smoke = (module.PRESETS[p] for p in ("paper", "quick", "smoke"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.steps = 1
    assert smoke.steps < quick.steps <= paper.steps
    assert len(quick.seeds) == 3 and len(smoke.seeds) == 1


# ------------------------------------------------------------------- closed forms

def test_noniid_pairs_have_the_stated_marginal_and_mutual_information():
    rng = np.random.default_rng(0)
    s = noniid.PRESETS["paper"]
    for negatives in ("iid", "noniid"):
        # Pooled over many batches every pair is N(0, [[2, 0.4], [0.4, 2]]) (many small batches:
        # non-i.i.d. pairs share Z, so the number of batches sets the estimate's precision).
        pairs = np.concatenate([np.hstack(noniid.draw_batch(16, negatives, s.sigma_z, s.sigma_eps, rng))
                                for _ in range(10_000)])
        np.testing.assert_allclose(np.cov(pairs.T), [[2.0, 0.4], [0.4, 2.0]], atol=0.05)
    assert noniid.pair_mi(s.sigma_z, s.sigma_eps) == pytest.approx(-0.5 * math.log(1 - 0.04), rel=1e-12)
    assert round(noniid.pair_mi(s.sigma_z, s.sigma_eps), 4) == 0.0204


def test_noniid_batches_share_their_latent_and_iid_batches_do_not():
    s = noniid.PRESETS["paper"]
    rng = np.random.default_rng(1)
    # Within a non-i.i.d. batch the pairs scatter around one Z: the batch mean is Z + O(1/sqrt(K)),
    # so batch means vary with variance ~Var(Z) = 1, against ~2/K for i.i.d. batches.
    means = {neg: np.array([noniid.draw_batch(128, neg, s.sigma_z, s.sigma_eps, rng)[0].mean() for _ in range(400)])
             for neg in ("iid", "noniid")}
    assert means["noniid"].var() > 0.8 and means["iid"].var() < 0.05
    x, y = noniid.draw_batch(128, "noniid", s.sigma_z, s.sigma_eps, rng)
    assert x.shape == y.shape == (128, 1) and x.dtype == np.float32
    with pytest.raises(UnknownNameError, match="Did you mean 'noniid'"):
        noniid.draw_batch(4, "non-iid", s.sigma_z, s.sigma_eps, rng)


def test_noniid_refuses_an_image_dataset_and_a_bad_covariance():
    with pytest.raises(InputValueError, match="--data-dir"):
        noniid.load_data(noniid.PRESETS["smoke"], None, "/some/mnist")
    bad = dataclasses.replace(noniid.PRESETS["smoke"], sigma_eps=(1.0, 1.5, 1.0))
    with pytest.raises(InputValueError, match="positive-definite"):
        noniid.load_data(bad, None, None)


def test_uniform_target_loss_is_ln_c_for_equal_logits_and_matches_a_loop():
    assert float(adversarial.uniform_target_loss(torch.zeros(5, 10))) == pytest.approx(math.log(10), rel=1e-6)
    assert float(adversarial.uniform_target_loss(torch.full((3, 10), 7.5))) == pytest.approx(math.log(10), rel=1e-6)
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    naive = np.mean([-sum(math.log(p) / 10 for p in torch.softmax(row, 0).tolist()) for row in logits])
    assert float(adversarial.uniform_target_loss(logits)) == pytest.approx(naive, rel=1e-12)
    # Uniform is the unique minimiser: any other output costs more than ln 10.
    assert float(adversarial.uniform_target_loss(logits)) > math.log(10)


def test_adversarial_rejects_an_unknown_lr_source():
    with pytest.raises(UnknownNameError, match="Did you mean 'paper_text'"):
        adversarial.run_cell(adversarial.PRESETS["smoke"], {"lr_source": "paper-text"}, 0, None, torch.device("cpu"))


def test_target_gap_is_the_held_out_distance_to_t():
    result = CellResult(steps=np.array([0, 10]), variables={"bound_test": (("step",), np.array([0.5, 2.5]))})
    gap = encoder_architecture.add_target_gap(result, 2.0).variables["target_gap"]
    assert gap[0] == ("step",)
    np.testing.assert_allclose(gap[1], [1.5, 0.5])


def test_matched_target_families_keep_or_reduce_the_width():
    from probe.training import PairData

    views = np.random.default_rng(0).random((4, 32), dtype=np.float32)
    data = PairData(views, views, views, views, np.zeros(4, np.int64), np.zeros(4, np.int64), (4, 8))
    settings = matched_targets.PRESETS["smoke"]
    for family in matched_targets.FAMILIES:
        encoder = matched_targets.make_family_encoder(family, settings, data, torch.Generator().manual_seed(0))
        width = matched_targets.output_width(family, settings, data)
        assert encoder(torch.from_numpy(views)).shape == (4, width), family
    with pytest.raises(UnknownNameError, match="Did you mean 'resmlp'"):
        matched_targets.make_family_encoder("resnet", settings, data, torch.Generator())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_verdict_reads_a_real_smoke_result(smoke_results, name):
    from probe import verdict as v

    verdict = find_study(name).verdict(smoke_results[name])
    assert verdict.outcome in (v.HELD, v.PARTLY, v.NOT_HELD, v.UNDECIDED)
    assert verdict.claim and verdict.evidence and all(isinstance(line, str) for line in verdict.evidence)
