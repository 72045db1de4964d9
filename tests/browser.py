"""Checks of a report page: every picture it references exists, nothing points off the machine, and a real browser
(headless Chromium) renders it to a PNG that is not blank.

``make setup`` installs Debian's ``chromium`` when it is missing and apt is allowed. Without it the browser check
skips, except under CI (``CI`` set), where it fails: CI must not pass without having looked at the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Attributes that make a browser fetch something.
_FETCHING = {"src", "href", "srcset", "poster", "data", "action", "formaction"}
_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images += 1
        for name, value in attrs:
            if value is None:
                continue
            if name in _FETCHING:
                for part in value.split(",") if name == "srcset" else [value]:
                    self.refs.append((tag, name, part.strip().split(" ")[0]))
            if name == "style":
                self.refs += [(tag, "style", u) for u in _CSS_URL.findall(value)]

    def handle_data(self, data: str) -> None:
        self.refs += [("style", "url", u) for u in _CSS_URL.findall(data)]


def _is_remote(ref: str) -> bool:
    has_scheme = bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", ref))
    return (has_scheme and not ref.startswith("data:")) or ref.startswith("//")


def check_page(index: Path) -> tuple[int, list[str]]:
    """Assert that every reference of the page is local and exists; returns (number of <img>, local files)."""
    parser = _Refs()
    parser.feed(index.read_text(encoding="utf-8"))
    remote = [r for r in parser.refs if _is_remote(r[2])]
    assert not remote, f"the page references something off the machine: {remote[:5]}"
    files = [r[2] for r in parser.refs if not r[2].startswith(("#", "data:"))]
    missing = [f for f in files if not (index.parent / f).is_file()]
    assert not missing, f"the page references {len(missing)} missing files, e.g. {missing[:5]}"
    return parser.images, files


def find_chromium() -> str:
    """The browser's path; skips the test (fails it under CI) when there is none."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail(
            "headless Chromium is required under CI (CI is set) but none is installed: "
            "apt-get install -y chromium (make setup does it when apt is allowed)"
        )
    pytest.skip("no chromium on this machine: `sudo apt-get install -y chromium` (make setup does it when allowed)")


def screenshot(index: Path, png: Path, size: tuple[int, int] = (1400, 1000), timeout_s: float = 120) -> np.ndarray:
    """Render ``index`` in headless Chromium to ``png``; returns its pixels (RGB)."""
    from PIL import Image

    browser = find_chromium()
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={png}",
        f"--window-size={size[0]},{size[1]}",
        index.resolve().as_uri(),
    ]
    # A private profile folder: parallel test runs must not share Chromium's lock file.
    profile = png.parent / f".chromium-{png.stem}"
    result = subprocess.run([*cmd, f"--user-data-dir={profile}"], capture_output=True, timeout=timeout_s, text=True)
    assert png.exists(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    """A rendered page, not a white (or single-colour) sheet: pixel values vary, and much of it is not background."""
    grey = pixels.astype(np.float32).mean(axis=2)
    assert grey.std() > 20, f"the screenshot is nearly uniform (std {grey.std():.1f})"
    background = np.median(grey)
    differs = np.mean(np.abs(grey - background) > 30)
    assert differs > 0.05, f"only {differs:.1%} of the screenshot differs from its background"
