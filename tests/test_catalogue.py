"""Every study of the catalogue (studies.STUDY_MODULES), whatever it is: its module is listed, its
settings are read, and its smoke preset runs offline into a labelled result, a report page and a
verdict. A new study is covered here by its catalogue line alone."""
from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import studies
from probe.errors import InputValueError
from probe.report import write_report
from probe.results import load_dataset
from probe.runner import run_study
from probe.study import ORIGINS
from probe.verdict import Verdict, judge
from studies import STUDY_MODULES, check_settings_are_read, list_studies

STUDIES = list_studies()
NAMES = [study.name for study in STUDIES]
STUDIES_DIR = Path(studies.__file__).parent
OUTCOMES = {"held", "partly held", "did not hold", "undecided", "not judged"}


def test_every_study_module_is_in_the_catalogue():
    # A module of studies/ that declares a STUDY is a study; others (a verdict moved out of a long file) help one.
    modules = sorted(p.stem for p in STUDIES_DIR.glob("*.py") if re.search(r"^STUDY\b.*=", p.read_text(), re.M))
    missing = sorted(set(modules) - set(STUDY_MODULES))
    assert not missing, f"studies/{missing[0]}.py is not listed in studies.STUDY_MODULES: add its line there"


@pytest.mark.parametrize("study", STUDIES, ids=NAMES)
def test_each_study_declares_what_the_runner_and_the_pages_need(study):
    assert NAMES.count(study.name) == 1 and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", study.name), study.name
    assert study.title and study.figure and study.description, study.name
    assert study.origin in ORIGINS
    assert {"smoke", "quick"} <= set(study.presets), f"{study.name}: a smoke and a quick preset are required"
    if study.origin == "paper":
        assert "paper" in study.presets, f"{study.name}: a study of the paper's has its `paper` preset"
    for preset, settings in study.presets.items():
        assert dataclasses.is_dataclass(settings) and settings.seeds, (study.name, preset)
        assert study.grid(settings), (study.name, preset)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, monkeypatch_module):
    # Nothing cached, nothing downloadable: a smoke preset must run on offline data (digits, synthetic).
    monkeypatch_module.setenv("PROBE_DATA_DIR", str(tmp_path_factory.mktemp("empty-cache")))
    out = tmp_path_factory.mktemp("runs")
    cache: dict[str, Path] = {}

    def run(study) -> Path:
        if study.name not in cache:
            cache[study.name] = run_study(study, "smoke", out=out, progress=False, log=lambda m: None)
        return cache[study.name]

    return run


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("study", STUDIES, ids=NAMES)
def test_smoke_preset_runs_into_a_labelled_result_a_page_and_a_verdict(study, smoke_runs, tmp_path):
    path = smoke_runs(study)
    ds = load_dataset(path)
    settings = study.presets["smoke"]
    assert ds.attrs["study"] == study.name and ds.attrs["preset"] == "smoke"
    assert ds.attrs["study_origin"] == study.origin
    assert ds.attrs["torch_version"] and re.fullmatch(r"CPU-only|CUDA [\d.]+", ds.attrs["torch_build"])
    status = ds["status"].values.ravel().tolist()
    # A cell may fail (a diverging estimator is a finding, recorded with its reason), not the whole run.
    assert "ok" in status and all(isinstance(s, str) and s for s in status), status
    for dim, values in study.grid(settings).items():
        assert sorted(map(str, ds[dim].values)) == sorted(map(str, values)), dim
    assert sorted(ds["seed"].values.tolist()) == sorted(settings.seeds)
    for name, variable in ds.data_vars.items():
        assert variable.attrs.get("long_name") and variable.attrs.get("units") is not None, name
        if variable.dtype.kind == "f" and name != "status":
            assert not np.isnan(variable.values).all(), f"{name} is NaN everywhere"

    verdict = judge(study, ds)
    assert isinstance(verdict, Verdict) and verdict.outcome in OUTCOMES and verdict.claim
    assert all(isinstance(line, str) and line for line in verdict.evidence)
    if study.origin == "variant":
        assert not verdict.paper, "a variant never quotes the paper's numbers as its reference"

    page = write_report(path, tmp_path / "page.html", verdict=verdict).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "smoke" in page and f"({ds.attrs['torch_build']} build)" in page
    assert not re.search(r"""<script[^>]+src=|<link[^>]+href=["']?https?:""", page, flags=re.IGNORECASE)
    if study.origin != "paper":
        assert "The paper's claim" not in page and "Tschannen et al., ICLR 2020</p>" not in page


def test_a_setting_read_by_nothing_fails_the_catalogue_with_its_close_match(tmp_path, monkeypatch):
    """A variant whose Settings adds `noise_sd` (TrainConfig reads `noise_std`) is refused by name."""
    module = tmp_path / "studies_variant_probe.py"
    module.write_text(textwrap.dedent('''
        import dataclasses
        from dataclasses import dataclass

        from probe.study import Study
        import studies.invertible_encoders as base

        @dataclass(frozen=True)
        class Settings(base.Settings):
            noise_sd: float = 0.1

        STUDY = dataclasses.replace(base.STUDY, name="toy-noise", presets={"smoke": Settings()})
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    variant = importlib.import_module("studies_variant_probe")
    with pytest.raises(InputValueError, match=r"noise_sd .*is read by nothing \(did you mean noise_std\?\)"):
        check_settings_are_read(variant.STUDY, variant)
    # The same field, read by the study's own code, is fine.
    module.write_text(module.read_text() + "\ndef noise(settings):\n    return settings.noise_sd\n")
    check_settings_are_read(variant.STUDY, importlib.reload(variant))
