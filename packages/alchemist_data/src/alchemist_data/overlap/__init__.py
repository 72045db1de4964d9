"""Benchmark-overlap filter: find training clips that are near-duplicates of benchmark (reference) videos.

MSRVTT-Personalization's clips come from MSR-VTT (YouTube), like most training corpora, so a curated corpus can hold
re-encoded, rescaled, cropped or trimmed copies of the very videos the model is scored on. ``overlap.reference_dir``
names a folder of videos or a benchmark folder (``alchemist benchmark prepare``); every clip that matches one of its
videos is rejected with reason ``benchmark_overlap``, the matched reference video and the similarity in the detail.

How it matches (``OverlapIndex``):

* **Index, once per worker.** Each reference video is sampled every ``reference_step_s`` seconds (densely, so that
  a trimmed copy's frames land near an indexed one) and each sample is coded: ``phash`` (offline, no model) keeps a
  64-bit DCT perceptual hash of the frame and of five crop variants of it (a copy cropped by a few per cent is close
  to one of them) plus a 4x4 colour layout; ``dinov2`` / ``clip`` keep a unit-length embedding. Codes, their video
  and their time sit in flat arrays; a query compares a frame with all of them at once (XOR and popcount over
  ``uint64``, or one matrix product); for ``phash`` an index the size of the benchmark's 2,130 videos costs
  milliseconds per clip (``bench/data_overlap.py``, which times the embedding backends' search but not their
  model). The index is cached on
  disk (keyed by the settings and every reference file's size and mtime) and built once per machine.
* **Query, per clip.** The clip's reference frames (the frames stage's 5/50/95 % frames, with their times) are
  coded the same way. A reference frame is a near-duplicate of a clip frame when its hash is within ``max_hamming``
  bits and no cell of its colour layout differs by more than ``max_layout_diff`` (or, for embeddings, when the
  cosine reaches ``min_similarity``). Each clip frame is compared with *all* indexed frames, not the same-index
  one, so a trimmed copy still matches.
* **Vote.** A clip overlaps reference video v when at least ``min_matched_frames`` of its frames have a
  near-duplicate in v at one common time offset (within ``time_tolerance_s``): a copy shows the reference's frames
  in the same order at the same pace. A different clip of a similar scene (the same place, other things moving in
  it) fails the colour layout where they differ, and matches, if at all, at scattered times. Flat frames (fades,
  black) carry no content and are never matched.
"""

from alchemist_data.overlap.codes import HASH_BITS, crop_variants, hamming, phash
from alchemist_data.overlap.index import (
    OverlapConfig,
    OverlapIndex,
    OverlapMatch,
    ReferenceVideo,
    build_coder,
    list_references,
    sample_video,
)

__all__ = [
    "HASH_BITS",
    "OverlapConfig",
    "OverlapIndex",
    "OverlapMatch",
    "ReferenceVideo",
    "build_coder",
    "crop_variants",
    "hamming",
    "list_references",
    "phash",
    "sample_video",
]
