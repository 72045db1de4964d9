"""`alchemist report` on a curated run, rendered in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alchemist_data.runner import CurateOptions, Reporter, curate
from alchemist_data.sample_data import write_sample_corpus
from pipelines.cli import app
from tests import browser


@pytest.fixture(scope="module")
def curated_run(tmp_path_factory) -> Path:
    """A tiny-profile run of 5 synthetic clips plus two rows that become rejects (missing video, no subject)."""
    root = tmp_path_factory.mktemp("report")
    manifest = write_sample_corpus(root / "corpus", num_clips=5, seed=3)
    lines = manifest.read_text().splitlines()
    lines.append(json.dumps({"video": "videos/missing.mp4", "caption": "A man walks a dog.", "clip_id": "gone"}))
    lines.append(
        json.dumps(
            {
                "video": "videos/sample_0000.mp4",
                "caption": "A red car parked on an empty street.",
                "clip_id": "no-subject",
            }
        )
    )
    manifest.write_text("\n".join(lines) + "\n")
    curate(
        CurateOptions(manifest=str(manifest), output=str(root / "run"), profile="tiny", runner="local"),
        reporter=Reporter(enabled=False),
    )
    return root / "run"


def test_report_of_a_curated_run_opens_offline_and_renders_in_a_browser(curated_run, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", str(curated_run), "--output", str(out), "--max-clips", "3"])
    assert res.exit_code == 0, res.output
    assert "3 of 5 clips shown" in res.output
    index = out / "index.html"
    text = index.read_text()
    num_images, files = browser.check_page(index)
    # per clip: 3 frames + the background plate, and crops; reject reasons with their examples
    assert num_images >= 3 * 4 and len(re.findall(r'class="clip"', text)) == 3
    assert "Showing 3 of 5 clips" in text and "md5(clip_id)" in text
    assert "missing_file" in text and "no_subject" in text and "gone" in text
    assert text.count("<svg") >= 4 and "random weights" in text
    pixels = browser.screenshot(index, tmp_path / "report.png")
    browser.assert_not_blank(pixels)
    assert pixels.shape[:2] == (1000, 1400)
    if os.environ.get("ALCHEMIST_WRITE_SCREENSHOT"):  # how docs/report.png is made (README, Report): taller, so a
        from PIL import Image  # clip card shows below the overview; shrunk and quantised to stay small

        tall = browser.screenshot(index, tmp_path / "tall.png", size=(1400, 1750))
        browser.assert_not_blank(tall)
        small = Image.fromarray(tall).resize((1000, 1250), Image.Resampling.LANCZOS).quantize(colors=160)
        small.save(os.environ["ALCHEMIST_WRITE_SCREENSHOT"], optimize=True)


def test_the_same_clips_are_sampled_every_time_and_the_limit_is_a_flag(curated_run, tmp_path):
    def shown(out: Path) -> list[str]:
        return re.findall(r'<section class="clip" id="clip-\d+"><h3>([^<]+)</h3>', (out / "index.html").read_text())

    from alchemist_data.report import build_report

    a = build_report(curated_run, tmp_path / "a", max_clips=2)
    build_report(curated_run, tmp_path / "b", max_clips=2)
    everything = build_report(curated_run, tmp_path / "c", max_clips=100)
    assert a["num_clips_shown"] == 2 and everything["num_clips_shown"] == everything["num_clips"] == 5
    assert shown(tmp_path / "a") == shown(tmp_path / "b") == shown(tmp_path / "c")[:2]


def test_bad_inputs_name_what_to_do(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--output", str(tmp_path / "out")])
    assert res.exit_code == 2 and "neither a curated run" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--output", str(tmp_path / "out")])
    assert res.exit_code == 2 and "is not a folder" in res.output
