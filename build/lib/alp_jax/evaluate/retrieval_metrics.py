"""Audio-text retrieval metrics from a similarity matrix (numpy, host side).

Legend: A audio clips, C captions (texts), K cut-off rank.

`similarity[a, c]` scores clip a against caption c (higher = closer); `text_to_audio[c]` is the clip that
caption c describes. A clip may have several captions (AudioCaps/Clotho: 5), each caption exactly one clip.

Ranking: candidates are sorted by descending similarity; ties are broken by the lower index (a stable sort), so
a constant similarity matrix does not score as perfect retrieval.

Definitions (ranks r start at 1):
  audio->text  R@K    fraction of clips with at least one of their own captions among the top K captions.
               AP@10  sum_{r<=10} P@r * rel(r) / min(n_rel, 10), with rel(r) = 1 if the caption at rank r
                      belongs to the clip, P@r = (relevant captions in the top r) / r, n_rel = the clip's
                      caption count. mAP@10 averages AP@10 over clips. Clips with no caption are not queries
                      (they remain candidates for text->audio).
  text->audio  R@K    fraction of captions whose clip is among the top K clips.
               mAP@10 one relevant clip per caption, so AP@10 is the reciprocal rank 1/r if r <= 10, else 0.
"""
from __future__ import annotations

import numpy as np

RECALL_KS = (1, 5, 10)
MAP_CUTOFF = 10


def _check(similarity: np.ndarray, text_to_audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  similarity = np.asarray(similarity, np.float64)
  text_to_audio = np.asarray(text_to_audio)
  if similarity.ndim != 2:
    raise ValueError(f"similarity must be (num_audio, num_text), got shape {similarity.shape}")
  num_audio, num_text = similarity.shape
  if text_to_audio.shape != (num_text,) or not np.issubdtype(text_to_audio.dtype, np.integer):
    raise ValueError(f"text_to_audio must be ({num_text},) integers, got {text_to_audio.dtype} {text_to_audio.shape}")
  if num_text and (text_to_audio.min() < 0 or text_to_audio.max() >= num_audio):
    raise ValueError(f"text_to_audio values must index the {num_audio} clips")
  return similarity, text_to_audio


def _descending_order(scores: np.ndarray) -> np.ndarray:
  """Per row, candidate indices by descending score; ties keep the lower index first."""
  return np.argsort(-scores, axis=-1, kind="stable")


def audio_to_text(similarity: np.ndarray, text_to_audio: np.ndarray, ks=RECALL_KS,
                  map_cutoff: int = MAP_CUTOFF, chunk: int = 1024) -> dict[str, float]:
  """R@K for each K in ks and mAP@map_cutoff, clips as queries over all captions."""
  similarity, text_to_audio = _check(similarity, text_to_audio)
  num_audio, _ = similarity.shape
  num_relevant = np.bincount(text_to_audio, minlength=num_audio)  # (A,)
  depth = max(max(ks), map_cutoff)
  hits = {k: 0.0 for k in ks}
  ap_sum, queries = 0.0, 0
  for start in range(0, num_audio, chunk):
    rows = np.arange(start, min(start + chunk, num_audio))
    top = _descending_order(similarity[rows])[:, :depth]             # (A', K)
    relevant = text_to_audio[top] == rows[:, None]                   # (A', K)
    has_caption = num_relevant[rows] > 0
    for k in ks:
      hits[k] += float(np.sum(relevant[:, :k].any(axis=1) & has_caption))
    cut = relevant[:, :map_cutoff].astype(np.float64)                # (A', 10)
    precision_at_r = np.cumsum(cut, axis=1) / np.arange(1, cut.shape[1] + 1)
    denominator = np.minimum(num_relevant[rows], map_cutoff)
    ap = np.sum(precision_at_r * cut, axis=1) / np.maximum(denominator, 1)
    ap_sum += float(np.sum(ap[has_caption]))
    queries += int(np.sum(has_caption))
  if queries == 0:
    raise ValueError("no clip has a caption: audio->text retrieval is undefined")
  out = {f"R@{k}": hits[k] / queries for k in ks}
  out[f"mAP@{map_cutoff}"] = ap_sum / queries
  return out


def text_to_audio_ranks(similarity: np.ndarray, text_to_audio: np.ndarray, chunk: int = 4096) -> np.ndarray:
  """(C,) 1-based rank of each caption's clip among all clips (ties: lower clip index first)."""
  similarity, text_to_audio = _check(similarity, text_to_audio)
  num_text = similarity.shape[1]
  clip_index = np.arange(similarity.shape[0])[:, None]                # (A, 1)
  ranks = np.empty(num_text, np.int64)
  for start in range(0, num_text, chunk):
    cols = np.arange(start, min(start + chunk, num_text))
    scores, own = similarity[:, cols], text_to_audio[cols]           # (A, C'), (C',)
    true_score = scores[own, np.arange(len(cols))]                   # (C',)
    ahead = (scores > true_score) | ((scores == true_score) & (clip_index < own))  # (A, C')
    ranks[cols] = 1 + ahead.sum(axis=0)
  return ranks


def text_to_audio_metrics(similarity: np.ndarray, text_to_audio: np.ndarray, ks=RECALL_KS,
                          map_cutoff: int = MAP_CUTOFF, chunk: int = 4096) -> dict[str, float]:
  """R@K for each K in ks and mAP@map_cutoff (= mean reciprocal rank cut at map_cutoff), captions as queries."""
  ranks = text_to_audio_ranks(similarity, text_to_audio, chunk)
  if ranks.size == 0:
    raise ValueError("no caption: text->audio retrieval is undefined")
  out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
  out[f"mAP@{map_cutoff}"] = float(np.mean(np.where(ranks <= map_cutoff, 1.0 / ranks, 0.0)))
  return out


def retrieval_metrics(similarity: np.ndarray, text_to_audio: np.ndarray, ks=RECALL_KS,
                      map_cutoff: int = MAP_CUTOFF) -> dict[str, float]:
  """Both directions, keys 'a2t/R@1' ... 'a2t/mAP@10', 't2a/R@1' ... 't2a/mAP@10'."""
  a2t = audio_to_text(similarity, text_to_audio, ks, map_cutoff)
  t2a = text_to_audio_metrics(similarity, text_to_audio, ks, map_cutoff)
  return {**{f"a2t/{k}": v for k, v in a2t.items()}, **{f"t2a/{k}": v for k, v in t2a.items()}}
