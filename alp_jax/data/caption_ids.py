"""Our caption token-id conventions and the padding of one caption, shared by every tokenizer (tokenizer.py's
sentencepiece models, hf_tokenizer.py's tokenizer.json files): PAD=0, UNK=1, BOS=2, EOS=3.

  row = caption_ids.pad_caption(ids, max_len)   # (max_len,) int32: ids, EOS, PAD...
  tokens, mask = caption_ids.pad_captions(id_lists, max_len)   # (N, max_len) int32 rows and their mask
  ids = caption_ids.content_ids(row)             # the caption's ids back: up to EOS, without PAD/BOS
"""
from __future__ import annotations

import numpy as np

from alp_jax.data import caption_lengths

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def pad_caption(ids: list[int], max_len: int) -> np.ndarray:
  """(max_len,) int32: the caption's ids, EOS, then PAD; a caption that does not fit with its EOS is cut to its
  first max_len ids and gets no EOS, so the decoder never learns to stop where a long caption was cut.

  The mask (ids != PAD) then ends at the last kept token, and so does the caption loss (caption_decoder.py).
  `caption_lengths.truncated(len(ids), max_len)` says which captions lose their EOS.
  """
  row = np.full((max_len,), PAD_ID, np.int32)
  kept = list(ids[:max_len]) if caption_lengths.truncated(len(ids), max_len) else list(ids) + [EOS_ID]
  row[:len(kept)] = kept
  return row


def pad_captions(id_lists, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """-> tokens int32 (N, max_len), mask bool (N, max_len): row i is `pad_caption(id_lists[i], max_len)`."""
  rows = [pad_caption(ids, max_len) for ids in id_lists]
  tokens = np.stack(rows) if rows else np.zeros((0, max_len), np.int32)
  return tokens, tokens != PAD_ID


def content_ids(ids) -> list[int]:
  """A row of our ids -> the caption's ids: stops at the first EOS, drops PAD and BOS."""
  out = []
  for i in np.asarray(ids).tolist():
    if i == EOS_ID:
      break
    if i not in (PAD_ID, BOS_ID):
      out.append(i)
  return out
