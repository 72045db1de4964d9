"""Folders of "generated" videos for the scoring tests: copies of a prepared benchmark's own clips."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def generated_videos(benchmark: Path, folder: Path, clip_ids: Iterable[str]) -> Path:
    """``folder`` (created) holding ``<clip_id>.mp4`` copied from the benchmark's videos for each of ``clip_ids``."""
    folder.mkdir(exist_ok=True)
    for clip_id in clip_ids:
        shutil.copy(benchmark / "videos" / f"{clip_id}.mp4", folder / f"{clip_id}.mp4")
    return folder
