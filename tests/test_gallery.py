"""The committed gallery (reports/gallery): small, self-contained pages, one per study, and an
index that links every one of them."""
import re
from pathlib import Path

import pytest

from studies import list_studies

GALLERY = Path(__file__).resolve().parents[1] / "reports" / "gallery"
PAGES = sorted(GALLERY.glob("*.html"))


def test_the_gallery_has_every_study_and_an_index():
    names = {p.stem for p in PAGES}
    assert "index" in names
    assert {s.name for s in list_studies()} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_page_is_under_2_mb_and_opens_offline(page):
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 2_000_000
    assert not re.search(r"""<script[^>]+src=|<link[^>]+href=["']?https?:""", text, flags=re.IGNORECASE)


def test_the_index_links_every_study_page_and_gives_a_verdict_each():
    index = (GALLERY / "index.html").read_text(encoding="utf-8")
    for study in list_studies():
        assert f'href="{study.name}.html"' in index, study.name
    assert index.count('class="badge"') >= len(list_studies())
    assert ">not run<" not in index
