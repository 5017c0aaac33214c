"""Nested subsets for data-scaling studies.

Each clip gets a key in [0, 1) from a hash of its id; the subset at fraction f is {clips with key < f}. So the
subset at f1 is contained in the subset at any f2 > f1 (the study's 400K < 1M < 4M < 10M), it does not depend on
the order or the sharding of the data, and it needs no second copy: it is a pipeline option.
"""
from __future__ import annotations

import hashlib

import numpy as np


def subset_key(clip_id: str) -> float:
  digest = hashlib.sha256(clip_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def subset_indices(keys: np.ndarray, fraction: float) -> np.ndarray:
  """Indices of the records in the nested subset at `fraction` (0 < fraction <= 1)."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
  return np.nonzero(keys < fraction)[0] if fraction < 1.0 else np.arange(len(keys))
