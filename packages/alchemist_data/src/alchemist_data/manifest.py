"""Read the curation input: a manifest of captioned videos (JSONL, CSV or Parquet, chosen by file extension).

Columns (contract):

* ``video`` (required): a path relative to the manifest's folder, an absolute path, or a URI that a pyarrow
  filesystem opens (``s3://bucket/clip.mp4``, ``gs://...``, ``file:///...``). Relative paths are resolved here, so
  every later stage sees a path that works from any working directory or Ray worker on the same filesystem.
* ``caption`` (required): the clip's caption. Nulls become ``""``; the entities stage rejects empty captions with
  a reason instead of the whole job failing here.
* ``start_s``, ``end_s`` (optional): the clip's window inside the video in seconds from its first frame; null means
  the start / the end of the video.
* ``clip_id`` (optional): when absent or null, a deterministic id: the first 16 hex digits of the SHA-1 of
  ``video``, ``start_s`` and ``end_s``, so re-running on the same manifest gives the same ids.

Other columns are ignored. Duplicate clip ids are kept: the runner rejects later occurrences with a reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from pathlib import Path
from typing import Any

import pyarrow as pa

from alchemist_data.schema import CLIPS

REQUIRED_COLUMNS = {
    "video": "the video file: a path relative to the manifest's folder, an absolute path, or a URI (s3://...)",
    "caption": "the clip's text caption",
}
OPTIONAL_COLUMNS = {
    "start_s": "clip start in seconds (null = start of the video)",
    "end_s": "clip end in seconds (null = end of the video)",
    "clip_id": "unique id of the clip (default: sha1 of video + start_s + end_s, 16 hex digits)",
}
# The clips table's columns, except that the window may be open (null = the start / the end of the video).
MANIFEST_SCHEMA = pa.schema(
    [CLIPS.field(name) for name in ("clip_id", "video", "caption")]
    + [CLIPS.field(name).with_nullable(True) for name in ("start_s", "end_s")]
)
# What a CSV column is read as and a Parquet column cast to.
_COLUMN_TYPES = {f.name: f.type for f in MANIFEST_SCHEMA}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the file and what to fix."""


def clip_id_for(video: str, start_s: float | None, end_s: float | None) -> str:
    """The default clip id: stable across runs and machines for the same resolved video and window."""
    parts = [video, "" if start_s is None else repr(float(start_s)), "" if end_s is None else repr(float(end_s))]
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _format_of(path: str) -> str:
    name = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    ext = os.path.splitext(name)[1]
    if ext not in _FORMATS:
        raise ManifestError(
            f"manifest {path}: unsupported file type {ext or '(no extension)'!r}; use .jsonl (one JSON object per "
            "line), .csv or .parquet (optionally compressed as .gz, e.g. manifest.jsonl.gz)"
        )
    return _FORMATS[ext]


def _columns_help() -> str:
    lines = [f"  {k} (required): {v}" for k, v in REQUIRED_COLUMNS.items()]
    lines += [f"  {k} (optional): {v}" for k, v in OPTIONAL_COLUMNS.items()]
    return "\n".join(lines)


def _open_stream(path: str) -> Any:
    """A readable binary stream for a local path or a URI, decompressed by extension."""
    if "://" in path:
        from pyarrow import fs as pafs

        filesystem, inner = pafs.FileSystem.from_uri(path)
        compression = pa.Codec.detect(inner).name if any(inner.endswith(s) for s in _COMPRESSION_SUFFIXES) else None
        return filesystem.open_input_stream(inner, compression=compression)
    return pa.input_stream(path)  # compression detected from the extension


def _read_jsonl(path: str) -> tuple[pa.Table, list[str], int]:
    rows: list[dict[str, Any]] = []
    with _open_stream(path) as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path}: not UTF-8 text ({exc})") from exc
    stripped = text.lstrip()
    if stripped.startswith("["):
        # A plain JSON array of objects is accepted too (common when the manifest is written by hand).
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path}: invalid JSON ({exc})") from exc
        rows = loaded if isinstance(loaded, list) else []
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(
                    f"manifest {path}, line {lineno}: invalid JSON ({exc.msg}); each line must be one JSON object "
                    'such as {"video": "a.mp4", "caption": "A dog runs."}'
                ) from exc
            rows.append(obj)
    for i, obj in enumerate(rows, start=1):
        if not isinstance(obj, dict):
            raise ManifestError(f"manifest {path}, record {i}: expected a JSON object, got {type(obj).__name__}")
    names: dict[str, None] = {}
    for obj in rows:
        for key in obj:
            names.setdefault(key, None)
    wanted = [n for n in names if n in REQUIRED_COLUMNS or n in OPTIONAL_COLUMNS]
    columns = {}
    for n in wanted:
        dtype = _column_type(n, rows, path)  # validates (and normalises numeric ids) before conversion
        columns[n] = pa.array([obj.get(n) for obj in rows], type=dtype)
    return pa.table(columns), list(names), len(rows)


def _column_type(name: str, rows: list[dict[str, Any]], path: str) -> pa.DataType:
    if name in ("start_s", "end_s"):
        for i, obj in enumerate(rows, start=1):
            v = obj.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ManifestError(
                    f"manifest {path}, record {i}: {name} must be a number of seconds or null, got {v!r}"
                )
        return pa.float64()
    for i, obj in enumerate(rows, start=1):
        v = obj.get(name)
        if v is not None and not isinstance(v, str):
            if name == "clip_id" and isinstance(v, int) and not isinstance(v, bool):
                continue  # numeric ids are common; they are turned into strings below
            raise ManifestError(f"manifest {path}, record {i}: {name} must be a string, got {v!r}")
    if name == "clip_id":
        for obj in rows:
            if isinstance(obj.get(name), int):
                obj[name] = str(obj[name])
    return pa.string()


def _read_csv(path: str) -> tuple[pa.Table, list[str], int]:
    from pyarrow import csv as pacsv

    try:
        with _open_stream(path) as stream:
            # Empty cells of the time columns are nulls; an empty caption stays "" (rejected later with a reason).
            table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(column_types=_COLUMN_TYPES))
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return pa.table({}), [], 0
        raise ManifestError(f"manifest {path}: cannot parse as CSV with a header row ({exc})") from exc
    names = table.column_names
    keep = [n for n in names if n in REQUIRED_COLUMNS or n in OPTIONAL_COLUMNS]
    return table.select(keep), names, table.num_rows


def _read_parquet(path: str) -> tuple[pa.Table, list[str], int]:
    import pyarrow.parquet as pq

    try:
        if "://" in path:
            from pyarrow import fs as pafs

            filesystem, inner = pafs.FileSystem.from_uri(path)
            pf = pq.ParquetFile(filesystem.open_input_file(inner))
        else:
            pf = pq.ParquetFile(path)
        all_names = list(pf.schema_arrow.names)
        names = [n for n in all_names if n in REQUIRED_COLUMNS or n in OPTIONAL_COLUMNS]
        table = pf.read(columns=names)
        num_rows = pf.metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {path}: not a readable Parquet file ({exc})") from exc
    for name in table.column_names:
        col = table.column(name)
        if col.type != _COLUMN_TYPES[name]:
            try:
                table = table.set_column(table.column_names.index(name), name, col.cast(_COLUMN_TYPES[name]))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ManifestError(
                    f"manifest {path}: column {name} has type {col.type}, expected {_COLUMN_TYPES[name]} ({exc})"
                ) from exc
    return table, all_names, num_rows


def _manifest_dir(path: str) -> str:
    if "://" in path:
        return path.rsplit("/", 1)[0]
    return str(Path(path).expanduser().resolve().parent)


def resolve_video(video: str | None, base_dir: str) -> str:
    """A manifest ``video`` entry made usable from anywhere: URIs and absolute paths unchanged, relative ones joined
    to the manifest's folder (``base_dir``: a local folder or a URI prefix)."""
    if not video:
        return ""  # kept: the probe stage rejects it as missing_file with the row's id
    if "://" in video:
        return video
    if "://" in base_dir:
        scheme, rest = base_dir.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, video))}"
    expanded = os.path.expanduser(video)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return os.path.normpath(os.path.join(base_dir, expanded))


def read_manifest(path: str | os.PathLike) -> pa.Table:
    """Read and validate a manifest; returns a table with MANIFEST_SCHEMA (clip_id, video, caption, start_s, end_s).

    Fails with :class:`ManifestError` before any work when the file is missing, of an unknown type, unparsable,
    empty, or lacks a required column.
    """
    path = os.fspath(path)
    fmt = _format_of(path)
    if "://" in path:
        from alchemist_data.storage import StorageError, check_readable_file

        try:
            check_readable_file(path, "manifest")  # a missing object, bucket or credentials: say so before any work
        except StorageError as err:
            raise ManifestError(str(err)) from err
    elif not Path(path).expanduser().is_file():
        raise ManifestError(f"manifest {path} does not exist (give the path of a .jsonl, .csv or .parquet file)")
    path_local = str(Path(path).expanduser()) if "://" not in path else path
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[fmt]
    table, found_names, num_rows = reader(path_local)
    if num_rows == 0:
        raise ManifestError(
            f"manifest {path} has no rows: add one row per clip, e.g. the JSONL line "
            '{"video": "videos/a.mp4", "caption": "A man walks a dog in a park."}'
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        found = ", ".join(found_names) or "none"
        raise ManifestError(
            f"manifest {path} lacks the required column(s) {', '.join(missing)} (found: {found}).\n"
            f"Columns of a manifest:\n{_columns_help()}"
        )
    base_dir = _manifest_dir(path_local)
    n = table.num_rows
    videos = [resolve_video(v, base_dir) for v in table.column("video").to_pylist()]
    captions = ["" if c is None else c for c in table.column("caption").to_pylist()]
    starts = _times(table, "start_s", n)
    ends = _times(table, "end_s", n)
    given_ids = table.column("clip_id").to_pylist() if "clip_id" in table.column_names else [None] * n
    ids = [
        str(cid) if cid not in (None, "") else clip_id_for(v, s, e)
        for cid, v, s, e in zip(given_ids, videos, starts, ends, strict=True)
    ]
    return pa.table(
        {
            "clip_id": ids,
            "video": videos,
            "caption": captions,
            "start_s": pa.array(starts, pa.float64()),
            "end_s": pa.array(ends, pa.float64()),
        },
        schema=MANIFEST_SCHEMA,
    )


def _times(table: pa.Table, name: str, n: int) -> list[float | None]:
    if name not in table.column_names:
        return [None] * n
    values = table.column(name).to_pylist()
    # NaN (pandas' null) means "not given", like a null.
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]


def write_manifest(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write rows (dicts with at least video and caption) as JSONL; the format :func:`read_manifest` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
