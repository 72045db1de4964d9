"""The report's parts: drawing detections, SVG charts, the page checks the browser test relies on, reading runs."""

from __future__ import annotations

import numpy as np
import pytest

from alchemist_data.benchmark_rules import crop_to_box
from alchemist_data.media import encode_png
from alchemist_data.report import build_report
from alchemist_data.report.charts import bars_svg, histogram_svg
from alchemist_data.report.draw import CANVAS_WIDTH_PX, draw_detections, word_colours
from alchemist_data.report.source import NotAReportableFolderError, RunSource
from tests import browser


def _detection(word: str, box: list[int], mask: np.ndarray | None, kept: bool = True) -> dict:
    return {
        "entity_word": word,
        "frame_index": 0,
        "is_detected": kept,
        "box_xyxy_px": box,
        "box_score": 0.8,
        "drop_reason": None if kept else "low_mask_iou",
        "mask_png": encode_png(crop_to_box(mask, box)) if mask is not None else None,
    }


def test_masks_are_tinted_and_boxes_drawn_in_the_word_colour_dropped_boxes_in_grey():
    frame = np.full((100, 200, 3), 128, np.uint8)
    mask = np.zeros((100, 200), bool)
    mask[40:60, 20:60] = True
    dets = [_detection("dog", [10, 30, 70, 70], mask), _detection("ball", [120, 20, 180, 80], None, kept=False)]
    colours = word_colours(["dog", "ball"])
    out = draw_detections(frame, dets, colours)
    s = CANVAS_WIDTH_PX / 200
    assert out.shape == (round(100 * s), CANVAS_WIDTH_PX, 3)
    inside = out[int(50 * s), int(40 * s)].astype(int)
    outside = out[int(90 * s), int(40 * s)].astype(int)
    assert outside.tolist() == [128, 128, 128]
    red = np.array(colours["dog"])
    assert np.abs(inside - (0.55 * 128 + 0.45 * red)).max() <= 3  # mask tinted 45 % towards the word's colour
    assert out[int(69 * s), int(40 * s)].tolist() == list(colours["dog"])  # bottom edge of the dog's box
    assert out[round(80 * s) - 1, int(150 * s)].tolist() == [150, 150, 150]  # the dropped box, grey
    with pytest.raises(ValueError, match="frame"):
        draw_detections(frame[..., 0], dets, colours)


def test_histogram_has_one_bar_per_bin_and_escapes_its_title():
    svg = histogram_svg([0, 3, 1, 0], 0.0, 1.0, "IoU <sam>", note="4 rows")
    assert svg.count("<rect") == 4 and "IoU &lt;sam&gt;" in svg and "4 rows" in svg and "http" not in svg
    bars = bars_svg(["frames/missing_file", "entities/no_subject"], [5, 2], "rejects")
    assert bars.count("<rect") == 2 and ">5<" in bars


def test_page_check_catches_missing_pictures_and_remote_urls(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    page = tmp_path / "index.html"
    page.write_text('<a href="#clips">x</a><img src="img/a.png">')
    assert browser.check_page(page) == (1, ["img/a.png"])
    for bad, match in (
        ('<img src="img/b.png">', "missing"),
        ('<script src="https://cdn.example/x.js"></script>', "off the machine"),
        ('<div style="background: url(//fonts.example/f.woff)"></div>', "off the machine"),
        ("<style>body { background: url('http://x/y.png') }</style>", "off the machine"),
    ):
        page.write_text(bad)
        with pytest.raises(AssertionError, match=match):
            browser.check_page(page)
    with pytest.raises(AssertionError, match="nearly uniform"):
        browser.assert_not_blank(np.full((100, 100, 3), 255, np.uint8))


def test_folders_that_are_not_runs_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(NotAReportableFolderError, match="is not a folder"):
        RunSource(tmp_path / "missing")
    with pytest.raises(NotAReportableFolderError, match="alchemist curate"):
        RunSource(tmp_path)
    with pytest.raises(ValueError, match="--max-clips"):
        build_report(tmp_path, tmp_path / "out", max_clips=0)
