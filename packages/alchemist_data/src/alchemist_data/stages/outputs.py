"""The output split: a finished work table becomes the contract tables of ``alchemist_data.schema``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from alchemist_data import schema

if TYPE_CHECKING:
    from alchemist_data.profiles import Profile


def split_outputs(table: pa.Table, profile: Profile) -> dict[str, pa.Table]:
    """Turn a finished work table into the contract tables (clips, entities, backgrounds, rejects, shots)."""
    clips, entities, backgrounds, rejects, shots = [], [], [], [], []
    random_models = profile.has_random_models
    for row in table.to_pylist():
        source = row.get("source_clip_id") or row["clip_id"]
        for shot in row.get("shots") or []:  # on the first row derived from each source (shots stage)
            shots.append({**shot, "clip_id": source, "video": row["video"], "shard": row["shard"]})
        if row["reject_reason"] is not None:
            rejects.append(
                {
                    "video": row["video"],
                    "clip_id": row["clip_id"],
                    "stage": row["reject_stage"],
                    "reason": row["reject_reason"],
                    "detail": row["reject_detail"],
                    "caption": row["caption"],
                    "shard": row["shard"],
                    "source_clip_id": source,
                }
            )
            continue
        dets = row.get("detections") or []
        clips.append(
            {
                **{k: row.get(k) for k in schema.CLIPS.names if k in row},
                "num_entities_detected": len({d["entity_word"] for d in dets if d["is_detected"]}),
                "has_random_models": random_models,
                "profile": profile.name,
                "source_clip_id": source,
            }
        )
        for d in dets:
            entities.append(
                {
                    **d,
                    "clip_id": row["clip_id"],
                    "frame_time_s": row["ref_times_s"][d["frame_index"]],
                    "frame_width_px": row["frame_width_px"],
                    "frame_height_px": row["frame_height_px"],
                    "is_random_model": random_models,
                }
            )
        if row.get("background_jpg") is not None:
            backgrounds.append(
                {
                    "clip_id": row["clip_id"],
                    "background_word": row["background_word"],
                    "frame_time_s": row["ref_times_s"][1],
                    "width_px": row["frame_width_px"],
                    "height_px": row["frame_height_px"],
                    "foreground_area_frac": row["foreground_area_frac"],
                    "inpaint_backend": profile.background.backend,
                    "image_jpg": row["background_jpg"],
                    "foreground_mask_png": row["foreground_mask_png"],
                }
            )
    out = {}
    named = {"clips": clips, "entities": entities, "backgrounds": backgrounds, "rejects": rejects, "shots": shots}
    for name, rows in named.items():
        sch = schema.TABLES[name]
        out[name] = pa.Table.from_pylist([{k: r.get(k) for k in sch.names} for r in rows], schema=sch)
    return out
