"""`alchemist report` on an eval output (scores with generated vs ground-truth frames) and on a benchmark folder."""

from __future__ import annotations

import re

from alchemist_data.report import build_report
from alchemist_eval.runner import run_eval
from tests import browser

from .generated import generated_videos


def _quiet(_msg: str) -> None:
    pass


def test_eval_report_shows_scores_and_generated_next_to_ground_truth_frames(prepared_benchmark, tmp_path):
    gen = generated_videos(prepared_benchmark, tmp_path / "generated", ["clip_a"])  # clip_b is missing: scores 0
    run_eval(
        gen,
        prepared_benchmark,
        mode="subject",
        metrics=["text", "dynamic"],
        profile="tiny",
        output=tmp_path / "eval",
        log=_quiet,
    )
    info = build_report(tmp_path / "eval", tmp_path / "report")
    assert (info["kind"], info["num_clips"], info["num_clips_shown"]) == ("eval", 2, 2)
    index = tmp_path / "report" / "index.html"
    text = index.read_text()
    num_images, files = browser.check_page(index)
    assert "Text-S" in text and "Dync-D" in text and "Subj-S" not in text  # only the metrics that were scored
    assert "missing_file" in text and "random models" in text
    # clip_a: 3 generated + 3 ground-truth thumbnails; clip_b: no video, 3 ground-truth thumbnails
    assert num_images == 9
    assert len([f for f in files if re.search(r"v\d{4}-gen-\d", f)]) == 3
    browser.assert_not_blank(browser.screenshot(index, tmp_path / "eval.png"))


def test_a_benchmark_folder_reports_its_stored_ground_truth_frames(prepared_benchmark, tmp_path):
    info = build_report(prepared_benchmark, tmp_path / "report")
    assert (info["kind"], info["num_clips"]) == ("benchmark", 3)
    text = (tmp_path / "report" / "index.html").read_text()
    num_images, _ = browser.check_page(tmp_path / "report" / "index.html")
    assert text.startswith("<!DOCTYPE html>") and "Benchmark:" in text
    assert "reference frames not shown" not in text  # frames come from the gt_frames table, not the video
    assert num_images >= 3 * 4 and "face of man" in text  # clip_a's annotated face crop
