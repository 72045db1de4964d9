"""``alchemist report RUN --output DIR``: a static, self-contained HTML report of a run folder.

* A **curated run** (or a benchmark folder from ``alchemist benchmark prepare``): its counts and settings, the
  distributions of mask area, box score and SAM IoU, reject reasons with examples, and per sampled clip the three
  reference frames with masks, boxes and entity words drawn over them, the RGBA crops on a checkerboard, face crops
  and the background plate beside the middle frame.
* An **eval output** (``alchemist eval``): the benchmark scores, their distributions, and per video the scores with
  thumbnails of the generated and the ground-truth frames.

Clips are sampled deterministically, the first ``max_clips`` by md5 of the clip id, so a run of 100,000 clips still
gives a page of ``max_clips`` cards that opens at once; the page says how many it shows. The page is ``DIR/index.html``
with its pictures in ``DIR/img/``; nothing points outside that folder, so it opens offline.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alchemist_data.report.source import NotAReportableFolderError, RunSource

DEFAULT_MAX_CLIPS = 100

__all__ = ["DEFAULT_MAX_CLIPS", "NotAReportableFolderError", "build_report"]


def build_report(
    run: str | os.PathLike[str],
    output: str | os.PathLike[str],
    max_clips: int = DEFAULT_MAX_CLIPS,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the report of ``run`` (local folder or URI) to ``output``; returns ``{kind, index, num_clips, ...}``.

    ``output`` is created; an earlier report there is replaced (its ``img/`` folder is cleared first). Raises
    ``ValueError`` naming the input when ``run`` is not a run folder or ``max_clips`` is not positive.
    """
    if max_clips < 1:
        raise ValueError(f"--max-clips must be at least 1, got {max_clips}")
    src = RunSource(run)
    out = Path(output)
    if "://" not in src.root and out.resolve() == Path(src.base).resolve():
        raise ValueError(f"--output {str(output)!r} is the run folder itself; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "img", ignore_errors=True)
    try:
        if src.kind == "eval":
            from alchemist_data.report.evaluated import eval_report

            return eval_report(src, out, max_clips, progress)
        from alchemist_data.report.curated import curated_report

        return curated_report(src, out, max_clips, progress)
    finally:
        src.close()
