"""Data scale -> nested subset fraction: exact counts, nested, refused past the corpus size."""
import numpy as np
import pytest

from alp_jax.data import subsets
from alp_jax.sweeps import scale


def test_fraction_selects_the_requested_pairs_and_subsets_nest():
  keys = np.sort(np.array([subsets.subset_key(f"clip-{i}") for i in range(20_000)]))
  previous = set()
  for pairs in (400, 1_000, 4_000, 10_000, 20_000):
    fraction, actual = scale.fraction_for_keys(keys, pairs)
    chosen = set(subsets.subset_indices(keys, fraction).tolist())
    assert abs(actual - pairs) <= 0.01 * pairs and len(chosen) == actual == pairs
    assert previous <= chosen   # nested: every smaller subset is inside the larger one
    previous = chosen


def test_fraction_for_pairs_reads_the_corpus_and_refuses_more_than_it_has(tiny_corpus_dir):
  keys = scale.sorted_keys(tiny_corpus_dir)
  fraction, actual = scale.fraction_for_pairs(tiny_corpus_dir, 20)
  assert actual == 20 and np.count_nonzero(keys < fraction) == 20
  assert scale.fraction_for_pairs(tiny_corpus_dir, len(keys)) == (1.0, len(keys))
  with pytest.raises(ValueError, match=rf"{tiny_corpus_dir} has {len(keys)} clips .*fewer than the 1000"):
    scale.fraction_for_pairs(tiny_corpus_dir, 1000)
