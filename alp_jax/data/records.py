"""The on-disk example format inside ArrayRecord shards.

One record = b"ALP1" | uint32 little-endian header length | UTF-8 JSON header | int16 little-endian audio.
The header holds id, captions, source, labels, split and sample_rate; since prepare format 3 also `sources`
(every source whose records had this audio, the clip's own first: data/merge.py), `merged_ids` (the ids of the
records merged into it) and, for a window of a long clip (data/durations.py), `window` [k, n] and
`offset_seconds`. No TensorFlow, no pickle: any language that reads ArrayRecord and JSON can read the shards.
"""
from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"ALP1"
_HEADER = struct.Struct("<4sI")


def encode_example(meta: dict, audio: np.ndarray) -> bytes:
  if audio.dtype != np.int16 or audio.ndim != 1:
    raise ValueError(f"audio must be 1-D int16, got {audio.dtype} {audio.shape}")
  header = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
  return _HEADER.pack(MAGIC, len(header)) + header + audio.astype("<i2", copy=False).tobytes()


def decode_example(data: bytes) -> dict:
  magic, header_len = _HEADER.unpack_from(data, 0)
  if magic != MAGIC:
    raise ValueError(f"not an alp-jax record (magic {magic!r})")
  start = _HEADER.size
  example = json.loads(data[start:start + header_len].decode("utf-8"))
  example["audio"] = np.frombuffer(data, dtype="<i2", offset=start + header_len).astype(np.int16)
  return example


def decode_header(data: bytes) -> dict:
  """Only the metadata (no audio copy)."""
  magic, header_len = _HEADER.unpack_from(data, 0)
  if magic != MAGIC:
    raise ValueError(f"not an alp-jax record (magic {magic!r})")
  return json.loads(data[_HEADER.size:_HEADER.size + header_len].decode("utf-8"))


def with_header(data: bytes, meta: dict) -> bytes:
  """The record `data` with its header replaced by `meta` (the audio bytes are kept as they are, not decoded)."""
  magic, header_len = _HEADER.unpack_from(data, 0)
  if magic != MAGIC:
    raise ValueError(f"not an alp-jax record (magic {magic!r})")
  header = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
  return _HEADER.pack(MAGIC, len(header)) + header + data[_HEADER.size + header_len:]
