"""The CIFAR-10 appendix (Tschannen et al. 2020, App. G, Figs. 8-9; REFERENCE.md, experiment 7):
the `paper-cifar` and `quick-cifar` presets of critic-capacity and encoder-architecture, the input
widths they give the models, and a smoke-sized run of both studies through `probe run-study` on
synthetic CIFAR-10 batch files, down to the report page with the appendix's values."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_cifar10 import encode, make_batch
from test_report import chart_payload

import studies.critic_capacity as critic_capacity
import studies.encoder_architecture as encoder_architecture
from probe import reference
from probe.cli import main
from probe.data import download, load_image_pairs
from probe.encoders import count_parameters
from probe.results import load_dataset

MODULES = {"critic-capacity": critic_capacity, "encoder-architecture": encoder_architecture}
# 300 train / 130 test records: one held-out batch of 128 for the bound, seconds per cell.
COUNTS = {**{f"data_batch_{i}.bin": 60 for i in range(1, 6)}, "test_batch.bin": 130}
VIEW = 16 * 32 * 3  # one half image, 1,536 values
# Smoke-sized models and schedules on top of quick-cifar (which keeps dataset, lr, seeds' shape).
SMOKE = {
    "critic-capacity": ["--set", "hidden=32", "--set", "out=16"],
    "encoder-architecture": ["--set", "mlp_hidden=32", "--set", "conv_channels=4,8", "--set", "out=16"],
}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """Six synthetic batch files in a folder named as the archive extracts (cifar-10-batches-bin)."""
    folder = tmp_path_factory.mktemp("data") / "cifar-10-batches-bin"
    folder.mkdir()
    for seed, (name, n) in enumerate(COUNTS.items()):
        (folder / name).write_bytes(encode(*make_batch(n, seed)))
    return folder


# ------------------------------------------------------------------ the presets


def test_quick_cifar_presets():
    assert dataclasses.asdict(critic_capacity.PRESETS["quick-cifar"]) == dataclasses.asdict(critic_capacity.Settings(
        estimators=("infonce", "nwj"), critics=("bilinear", "separable", "concat"), hidden=(300, 300), out=100,
        learning_rate=3e-4, grad_clip=1.0, batch_size=128, steps=1_000, eval_every=1_000, seeds=(0, 1, 2),
        dataset="cifar10", jacobian_inputs=0, analyzers=False))
    assert dataclasses.asdict(encoder_architecture.PRESETS["quick-cifar"]) == dataclasses.asdict(
        encoder_architecture.Settings(
            estimators=("infonce",), encoders=("convnet", "mlp"), targets=(2.0, 4.0), critic="bilinear",
            mlp_hidden=(300, 300), conv_channels=(16, 32), out=100, learning_rate=3e-4, grad_clip=None,
            batch_size=128, steps=1_500, eval_every=750, seeds=(0, 1, 2), dataset="cifar10", jacobian_inputs=0,
            analyzers=False))
    for module in MODULES.values():
        quick, paper = module.PRESETS["quick-cifar"], module.PRESETS["paper-cifar"]
        assert quick.steps < paper.steps and quick.steps % quick.eval_every == 0
        # lr x steps, how far Adam can move a weight, is the same fraction of the paper's as on MNIST.
        mnist = (module.PRESETS["quick"].learning_rate * module.PRESETS["quick"].steps
                 / (module.PRESETS["paper"].learning_rate * module.PRESETS["paper"].steps))
        assert quick.learning_rate * quick.steps / (paper.learning_rate * paper.steps) == pytest.approx(mnist)


# ------------------------------------------------------------------ input widths


def test_paper_cifar_models_see_half_images(cifar_dir):
    settings = critic_capacity.PRESETS["paper-cifar"]
    data, info = load_image_pairs(settings, None, str(cifar_dir))
    assert data.dim == VIEW and data.view_shape == (16, 32, 3)
    assert (info["n_train"], info["n_test"]) == (300, 130)
    x1, x2 = (torch.from_numpy(v[:8]) for v in (data.test1, data.test2))
    for critic in settings.critics:
        m = critic_capacity.build_member(settings, {"estimator": "nwj", "critic": critic}, 0, data)
        assert m.config.learning_rate == 1e-5 and m.config.steps == 60_000
        for g in (m.g1, m.g2):
            first = next(layer for layer in g.modules() if isinstance(layer, torch.nn.Linear))
            assert first.in_features == VIEW and count_parameters(g) == 581_500  # 1536-300-300-100
        with torch.no_grad():
            z1, z2 = m.g1(x1), m.g2(x2)
            assert z1.shape == z2.shape == (8, 100) and m.critic(z1, z2).shape == (8, 8)
    settings = encoder_architecture.PRESETS["paper-cifar"]
    for encoder, params in (("convnet", 222_948), ("mlp", 581_500)):
        m = encoder_architecture.build_member(settings, {"encoder": encoder, "target": 4.0, "estimator": "nwj"}, 0,
                                              data)
        assert m.config.target == 4.0 and m.config.learning_rate == 1e-5 and m.config.steps == 60_000
        assert count_parameters(m.g1) == count_parameters(m.g2) == params
        with torch.no_grad():
            assert m.g1(x1).shape == m.g2(x2).shape == (8, 100)
        if encoder == "convnet":
            assert m.g1.image_shape == (16, 32, 3) and m.g1.conv1.in_channels == 3


def test_quick_cifar_without_data_dir_says_how_to_get_it(tmp_path, monkeypatch):
    # Offline: every mirror refuses. The preset's dataset is cifar10, so it is the download that fails.
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "download_file", lambda url, *a, **k: "no network")
    result = CliRunner().invoke(main, ["run-study", "critic-capacity", "--preset", "quick-cifar", "--no-progress",
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "Could not download cifar10 from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (no network)" \
        in result.output
    assert "Pass --data-dir DIR with the six extracted CIFAR-10 .bin files" in result.output


# ------------------------------------------------------------------ smoke runs on synthetic CIFAR-10


@pytest.fixture(scope="module")
def cifar_runs(cifar_dir, tmp_path_factory):
    """Both studies under quick-cifar at smoke size: {study: (results Dataset, report page)}."""
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for name in MODULES:
        args = ["run-study", name, "--preset", "quick-cifar", "--data-dir", str(cifar_dir), "--seeds", "1",
                "--set", "steps=20", "--set", "eval_every=10", *SMOKE[name], "--no-progress", "--out", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        path = next((out / name).glob("quick-cifar-*/results.nc"))
        page = next(path.parent.glob("*.html")).read_text(encoding="utf-8")
        runs[name] = (load_dataset(path), page)
    return runs


@pytest.mark.parametrize("name, grid", [("critic-capacity", ("estimator", "critic")),
                                        ("encoder-architecture", ("encoder", "target", "estimator"))])
def test_smoke_run_on_cifar10_files(cifar_runs, name, grid):
    ds, _ = cifar_runs[name]
    settings = json.loads(ds.attrs["settings_json"])
    assert settings["dataset"] == "cifar10" and settings["learning_rate"] == 3e-4 and settings["steps"] == 20
    assert ds.attrs["dataset"] == "folder:cifar10:cifar-10-batches-bin" and ds.attrs["preset"] == "quick-cifar"
    assert reference.paper_dataset(ds.attrs["dataset"]) == "cifar10"
    assert (ds["status"] == "ok").all(), ds["status"].values
    for variable in ("bound_test", "probe_accuracy", "loss"):
        assert ds[variable].dims == (*grid, "seed", "step")
        assert np.isfinite(ds[variable].isel(step=slice(1, None))).all(), variable
    assert ds["step"].values.tolist() == [0, 10, 20]
    assert ds["probe_accuracy"].min() >= 0 and ds["probe_accuracy"].max() <= 1
    pixels = float(ds["pixel_probe_accuracy"].values[0])
    assert np.isfinite(pixels) and 0 <= pixels <= 1
    if name == "encoder-architecture":
        assert np.isfinite(ds["target_gap"].isel(step=slice(1, None))).all()


def test_report_draws_the_appendix_values(cifar_runs):
    for name, figure in (("critic-capacity", "App. G, Fig. 8 (CIFAR-10)"),
                         ("encoder-architecture", "App. G, Fig. 9 (CIFAR-10)")):
        _, page = cifar_runs[name]
        assert figure in page and "pixels ≈ 0.24 [F]" in page and "are for MNIST" not in page
        assert "&quot;dataset&quot;: &quot;cifar10&quot;" in page or '"dataset": "cifar10"' in page
        rows = [row for data in chart_payload(page)["datasets"].values() for row in data if isinstance(row, dict)]
        paper = {(r["label"], r.get("value"), r["source"]) for r in rows
                 if str(r.get("source", "")).startswith("paper, step 60,000")}
        if name == "critic-capacity":
            # accuracy and bound of every (estimator, critic) at 60k [F]
            for label, value in (("infonce · concat", 0.31), ("nwj · bilinear", 0.34), ("infonce · separable", 0.338),
                                 ("nwj · concat", 6.1), ("nwj · bilinear", 3.1), ("infonce · bilinear", 4.65)):
                assert (label, value, "paper, step 60,000") in paper, (label, value)
        else:
            # The page drops the single estimator (quick-cifar: InfoNCE only) from its labels.
            sources = {(label, source) for label, _, source in paper}
            assert ("mlp · 2.0", "paper, step 60,000") in sources and ("mlp · 4.0", "paper, step 60,000") in sources
            assert ("convnet · 4.0", "paper, step 60,000 (range 0.39-0.415)") in sources
            assert ("mlp · 4.0", "paper, step 60,000 (range 0.3-0.6)") in sources  # L_t at t = 4 only
            assert not any(label.endswith("2.0") and "0.3-0.6" in source for label, source in sources)
            assert ("mlp · 2.0", 0.34, "paper, step 60,000") in paper
