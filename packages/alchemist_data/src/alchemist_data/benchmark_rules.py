"""The MSRVTT-Personalization benchmark's rules, each written once, for curation and evaluation (spec §2.3-2.4, §7.3).

Curation (the grounding, segmentation, faces, crops and background stages) and the benchmark (its preparation and
the Subj-S / Face-S scorer) call these functions, so a reference curated here is cut the way the benchmark cuts it.
Where curation deliberately differs, the difference is a named parameter (``allow_empty_box``), never a second copy.

Each function names the official code it mirrors, from snap-research/MSRVTT-Personalization (byte-identical to
tsaishien-chen/VideoAlchemy):

* ``evaluation_protocol/evaluation/metrics/distributed_subject_dino_similarity.py``: ``get_grounding_output``
  (:func:`grounding_caption`, :func:`tag_token_positions`, :func:`select_boxes`), ``get_sam_output`` and the
  box/mask validity check (:func:`mask_drop_reason`, :func:`is_valid_mask_for_box`), ``load_subject_image_dino``
  (:func:`masked_subject_crop`, :func:`pad_to_square`);
* ``evaluation_protocol/evaluation/metrics/distributed_arcface_similarity.py``: ``detect_face_crops``
  (:func:`extend_face_box`) and ``face_crop_112x112_arcface`` (:func:`face_crop`);
* ``msrvtt_personalization/prepare_msrvtt_personalization_data.py``: the RGBA reference crops (:func:`rgba_crop`)
  and the background's foreground mask (:func:`paste_box_mask`, :func:`foreground_mask`);
* ``msrvtt_personalization/prepare_msrvtt_personalization_embeddings.py``: ``add_white_background``
  (:func:`white_where_alpha_zero`) and ``pil_to_tensor(square_mode="padding")`` (:func:`pad_to_square`).

Everything here works on numpy arrays. :func:`select_boxes` computes in torch, imported when it is called, because
the benchmark's float32 reductions must be reproduced bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Box = Sequence[int] | Sequence[float]

#: Per-channel RGB normalisation of the encoders' inputs: CLIP's and ImageNet's (DINO, DINOv2), as the benchmark's
#: ``transforms.py`` applies them; the model's reference-image encoders take the same inputs.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------------------------
# GroundingDINO: one box per entity word


def grounding_caption(tags: Sequence[str]) -> str:
    """The benchmark's text prompt: ``" . ".join(tags).lower().strip()`` plus a final "." if missing.

    The benchmark appends "." without a space ("man . dog."); BERT tokenises "dog." and "dog ." identically.
    """
    prompt = " . ".join(tags).lower().strip()
    if not prompt.endswith("."):
        prompt += "."
    return prompt


def _find_sublist_mask(main: list[int], sub: list[int]) -> list[bool]:
    # ``find_sublist_indices``: EVERY occurrence of the tag's token ids is marked, including one inside another tag
    # (tags "man" and "old man" both claim the "man" token of "old man").
    mask = [False] * len(main)
    n = len(sub)
    if n == 0:
        return mask
    for i in range(len(main) - n + 1):
        if main[i : i + n] == sub:
            mask[i : i + n] = [True] * n
    return mask


def tag_token_positions(tokenizer: Any, tags: Sequence[str]) -> tuple[str, list[list[int]]]:
    """Caption text and, per tag, the positions of its BERT tokens in the tokenised caption.

    As in the benchmark, each tag is tokenised on its own (``[CLS]``/``[SEP]`` removed) and matched as a sub-list of
    the caption's token ids (which start with ``[CLS]`` at position 0). The tokenizer lower-cases (uncased BERT).
    """
    if not tags:
        raise ValueError("tags is empty: give at least one entity word to ground")
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"tag {tag!r} is empty: every entity word must contain text")
    caption = grounding_caption(tags)
    caption_ids = list(tokenizer(caption)["input_ids"])
    positions = []
    for tag in tags:
        tag_ids = list(tokenizer(tag)["input_ids"])[1:-1]  # drop [CLS] / [SEP]
        mask = _find_sublist_mask(caption_ids, tag_ids)
        positions.append([i for i, m in enumerate(mask) if m])
    return caption, positions


def select_boxes(
    probs: Any,
    boxes_cxcywh: Any,
    tag_token_positions: Sequence[Sequence[int]],
    image_wh: tuple[int, int],
    box_threshold: float = 0.4,
) -> dict[int, tuple[list[int], float]]:
    """The benchmark's per-tag box selection for one image (``get_grounding_output``).

    ``probs``: ``[Q, L]`` sigmoid of GroundingDINO's ``pred_logits``; ``boxes_cxcywh``: ``[Q, 4]`` normalised
    ``pred_boxes`` (numpy arrays or torch tensors). Returns ``{tag_index: (xyxy ints, score)}`` for the tags that
    pass, in tag order. Exactly as in the benchmark code:

    * score(query, tag) = ``(max + mean) / 2`` over the tag's token positions (the max is taken over the whole row
      with the other positions zeroed, which is the same since sigmoid > 0);
    * each query goes to its argmax tag (first tag on ties); each tag keeps its highest-scoring query (first query
      on ties; it starts from score 0, so a tag needs a score > 0 to get a box at all);
    * the tag is kept if score > ``box_threshold``;
    * box = cxcywh * (W, H, W, H) in float32, converted to xyxy, then ``.int()`` (truncation toward zero, not
      rounding; boxes are not clipped to the image).

    Token positions beyond ``L`` (captions longer than GroundingDINO's 256 tokens) are ignored.
    """
    import torch

    logits = torch.as_tensor(probs, dtype=torch.float32).cpu()
    boxes = torch.as_tensor(boxes_cxcywh, dtype=torch.float32).cpu()
    if logits.ndim != 2 or boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != logits.shape[0]:
        raise ValueError(
            f"probs must be [Q, L] and boxes_cxcywh [Q, 4] with the same Q; got {tuple(logits.shape)} and "
            f"{tuple(boxes.shape)}"
        )
    num_query, seq_len = logits.shape
    num_tags = len(tag_token_positions)
    if num_tags == 0 or num_query == 0:
        return {}
    W, H = image_wh

    scores = []
    for t, positions in enumerate(tag_token_positions):
        token_mask = torch.zeros(seq_len, dtype=torch.bool)
        pos = [p for p in positions if 0 <= p < seq_len]
        if not pos:
            raise ValueError(
                f"tag #{t} has no token positions inside the first {seq_len} text tokens; the caption is too long "
                "or the tag did not tokenise (see tag_token_positions)"
            )
        token_mask[pos] = True
        masked = logits * token_mask
        score_max = torch.max(masked, dim=1).values
        score_avg = torch.sum(masked, dim=1) / torch.sum(token_mask)
        scores.append((score_max + score_avg) / 2)
    score_query_tag = torch.stack(scores).T  # (Q, T)
    query_tag = torch.max(score_query_tag, dim=1).indices  # (Q,)

    out: dict[int, tuple[list[int], float]] = {}
    for t in range(num_tags):
        # Vectorised form of the benchmark's loop: `if best_score < score: best = (query, score)` starting at
        # (None, 0) -> the first query with the maximum score, and only if that score is > 0.
        cand = torch.where(query_tag == t, score_query_tag[:, t], torch.full_like(score_query_tag[:, t], -1.0))
        best = int(torch.argmax(cand))
        score = cand[best]
        if not bool(score > 0) or not bool(score > box_threshold):
            continue
        box = boxes[best] * torch.tensor([W, H, W, H], dtype=torch.float32)
        box[:2] -= box[2:] / 2
        box[2:] += box[:2]
        out[t] = (box.int().tolist(), float(score))
    return out


# ---------------------------------------------------------------------------------------------------------------
# SAM masks: which are kept


def crop_to_box(array: np.ndarray, box_xyxy: Box) -> np.ndarray:
    """``array[y0:y1, x0:x1]``: the benchmark's plain numpy slice (negative starts wrap around, overhangs are cut)."""
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    return np.asarray(array)[y0:y1, x0:x1]


def is_valid_mask_for_box(
    mask: np.ndarray, box_xyxy: Box, tolerance_px: int = 3, allow_empty_box: bool = True
) -> bool:
    """The benchmark's check that the full-frame ``mask`` cropped to the box has the box's size, at most
    ``tolerance_px`` short on ONE side (``accumulate_stats`` of Subj-S).

    Verbatim: ``m = mask[y0:y1, x0:x1]`` (:func:`crop_to_box`), valid iff
    ``(m.h == box_h and box_w - 3 <= m.w <= box_w) or (m.w == box_w and box_h - 3 <= m.h <= box_h)``. This rejects
    boxes that run off the image by more than the tolerance, and most boxes with a negative start.

    ``allow_empty_box``: the benchmark passes a box whose crop has no pixels (``x0 == x1`` after truncation of a
    sub-pixel box: 0 == 0) and scores it with an all-white subject image (:func:`masked_subject_crop`). Curation
    passes False: an empty reference crop is useless for training and cannot be stored.
    """
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    box_h, box_w = y1 - y0, x1 - x0
    mask_h, mask_w = crop_to_box(mask, (x0, y0, x1, y1)).shape[:2]
    t = int(tolerance_px)
    fits = (mask_h == box_h and box_w - t <= mask_w <= box_w) or (mask_w == box_w and box_h - t <= mask_h <= box_h)
    return bool(fits and (allow_empty_box or (mask_h > 0 and mask_w > 0)))


def mask_drop_reason(
    iou_score: float,
    mask: np.ndarray,
    box_xyxy: Box,
    iou_threshold: float = 0.9,
    tolerance_px: int = 3,
    allow_empty_box: bool = True,
) -> str | None:
    """Why SAM's mask for a box is dropped, or None when it is kept: both benchmark filters, in its order.

    ``"low_mask_iou"``: SAM's predicted IoU is not > ``iou_threshold`` (``get_sam_output``); ``"invalid_box"``: the
    benchmark's validity check fails (:func:`is_valid_mask_for_box`); ``"empty_box"``: the box passes the benchmark
    but its crop has no pixels and ``allow_empty_box`` is False (curation).
    """
    if not iou_score > iou_threshold:
        return "low_mask_iou"
    if not is_valid_mask_for_box(mask, box_xyxy, tolerance_px):
        return "invalid_box"
    if not allow_empty_box and not is_valid_mask_for_box(mask, box_xyxy, tolerance_px, allow_empty_box=False):
        return "empty_box"
    return None


def paste_box_mask(box_mask: np.ndarray, box_xyxy: Box, shape: tuple[int, ...]) -> np.ndarray:
    """A box-cropped mask (the annotation's and the ``mask_png`` form) back in a frame of ``shape`` (H, W[, C]).

    ``full[y0:y1, x0:x1] = box_mask`` as the benchmark's background step does, with the mask cut or padded (False)
    to the slice's shape, since a stored mask is sometimes larger than its slice of the frame.
    """
    full = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    target = crop_to_box(full, box_xyxy)  # a view: writing into it writes into ``full``
    m = np.asarray(box_mask, dtype=bool)
    if m.ndim == 3:
        m = m[..., 0]
    m = m[: target.shape[0], : target.shape[1]]
    target[: m.shape[0], : m.shape[1]] = m
    return full


def foreground_mask(
    masks: Sequence[np.ndarray],
    shape: tuple[int, ...],
    kernel_px: int = 4,
    iterations: int = 3,
    boxes: Sequence[Box] | None = None,
) -> np.ndarray:
    """The background step's foreground: union of the masks, ``cv2.dilate`` with a ``kernel_px`` x ``kernel_px`` ones
    kernel ``iterations`` times, then ``binary_fill_holes`` -> bool (H, W).

    ``shape``: the frame's (H, W[, C]); ``masks`` are full-frame (:func:`paste_box_mask` rebuilds them). With
    ``boxes``, each mask only counts inside its box, like the benchmark, whose stored masks are cropped to their boxes.
    """
    import cv2
    from scipy.ndimage import binary_fill_holes

    H, W = int(shape[0]), int(shape[1])
    union = np.zeros((H, W), dtype=bool)
    if boxes is not None and len(boxes) != len(masks):
        raise ValueError(f"got {len(masks)} masks but {len(boxes)} boxes; give one box per mask or none")
    for i, m in enumerate(masks):
        m = np.asarray(m).astype(bool)
        if m.shape != (H, W):
            raise ValueError(f"mask #{i} has shape {m.shape}, expected the frame's {(H, W)}")
        if boxes is not None:
            x0, y0, x1, y1 = (max(int(v), 0) for v in boxes[i])
            inside = np.zeros_like(m)
            inside[y0:y1, x0:x1] = True
            m = m & inside
        union |= m
    if kernel_px > 0 and iterations > 0 and union.any():
        # cv2.dilate with an even kernel anchors at (k//2, k//2), i.e. grows slightly more up/left: kept as is to
        # match the benchmark pixel for pixel.
        kernel = np.ones((kernel_px, kernel_px), np.uint8)
        union = cv2.dilate(union.astype(np.uint8), kernel, iterations=iterations) > 0
    return binary_fill_holes(union)


# ---------------------------------------------------------------------------------------------------------------
# reference and subject images


def rgba_crop(image: np.ndarray, box_mask: np.ndarray, box_xyxy: Box) -> np.ndarray:
    """A reference image as the benchmark stores it: the box slice of the RGB frame, alpha = 255 inside the mask.

    ``box_mask`` is the mask cropped to the box (the annotation's and ``mask_png``'s form). Like the benchmark, a
    mask larger than the slice is cut to the slice's shape; a smaller one is padded with False. A box whose slice is
    empty is refused (the benchmark's ``Image.save`` fails on it).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {img.shape}")
    crop = crop_to_box(img, box_xyxy)
    if crop.size == 0:
        raise ValueError(f"box {list(box_xyxy)} has no pixels inside the {img.shape[1]}x{img.shape[0]} image")
    alpha = paste_box_mask(box_mask, (0, 0, crop.shape[1], crop.shape[0]), crop.shape).astype(np.uint8) * 255
    return np.concatenate([crop.astype(np.uint8), alpha[..., None]], axis=2)


def white_where_alpha_zero(rgba: np.ndarray) -> np.ndarray:
    """RGBA -> RGB with the fully transparent pixels (alpha == 0 exactly) set to white, the rest kept as they are,
    even when partly transparent (``add_white_background``; no alpha compositing)."""
    rgba = np.array(rgba, dtype=np.uint8, copy=True)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected an HxWx4 RGBA image, got shape {rgba.shape}")
    rgba[rgba[:, :, 3] == 0] = 255
    return rgba[:, :, :3]


def pad_to_square(image: np.ndarray, fill: int = 255) -> np.ndarray:
    """Pad to a square of side max(h, w) filled with ``fill`` (white), the image pasted where the benchmark's PIL
    ``paste`` puts it: ``(0, (w - h) // 2)`` when wide, ``((h - w) // 2, 0)`` when tall.

    HxW, HxWx3 and HxWx4 work; RGBA padding is transparent. An empty side gives a square of ``fill`` only, and
    a 0x0 image stays 0x0 (PIL then resizes it to black, as the benchmark's transform does).
    """
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    if h == w:
        return arr.copy()
    side = max(h, w)
    out = np.full((side, side, *arr.shape[2:]), fill, dtype=arr.dtype)
    if arr.ndim == 3 and arr.shape[2] == 4:
        out[..., 3] = 0
    top, left = ((side - h) // 2, 0) if w > h else (0, (side - w) // 2)
    out[top : top + h, left : left + w] = arr
    return out


def masked_subject_crop(frame: np.ndarray, box_xyxy: Box, box_mask: np.ndarray) -> np.ndarray:
    """The segmented subject of a generated frame (``load_subject_image_dino``): the box slice of the frame, white
    outside the mask (``mask * crop + (1 - mask) * 255``). Pad it with :func:`pad_to_square` before resizing.

    ``box_mask`` is SAM's mask cropped to the box (:func:`crop_to_box`), so it has the slice's shape; any other
    shape is cut or padded (False) to it. An empty box gives an empty crop, which the square padding turns white.
    """
    crop = crop_to_box(frame, box_xyxy)[:, :, :3]
    mask = paste_box_mask(box_mask, (0, 0, crop.shape[1], crop.shape[0]), crop.shape)
    return np.where(mask[..., None], crop, np.uint8(255)).astype(np.uint8)


def extend_face_box(box_xyxy: Box, W: int, H: int) -> list[int]:
    """The benchmark's face-box extension (``detect_face_crops``): the top goes up by 17 % of the box height, then the
    bottom down by 3 % of the NEW height; no width change.

    Exactly ``y0' = max(int(y0 - 0.17 * (y1 - y0)), 0)`` and ``y1' = min(int(y1 + 0.03 * (y1 - y0')), H - 1)``
    (``int`` truncates; the bottom clip is ``H - 1`` as in the benchmark). x is only clamped to ``[0, W]``, a no-op
    for the benchmark's boxes, which YOLO's ``scale_boxes`` already clipped.
    """
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    new_y0 = max(int(y0 - 0.17 * (y1 - y0)), 0)
    new_y1 = min(int(y1 + 0.03 * (y1 - new_y0)), H - 1)
    return [min(max(x0, 0), W), new_y0, min(max(x1, 0), W), new_y1]


def face_crop(frame: np.ndarray, box_xyxy: Box) -> np.ndarray:
    """The unmasked RGB crop of a face box (``face_crop_112x112_arcface``: a numpy slice; negative starts, which
    detector boxes clipped to the image never have, count from 0 rather than wrapping around)."""
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    return np.ascontiguousarray(np.asarray(frame)[max(y0, 0) : y1, max(x0, 0) : x1, :3])
