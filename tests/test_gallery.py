"""The committed gallery (reports/gallery, written by `probe report --gallery RUNS`): small,
self-contained pages, and in each folder an index that links every page beside it.

The gallery is made from runs, so a study added since it was last written has no page yet: that
is reported (a skip naming the command that makes it), never a failure of the suite."""
import re
from pathlib import Path

import pytest

from studies import list_studies

GALLERY = Path(__file__).resolve().parents[1] / "reports" / "gallery"
PAGES = sorted(GALLERY.rglob("*.html"))
INDEXES = [p for p in PAGES if p.name == "index.html"]


def test_the_gallery_has_an_index():
    assert GALLERY / "index.html" in INDEXES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(GALLERY)))
def test_each_page_is_under_2_mb_and_opens_offline(page):
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 2_000_000
    assert not re.search(r"""<script[^>]+src=|<link[^>]+href=["']?https?:""", text, flags=re.IGNORECASE)


@pytest.mark.parametrize("index", INDEXES, ids=lambda p: str(p.relative_to(GALLERY)))
def test_each_index_links_every_page_beside_it_and_gives_each_a_verdict(index):
    text = index.read_text(encoding="utf-8")
    pages = [p for p in index.parent.glob("*.html") if p.name != "index.html"]
    for page in pages:
        assert f'href="{page.name}"' in text, page.name
    assert text.count('class="badge"') >= len(pages)
    for link in re.findall(r'href="([^"#:]+\.html)"', text):
        assert (index.parent / link).is_file(), f"{index.name} links {link}, which is not there"


@pytest.mark.parametrize("study", list_studies(), ids=lambda s: s.name)
def test_every_study_has_a_gallery_page(study):
    if not (GALLERY / f"{study.name}.html").is_file():
        pytest.skip(f"{study.name} has no gallery page yet: run it (reports/README.md), then "
                    "`probe report --gallery RUNS` lists it; until then the index says it is missing")


def test_a_gallery_index_links_the_pages_beside_it_that_are_no_runs(tmp_path):
    from probe.report import write_index

    runs = tmp_path / "runs"
    runs.mkdir()
    import numpy as np
    import xarray as xr

    xr.Dataset({"bound_test": (("seed", "step"), np.zeros((1, 2)))}, coords={"seed": [0], "step": [0, 10]},
               attrs={"study": "invertible-encoders", "preset": "quick", "views": "top-bottom",
                      "dataset": "folder:fmnist", "dataset_source": "/data/fmnist"}).to_netcdf(runs / "results.nc")
    out = tmp_path / "gallery"
    (out / "fashion-mnist").mkdir(parents=True)
    (out / "robustness-x.html").write_text("<html><title>probe: x &amp; y</title></html>")
    (out / "fashion-mnist" / "index.html").write_text("<html><title>other data</title></html>")
    index = write_index(runs, list_studies(), out, gallery=True).read_text()
    assert 'href="robustness-x.html">probe: x &amp; y</a>' in index and 'href="fashion-mnist/index.html"' in index
    assert ">missing<" in index  # the studies without a run
    # an empty image study's row runs on the folder the other image runs used; a synthetic one says so
    assert f"probe run-study hard-to-invert --preset quick --data-dir /data/fmnist --out {runs}" in index
    assert "Its data are synthetic" in index
