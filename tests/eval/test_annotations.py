"""The released annotation format, the restricted unpickler (incl. a malicious pickle) and timestamp parsing."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from alchemist_eval.annotations import AnnotationError, load_annotations, parse_timestamp
from alchemist_eval.safe_pickle import UnsafePickleError, restricted_load, restricted_loads


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_loads_the_official_structure_at_every_protocol():
    data = {
        "man": [
            {
                "filename": "frame2.jpg",
                "box_xyxy": [1, 2, 5, 6],
                "mask": np.eye(4, dtype=bool),
                "is_face_crop": False,
                "score": np.float32(0.5),
            }
        ]
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        got = restricted_loads(gzip.compress(pickle.dumps(data, protocol=protocol)))
        np.testing.assert_array_equal(got["man"][0]["mask"], np.eye(4, dtype=bool))
        assert got["man"][0]["box_xyxy"] == [1, 2, 5, 6] and got["man"][0]["score"] == np.float32(0.5)


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.word_tags_masks.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump({"man": [_Evil(str(marker))]}, f)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
        restricted_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["builtins eval", "builtins getattr", "subprocess Popen", "numpy load"])
def test_other_globals_are_refused_with_their_name(payload):
    module, name = payload.split()
    raw = f"c{module}\n{name}\n(S'1'\ntR.".encode()
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        restricted_loads(raw)


def test_timestamps_parse_like_strptime():
    assert parse_timestamp("00:00:01.500") == pytest.approx(1.5)
    assert parse_timestamp("01:02:03.004") == pytest.approx(3723.004)
    assert parse_timestamp("00:00:07") == 7.0
    with pytest.raises(ValueError, match="HH:MM:SS.fff"):
        parse_timestamp("1.5s")


def test_annotations_load_from_folder_and_zip(annotation_set, tmp_path):
    anns = load_annotations(annotation_set["annotations"])
    assert [a.clip_id for a in anns] == ["clip_a", "clip_b", "clip_c", "clip_d"]
    a = anns[0]
    assert a.start_s == pytest.approx(0.25) and a.end_s == pytest.approx(1.75) and a.resolution_wh == (128, 96)
    assert a.subject == ["man"] and a.object == ["dog"] and a.subject_with_face == ["man"]
    assert sum(e.is_face_crop for e in a.masks["man"]) == 1 and a.masks["man"][0].mask.dtype == bool
    zpath = tmp_path / "annotations.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(annotation_set["annotations"].iterdir()):
            zf.write(p, f"msrvtt_personalization_annotation/{p.name}")
    assert [a.clip_id for a in load_annotations(zpath)] == ["clip_a", "clip_b", "clip_c", "clip_d"]


def test_bad_annotations_fail_with_the_file_named(tmp_path):
    (tmp_path / "x1.vid_info.json").write_text(json.dumps({"video": "v.mp4", "caption": "c"}))
    with pytest.raises(AnnotationError, match="x1.vid_info.json lacks timestamp, word_tags"):
        load_annotations(tmp_path)
    with pytest.raises(AnnotationError, match="do not exist"):
        load_annotations(tmp_path / "nope")
