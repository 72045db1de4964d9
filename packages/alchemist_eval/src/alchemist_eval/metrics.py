"""MSRVTT-Personalization metrics as pure functions (spec §7.3), plus the exact input preprocessing.

Every function here works on plain numpy arrays (embeddings, boxes, masks, optical flows), so a user or a test can
check a score by hand. The model-running part lives in :mod:`alchemist_eval.scorer`.

The semantics mirror the official benchmark code (snap-research/MSRVTT-Personalization, byte-identical to
tsaishien-chen/VideoAlchemy), file by file:

* Text-S  ``evaluation_protocol/evaluation/metrics/distributed_text_clip_similarity.py``
* Vid-S   ``evaluation_protocol/evaluation/metrics/distributed_video_clip_similarity.py``
* Subj-S  ``evaluation_protocol/evaluation/metrics/distributed_subject_dino_similarity.py``
* Face-S  ``evaluation_protocol/evaluation/metrics/distributed_arcface_similarity.py``
* Dync-D  ``evaluation_protocol/evaluation/metrics/distributed_dynamic_degree.py`` (after VBench's dynamic_degree)
* preprocessing: ``evaluation_protocol/dataset/transforms.py`` (``pil_to_tensor_clip``) and
  ``msrvtt_personalization/prepare_msrvtt_personalization_embeddings.py`` (``pil_to_tensor``,
  ``extract_arcface_embeddings``).

The rules shared with curation (box selection, mask validity, face-box extension, white fill, square padding, the
masked and face crops) live once in :mod:`alchemist_data.benchmark_rules`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from alchemist_data import benchmark_rules as R
from alchemist_data.benchmark_rules import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

ENCODER_SIZE_PX = 224
FACE_SIZE_PX = 112

METRIC_NAMES: dict[str, str] = {
    "text": "Text-S",
    "video": "Vid-S",
    "subject": "Subj-S",
    "face": "Face-S",
    "dynamic": "Dync-D",
}


# ----------------------------------------------------------------------------------------------------------------
# similarity helpers


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` against every row of ``b`` (sklearn ``cosine_similarity``).

    Like sklearn, a zero row is left as zeros (its similarities are 0), never NaN.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]} (were both made by the same model?)")
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a = a / np.where(na == 0, 1.0, na)
    b = b / np.where(nb == 0, 1.0, nb)
    return a @ b.T


def text_similarity(frame_embeddings: np.ndarray, text_embedding: np.ndarray) -> float:
    """Text-S of one video: mean over frames of cos(frame, caption). Raw cosine, no x100 / x2.5 / clamping."""
    frame_embeddings = np.atleast_2d(frame_embeddings)
    if frame_embeddings.shape[0] == 0:
        return 0.0
    return float(cosine_matrix(frame_embeddings, np.atleast_2d(text_embedding)).mean())


def video_similarity(frame_embeddings: np.ndarray, gt_frame_embeddings: np.ndarray) -> float:
    """Vid-S of one video: mean of the full (F_generated x F_gt) cosine matrix; frames are not aligned in time.

    ``gt_frame_embeddings`` are the CLIP embeddings of the ground-truth frames at 5/50/95 % of the clip.
    """
    frame_embeddings = np.atleast_2d(frame_embeddings)
    gt_frame_embeddings = np.atleast_2d(gt_frame_embeddings)
    if frame_embeddings.shape[0] == 0 or gt_frame_embeddings.shape[0] == 0:
        return 0.0
    return float(cosine_matrix(frame_embeddings, gt_frame_embeddings).mean())


def subject_similarity(
    frame_tag_embeddings: Sequence[Mapping[str, np.ndarray | None]],
    gt_tag_embeddings: Mapping[str, np.ndarray],
    num_frames: int | None = None,
) -> float:
    """Subj-S of one video: sum over frames and tags of mean_ref cos(generated, ref) / (num_frames * num_tags).

    ``frame_tag_embeddings[f][tag]`` is the DINO embedding of the segmented ``tag`` in generated frame ``f``, or
    missing/None when grounding, SAM or the validity check failed there: such a (frame, tag) contributes 0, so the
    score builds in recall. ``gt_tag_embeddings[tag]`` is the (n_ref x D) matrix of that tag's reference crops; the
    evaluated tags are its keys (every GT subject AND object word, whatever was conditioned). Returns NaN when there
    is no tag to evaluate (the official code would divide by zero).
    """
    tags = [t for t, e in gt_tag_embeddings.items() if e is not None and np.atleast_2d(e).shape[0] > 0]
    num_frames = len(frame_tag_embeddings) if num_frames is None else num_frames
    if not tags:
        return float("nan")
    if num_frames == 0:
        return 0.0
    total = 0.0
    for per_tag in frame_tag_embeddings:
        for tag in tags:
            emb = per_tag.get(tag)
            if emb is None:
                continue
            total += float(cosine_matrix(np.atleast_2d(emb), gt_tag_embeddings[tag]).mean())
    return total / (num_frames * len(tags))


def face_similarity(face_embeddings: np.ndarray, gt_face_embeddings: np.ndarray, num_frames: int) -> float:
    """Face-S of one video: mean of the (n_detected x n_gt) cosine matrix x (frames with a face / num_frames).

    ``face_embeddings`` holds one row per generated frame in which a face was detected (the highest-confidence
    face). No detected face gives 0. Returns NaN when the video has no ground-truth face (not in face mode).
    """
    gt_face_embeddings = np.atleast_2d(gt_face_embeddings) if len(gt_face_embeddings) else np.zeros((0, 0))
    if gt_face_embeddings.shape[0] == 0:
        return float("nan")
    face_embeddings = np.atleast_2d(face_embeddings) if len(face_embeddings) else np.zeros((0, 0))
    n_detected = face_embeddings.shape[0]
    if n_detected == 0 or num_frames == 0:
        return 0.0
    return float(cosine_matrix(face_embeddings, gt_face_embeddings).mean()) * (n_detected / num_frames)


# ----------------------------------------------------------------------------------------------------------------
# dynamic degree


def dynamic_interval(fps: float) -> int:
    """Temporal subsampling step: round(fps / 8) (Python's round, i.e. banker's rounding, as in the official code).

    Deliberate difference: the official code crashes (``range`` step 0) for fps < 4; we use at least 1.
    """
    return max(1, round(float(fps) / 8))


def dynamic_sample_indices(num_frames: int, fps: float) -> list[int]:
    """Indices of the frames kept for Dync-D among the first ``num_frames``: every round(fps/8)-th frame."""
    return list(range(0, num_frames, dynamic_interval(fps)))


def dynamic_threshold(height_px: int, width_px: int) -> float:
    """Motion threshold of one pair: 6.0 * min(H, W) / 256 (6.75 at 512x288)."""
    return 6.0 * (min(height_px, width_px) / 256.0)


def flow_pair_score(flow: np.ndarray) -> float:
    """Mean of the top 5 % optical-flow magnitudes of one frame pair; cut = int(H * W * 0.05).

    ``flow`` is (H, W, 2) in pixels. When the frame is so small that cut is 0 the official code takes the mean of an
    empty slice (NaN, which never exceeds the threshold); we return 0.0, which counts the same.

    The arithmetic stays in the flow's own float type, as the official ``get_score`` does on RAFT's float32 flow
    (sqrt, sort and ``np.mean`` all in float32), so a score next to the threshold falls on the same side.
    """
    flow = np.asarray(flow)
    if flow.dtype not in (np.float32, np.float64):
        flow = flow.astype(np.float64)
    rad = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1]))
    h, w = rad.shape
    cut = int(h * w * 0.05)
    if cut == 0:
        return 0.0
    # the official expression verbatim: a contiguous descending array, so np.mean sums in the same order
    return float(np.mean(np.abs(np.sort(-rad.ravel()))[:cut]))


def is_dynamic(pair_scores: Sequence[float], threshold: float, num_sampled_frames: int) -> bool:
    """True when at least round(num_sampled_frames / 4) pair scores are strictly above ``threshold``.

    Mirrors ``check_move``: the count is tested inside the loop, so with no pair at all (one sampled frame) the video
    is static, while with count_num = 0 and at least one pair it is dynamic.
    """
    count_num = round(num_sampled_frames / 4.0)
    count = 0
    for score in pair_scores:
        if score > threshold:
            count += 1
        if count >= count_num:
            return True
    return False


def dynamic_degree(pair_scores: Sequence[float], height_px: int, width_px: int) -> int:
    """Dync-D of one video (0 or 1) from the per-pair top-5 % flow scores of its subsampled frames."""
    return int(is_dynamic(pair_scores, dynamic_threshold(height_px, width_px), len(pair_scores) + 1))


def dynamic_degree_from_flows(flows: Sequence[np.ndarray], height_px: int, width_px: int) -> int:
    """Dync-D of one video from the optical flows between consecutive subsampled frames."""
    return dynamic_degree([flow_pair_score(f) for f in flows], height_px, width_px)


# ----------------------------------------------------------------------------------------------------------------
# preprocessing (exact semantics of the official transforms)


@functools.lru_cache(maxsize=8)
def _normalize_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 [3, 256]: every uint8 value of every channel through ``ToTensor`` then ``Normalize``, computed with the
    very same float32 torch ops (x.float() / 255, then - mean, then / std), so a lookup gives bit-identical values."""
    import torch

    x = torch.arange(256, dtype=torch.uint8).view(1, 256).expand(3, 256).float().div(255.0)
    x = x.sub(torch.tensor(mean).view(3, 1)).div(torch.tensor(std).view(3, 1))
    return x.contiguous().numpy()


def normalize_batch(
    images: list[np.ndarray] | np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W]: ``ToTensor`` (x / 255) then ``Normalize`` ((x - mean) / std).

    A uint8 channel has only 256 values, so the two float passes over the batch are replaced by one table lookup
    per channel (:func:`_normalize_lut`, same float32 ops, same bits) written straight into the CHW output.
    """
    if len(images) == 0:
        return np.zeros((0, 3, ENCODER_SIZE_PX, ENCODER_SIZE_PX), np.float32)
    first = np.asarray(images[0])
    if first.dtype != np.uint8:  # not an image straight from PIL: the plain float ops
        import torch

        x = torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float().div_(255.0)
        x.sub_(torch.tensor(mean).view(1, 3, 1, 1)).div_(torch.tensor(std).view(1, 3, 1, 1))
        return x.contiguous().numpy()
    lut = _normalize_lut(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    out = np.empty((len(images), 3, *first.shape[:2]), np.float32)
    for i, img in enumerate(images):
        img = np.asarray(img)
        for c in range(3):
            np.take(lut[c], img[:, :, c], out=out[i, c])
    return out


def center_crop_short_side(frame: np.ndarray) -> np.ndarray:
    """Square centre crop on the short side, with torchvision ``center_crop``'s rounding of the offsets."""
    h, w = frame.shape[:2]
    s = min(h, w)
    top = int(round((h - s) / 2.0))
    left = int(round((w - s) / 2.0))
    return frame[top : top + s, left : left + s]


def clip_resize(frame: np.ndarray) -> np.ndarray:
    """Centre crop to a square on the short side, then 224x224 PIL bicubic (uint8 RGB out).

    ``pil_to_tensor_clip`` converts to RGB (dropping alpha), centre-crops, resizes; cropping the uint8 array first is
    the same pixels, and saves a PIL round trip per frame.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    image = Image.fromarray(np.ascontiguousarray(center_crop_short_side(frame[:, :, :3]), dtype=np.uint8))
    return np.asarray(image.resize((ENCODER_SIZE_PX, ENCODER_SIZE_PX), Image.BICUBIC))


def clip_preprocess_batch(frames: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Many frames for CLIP (see :func:`clip_preprocess`): float32 [N, 3, 224, 224]."""
    return normalize_batch([clip_resize(f) for f in frames], CLIP_MEAN, CLIP_STD)


def clip_preprocess(frame: np.ndarray) -> np.ndarray:
    """A generated or GT frame for CLIP: centre crop to a square on the short side, 224x224 bicubic, CLIP mean/std.

    ``frame`` is HxWx3 (or HxWx4: transparency dropped, as ``pil_maybe_remove_transparency``) uint8 RGB.
    Returns float32 (3, 224, 224).
    """
    return clip_preprocess_batch([frame])[0]


def dino_resize(rgb: np.ndarray) -> np.ndarray:
    """Pad to a white square (:func:`~alchemist_data.benchmark_rules.pad_to_square`), then 224x224 PIL bicubic
    (uint8 RGB out)."""
    image = Image.fromarray(R.pad_to_square(np.ascontiguousarray(rgb, dtype=np.uint8)[:, :, :3]))
    return np.asarray(image.resize((ENCODER_SIZE_PX, ENCODER_SIZE_PX), Image.BICUBIC))


def dino_preprocess_rgb(rgb: np.ndarray) -> np.ndarray:
    """An RGB subject image (already white outside the mask) for DINO: pad to white square, 224 bicubic, ImageNet."""
    return normalize_batch([dino_resize(rgb)], IMAGENET_MEAN, IMAGENET_STD)[0]


def dino_preprocess_rgba(rgba: np.ndarray) -> np.ndarray:
    """A reference crop (RGBA, alpha = mask) for DINO: white where alpha == 0 -> white square -> 224 bicubic ->
    ImageNet (``add_white_background`` then ``pil_to_tensor(square_mode="padding")``)."""
    return dino_preprocess_rgb(R.white_where_alpha_zero(rgba))


def dino_preprocess_masked(frame: np.ndarray, box_xyxy: Sequence[int], box_mask: np.ndarray) -> np.ndarray:
    """Generated-frame subject for DINO (``load_subject_image_dino``: crop, white outside the mask, white square,
    224 bicubic, ImageNet)."""
    return dino_preprocess_rgb(R.masked_subject_crop(frame, box_xyxy, box_mask))


def face_preprocess(crop_rgb: np.ndarray) -> np.ndarray:
    """A face crop for ArcFace: ``cv2.resize`` to 112x112 (aspect not kept, bilinear), then (x/255 - 0.5)/0.5."""
    resized = cv2.resize(np.ascontiguousarray(crop_rgb[:, :, :3]), (FACE_SIZE_PX, FACE_SIZE_PX))
    arr = resized.astype(np.float32).transpose(2, 0, 1)
    return (arr / 255.0 - 0.5) / 0.5


def nanmean(values: Sequence[float]) -> float | None:
    """Mean ignoring NaN/None; None when nothing is left (a metric that does not apply to any video)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else None
