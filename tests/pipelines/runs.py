"""Reading curated runs back in the pipeline tests."""

import pyarrow as pa

from alchemist_data import catalog

#: The columns that identify a row of each curated table: sorted by them, two runs' tables line up row for row.
TABLE_KEYS = {
    "clips": ["clip_id"],
    "entities": ["clip_id", "entity_word", "frame_index"],
    "backgrounds": ["clip_id"],
    "rejects": ["clip_id"],
    "shots": ["clip_id", "shot_index"],
}


def sorted_table(run, name: str) -> pa.Table:
    """Table ``name`` of the run at ``run`` (a path or URI), in the order of its TABLE_KEYS."""
    return catalog.read_table(run, name).sort_by([(k, "ascending") for k in TABLE_KEYS[name]])
