"""`AudioEncoder`: an exported audio encoder as a plain Python object.

  from alp_jax import AudioEncoder
  enc = AudioEncoder.load(ENC_DIR)
  out = enc.embed(waveform, sample_rate)      # any length, sample rate, channel count (N,) or (N, C)
  out["frames"] (T', D), out["frame_mask"] (T',), out["pooled"] (D,) = mean over valid frames
  outs = enc.embed_batch([w1, w2], [sr1, sr2])

Audio is downmixed, resampled to 16 kHz (libsoxr), cut into fixed windows of the training crop length
(the last one padded and masked) and encoded window by window in fixed-size batches, so one compiled
function serves every length. Same input, same output: no randomness at inference.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from alp_jax.audio import frontend
from alp_jax.audio import io as audio_io

CONFIG_FILE = "encoder_config.json"
PARAMS_DIR = "params"


class AudioEncoder:

  def __init__(self, meta: dict, module: nnx.Module, *, windows_per_call: int = 8):
    self.meta = meta
    self.frontend_cfg = ml_collections.FrozenConfigDict(meta["frontend"])
    self.window_samples = int(round(meta["crop_seconds"] * audio_io.TARGET_SAMPLE_RATE))
    self.windows_per_call = windows_per_call
    self.module = module
    graphdef, state = nnx.split(module)

    @jax.jit
    def encode(state, audio, mask):
      encoder = nnx.merge(graphdef, state)
      features, frame_mask = frontend.log_mel(audio, mask, self.frontend_cfg)  # (W,T,M)
      frames, out_dict = encoder(features, frame_mask, deterministic=True)     # (W,T',D)
      return frames.astype(jnp.float32), out_dict["frame_mask"]

    self._state = state
    self._encode = encode

  def sync(self) -> None:
    """Picks up parameters changed in place on `module` (nnx.update), keeping the compiled encode function."""
    self._state = nnx.split(self.module)[1]

  @property
  def output_dim(self) -> int:
    return int(self.module.output_dim)

  @classmethod
  def build(cls, meta: dict, *, seed: int = 0) -> "AudioEncoder":
    """Fresh weights for the architecture in `meta` (the random-init baseline of an exported encoder)."""
    from alp_jax import models
    return cls(meta, models.encoder_from_config(ml_collections.ConfigDict(meta["audio"]), rngs=nnx.Rngs(seed)))

  @classmethod
  def load(cls, enc_dir: str | os.PathLike) -> "AudioEncoder":
    from alp_jax import models
    enc_dir = Path(enc_dir).absolute()
    config_path = enc_dir / CONFIG_FILE
    if not config_path.exists():
      raise FileNotFoundError(f"{enc_dir} is not an exported encoder (no {CONFIG_FILE}); create one with "
                              f"`python -m alp_jax.export --workdir RUN --out {enc_dir}`")
    meta = json.loads(config_path.read_text())
    audio_cfg = ml_collections.ConfigDict(meta["audio"])
    abstract = nnx.eval_shape(lambda: models.encoder_from_config(audio_cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract_state.to_pure_dict())
    with ocp.StandardCheckpointer() as checkpointer:
      pure = checkpointer.restore(enc_dir / PARAMS_DIR, target)
    nnx.replace_by_pure_dict(abstract_state, pure)
    return cls(meta, nnx.merge(graphdef, abstract_state))

  def save(self, enc_dir: str | os.PathLike) -> Path:
    """Writes an export folder (encoder_config.json + params) that `load` reads back; replaces params there."""
    enc_dir = Path(enc_dir).absolute()
    enc_dir.mkdir(parents=True, exist_ok=True)
    if (enc_dir / PARAMS_DIR).exists():
      import shutil
      shutil.rmtree(enc_dir / PARAMS_DIR)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(enc_dir / PARAMS_DIR, self.encoder_params_pure())
    (enc_dir / CONFIG_FILE).write_text(json.dumps(self.meta, indent=1))
    return enc_dir

  def encoder_params_pure(self) -> dict:
    return jax.tree.map(np.asarray, nnx.state(self.module, nnx.Param).to_pure_dict())

  def _windows(self, audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = self.window_samples
    count = max(1, -(-len(audio16k) // w))
    padded = np.zeros(count * w, np.float32)
    padded[:len(audio16k)] = audio16k
    mask = np.zeros(count * w, bool)
    mask[:len(audio16k)] = True
    return padded.reshape(count, w), mask.reshape(count, w)

  def embed(self, waveform, sample_rate: int) -> dict[str, np.ndarray]:
    samples = np.asarray(waveform, np.float32)
    if samples.ndim == 2:
      samples = audio_io.to_mono(samples)
    if samples.ndim != 1 or samples.size == 0:
      raise ValueError(f"waveform must be a non-empty (N,) or (N, C) array, got shape {np.shape(waveform)}")
    audio = audio_io.resample(samples, int(sample_rate), audio_io.TARGET_SAMPLE_RATE)
    windows, masks = self._windows(audio)
    frames, frame_masks = [], []
    k = self.windows_per_call
    for start in range(0, len(windows), k):
      chunk, chunk_mask = windows[start:start + k], masks[start:start + k]
      n = len(chunk)
      if n < k:  # fixed shape: pad with fully masked windows
        chunk = np.concatenate([chunk, np.zeros((k - n, chunk.shape[1]), np.float32)])
        chunk_mask = np.concatenate([chunk_mask, np.zeros((k - n, chunk.shape[1]), bool)])
      f, m = jax.device_get(self._encode(self._state, jnp.asarray(chunk), jnp.asarray(chunk_mask)))
      frames.append(f[:n].reshape(-1, f.shape[-1]))
      frame_masks.append(m[:n].reshape(-1))
    frames, frame_mask = np.concatenate(frames), np.concatenate(frame_masks)
    valid = frames[frame_mask]
    return {"frames": valid, "frame_mask": np.ones(len(valid), bool),
            "pooled": valid.mean(axis=0) if len(valid) else np.zeros(frames.shape[-1], np.float32)}

  def embed_batch(self, waveforms, sample_rates) -> list[dict[str, np.ndarray]]:
    if np.isscalar(sample_rates):
      sample_rates = [sample_rates] * len(waveforms)
    return [self.embed(w, sr) for w, sr in zip(waveforms, sample_rates)]
