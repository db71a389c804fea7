"""The three ways an image becomes two views, and `--views` from the command line to results.nc."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from probe import data
from probe.cli import main
from probe.data.views import check_equal_views, parse_views, random_partition, view_shape
from probe.errors import InputValueError, UnknownNameError
from probe.results import load_dataset

IMAGES = np.arange(3 * 6 * 8, dtype=np.float32).reshape(3, 6, 8)


def test_left_right_takes_columns_and_keeps_colour_channels_together():
    left, right = data.split_views(IMAGES, "left-right")
    np.testing.assert_array_equal(left, IMAGES[:, :, :4].reshape(3, -1))
    np.testing.assert_array_equal(right, IMAGES[:, :, 4:].reshape(3, -1))
    colour = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    left, _ = data.split_views(colour, "left-right")
    np.testing.assert_array_equal(left[0, :6], colour[0, 0, :2].ravel())  # R, G, B of (0, 0), then of (0, 1)
    assert view_shape((4, 6, 3), "left-right") == (4, 3, 3)


def test_random_split_is_a_seeded_partition_of_the_pixels_in_raster_order():
    one, two = data.split_views(IMAGES, "random-split")
    pixels = IMAGES.reshape(3, -1)
    first = random_partition(6, 8, 0)
    np.testing.assert_array_equal(one, pixels[:, first])
    rest = np.setdiff1d(np.arange(48), first)
    np.testing.assert_array_equal(two, pixels[:, rest])
    assert first.size == rest.size == 24 and np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(data.split_views(IMAGES, "random-split:0")[0], one)  # the default seed is 0
    assert not np.array_equal(data.split_views(IMAGES, "random-split:1")[0], one)
    assert view_shape((6, 8), "random-split") == (3, 8) and view_shape((5, 8), "random-split") == (5, 4)


def test_top_bottom_is_the_default_and_the_papers_split():
    np.testing.assert_array_equal(data.split_views(IMAGES)[0], data.split_views(IMAGES, "top-bottom")[0])
    np.testing.assert_array_equal(data.split_views(IMAGES)[0], IMAGES[:, :3].reshape(3, -1))


@pytest.mark.parametrize("shape, views, fragment", [((5, 8), "top-bottom", "even image height"),
                                                    ((6, 7), "left-right", "even image width"),
                                                    ((5, 7), "random-split", "do not halve")])
def test_a_split_into_unequal_views_is_refused(shape, views, fragment):
    with pytest.raises(InputValueError, match=fragment):
        check_equal_views(shape, views)


def test_view_names_are_checked():
    with pytest.raises(UnknownNameError, match="Did you mean 'left-right'"):
        parse_views("left-rigth")
    with pytest.raises(InputValueError, match="only random-split takes a seed"):
        parse_views("left-right:3")
    assert parse_views("random-split:12") == ("random-split", 12)


def test_run_study_with_left_right_views_records_them(tmp_path):
    result = CliRunner().invoke(main, ["run-study", "invertible-encoders", "--preset", "smoke", "--views", "left-right",
                                       "--steps", "10", "--no-progress", "--out", str(tmp_path), "--threads", "1"])
    assert result.exit_code == 0, result.output
    [path] = tmp_path.glob("invertible-encoders/*/results.nc")
    ds = load_dataset(path)
    assert ds.attrs["views"] == "left-right" and '"views": "left-right"' in ds.attrs["settings_json"]
    page = (path.parent / "report.html").read_text()
    assert "<th>views</th><td>left-right" in page
    again = CliRunner().invoke(main, ["run-study", "invertible-encoders", "--preset", "smoke", "--steps", "10",
                                      "--no-progress", "--out", str(tmp_path), "--threads", "1"])
    assert again.exit_code == 0 and len(list(tmp_path.glob("invertible-encoders/*/results.nc"))) == 2  # own folder


def test_views_on_a_study_without_images_is_refused_with_the_reason(tmp_path):
    result = CliRunner().invoke(main, ["run-study", "noniid-negatives", "--preset", "smoke", "--views", "left-right",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0 and "nothing to split" in result.output
