"""Table schemas of the curated dataset (contract).

Every writer passes these schemas explicitly; the DuckDB catalog, the model's shard reader and the benchmark
tables are all built from this module. It imports nothing but pyarrow so that any consumer can depend on it.

Conventions: units in column names (``_s``, ``_px``), booleans start ``is_``/``has_``, counts start ``num_``.
Boxes are ``[x0, y0, x1, y1]`` integer pixel coordinates in the reference frame (x1/y1 exclusive).
Images are stored as encoded bytes (PNG for anything with alpha or a mask, JPEG for the background plate).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.1"  # 1.1: the shots table; shot and motion columns in clips; source_clip_id in rejects

#: Fractions of the clip duration at which the reference frames are taken (spec §2.3).
REFERENCE_FRACTIONS: tuple[float, float, float] = (0.05, 0.50, 0.95)

#: Entity categories of spec §2.2.
CATEGORIES: tuple[str, str, str] = ("subject", "object", "background")

BOX = pa.list_(pa.int32())

#: A clip's or shot's time window in the source video, in seconds (end exclusive): one convention for both tables.
_TIME_WINDOW = [
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("duration_s", pa.float64(), nullable=False),
]

CLIPS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video", pa.string(), nullable=False),  # path or URI as resolved from the manifest
        pa.field("caption", pa.string(), nullable=False),
        *_TIME_WINDOW,
        pa.field("fps", pa.float64()),
        pa.field("width_px", pa.int32()),  # display size, after rotation metadata is applied
        pa.field("height_px", pa.int32()),
        pa.field("ref_times_s", pa.list_(pa.float64())),  # 3 times, at REFERENCE_FRACTIONS of the clip
        pa.field("subject_words", pa.list_(pa.string())),
        pa.field("object_words", pa.list_(pa.string())),
        pa.field("background_words", pa.list_(pa.string())),
        pa.field("num_entities_detected", pa.int32()),  # distinct subject/object words with at least one mask
        pa.field("has_random_models", pa.bool_()),  # grounding/segmentation ran with random weights
        pa.field("profile", pa.string()),
        pa.field("shard", pa.string()),
        # shots stage: the manifest row's clip id (equal to clip_id unless shots.mode=split cut it into clips)
        pa.field("source_clip_id", pa.string()),
        pa.field("shot_index", pa.int32()),  # which shot of the source this clip is (null when shots.mode=off)
        pa.field("num_shots_in_source", pa.int32()),  # shots TransNetV2 found in the source clip window
        # motion stage: mean of the top 5 % optical-flow magnitudes, in frame diagonals per frame (README, Motion
        # pre-filter); foreground_ = after removing the best-fit camera pan/zoom/rotation
        pa.field("motion_score", pa.float32()),
        pa.field("foreground_motion_score", pa.float32()),
        pa.field("video_class", pa.string()),  # VideoMAE classifier label (UNDESIRABLE_CLASSES or "ok"), if run
        pa.field("video_class_score", pa.float32()),  # its softmax probability
    ]
)

ENTITIES = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("entity_word", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),  # subject | object
        pa.field("frame_index", pa.int8(), nullable=False),  # 0, 1, 2 = 5 %, 50 %, 95 %
        pa.field("frame_time_s", pa.float64(), nullable=False),
        pa.field("frame_width_px", pa.int32()),
        pa.field("frame_height_px", pa.int32()),
        pa.field("is_detected", pa.bool_(), nullable=False),  # passed grounding, SAM and the validity check
        pa.field(
            "drop_reason", pa.string()
        ),  # null when detected: no_box | low_box_score | low_mask_iou | invalid_box | empty_box
        pa.field("box_xyxy_px", BOX),
        pa.field("box_score", pa.float32()),
        pa.field("mask_iou_score", pa.float32()),
        pa.field("mask_area_frac", pa.float32()),  # mask pixels / frame pixels
        pa.field("mask_png", pa.binary()),  # 1-bit mask cropped to the box
        pa.field("crop_png", pa.binary()),  # RGBA box crop, alpha = mask
        pa.field("has_face", pa.bool_()),
        pa.field("face_box_xyxy_px", BOX),  # extended face box (spec §7.3), frame coordinates
        pa.field("face_score", pa.float32()),
        pa.field("face_crop_png", pa.binary()),  # RGB crop of the extended face box, unmasked
        pa.field("is_random_model", pa.bool_()),
    ]
)

BACKGROUNDS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("background_word", pa.string()),  # first background word of the caption, if any
        pa.field("frame_time_s", pa.float64(), nullable=False),  # the middle reference frame
        pa.field("width_px", pa.int32()),
        pa.field("height_px", pa.int32()),
        pa.field("foreground_area_frac", pa.float32()),  # area of the dilated, hole-filled foreground mask
        pa.field("inpaint_backend", pa.string()),
        pa.field("image_jpg", pa.binary()),  # inpainted middle frame
        pa.field("foreground_mask_png", pa.binary()),
    ]
)

REJECTS = pa.schema(
    [
        pa.field("video", pa.string()),
        pa.field("clip_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # machine-readable code
        pa.field("detail", pa.string()),  # human-readable explanation
        pa.field("caption", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("source_clip_id", pa.string()),  # the manifest row's clip id (differs from clip_id for split shots)
    ]
)

#: One row per shot TransNetV2 found in a source clip window (shots stage, modes filter and split). Frame indices
#: count from the video's first frame; end_frame is inclusive; start_s/end_s follow the time convention of the clips
#: table (end exclusive). A hard cut at frame k ends one shot at frame k-1 and starts the next at k.
SHOTS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # the source (manifest) clip id
        pa.field("video", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("num_shots", pa.int32(), nullable=False),  # shots in this source clip window
        *_TIME_WINDOW,
        pa.field("start_frame", pa.int64(), nullable=False),
        pa.field("end_frame", pa.int64(), nullable=False),
        # TransNetV2's transition probability at the cut that ends this shot (max over the cut's frames); null for
        # the window's last shot, which ends with the window
        pa.field("transnet_score", pa.float32()),
        # highest transition probability inside the shot (below the threshold by construction): how close the shot
        # came to being cut
        pa.field("max_inside_score", pa.float32()),
        pa.field("clip_ids", pa.list_(pa.string())),  # work rows made from this shot (find them in clips or rejects)
        pa.field("reject_reason", pa.string()),  # multi_shot (filter) | shot_too_short (split) | null
        pa.field("shard", pa.string()),
    ]
)

#: Undesirable-video classes of the paper's VideoMAE classifier (spec §2.1); its fifth label is "ok".
UNDESIRABLE_CLASSES: tuple[str, str, str, str] = (
    "still_foreground_image",
    "slight_motion",
    "screen_in_screen",
    "screen_recording",
)

#: Output tables, by folder name under the run directory.
TABLES: dict[str, pa.Schema] = {
    "clips": CLIPS,
    "entities": ENTITIES,
    "backgrounds": BACKGROUNDS,
    "rejects": REJECTS,
    "shots": SHOTS,
}

#: Precomputed training inputs (``alchemist encode``), one row per (clip, target size). It lives here, not in
#: alchemist_model, because the curation writer and catalog (which only know this module) write and read it; the
#: tensors are plain little-endian C-order bytes so no reader needs torch. Reference images are not stored: their
#: augmentations are random per training step.
LATENTS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("width_px", pa.int32(), nullable=False),  # target size the row was encoded at
        pa.field("height_px", pa.int32(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),  # 4k+1 frames at ``fps``
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),  # time of the window's first frame in the video
        pa.field("latent_dtype", pa.string()),  # float32 | bfloat16 | float16, for both tensors below
        pa.field("latent_shape", pa.list_(pa.int32())),  # (channels, frames, height, width) of the VAE latents
        pa.field("latents", pa.binary()),  # VAE posterior mean x scaling factor (deterministic)
        pa.field("caption", pa.string()),
        pa.field("num_text_tokens", pa.int32()),  # valid tokens of the truncated caption
        pa.field("text_dim", pa.int32()),
        pa.field("text_embeddings", pa.binary()),  # (num_text_tokens, text_dim) text-encoder output
        pa.field("entity_words", pa.list_(pa.string())),  # every word a reference of this clip can bind to
        pa.field("word_token_spans", pa.list_(pa.list_(pa.int32()))),  # per word [start, end) in text_embeddings;
        # null when the caption's truncation cut the word off: then ``word_tokens`` holds its tokens
        pa.field("word_tokens", pa.list_(pa.binary())),  # per word (k, text_dim) from an untruncated encoding, or null
        pa.field("error", pa.string()),  # null, or why the row has no tensors (e.g. the video no longer decodes)
        pa.field("shard", pa.string()),
    ]
)

LATENT_TABLES: dict[str, pa.Schema] = {"latents": LATENTS}


def table_schema(name: str) -> pa.Schema:
    """The schema of a curated table or of the latents table; ``ValueError`` naming the known ones otherwise."""
    known = {**TABLES, **LATENT_TABLES}
    if name not in known:
        raise ValueError(f"unknown table {name!r}; tables are {', '.join(known)}")
    return known[name]


def empty_table(name: str) -> pa.Table:
    """An empty table with the named schema."""
    return table_schema(name).empty_table()


def conform(table: pa.Table, name: str) -> pa.Table:
    """Cast/reorder ``table`` to the contract schema ``name`` (missing nullable columns become nulls).

    Raises ``ValueError`` naming the columns that are missing but not nullable or cannot be cast.
    """
    schema = table_schema(name)
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            try:
                columns.append(col.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(f"{name}.{field.name}: cannot cast {col.type} to {field.type}: {err}") from err
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"{name}: required column {field.name!r} is missing")
    return pa.Table.from_arrays(columns, schema=schema)
