"""Classical-feature baselines: what a probe reaches without any learned encoder.

Legend: S samples of one window, W windows of a clip, K windows per call, T valid frames of the clip, M mel bins.

"logmel-stats" (`LogMelStats`): the models' own frontend (alp_jax.audio.frontend.log_mel, by default the study's
80-bin Kaldi fbank, 25 ms windows every 10 ms) and its regression deltas,
  frames (T/4, 2M) = [log-mel c_t, delta d_t], averaged over runs of 4 frames (25 Hz, the encoders' output
                     rate, so attention probes see as many frames as for an encoder; frame_stack=1: 100 Hz)
  pooled (4M,)     = [mean_t c, std_t c, mean_t d, std_t d] over the 100 Hz frames (mean probes: a linear
                     classifier on statistics)
with statistics over every valid frame of the whole clip. The delta is Kaldi's (and HTK's) regression over N = 2
frames either side, the first and last frames replicated beyond the clip's ends:
  d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2),   c_{t} = c_0 for t < 0, c_{T-1} for t >= T,
which is also librosa.feature.delta(width=5, mode="nearest").

A baseline is used wherever an AudioEncoder is for probes (alp_jax.evaluate.embed.embed_task,
probe.evaluate_encoder, the embeddings cache: `fingerprint()` names its settings), and the CLI runs it with
`--baseline logmel-stats` (probes only: it has no trainable encoder and no text side).

Audio is prepared as AudioEncoder.embed does (alp_jax/encoder_api.py): downmixed, resampled to 16 kHz (libsoxr),
cut into fixed windows of crop_seconds (the last padded and masked), K windows per call (default 1: most clips are
shorter than one window) of one jitted log_mel, so one compiled shape serves every clip. Deterministic: the same
clip always gives the same features.
"""
from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alp_jax.audio import frontend
from alp_jax.audio import io as audio_io
from alp_jax.audio import windows as windows_lib

LOGMEL_STATS = "logmel-stats"
BASELINES = (LOGMEL_STATS,)
DEFAULT_CROP_SECONDS = 10.0   # the study's training crop (configs/clap.py, tagging.py): one compiled window shape
DELTA_WINDOW = 2              # N: frames either side in the regression delta
FRAME_STACK = 4               # attention frames: means of 4 frames (25 Hz, the encoders' output rate); 1 = 100 Hz
DESCRIPTION = ("frames: log-mel and its regression delta (N=2, edges replicated) of the whole clip, fixed windows "
               "of window_seconds (last one masked); pooled: per-bin mean and std of both over the clip's frames")
FEATURES_VERSION = 1          # bump when the features change, so cached embeddings are not reused


def regression_delta(features: np.ndarray, window: int = DELTA_WINDOW) -> np.ndarray:
  """Regression delta along time of (T, M) features, edge frames replicated (module docstring) -> (T, M)."""
  features = np.asarray(features, np.float32)
  length = len(features)
  padded = np.concatenate([np.repeat(features[:1], window, axis=0), features,
                           np.repeat(features[-1:], window, axis=0)]) if length else features   # (T+2N, M)
  delta = np.zeros_like(features)
  for n in range(1, window + 1):
    delta += n * (padded[window + n:window + n + length] - padded[window - n:window - n + length])
  return delta / (2.0 * sum(n * n for n in range(1, window + 1)))


def clip_statistics(logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(T, M) log-mel -> frames (T, 2M) = [log-mel, delta] and pooled (4M,) = [mean, std of each half]."""
  delta = regression_delta(logmel)
  frames = np.concatenate([logmel, delta], axis=-1).astype(np.float32)   # (T,2M)
  pooled = np.concatenate([logmel.mean(axis=0), logmel.std(axis=0), delta.mean(axis=0), delta.std(axis=0)])
  return frames, pooled.astype(np.float32)                              # (4M,)


def stack_mean(frames: np.ndarray, stack: int) -> np.ndarray:
  """(T, F) -> (ceil(T / stack), F): the mean of each run of `stack` frames (the last run may be shorter)."""
  if stack == 1 or len(frames) == 0:
    return frames
  starts = np.arange(0, len(frames), stack)
  sums = np.add.reduceat(frames.astype(np.float64), starts, axis=0)
  counts = np.diff(np.r_[starts, len(frames)])[:, None]
  return (sums / counts).astype(np.float32)


class LogMelStats:
  """Log-mel + delta frames and their clip statistics; an AudioEncoder look-alike for probes (module docstring)."""

  name = LOGMEL_STATS

  def __init__(self, frontend_cfg=None, *, crop_seconds: float = DEFAULT_CROP_SECONDS, windows_per_call: int = 1,
               frame_stack: int = FRAME_STACK):
    cfg = frontend.default_frontend_config() if frontend_cfg is None else frontend_cfg
    cfg = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
    self.frontend_cfg = ml_collections.FrozenConfigDict(cfg)
    if self.frontend_cfg.sample_rate != audio_io.TARGET_SAMPLE_RATE:
      raise ValueError(f"frontend sample_rate {self.frontend_cfg.sample_rate}: baselines resample to "
                       f"{audio_io.TARGET_SAMPLE_RATE} Hz, as every encoder does")
    self.meta = {"frontend": cfg, "crop_seconds": float(crop_seconds), "baseline": self.name}
    self.window_samples = int(round(crop_seconds * audio_io.TARGET_SAMPLE_RATE))
    self.windows_per_call = windows_per_call
    self.num_mel_bins = int(self.frontend_cfg.num_mel_bins)
    self.frame_stack = int(frame_stack)
    frontend_cfg = self.frontend_cfg
    self._log_mel = jax.jit(lambda audio, mask: frontend.log_mel(audio, mask, frontend_cfg))   # (K,S) -> (K,T,M)

  @property
  def output_dim(self) -> int:
    """Frame width 2M (log-mel and delta); `pooled_dim` is 4M."""
    return 2 * self.num_mel_bins

  @property
  def pooled_dim(self) -> int:
    return 4 * self.num_mel_bins

  def fingerprint(self) -> str:
    """sha1 of the name, the frontend settings and the window length (what the embeddings cache keys on)."""
    settings = {"baseline": self.name, "version": FEATURES_VERSION, "frontend": self.meta["frontend"],
                "crop_seconds": self.meta["crop_seconds"], "delta_window": DELTA_WINDOW}
    if self.frame_stack != 1:
      settings["frame_stack"] = self.frame_stack
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()

  def log_mel(self, waveform, sample_rate: int) -> np.ndarray:
    """(T, M) log-mel of the clip's valid frames, window after window."""
    windows, masks = windows_lib.split(windows_lib.mono_16k(waveform, sample_rate), self.window_samples)
    found = []
    for chunk, chunk_mask, n in windows_lib.chunks(windows, masks, self.windows_per_call):
      features, frame_mask = jax.device_get(self._log_mel(jnp.asarray(chunk), jnp.asarray(chunk_mask)))
      found.append(features[:n][frame_mask[:n]])   # (valid,M)
    return np.concatenate(found)

  def embed(self, waveform, sample_rate: int) -> dict[str, np.ndarray]:
    """-> {"frames": (ceil(T / frame_stack), 2M), "frame_mask": all True, "pooled": (4M,)}; any length, rate,
    channels."""
    logmel = self.log_mel(waveform, sample_rate)
    if len(logmel) == 0:
      return {"frames": np.zeros((0, self.output_dim), np.float32), "frame_mask": np.zeros(0, bool),
              "pooled": np.zeros(self.pooled_dim, np.float32)}
    frames, pooled = clip_statistics(logmel)
    frames = stack_mean(frames, self.frame_stack)
    return {"frames": frames, "frame_mask": np.ones(len(frames), bool), "pooled": pooled}

  def embed_batch(self, waveforms, sample_rates) -> list[dict[str, np.ndarray]]:
    if np.isscalar(sample_rates):
      sample_rates = [sample_rates] * len(waveforms)
    return [self.embed(w, sr) for w, sr in zip(waveforms, sample_rates)]


def get(name: str, frontend_cfg=None, crop_seconds: float = DEFAULT_CROP_SECONDS,
        frame_stack: int = FRAME_STACK) -> LogMelStats:
  """The baseline called `name` (one of BASELINES), on `frontend_cfg` (default: the models' frontend)."""
  if name == LOGMEL_STATS:
    return LogMelStats(frontend_cfg, crop_seconds=crop_seconds, frame_stack=frame_stack)
  raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
