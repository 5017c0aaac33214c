"""Retrieval metrics: a hand-ranked similarity matrix, and a brute-force loop reference on random data."""
from __future__ import annotations

import numpy as np
import pytest

from alp_jax.evaluate import retrieval_metrics as rm

# 4 clips, 6 captions: clip 0 owns captions 0-1, clip 1 owns caption 2, clip 2 owns captions 3-5, clip 3 none.
TEXT_TO_AUDIO = np.array([0, 0, 1, 2, 2, 2])
SIMILARITY = np.array([
    #  c0    c1    c2    c3    c4    c5
    [0.9, 0.1, 0.8, 0.2, 0.3, 0.0],   # clip 0
    [0.5, 0.6, 0.05, 0.7, 0.1, 0.1],  # clip 1
    [0.3, 0.2, 0.9, 0.5, 0.5, 0.1],   # clip 2
    [-1., -1., -1., -1., -1., -1.],   # clip 3 (no caption: not an a2t query, never ranked ahead)
])


def test_hand_computed_audio_to_text():
  # clip 0 ranks c0 .9, c2 .8, c4 .3, c3 .2, c1 .1, c5 0: own captions at ranks 1 and 5.
  #   R@1 = R@5 = R@10 = 1; AP = (P@1 + P@5) / min(2, 10) = (1 + 2/5) / 2 = 0.7
  # clip 1 ranks c3 .7, c1 .6, c0 .5, c4 .1, c5 .1 (tie: c4 first), c2 .05: own caption at rank 6.
  #   R@1 = R@5 = 0, R@10 = 1; AP = (1/6) / 1
  # clip 2 ranks c2 .9, c3 .5, c4 .5 (tie: c3 first), c0 .3, c1 .2, c5 .1: own captions at ranks 2, 3, 6.
  #   R@1 = 0, R@5 = R@10 = 1; AP = (1/2 + 2/3 + 3/6) / 3 = 5/9
  # clip 3 has no caption: not a query. Means over 3 queries:
  #   R@1 = 1/3, R@5 = 2/3, R@10 = 1, mAP@10 = (0.7 + 1/6 + 5/9) / 3 = 256/540
  got = rm.audio_to_text(SIMILARITY, TEXT_TO_AUDIO, chunk=2)
  assert got["R@1"] == pytest.approx(1 / 3)
  assert got["R@5"] == pytest.approx(2 / 3)
  assert got["R@10"] == pytest.approx(1.0)
  assert got["mAP@10"] == pytest.approx(256 / 540)


def test_hand_computed_text_to_audio():
  # Columns: c0 (clip 0) [.9 .5 .3 -1] rank 1; c1 (clip 0) [.1 .6 .2 -1] rank 3; c2 (clip 1) [.8 .05 .9 -1] rank 3;
  # c3 (clip 2) [.2 .7 .5 -1] rank 2; c4 (clip 2) [.3 .1 .5 -1] rank 1; c5 (clip 2) [0 .1 .1 -1]: tie with clip 1,
  # the lower index goes first, rank 2.
  #   R@1 = 2/6, R@5 = R@10 = 1, mAP@10 = (1 + 1/3 + 1/3 + 1/2 + 1 + 1/2) / 6 = 11/18
  np.testing.assert_array_equal(rm.text_to_audio_ranks(SIMILARITY, TEXT_TO_AUDIO, chunk=4), [1, 3, 3, 2, 1, 2])
  got = rm.text_to_audio_metrics(SIMILARITY, TEXT_TO_AUDIO)
  assert got["R@1"] == pytest.approx(2 / 6)
  assert got["R@5"] == pytest.approx(1.0)
  assert got["R@10"] == pytest.approx(1.0)
  assert got["mAP@10"] == pytest.approx(11 / 18)


def test_both_directions_keys():
  got = rm.retrieval_metrics(SIMILARITY, TEXT_TO_AUDIO)
  assert set(got) == {f"{d}/{m}" for d in ("a2t", "t2a") for m in ("R@1", "R@5", "R@10", "mAP@10")}
  assert got["a2t/mAP@10"] == pytest.approx(256 / 540)
  assert got["t2a/mAP@10"] == pytest.approx(11 / 18)


def _loop_reference(similarity, text_to_audio):
  """Straightforward per-query loops over a sorted list (independent of the vectorised code)."""
  num_audio, num_text = similarity.shape
  a2t = {"R@1": [], "R@5": [], "R@10": [], "mAP@10": []}
  for a in range(num_audio):
    own = {c for c in range(num_text) if text_to_audio[c] == a}
    if not own:
      continue
    ranked = sorted(range(num_text), key=lambda c: (-similarity[a, c], c))
    for k in (1, 5, 10):
      a2t[f"R@{k}"].append(float(any(c in own for c in ranked[:k])))
    found, total = 0, 0.0
    for r, c in enumerate(ranked[:10], 1):
      if c in own:
        found += 1
        total += found / r
    a2t["mAP@10"].append(total / min(len(own), 10))
  t2a = {"R@1": [], "R@5": [], "R@10": [], "mAP@10": []}
  for c in range(num_text):
    ranked = sorted(range(num_audio), key=lambda a: (-similarity[a, c], a))
    rank = ranked.index(text_to_audio[c]) + 1
    for k in (1, 5, 10):
      t2a[f"R@{k}"].append(float(rank <= k))
    t2a["mAP@10"].append(1 / rank if rank <= 10 else 0.0)
  return ({k: np.mean(v) for k, v in a2t.items()}, {k: np.mean(v) for k, v in t2a.items()})


def test_random_matrix_matches_loop_reference():
  rng = np.random.default_rng(0)
  num_audio = 40
  text_to_audio = np.concatenate([np.repeat(np.arange(30), rng.integers(1, 14, 30)), [35, 36]])
  # Quantised scores create many ties; relevant pairs get a small boost so metrics are not trivially 0.
  similarity = np.round(rng.uniform(size=(num_audio, len(text_to_audio))), 1)
  similarity[text_to_audio, np.arange(len(text_to_audio))] += 0.3 * rng.uniform(size=len(text_to_audio))
  want_a2t, want_t2a = _loop_reference(similarity, text_to_audio)
  got_a2t = rm.audio_to_text(similarity, text_to_audio, chunk=7)
  got_t2a = rm.text_to_audio_metrics(similarity, text_to_audio, chunk=5)
  for k in want_a2t:
    assert got_a2t[k] == pytest.approx(want_a2t[k]), k
    assert got_t2a[k] == pytest.approx(want_t2a[k]), k
  assert 0.0 < got_a2t["mAP@10"] < 1.0 and 0.0 < got_t2a["R@1"] < 1.0


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="text_to_audio"):
    rm.retrieval_metrics(SIMILARITY, np.array([0, 1, 2]))
  with pytest.raises(ValueError, match="index"):
    rm.retrieval_metrics(SIMILARITY, np.array([0, 0, 1, 2, 2, 9]))
