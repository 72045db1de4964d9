"""Face boxes: MTCNN (facenet-pytorch, real weights in the wheel) offline, a YOLO face checkpoint in ``paper``.

The YOLO pre/post-processing mirrors the benchmark's Face-S code
(``evaluation_protocol/evaluation/metrics/distributed_arcface_similarity.py``, ``detect_face_crops``, in
tsaishien-chen/VideoAlchemy): letterbox to 640 with stride padding, conf 0.2 / IoU 0.4 NMS, boxes scaled back and
rounded.

``detect()`` returns the raw (not extended) face boxes sorted by score; callers apply the benchmark's extension,
:func:`alchemist_data.benchmark_rules.extend_face_box`, to the box they keep (the benchmark keeps the first, i.e.
highest-confidence, one).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alchemist_data.models.base import LazyModel, check_rgb

FaceBox = tuple[list[int], float]


class FaceDetector(LazyModel):
    """Base: ``setup()`` loads once; ``detect(image)`` -> ``[(box_xyxy, score), ...]`` sorted by score (desc)."""

    name = "faces"

    def __init__(self, device: str = "cpu", min_score: float = 0.0) -> None:
        super().__init__(device=device)
        self.min_score = min_score

    @abstractmethod
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        """Faces of each image (same-size images may share one forward pass)."""

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        self.setup()
        arrs = [check_rgb(im) for im in images]
        if not arrs:
            return []
        out: list[list[FaceBox]] = [[] for _ in arrs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrs):
            if a.shape[0] and a.shape[1]:  # an empty crop has no face (and would crash the resizers)
                groups.setdefault(a.shape, []).append(i)
        for idxs in groups.values():
            for i, faces in zip(idxs, self._detect_batch([arrs[i] for i in idxs]), strict=True):
                kept = [(b, s) for b, s in faces if s > self.min_score]
                out[i] = sorted(kept, key=lambda f: -f[1])
        return out


class MTCNNFaceDetector(FaceDetector):
    """facenet-pytorch MTCNN (its P/R/O-Net weights ship inside the wheel, so it works offline)."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu", min_score: float = 0.0) -> None:
        super().__init__(device=device, min_score=min_score)
        self.mtcnn: Any = None

    def _load(self) -> None:
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=torch.device(self.device))

    @torch.inference_mode()
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        H, W = images[0].shape[:2]
        if min(H, W) < self.mtcnn.min_face_size:
            # MTCNN's scale pyramid is empty below its minimum face size and it crashes; no face fits anyway
            return [[] for _ in images]
        boxes_b, probs_b = self.mtcnn.detect(images if len(images) > 1 else images[0])
        if len(images) == 1:
            boxes_b, probs_b = [boxes_b], [probs_b]
        out = []
        for boxes, probs in zip(boxes_b, probs_b, strict=True):
            faces: list[FaceBox] = []
            if boxes is not None:
                for box, p in zip(boxes, probs, strict=True):
                    if box is None or p is None:
                        continue
                    # MTCNN boxes are floats and may overhang the frame: round, then clip to the image.
                    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                    x0, x1 = min(max(x0, 0), W), min(max(x1, 0), W)
                    y0, y1 = min(max(y0, 0), H), min(max(y1, 0), H)
                    if x1 > x0 and y1 > y0:
                        faces.append(([x0, y0, x1, y1], float(p)))  # probs is an object array: float() each
            out.append(faces)
        return out


def letterbox(
    im: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (114, 114, 114),
    stride: int = 32,
    auto: bool = True,
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """YOLOv5/v9 ``letterbox``: keep aspect, scale to fit ``new_shape`` (``(h, w)`` or a square side), then pad to a
    stride multiple (``auto=True``, e.g. 384x640 for 16:9) or to the full ``new_shape`` (``auto=False``)."""
    import cv2

    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    shape = im.shape[:2]
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw, dh = dw / 2, dh / 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, r, (dw, dh)


def yolo_nms(prediction: torch.Tensor, conf_thres: float = 0.2, iou_thres: float = 0.4, max_det: int = 1000):
    """YOLOv9 ``non_max_suppression`` (best class per box, class-offset batched NMS, sorted by confidence).

    ``prediction``: ``[B, 4 + nc, N]`` with cxcywh boxes in input pixels and per-class scores. Returns per image an
    ``[n, 6]`` tensor ``(x0, y0, x1, y1, conf, cls)``.
    """
    import torchvision

    bs, nc = prediction.shape[0], prediction.shape[1] - 4
    xc = prediction[:, 4 : 4 + nc].amax(1) > conf_thres
    max_wh, max_nms = 7680, 30000
    output = [torch.zeros((0, 6), device=prediction.device)] * bs
    for xi, x in enumerate(prediction):
        x = x.T[xc[xi]]
        if not x.shape[0]:
            continue
        box, cls = x[:, :4], x[:, 4 : 4 + nc]
        xyxy = torch.cat([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
        conf, j = cls.max(1, keepdim=True)
        x = torch.cat((xyxy, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        c = x[:, 5:6] * max_wh
        i = torchvision.ops.nms(x[:, :4] + c, x[:, 4], iou_thres)[:max_det]
        output[xi] = x[i]
    return output


def _scale_boxes(img1_shape: tuple[int, int], boxes: torch.Tensor, img0_shape: tuple[int, ...]) -> torch.Tensor:
    """YOLO ``scale_boxes``: undo letterbox padding and gain, clip to the original image."""
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    pad = (img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2
    boxes[:, [0, 2]] -= pad[0]
    boxes[:, [1, 3]] -= pad[1]
    boxes[:, :4] /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, img0_shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, img0_shape[0])
    return boxes


def _first_tensor(out: Any) -> torch.Tensor:
    # The benchmark takes `predictions[0][0]` of a dual-head YOLOv9 (eval output `([y_aux, y_main], [...])`; an
    # exported model returns `[y_aux, y_main]`). Descending into first elements until a tensor gives the same head
    # for both forms, and the plain tensor of a single-head model.
    while isinstance(out, (list, tuple)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"YOLO face model returned {type(out).__name__}, expected a tensor [B, 4 + nc, N]")
    return out


YOLO_FACE_HELP = (
    "The accepted formats are a TorchScript export of a YOLOv9 face detector (e.g. the benchmark's yolov9-c face "
    "weights, spacewalk01/yolov9-face-detection `best.pt`, exported with WongKinYiu/yolov9 "
    "`python export.py --weights best.pt --include torchscript`; frames are then letterboxed to the full traced "
    "square, as YOLOv9's detect.py does), or the original pickled `.pt` (the benchmark's own path, bit-identical "
    "detections), which needs the WongKinYiu/yolov9 repository on PYTHONPATH and `pip install "
    "'alchemist-data[yolo-pt]'` (IPython, psutil, seaborn)."
)

# What unpickling a YOLOv9 `.pt` imports beyond its own classes: models/common.py and utils/ import these at module
# level (IPython.display, utils/dataloaders.py psutil, utils/plots.py seaborn, utils/general.py pkg_resources).
YOLOV9_IMPORTS = {"IPython": "ipython", "psutil": "psutil", "seaborn": "seaborn", "pkg_resources": "setuptools<81"}
# Top-level packages of the yolov9 repository that its pickles name (models.yolo.DetectionModel, models.common.*).
YOLOV9_PACKAGES = ("models", "utils")


def yolo_pickle_requirements(checkpoint: str) -> str | None:
    """Everything a pickled YOLO checkpoint needs that is missing here, in one message (None: nothing missing).

    The modules come from the file's pickle opcodes (nothing is unpickled), so a missing repository and every
    missing package are reported together instead of one ModuleNotFoundError at a time.
    """
    from alchemist_data.models.checkpoints import missing_modules, pickle_globals

    modules = pickle_globals(checkpoint)
    repo = sorted(m for m in modules if m.split(".")[0] in YOLOV9_PACKAGES)
    if not repo:
        return None
    missing_repo = missing_modules(repo)
    missing_pkgs = [YOLOV9_IMPORTS[m] for m in missing_modules(YOLOV9_IMPORTS)]
    if not missing_repo and not missing_pkgs:
        return None
    needs = []
    if missing_repo:
        needs.append(
            f"the WongKinYiu/yolov9 repository on PYTHONPATH (it defines {', '.join(missing_repo)}; "
            "`git clone https://github.com/WongKinYiu/yolov9` and `export PYTHONPATH=$PWD/yolov9`)"
        )
    if missing_pkgs:
        needs.append(
            f"the packages {', '.join(missing_pkgs)} (`pip install 'alchemist-data[yolo-pt]'` or "
            "`pip install -r requirements/yolo-pt.txt`)"
        )
    return (
        f"YOLO face checkpoint {checkpoint} is a pickled YOLOv9 model; loading it needs "
        + " and ".join(needs)
        + ". Or export it once to TorchScript (WongKinYiu/yolov9 `python export.py --weights FILE --include "
        "torchscript`), which needs none of them."
    )


class YoloFaceDetector(FaceDetector):
    """A YOLOv9 face checkpoint, run as the benchmark's Face-S does (letterbox 640, conf 0.2, IoU 0.4, class 0).

    ``benchmark_channel_flip``: the benchmark passes RGB frames through YOLO's BGR->RGB flip, so the network sees
    BGR; True (default) reproduces that quirk so detections match the benchmark's.

    A pickled model is letterboxed like the benchmark's (``auto=True``: padded to a stride multiple). A TorchScript
    export was traced at one input size with its anchor grid frozen, so frames are letterboxed to exactly that size
    (``auto=False``, from the export's ``config.txt``), as YOLOv9's detect.py does for TorchScript.
    """

    name = "yolo"

    def __init__(
        self,
        checkpoint: str,
        device: str = "cpu",
        min_score: float = 0.2,
        iou_threshold: float = 0.4,
        image_size: int = 640,
        benchmark_channel_flip: bool = True,
    ) -> None:
        super().__init__(device=device, min_score=min_score)
        self.checkpoint = checkpoint
        self.iou_threshold = iou_threshold
        self.image_size: int | tuple[int, int] = image_size
        self.benchmark_channel_flip = benchmark_channel_flip
        self.stride = 32
        self.auto = True  # stride-multiple letterbox; False (full image_size) for a traced model
        self.model: Any = None

    def _load(self) -> None:
        if not self.checkpoint or not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(
                f"YOLO face checkpoint not found: {self.checkpoint or '(empty)'}. {YOLO_FACE_HELP} "
                "Pass its path as faces.checkpoint or ALCHEMIST_YOLO_FACE_CHECKPOINT."
            )
        extra = {"config.txt": ""}
        model: Any = None
        try:
            with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; YOLO still exports it
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(self.checkpoint, map_location=self.device, _extra_files=extra)
        except RuntimeError:
            model = self._load_pickled()
        else:
            # YOLO's TorchScript export stores {"shape": traced input BCHW, "stride": ..., "names": ...} here
            meta = json.loads(extra["config.txt"]) if extra["config.txt"] else {}
            self.stride = int(meta.get("stride", self.stride))
            shape = meta.get("shape")
            if shape and len(shape) == 4:
                self.image_size = (int(shape[2]), int(shape[3]))
            self.auto = False
        self.model = model.to(self.device).eval()

    def _load_pickled(self) -> torch.nn.Module:
        # Not TorchScript: the original YOLOv9 checkpoint {"model"/"ema": nn.Module}, which unpickles only when the
        # yolov9 repository's classes and the packages they import are importable.
        from alchemist_data.models.base import ModelLoadError

        needs = yolo_pickle_requirements(self.checkpoint)
        if needs:
            raise ModelLoadError(needs)
        try:
            ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, AttributeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ValueError(f"cannot load YOLO face checkpoint {self.checkpoint}: {exc}. {YOLO_FACE_HELP}") from exc
        model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{self.checkpoint} holds no YOLO model. {YOLO_FACE_HELP}")
        self.stride = int(max(getattr(model, "stride", torch.tensor([32])).max(), 32))
        return model.float()

    @torch.inference_mode()
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        tensors = []
        for im in images:
            lb = letterbox(im, self.image_size, stride=self.stride, auto=self.auto)[0]
            chw = lb[:, :, ::-1].transpose(2, 0, 1) if self.benchmark_channel_flip else lb.transpose(2, 0, 1)
            tensors.append(torch.from_numpy(np.ascontiguousarray(chw)).float() / 255.0)
        batch = torch.stack(tensors).to(self.device)
        preds = yolo_nms(_first_tensor(self.model(batch)).float(), self.min_score, self.iou_threshold)
        out = []
        for im, pred in zip(images, preds, strict=True):
            pred = pred.cpu().clone()
            pred[:, :4] = _scale_boxes(batch.shape[2:], pred[:, :4], im.shape).round()
            faces = [([int(v) for v in row[:4].tolist()], float(row[4])) for row in pred if int(row[5]) == 0]
            out.append(faces)
        return out


def build_face_detector(cfg: Any, device: str = "cpu") -> FaceDetector | None:
    """Face detector from a ``FacesConfig``: ``mtcnn``, ``yolo`` or ``none`` (returns None)."""
    if cfg.backend == "none":
        return None
    if cfg.backend == "mtcnn":
        return MTCNNFaceDetector(device=device, min_score=cfg.min_score)
    if cfg.backend == "yolo":
        return YoloFaceDetector(checkpoint=cfg.checkpoint, device=device, min_score=cfg.min_score)
    raise ValueError(f"unknown faces backend {cfg.backend!r}; choose 'mtcnn', 'yolo' or 'none'")
