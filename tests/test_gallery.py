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
