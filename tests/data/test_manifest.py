"""alchemist_data.manifest: formats, path resolution, validation, deterministic ids."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alchemist_data.manifest import MANIFEST_SCHEMA, ManifestError, clip_id_for, read_manifest

ROWS = [
    {"video": "videos/a.mp4", "caption": "A man walks a dog in a park.", "start_s": 1.0, "end_s": 3.5},
    {"video": "/data/b.mp4", "caption": "A girl holds a red kite.", "clip_id": "b-1"},
    {"video": "s3://bucket/c.mp4", "caption": None, "extra": 5},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_csv(path, rows):
    cols = ["video", "caption", "start_s", "end_s", "clip_id", "extra"]
    lines = [",".join(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("" if v is None else (f'"{v}"' if isinstance(v, str) else str(v)))
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_parquet(path, rows):
    cols = ["video", "caption", "start_s", "end_s", "clip_id", "extra"]
    pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in cols}), path)
    return path


@pytest.mark.parametrize("ext, writer", [("jsonl", _write_jsonl), ("csv", _write_csv), ("parquet", _write_parquet)])
def test_formats_give_the_same_table(tmp_path, ext, writer):
    path = writer(tmp_path / f"manifest.{ext}", ROWS)
    table = read_manifest(path)
    assert table.schema == MANIFEST_SCHEMA
    rows = table.to_pylist()
    assert [r["video"] for r in rows] == [
        os.path.join(str(tmp_path), "videos", "a.mp4"),
        "/data/b.mp4",
        "s3://bucket/c.mp4",
    ]
    assert [r["caption"] for r in rows] == ["A man walks a dog in a park.", "A girl holds a red kite.", ""]
    assert [r["start_s"] for r in rows] == [1.0, None, None]
    assert [r["end_s"] for r in rows] == [3.5, None, None]
    assert rows[1]["clip_id"] == "b-1"
    assert rows[0]["clip_id"] == clip_id_for(rows[0]["video"], 1.0, 3.5)
    assert len(rows[0]["clip_id"]) == 16
    assert "extra" not in table.column_names


def test_relative_paths_resolve_against_the_manifest_folder_not_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "corpus"
    sub.mkdir()
    _write_jsonl(sub / "m.jsonl", [{"video": "../clips/x.mp4", "caption": "A cat sleeps."}])
    monkeypatch.chdir(tmp_path)
    table = read_manifest("corpus/m.jsonl")
    assert table.column("video")[0].as_py() == str(tmp_path / "clips" / "x.mp4")


def test_relative_paths_of_a_uri_manifest_stay_uris(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"video": "clips/x.mp4", "caption": "A cat sleeps."}])
    table = read_manifest(path.resolve().as_uri())
    assert table.column("video")[0].as_py() == (tmp_path / "clips" / "x.mp4").resolve().as_uri()


def test_ids_are_deterministic_and_depend_on_the_window(tmp_path):
    rows = [
        {"video": "a.mp4", "caption": "x", "start_s": 0.0, "end_s": 2.0},
        {"video": "a.mp4", "caption": "x", "start_s": 2.0, "end_s": 4.0},
        {"video": "a.mp4", "caption": "x", "start_s": 2.0, "end_s": 4.0},
    ]
    first = read_manifest(_write_jsonl(tmp_path / "m.jsonl", rows)).column("clip_id").to_pylist()
    again = read_manifest(_write_jsonl(tmp_path / "m2.jsonl", rows)).column("clip_id").to_pylist()
    assert first == again
    assert first[0] != first[1]
    assert first[1] == first[2]  # duplicates are kept: the runner rejects the later one with a reason


def test_numeric_clip_ids_become_strings(tmp_path):
    table = read_manifest(_write_jsonl(tmp_path / "m.jsonl", [{"video": "a.mp4", "caption": "x", "clip_id": 7}]))
    assert table.column("clip_id").to_pylist() == ["7"]


def test_missing_columns_are_named_with_their_meaning(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"path": "a.mp4", "text": "A dog."}])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert "video" in msg and "caption" in msg and "found: path, text" in msg
    assert "relative to the manifest's folder" in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("m.jsonl", "", "no rows"),  # empty
        ("m.jsonl", "\n\n", "no rows"),
        ("m.csv", "video,caption\n", "no rows"),
        ("m.txt", "video,caption\n", r"\.jsonl.*\.csv.*\.parquet"),  # an unknown extension: the known ones named
        ("m.jsonl", '{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4", caption: y}\n', "line 2"),  # bad JSON
    ],
)
def test_empty_or_unreadable_manifest_file_is_an_error(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")


def test_bad_time_type_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"video": "a.mp4", "caption": "x", "start_s": "soon"}])
    with pytest.raises(ManifestError, match="start_s"):
        read_manifest(path)


def test_compressed_jsonl(tmp_path):
    path = tmp_path / "m.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"video": "a.mp4", "caption": "A dog runs."}) + "\n")
    assert read_manifest(path).column("caption").to_pylist() == ["A dog runs."]
