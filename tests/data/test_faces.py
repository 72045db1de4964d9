"""Face boxes: MTCNN on a real photo, YOLO pre/post-processing (the extension rule: test_benchmark_rules.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alchemist_data.models.faces import (
    MTCNNFaceDetector,
    YoloFaceDetector,
    build_face_detector,
    letterbox,
)
from alchemist_data.profiles import curation_profile


def test_mtcnn_finds_the_astronaut_face_and_not_noise():
    import skimage.data

    det = MTCNNFaceDetector(min_score=0.9)
    faces = det.detect(skimage.data.astronaut())
    assert len(faces) == 1
    box, score = faces[0]
    assert np.allclose(box, [181, 62, 268, 172], atol=3) and score > 0.99
    assert all(isinstance(v, int) for v in box) and isinstance(score, float)
    noise = (np.random.RandomState(0).rand(256, 256, 3) * 255).astype(np.uint8)
    assert det.detect(noise) == []
    batch = det.detect_batch([skimage.data.astronaut(), noise])
    assert batch[0][0][0] == box and batch[1] == []
    # crops smaller than MTCNN's minimum face size (subject boxes can be tiny) give no face instead of crashing
    assert det.detect(skimage.data.astronaut()[:12, :300]) == []
    # a subject crop around the face still finds it, in crop coordinates
    (cx0, cy0, cx1, cy1), _ = det.detect(skimage.data.astronaut()[50:300, 150:320])[0]
    assert np.allclose([cx0 + 150, cy0 + 50, cx1 + 150, cy1 + 50], box, atol=4)


class _BlueSquareYolo(torch.nn.Module):
    """Stand-in for a YOLOv9 face TorchScript export: finds the pixels whose channel 0 is high and channel 2 low,
    and answers in YOLO's raw format ([B, 4 + nc, N] cxcywh in letterboxed pixels), wrapped like a dual-head
    model's eval output. Anchor 1 overlaps anchor 0 (removed by NMS), anchor 2 is under the confidence threshold."""

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b, _, h, w = x.shape
        m = (x[:, 0] > 0.9) & (x[:, 2] < 0.1)
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(b, h, w)
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(b, h, w)
        big = torch.full_like(xs, 1e6)
        x0 = torch.where(m, xs, big).flatten(1).min(1).values
        y0 = torch.where(m, ys, big).flatten(1).min(1).values
        x1 = torch.where(m, xs, -big).flatten(1).max(1).values + 1
        y1 = torch.where(m, ys, -big).flatten(1).max(1).values + 1
        box = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)
        pred = torch.zeros(b, 5, 3)
        found = m.flatten(1).any(1).float()
        pred[:, :4, 0] = box
        pred[:, 4, 0] = 0.9 * found
        pred[:, :4, 1] = box + torch.tensor([2.0, 2.0, 0.0, 0.0])
        pred[:, 4, 1] = 0.6 * found
        pred[:, :4, 2] = torch.tensor([20.0, 20.0, 10.0, 10.0])
        pred[:, 4, 2] = 0.1
        return [pred, pred * 0], [pred]


@pytest.fixture(scope="module")
def yolo_ts(tmp_path_factory):
    path = tmp_path_factory.mktemp("yolo") / "face.torchscript"
    scripted = torch.jit.script(_BlueSquareYolo())
    torch.jit.save(scripted, str(path), _extra_files={"config.txt": json.dumps({"stride": 32, "names": ["face"]})})
    return path


def test_letterbox_matches_yolo_geometry():
    im = np.zeros((310, 500, 3), np.uint8)
    out, r, (dw, dh) = letterbox(im, 640, stride=32)
    assert r == pytest.approx(1.28)
    # 310 * 1.28 = 396.8 -> 397 rows; (640 - 397) % 32 = 19 -> 9 rows on top, 10 below -> 416 = 13 * 32
    assert out.shape == (416, 640, 3) and (dw, dh) == (0.0, 9.5)
    assert (out[:9] == 114).all() and (out[-10:] == 114).all()


def test_yolo_face_detector_maps_boxes_back_and_applies_nms(yolo_ts):
    img = np.zeros((310, 500, 3), np.uint8)
    img[100:220, 300:400] = (0, 0, 255)  # blue in RGB; the benchmark's channel flip makes channel 0 blue
    det = YoloFaceDetector(str(yolo_ts))
    faces = det.detect(img)
    assert len(faces) == 1  # overlapping anchor suppressed (IoU > 0.4), low-confidence anchor dropped (< 0.2)
    box, score = faces[0]
    assert np.allclose(box, [300, 100, 400, 220], atol=2) and score == pytest.approx(0.9)
    assert det.detect(np.zeros((310, 500, 3), np.uint8)) == []
    assert det.detect(np.zeros((0, 5, 3), np.uint8)) == [] and det.detect(img[:1, :1]) == []
    # without the benchmark's RGB->BGR quirk the network sees red in channel 0 and finds nothing
    assert YoloFaceDetector(str(yolo_ts), benchmark_channel_flip=False).detect(img) == []
    both = det.detect_batch([img, img[:, ::-1].copy()])
    assert np.allclose(both[1][0][0], [100, 100, 200, 220], atol=2)


def test_yolo_missing_or_bad_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="yolov9-c-face.pt.*TorchScript"):
        YoloFaceDetector(str(tmp_path / "yolov9-c-face.pt")).setup()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load YOLO face checkpoint"):
        YoloFaceDetector(str(garbage)).setup()
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="holds no YOLO model"):
        YoloFaceDetector(str(bad)).setup()


def test_build_face_detector():
    assert build_face_detector(curation_profile("tiny").faces) is None
    det = build_face_detector(curation_profile("offline").faces)
    assert isinstance(det, MTCNNFaceDetector) and det.min_score == 0.9
    paper = build_face_detector(curation_profile("paper").faces)
    assert isinstance(paper, YoloFaceDetector) and paper.min_score == 0.2
