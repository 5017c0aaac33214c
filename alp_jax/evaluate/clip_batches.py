"""Many clips through an encoder in fixed batches of windows, across clip boundaries, results in clip order.

Legend: W windows per batch, S samples per window, T' frames per window, D width, T valid frames of a clip.

  batcher = ClipBatcher(encoder, windows_per_batch=32, frames=False)
  for tag, outcome in batcher.add(tag, audio16k, too_short="why"):   # 16 kHz mono samples of one clip
    ...                                                               # finished clips, in the order added
  batcher.add_done(tag, outcome)                                      # a clip known already (memo) or unusable
  for tag, outcome in batcher.finish(): ...                           # the last, padded batch

outcome: (pooled (D,) float32 mean of the clip's valid frames, frames (T, D) float32 or None) or a reason (str)
the clip cannot be used. Each clip is cut into windows of the encoder's crop (alp_jax.audio.windows.split, the
last one padded and masked) exactly as `AudioEncoder.embed` does; windows of consecutive clips fill batches of W
(the last batch padded with fully masked windows), so one compiled shape serves the whole task. The mean is
reduced on the device per window (sum of valid frames and their count, `AudioEncoder.encode_windows`), so with
frames=False no frame ever reaches the host; with frames=True the valid frames come back per window. Memory held:
at most one batch of windows and the clips not yet finished (one batch's worth behind the first unfinished one).
"""
from __future__ import annotations

import collections
from typing import Iterator

import numpy as np

from alp_jax.audio import windows as windows_lib

DEFAULT_WINDOWS_PER_BATCH = 32


class _Clip:
  __slots__ = ("tag", "left", "sum", "count", "parts", "outcome", "too_short")

  def __init__(self, tag, left: int = 0, outcome=None, too_short: str = ""):
    self.tag, self.left, self.outcome, self.too_short = tag, left, outcome, too_short
    self.sum, self.count, self.parts = None, 0, []


class ClipBatcher:

  def __init__(self, encoder, *, windows_per_batch: int = DEFAULT_WINDOWS_PER_BATCH, frames: bool):
    self.encoder, self.windows_per_batch, self.with_frames = encoder, int(windows_per_batch), frames
    self._queue: collections.deque[_Clip] = collections.deque()
    self._windows, self._masks, self._owners = [], [], []
    self.batches = 0   # encoder calls so far

  def add(self, tag, audio16k: np.ndarray, too_short: str = "too short for one encoder frame"
          ) -> list[tuple[object, object]]:
    windows, masks = windows_lib.split(audio16k, self.encoder.window_samples)   # (Wc,S)
    clip = _Clip(tag, left=len(windows), too_short=too_short)
    self._queue.append(clip)
    for window, mask in zip(windows, masks):
      self._windows.append(window)
      self._masks.append(mask)
      self._owners.append(clip)
      if len(self._windows) == self.windows_per_batch:
        self._run()
    return list(self._pop_finished())

  def add_done(self, tag, outcome) -> list[tuple[object, object]]:
    self._queue.append(_Clip(tag, outcome=outcome))
    return list(self._pop_finished())

  def finish(self) -> list[tuple[object, object]]:
    if self._windows:
      self._run()
    return list(self._pop_finished())

  def _run(self) -> None:
    n, size = len(self._windows), self.windows_per_batch
    windows = np.zeros((size, self._windows[0].shape[0]), np.float32)
    masks = np.zeros(windows.shape, bool)
    windows[:n], masks[:n] = self._windows, self._masks   # a short last batch: fully masked windows after n
    out = self.encoder.encode_windows(windows, masks, frames=self.with_frames)
    for j, clip in enumerate(self._owners):
      window_sum = np.asarray(out["sums"][j], np.float64)
      clip.sum = window_sum if clip.sum is None else clip.sum + window_sum
      clip.count += int(out["counts"][j])
      if self.with_frames:
        clip.parts.append(np.asarray(out["frames"][j][out["frame_mask"][j]], np.float32))
      clip.left -= 1
    self._windows, self._masks, self._owners = [], [], []
    self.batches += 1

  def _pop_finished(self) -> Iterator[tuple[object, object]]:
    while self._queue and (self._queue[0].outcome is not None or self._queue[0].left == 0):
      clip = self._queue.popleft()
      if clip.outcome is None:
        if clip.count == 0:
          clip.outcome = clip.too_short
        else:
          frames = np.concatenate(clip.parts) if self.with_frames else None
          clip.outcome = ((clip.sum / clip.count).astype(np.float32), frames)
      yield clip.tag, clip.outcome
