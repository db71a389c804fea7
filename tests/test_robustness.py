"""`probe robustness`: a preset over datasets × views, finished runs reused, one page of verdicts."""
from __future__ import annotations

import re

import numpy as np
from click.testing import CliRunner
from test_data import write_idx

from probe import data
from probe.cli import main


def _odd_height_folder(folder):
    """IDX files of 5 x 6 images: left-right views are equal, top-bottom ones are not."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for role, n in (("train", 300), ("test", 160)):  # the test split holds a batch of 128
        write_idx(folder / (data.IDX_FILES[f"{role}_images"] + ".gz"),
                  rng.integers(0, 256, (n, 5, 6), dtype=np.uint8), compress=True)
        write_idx(folder / (data.IDX_FILES[f"{role}_labels"] + ".gz"), (np.arange(n) % 3).astype(np.uint8),
                  compress=True)
    return folder


def test_robustness_runs_every_condition_reuses_finished_runs_and_writes_one_page(tmp_path):
    folder = _odd_height_folder(tmp_path / "odd")
    page = tmp_path / "robustness.html"
    args = ["robustness", "invertible-encoders", "--preset", "smoke", "--steps", "10", "--dataset", "digits",
            "--data-dir", str(folder), "--views", "top-bottom,left-right", "--out", str(tmp_path / "runs"),
            "--page", str(page), "--threads", "1", "--no-progress"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    lines = [line for line in first.stdout.splitlines() if line.startswith(("digits", "folder:odd"))]
    assert len(lines) == 4, first.stdout
    assert re.search(r"folder:odd\s+top-bottom\s+not run: .*even image height", first.stdout)
    assert re.search(r"folder:odd\s+left-right\s+(held|did not hold|partly held|undecided|not judged)", first.stdout)
    html = page.read_text()
    assert html.count("<tr><td><strong>") == 4 and "left-right" in html and "random-split" not in html
    assert html.count('href="') == 3  # each run that ran links its own page
    for href in re.findall(r'href="([^"]+)"', html):
        assert (page.parent / href).is_file(), href

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("2 already done") == 3  # nothing trained twice


def test_a_run_page_outside_the_pages_folder_is_named_not_linked(tmp_path):
    from probe.report.robustness import _link

    run_page = tmp_path / "runs" / "quick-digits-1a2b" / "report.html"
    assert _link(run_page, tmp_path / "page.html") == '<a href="runs/quick-digits-1a2b/report.html">report page</a>'
    named = _link(run_page, tmp_path / "reports" / "gallery" / "page.html")
    assert "href" not in named and "quick-digits-1a2b" in named
