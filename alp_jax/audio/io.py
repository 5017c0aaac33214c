"""Audio decoding, downmixing and resampling on the host (numpy).

Everything that reaches the pipeline is 16 kHz mono; `load_audio` is the one place that gets it there.
Decoding is libsndfile (via soundfile: wav, flac, ogg/vorbis, opus, mp3); resampling is libsoxr's
band-limited polyphase resampler (anti-aliased, "HQ"), never linear interpolation.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

TARGET_SAMPLE_RATE = 16000
INT16_SCALE = 32768.0


class AudioDecodeError(Exception):
  """The file exists but is not audio that libsndfile can decode."""


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """Reads a file as float32 (N, C) in [-1, 1] and its sample rate. Raises AudioDecodeError."""
  try:
    samples, sample_rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
    raise AudioDecodeError(f"{path}: cannot decode audio ({e})") from e
  return samples, int(sample_rate)


def header_seconds(path: str | os.PathLike) -> float | None:
  """Duration from the file header (no decoding), or None when the header does not say or cannot be read."""
  try:
    info = sf.info(os.fspath(path))
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
    return None  # decode() will report what is wrong
  if info.samplerate <= 0 or info.frames <= 0:
    return None
  return info.frames / info.samplerate


def to_mono(samples: np.ndarray) -> np.ndarray:
  """(N, C) or (N,) -> (N,) by averaging channels (energy-neutral for correlated channels)."""
  if samples.ndim == 1:
    return samples
  return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, sample_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
  """Band-limited resampling of a mono float signal with libsoxr (HQ)."""
  if sample_rate == target_rate or samples.size == 0:
    return samples.astype(np.float32, copy=False)
  return soxr.resample(samples.astype(np.float32, copy=False), sample_rate, target_rate, quality="HQ")


def load_audio(path: str | os.PathLike, sample_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
  """Any file libsndfile reads -> mono float32 at `sample_rate`."""
  samples, source_rate = decode(path)
  return resample(to_mono(samples), source_rate, sample_rate)


def to_int16(samples: np.ndarray) -> np.ndarray:
  """Float in [-1, 1] -> int16 with rounding and clipping (resampling can overshoot slightly)."""
  return np.clip(np.rint(samples * INT16_SCALE), -32768, 32767).astype(np.int16)


def from_int16(samples: np.ndarray) -> np.ndarray:
  return samples.astype(np.float32) / INT16_SCALE
