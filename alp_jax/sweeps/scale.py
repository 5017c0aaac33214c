"""Data scale as a number of training pairs -> the nested subset fraction that selects exactly that many clips.

  fraction, actual = scale.fraction_for_pairs(corpus_dir, 400_000)        # every source
  fraction, actual = scale.fraction_for_pairs(corpus_dir, 1_000, sources=("speech",))

A "pair" here is a clip: corpus.json counts clips, and a clip with several captions is one training pair whose
caption is drawn per visit (data.caption_policy="random", the study's CaptionStew counts 9.3M clips for 10.7M
captions). The subset at fraction f is {clips whose subset key < f} (alp_jax/data/subsets.py), so sorting the keys
of the sources a run uses and taking f between the n-th and the (n+1)-th key selects exactly n clips; a larger n
gives a larger f, so the subsets of one corpus are nested (400K inside 1M inside 4M inside 10M) by construction.
"""
from __future__ import annotations

import os

import numpy as np

from alp_jax.data import pipeline


def sorted_keys(corpus_dir: str | os.PathLike, sources=()) -> np.ndarray:
  """The subset keys of every clip of `sources` (default: all) in `corpus_dir`'s index/*.npz, ascending."""
  keys = [s.subset_key for s in pipeline.load_sources(corpus_dir, tuple(sources))]
  return np.sort(np.concatenate(keys)) if keys else np.zeros((0,))


def fraction_for_keys(keys: np.ndarray, pairs: int, *, where: str = "the corpus") -> tuple[float, int]:
  """(fraction, clips selected) for `pairs` clips out of ascending `keys`; ValueError past len(keys)."""
  total = len(keys)
  if pairs < 1:
    raise ValueError(f"data scale of {pairs} pairs: ask for at least 1")
  if pairs > total:
    raise ValueError(f"{where} has {total} clips (pairs), fewer than the {pairs} a sweep point asks for: lower "
                     f"that point's data_pairs to at most {total}, or use a larger corpus")
  if pairs == total:
    return 1.0, total
  lo, hi = float(keys[pairs - 1]), float(keys[pairs])
  fraction = (lo + hi) / 2.0
  if not lo < fraction <= hi or fraction == hi:   # keys closer than float resolution: take the upper one's bound
    fraction = float(np.nextafter(lo, 1.0))
  actual = int(np.count_nonzero(keys < fraction))
  return fraction, actual


def fraction_for_pairs(corpus_dir: str | os.PathLike, pairs: int, sources=()) -> tuple[float, int]:
  """-> (data.subset_fraction, clips in that subset) for `pairs` training pairs (clips) of the corpus's
  `sources` (default: all). Exact (the subset has `pairs` clips unless two keys tie), nested across calls, and a
  ValueError naming the corpus, its clip count and the request when the corpus is smaller than `pairs`."""
  keys = sorted_keys(corpus_dir, sources)
  where = f"{os.fspath(corpus_dir)}" + (f" (sources {', '.join(sources)})" if sources else "")
  return fraction_for_keys(keys, int(pairs), where=where)
