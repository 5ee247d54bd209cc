"""A record's ``body`` field: everything only Python needs of a failure (path, task,
args, error type and message), as compact JSON in an LZ4 frame, read back whatever
frame earlier versions wrote."""

from __future__ import annotations

import json
import threading
import zlib
from typing import Any

import lz4.frame
import orjson
import zstandard

#: A body is an LZ4 frame: a 2.3 KB traceback body compresses to 853 bytes in 1.4 µs
#: and reads back in 0.6 µs. zstd (level 3, what earlier versions wrote) takes it to
#: 616 bytes, but in 5.4 µs, and between two round trips, with its tables out of the
#: CPU's caches, a failure's call paid some 10 µs more for it (benchmarks/, figure 1).
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: zstd decompressors may not be shared between threads (a thread-pool worker reads
#: records from several): one per thread, built once.
_codecs = threading.local()


def encode_body(body: dict[str, Any]) -> bytes:
    """A record's ``body`` field: compact JSON in an LZ4 frame. orjson refuses the
    surrogate escapes of undecodable paths, which the standard library writes as \\u
    escapes (either JSON reads back the same)."""
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:
        raw = json.dumps(body, separators=(",", ":")).encode("ascii")
    data: bytes = lz4.frame.compress(raw)
    return data


def decode_body(data: bytes) -> Any:
    """The JSON a ``body`` field holds, told apart by its frame's magic number: LZ4;
    zstd or zlib as earlier versions wrote them."""
    if data.startswith(_LZ4_MAGIC):
        return json.loads(lz4.frame.decompress(data))
    if not data.startswith(_ZSTD_MAGIC):
        return json.loads(zlib.decompress(data))
    decompressor = getattr(_codecs, "decompressor", None)
    if decompressor is None:
        decompressor = _codecs.decompressor = zstandard.ZstdDecompressor()
    return json.loads(decompressor.decompress(data))
