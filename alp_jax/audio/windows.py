"""Whole clips as fixed windows, for encoders that compile one window shape (the exported encoder's embed and
the classical baselines).

Legend: N samples of the clip (16 kHz mono), S samples per window, W windows, K windows per call.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from alp_jax.audio import io as audio_io


def mono_16k(waveform, sample_rate: int) -> np.ndarray:
  """(N,) or (N, C) samples at any rate -> (N',) float32 mono at 16 kHz; ValueError on an empty or 3-D array."""
  samples = np.asarray(waveform, np.float32)
  if samples.ndim == 2:
    samples = audio_io.to_mono(samples)
  if samples.ndim != 1 or samples.size == 0:
    raise ValueError(f"waveform must be a non-empty (N,) or (N, C) array, got shape {np.shape(waveform)}")
  return audio_io.resample(samples, int(sample_rate), audio_io.TARGET_SAMPLE_RATE)


def split(audio16k: np.ndarray, window_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """(N,) -> (W, S) windows and their sample masks, W = ceil(N / S) (at least 1), the last one zero-padded."""
  count = max(1, -(-len(audio16k) // window_samples))
  padded = np.zeros(count * window_samples, np.float32)
  padded[:len(audio16k)] = audio16k
  mask = np.zeros(count * window_samples, bool)
  mask[:len(audio16k)] = True
  return padded.reshape(count, window_samples), mask.reshape(count, window_samples)


def chunks(windows: np.ndarray, masks: np.ndarray, per_call: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
  """Yields (K, S) windows, (K, S) masks and the number n <= K of real windows in them: a short last chunk is
  padded with fully masked windows, so every call has the same shape."""
  for start in range(0, len(windows), per_call):
    chunk, chunk_mask = windows[start:start + per_call], masks[start:start + per_call]
    n = len(chunk)
    if n < per_call:
      chunk = np.concatenate([chunk, np.zeros((per_call - n, chunk.shape[1]), np.float32)])
      chunk_mask = np.concatenate([chunk_mask, np.zeros((per_call - n, chunk.shape[1]), bool)])
    yield chunk, chunk_mask, n
