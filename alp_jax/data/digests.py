"""A compact set of 64-bit digests with one int64 each: duplicate ids and duplicate audio at corpus scale.

A Python dict of string ids or sha1 hex strings costs a few hundred bytes per entry (10-15 GB of Python
objects at the study's ~9.3M clips); this table keeps two flat arrays instead:

  keys   uint64 (capacity,)   the digest (0 marks an empty slot; a digest of 0 is stored as 1)
  values int64  (capacity,)   what the caller wants back for a repeat (e.g. where the first one was)

16 bytes per slot, kept at most 70% full and grown by doubling: 23-46 bytes per entry, about 0.27 GB for
9.3M entries (16.8M slots). Digests are 64-bit, so two different keys collide with probability about n^2 / 2^65
(2e-6 for 9.3M keys): a false "duplicate" is possible in principle, never a missed one.
"""
from __future__ import annotations

import array
import hashlib

_MAX_LOAD = 0.7


def digest64(data: bytes | str) -> int:
  """A 64-bit digest (blake2b) of bytes or a str (UTF-8)."""
  if isinstance(data, str):
    data = data.encode("utf-8", "surrogatepass")
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class DigestTable:
  """Open addressing with linear probing over array.array storage (no per-entry Python objects)."""

  def __init__(self, capacity: int = 1024):
    capacity = 1 << max(4, (capacity - 1).bit_length())
    self._keys = array.array("Q", bytes(8 * capacity))
    self._values = array.array("q", bytes(8 * capacity))
    self._mask = capacity - 1
    self._size = 0

  def __len__(self) -> int:
    return self._size

  @property
  def nbytes(self) -> int:
    return (len(self._keys) + len(self._values)) * 8

  def setdefault(self, digest: int, value: int) -> int | None:
    """Returns the value stored for `digest` if present; else stores `value` and returns None."""
    digest = digest or 1
    keys, mask = self._keys, self._mask
    i = digest & mask
    while True:
      k = keys[i]
      if k == digest:
        return self._values[i]
      if k == 0:
        break
      i = (i + 1) & mask
    keys[i] = digest
    self._values[i] = value
    self._size += 1
    if self._size > _MAX_LOAD * (mask + 1):
      self._grow()
    return None

  def _grow(self) -> None:
    old_keys, old_values = self._keys, self._values
    capacity = 2 * len(old_keys)
    self._keys = array.array("Q", bytes(8 * capacity))
    self._values = array.array("q", bytes(8 * capacity))
    self._mask, self._size = capacity - 1, 0
    for k, v in zip(old_keys, old_values):
      if k:
        self.setdefault(k, v)
