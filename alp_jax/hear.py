"""The HEAR API (hearbenchmark.com/hear-api.html) over an exported encoder, so the kits that load an encoder by
module name take ours as it is:

  hear-validator alp_jax.hear --model ENC_DIR
  python -m heareval.embeddings.runner alp_jax.hear --model ENC_DIR

  from alp_jax import hear
  model = hear.load_model(ENC_DIR)            # a torch.nn.Module when torch is installed (pip install alp_jax[hear])
  model.sample_rate                           # 16000: HEAR hands audio over at this rate
  model.scene_embedding_size, model.timestamp_embedding_size   # both D, the encoder's width
  model.hop_ms                                # time between timestamps, 40.0 for the 25 Hz encoders
  embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
  scene = hear.get_scene_embeddings(audio, model)

Legend: B sounds, N samples per sound, S samples per window (the encoder's training crop), T' output frames per
full window, T timestamps per sound, D encoder width.

  audio       (B, N) mono floating-point samples at 16 kHz in [-1, 1]: numpy, torch (any device), TensorFlow or jax
  embeddings  (B, T, D) float32, one per output frame of the encoder (its layer: load_model(..., layer=k))
  timestamps  (B, T) float32 milliseconds, the centre of each frame: (t + 0.5) * hop_ms
  scene       (B, D) float32, the mean of each sound's frames
Outputs are of the input's kind: torch tensors on the input's device, TensorFlow tensors, else numpy arrays.

How sounds are encoded: as the embed API does (`AudioEncoder.embed`, `alp_jax/evaluate/clip_batches.py`), each
sound is cut into windows of S samples (the last padded and masked) and the windows of all B sounds are encoded
in fixed batches of `windows_per_batch` windows: any length works, one compiled shape serves every call, and
memory holds one batch of windows plus the outputs. Nothing is resampled: HEAR passes audio at sample_rate.

Timestamps: a full window of S samples gives T' frames, so frames lie hop_ms = 1000 S / (16000 T') apart and
frame t of a sound (counting across its windows) is centred at (t + 0.5) * hop_ms; for the Transformer encoders
(`stack` 10 ms log-mel frames per output frame) that is exactly the centre of the frame's stacked mel frames.
The last window's partial frames are kept while their centre lies within the sound; a frame centred past its end
(a short tail that only partly fills a frame) is left out of the timestamp embeddings, except that every sound
keeps at least its first frame.

Scene embedding: the mean over all the sound's valid frames, tail included, the same vector as
`AudioEncoder.embed(...)["pooled"]` and as the mean probes' input (reduced on the device per window).

The model object also carries the names X-ARES's encoder template asks for (`sampling_rate`, `output_dim`,
`hop_size_in_ms`) and its forward pass, `model(audio)` -> (B, T, D) embeddings, is the timestamp embeddings.
JAX runs on its own default device: `model.to("cuda")` (what the HEAR kits call) moves nothing.
"""
from __future__ import annotations

import os

import numpy as np
from etils import epath

from alp_jax import encoder_api
from alp_jax.audio import io as audio_io
from alp_jax.evaluate import clip_batches

try:   # the HEAR kits accept only torch (or TensorFlow) modules; numpy in and out works without torch
  import torch
  _ModelBase = torch.nn.Module
except ImportError:
  torch = None
  _ModelBase = object

SAMPLE_RATE = audio_io.TARGET_SAMPLE_RATE


class HearModel(_ModelBase):
  """An exported encoder with the HEAR model attributes (module docstring)."""

  def __init__(self, encoder: encoder_api.AudioEncoder, *,
               windows_per_batch: int = clip_batches.DEFAULT_WINDOWS_PER_BATCH):
    super().__init__()
    self.encoder = encoder
    self.windows_per_batch = int(windows_per_batch)
    self.sample_rate = SAMPLE_RATE
    self.scene_embedding_size = self.timestamp_embedding_size = encoder.output_dim
    self.frames_per_window = encoder.frames_per_window                                        # T'
    self.hop_ms = 1000.0 * encoder.window_samples / SAMPLE_RATE / self.frames_per_window
    # X-ARES's encoder template names the same three things so.
    self.sampling_rate, self.output_dim, self.hop_size_in_ms = self.sample_rate, encoder.output_dim, self.hop_ms

  def forward(self, audio):
    """(B, N) audio -> (B, T, D) timestamp embeddings (X-ARES's encoder call); a single (N,) sound is one row."""
    if len(np.shape(audio)) == 1:
      audio = audio[None]
    return get_timestamp_embeddings(audio, self)[0]

  def extra_repr(self) -> str:
    return (f"sample_rate={self.sample_rate}, embedding_size={self.scene_embedding_size}, hop_ms={self.hop_ms:g}, "
            f"layer={self.encoder.layer!r}, windows_per_batch={self.windows_per_batch}")


def load_model(model_file_path: str | os.PathLike = "", *, layer: int | str = encoder_api.LAST,
               windows_per_batch: int = clip_batches.DEFAULT_WINDOWS_PER_BATCH) -> HearModel:
  """An exported encoder folder (`python -m alp_jax.export`; its encoder_config.json is accepted too) as a HEAR
  model. `layer` picks the block whose frames are embedded (encoder_api: "last", an int, "patch"); hear-eval-kit
  passes it through --model-options '{"layer": 3}'."""
  if not str(model_file_path):
    raise ValueError("alp_jax.hear.load_model needs an exported encoder folder: pass it as --model ENC_DIR "
                     "(hear-validator alp_jax.hear --model ENC_DIR); make one with "
                     "`python -m alp_jax.export --workdir RUN --out ENC_DIR`")
  path = epath.Path(model_file_path)
  if path.name == encoder_api.CONFIG_FILE and path.is_file():
    path = path.parent
  if int(windows_per_batch) < 1:   # hear-eval-kit's --model-options may hand numbers over as strings
    raise ValueError(f"windows_per_batch must be at least 1, got {windows_per_batch}")
  return HearModel(encoder_api.AudioEncoder.load(path, layer=layer), windows_per_batch=windows_per_batch)


def get_timestamp_embeddings(audio, model: HearModel):
  """(B, N) audio at 16 kHz -> ((B, T, D) float32 embeddings, (B, T) float32 timestamps in ms), of the input's
  kind (module docstring)."""
  sounds = _sounds(audio, model)                                                               # (B,N)
  frames = [outcome[1] for outcome in _encode(sounds, model, frames=True)]                     # B x (T_all,D)
  timestamps = frame_timestamps(len(frames[0]), sounds.shape[1], model)                        # (T,)
  embeddings = np.stack([f[:len(timestamps)] for f in frames]).astype(np.float32)             # (B,T,D)
  timestamps = np.broadcast_to(timestamps.astype(np.float32), embeddings.shape[:2]).copy()     # (B,T)
  return _like(embeddings, audio), _like(timestamps, audio)


def get_scene_embeddings(audio, model: HearModel):
  """(B, N) audio at 16 kHz -> (B, D) float32: each sound's mean frame, of the input's kind."""
  sounds = _sounds(audio, model)
  pooled = np.stack([outcome[0] for outcome in _encode(sounds, model, frames=False)]).astype(np.float32)
  return _like(pooled, audio)


def frame_timestamps(num_frames: int, num_samples: int, model: HearModel) -> np.ndarray:
  """(T,) float64 ms: the centres of a sound's first `num_frames` valid frames, (t + 0.5) * hop_ms, cut after the
  last centre within the sound's num_samples (at least one kept). RuntimeError when the count does not fit the
  windows (an encoder whose full windows lose frames has no regular timestamps)."""
  windows = max(1, -(-num_samples // model.encoder.window_samples))
  per_window = model.frames_per_window
  if not (windows - 1) * per_window < num_frames <= windows * per_window:
    raise RuntimeError(f"the encoder gave {num_frames} valid frames for {num_samples} samples in {windows} "
                       f"window(s) of {per_window} frames: its full windows are not fully valid, so its frames "
                       f"have no regular timestamps")
  centres = (np.arange(num_frames) + 0.5) * model.hop_ms                                      # (T_all,)
  duration_ms = 1000.0 * num_samples / SAMPLE_RATE
  return centres[:max(1, int(np.sum(centres <= duration_ms)))]


def _encode(sounds: np.ndarray, model: HearModel, *, frames: bool) -> list:
  """B sounds through the encoder in fixed batches of windows -> per sound (pooled (D,), frames (T_all, D) or
  None), in order; ValueError naming a sound too short for one frame."""
  batcher = clip_batches.ClipBatcher(model.encoder, windows_per_batch=model.windows_per_batch, frames=frames)
  finished = []
  for index, sound in enumerate(sounds):
    finished += batcher.add(index, sound)
  finished += batcher.finish()
  for index, outcome in finished:
    if isinstance(outcome, str):
      raise ValueError(f"sound {index}: {sounds.shape[1]} samples ({1000 * sounds.shape[1] / SAMPLE_RATE:g} ms) "
                       f"give no encoder frame ({outcome}); pass sounds of at least {model.hop_ms:g} ms")
  return [outcome for _, outcome in finished]


def _sounds(audio, model: HearModel) -> np.ndarray:
  """The HEAR audio argument as a (B, N) float32 numpy array, checked; ValueError saying what is wrong."""
  if not isinstance(model, HearModel):
    raise TypeError(f"model must come from alp_jax.hear.load_model(ENC_DIR), got {type(model).__name__}")
  kind = _kind(audio)
  if kind == "torch":
    if audio.is_complex() or not audio.is_floating_point():
      raise ValueError(f"audio must hold floating-point samples in [-1, 1], got a torch {audio.dtype} tensor")
    samples = audio.detach().to("cpu", torch.float32).numpy()
  else:
    samples = np.asarray(audio.numpy() if kind == "tf" else audio)
    if not np.issubdtype(samples.dtype, np.floating):
      raise ValueError(f"audio must hold floating-point samples in [-1, 1], got dtype {samples.dtype}")
    samples = samples.astype(np.float32, copy=False)
  if samples.ndim != 2 or 0 in samples.shape:
    raise ValueError(f"audio must be (n_sounds, n_samples) mono at {SAMPLE_RATE} Hz with both sizes at least 1, "
                     f"got shape {tuple(samples.shape)}" + ("; one sound: audio[None]" if samples.ndim == 1 else ""))
  bad = np.flatnonzero(~np.isfinite(samples).all(axis=1))
  if len(bad):
    raise ValueError(f"audio holds NaN or infinite samples in sound(s) {bad[:10].tolist()}")
  return samples


def _kind(audio) -> str:
  """"torch", "tf" or "numpy" (anything np.asarray takes: numpy, jax, lists)."""
  root = type(audio).__module__.split(".")[0]
  if root == "torch" and torch is not None and isinstance(audio, torch.Tensor):
    return "torch"
  if root == "tensorflow" and hasattr(audio, "numpy"):
    return "tf"
  return "numpy"


def _like(array: np.ndarray, audio):
  """`array` as the kind of `audio`: a torch tensor on its device, a TensorFlow tensor, else numpy."""
  kind = _kind(audio)
  if kind == "torch":
    return torch.from_numpy(np.ascontiguousarray(array)).to(audio.device)
  if kind == "tf":
    import tensorflow as tf   # only ever reached with a TensorFlow input, so TensorFlow is installed
    return tf.convert_to_tensor(array)
  return array


__all__ = ["HearModel", "SAMPLE_RATE", "frame_timestamps", "get_scene_embeddings", "get_timestamp_embeddings",
           "load_model"]
