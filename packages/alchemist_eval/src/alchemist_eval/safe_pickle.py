"""A restricted unpickler for the benchmark's ``*.word_tags_masks.pkl.gz`` files.

The released annotations are pickles. ``pickle.load`` on a downloaded file runs whatever callable the file names
(``os.system`` and friends), so we only resolve an allow-list of globals: plain builtin containers, numbers and
strings, and what numpy needs to rebuild arrays and scalars. Anything else is refused *before* it is called, with
an error naming the global.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

_ALLOWED: dict[str, set[str]] = {
    "builtins": {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "bool",
        "complex",
        "slice",
        "range",
    },
    "collections": {"OrderedDict"},
    # protocols 0-2 write bytes (e.g. a numpy array's buffer) as _codecs.encode(str, "latin1"): pure data.
    "_codecs": {"encode"},
    # numpy arrays pickle as numpy.core.multiarray._reconstruct(ndarray, shape, dtype) + setstate; numpy >= 2 writes
    # numpy._core.multiarray; scalars pickle as numpy.core.multiarray.scalar(dtype, bytes).
    "numpy": {
        "ndarray",
        "dtype",
        "bool_",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    },
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
    "numpy.dtypes": {
        "BoolDType",
        "Int8DType",
        "Int16DType",
        "Int32DType",
        "Int64DType",
        "UInt8DType",
        "UInt16DType",
        "UInt32DType",
        "UInt64DType",
        "Float16DType",
        "Float32DType",
        "Float64DType",
    },
}


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list; nothing it names was called."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, set()):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: annotation pickles may only contain plain containers, "
            "numbers, strings and numpy arrays. Is this really a benchmark *.word_tags_masks.pkl.gz file?"
        )


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` restricted to the allow-list (gzip-compressed input is detected and decompressed)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return RestrictedUnpickler(io.BytesIO(data)).load()


def restricted_load(source: str | Path | BinaryIO) -> Any:
    """Load a (optionally gzip-compressed) pickle file or binary file object with the restricted unpickler."""
    if isinstance(source, (str, Path)):
        data = Path(source).read_bytes()
    else:
        data = source.read()
    return restricted_loads(data)
