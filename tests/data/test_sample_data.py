"""alchemist_data.sample_data and `alchemist sample-data`: a deterministic, decodable captioned corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alchemist_data.manifest import read_manifest
from alchemist_data.media import decode_clip, probe, reference_frames
from alchemist_data.sample_data import ANIMALS, make_caption, write_sample_corpus

HUMANS_AND_ANIMALS = {"man", "woman", "boy", "girl", "chef", "dancer", "dog", "cat", "horse", "rabbit", "goat"}


def test_corpus_is_decodable_and_described_by_its_manifest(tmp_path):
    manifest = write_sample_corpus(tmp_path / "c", num_clips=4, seed=3)
    table = read_manifest(manifest)
    assert table.num_rows == 4
    assert table.column("clip_id").to_pylist() == [f"sample-{i:04d}" for i in range(4)]
    raw = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert all(not r["video"].startswith("/") for r in raw)  # relative: the corpus folder can move
    for row in table.to_pylist():
        info = probe(row["video"])
        assert (info.width_px, info.height_px) == (320, 240)
        assert info.num_frames == 48 and info.fps == 24 and info.codec == "h264"
        _, _, frames = reference_frames(row["video"])
        assert not np.array_equal(frames[0], frames[2])  # things move
        assert row["caption"].startswith("A ") and row["caption"].endswith(".")


def test_same_seed_same_corpus_different_seed_different_corpus(tmp_path):
    a = read_manifest(write_sample_corpus(tmp_path / "a", num_clips=3, seed=0, size=(96, 64), seconds=0.5))
    b = read_manifest(write_sample_corpus(tmp_path / "b", num_clips=3, seed=0, size=(96, 64), seconds=0.5))
    c = read_manifest(write_sample_corpus(tmp_path / "c", num_clips=3, seed=1, size=(96, 64), seconds=0.5))
    assert a.column("caption").to_pylist() == b.column("caption").to_pylist()
    assert a.column("caption").to_pylist() != c.column("caption").to_pylist()
    for va, vb in zip(a.column("video").to_pylist(), b.column("video").to_pylist(), strict=True):
        assert open(va, "rb").read() == open(vb, "rb").read()
        assert decode_clip(va).shape == (12, 64, 96, 3)


def test_captions_name_one_singular_subject_objects_and_a_background():
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = make_caption(rng)
        words = spec.caption.rstrip(".").split()
        assert words[0] == "A" and words[1] in HUMANS_AND_ANIMALS and spec.subject == words[1]
        assert spec.objects[0] in words and spec.background in words
        assert " a a" not in spec.caption and " a o" not in spec.caption  # articles agree


def test_cli_writes_the_corpus(tmp_path):
    from pipelines.cli import app

    result = CliRunner().invoke(app, ["sample-data", str(tmp_path / "s"), "--num-clips", "2", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "manifest.jsonl").exists()
    assert len(list((tmp_path / "s" / "videos").glob("*.mp4"))) == 2
    assert "alchemist curate" in result.output


def test_people_have_faces_a_real_face_detector_finds(tmp_path):
    facenet = pytest.importorskip("facenet_pytorch")
    table = read_manifest(write_sample_corpus(tmp_path / "c", num_clips=6, seed=0)).to_pylist()
    raw = [json.loads(line) for line in (tmp_path / "c" / "manifest.jsonl").read_text().splitlines()]
    humans = [row for row, r in zip(table, raw, strict=True) if r["subjects"][0] in HUMANS_AND_ANIMALS - set(ANIMALS)]
    assert humans
    detector = facenet.MTCNN(keep_all=True, device="cpu")
    found = 0
    for row in humans:
        _, _, frames = reference_frames(row["video"])
        boxes, _ = detector.detect(frames[1])
        found += boxes is not None
    assert found >= len(humans) - 1  # the demo's faces stage gets real crops
