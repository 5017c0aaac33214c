"""On-device audio frontend: 16 kHz waveform -> log-mel features, pure jnp, inside jit.

Two conventions, chosen by `cfg.convention`:
  "kaldi"    Kaldi fbank as computed by lhotse `Fbank(FbankConfig(num_mel_bins=80))`, the study
             toolkit's features: snip_edges=False framing with symmetric reflection at both ends,
             per-frame DC removal, pre-emphasis 0.97, povey window, |rfft|^2 over n_fft = 512,
             triangular filters on the Kaldi mel scale 1127 ln(1 + f/700) from 20 Hz to
             Nyquist - 400 Hz, log(max(energy, float32 eps)).
  "librosa"  `librosa.feature.melspectrogram(y, sr, n_fft, win_length, hop_length, n_mels)`
             (centred frames, periodic Hann window, Slaney mel scale and area norm, power 2)
             followed by log(mel + 1e-10).

Frames and padding: a batch row holds `n` real samples then padding (`sample_mask` is True on a
prefix). Every edge effect (reflection, zero padding) is applied at the row's own end `n`, never
at the batch's padded end, so each valid frame equals the frame computed from the unpadded clip;
valid frames number `num_frames(n)` (what lhotse or librosa give for that clip) and every other
frame is set to `cfg.pad_value`. docs/frontend.md has the formulas.

Dimension letters:
  B batch, S waveform samples, P padded samples, C hop-sized chunks, K chunks spanned by one
  window, H hop samples, W window samples, T frames, F FFT bins (n_fft // 2 + 1), M mel bins.
"""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning

from alp_jax.audio.specaugment import default_spec_augment_config, spec_augment

__all__ = [
    "default_frontend_config", "frame_geometry", "kaldi_mel_filterbank", "log_mel",
    "mel_filterbank", "num_frames", "slaney_mel_filterbank", "spec_augment", "valid_frames",
]

LOG_1E_10 = math.log(1e-10)  # lhotse's collation pad value (LOG_EPSILON), the study's padding
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # lhotse Wav2LogFilterBank's log floor


def default_frontend_config() -> ml_collections.ConfigDict:
  """Frontend settings; the defaults are the study's (lhotse Fbank with num_mel_bins=80)."""
  cfg = ml_collections.ConfigDict()
  cfg.convention = "kaldi"  # "kaldi" (study: lhotse Fbank) | "librosa"
  cfg.sample_rate = 16000
  cfg.num_mel_bins = 80  # study: 80
  cfg.win_ms = 25.0  # study: 25 ms (400 samples)
  cfg.hop_ms = 10.0  # study: 10 ms (160 samples), 100 frames per second
  cfg.n_fft = 0  # 0: next power of two >= window length (512 at 16 kHz), as Kaldi and lhotse
  cfg.fft_impl = "rfft"  # "rfft" (jnp.fft) | "matmul" (dense DFT matrix; MXU-friendly on TPU)
  cfg.pad_value = LOG_1E_10  # written to padded frames (after normalisation)
  cfg.normalize = False  # study: off (raw fbank into the Zipformer)
  cfg.norm_mean = -4.27  # AST's AudioSet fbank statistics, used when normalize is on
  cfg.norm_std = 4.57

  cfg.kaldi = ml_collections.ConfigDict()
  cfg.kaldi.remove_dc_offset = True
  cfg.kaldi.preemphasis = 0.97
  cfg.kaldi.window = "povey"  # povey | hann | hamming | rectangular (Kaldi's symmetric windows)
  cfg.kaldi.low_freq = 20.0
  cfg.kaldi.high_freq = -400.0  # <= 0 means Nyquist + high_freq (lhotse FbankConfig default)
  cfg.kaldi.log_floor = FLOAT32_EPS  # log(max(energy, floor))

  cfg.librosa = ml_collections.ConfigDict()
  cfg.librosa.pad_mode = "constant"  # librosa >= 0.10 default; or "reflect"
  cfg.librosa.fmin = 0.0
  cfg.librosa.fmax = 0.0  # 0 means Nyquist (librosa fmax=None)
  cfg.librosa.log_offset = 1e-10  # log(mel + offset)

  cfg.spec_augment = default_spec_augment_config()
  return cfg


def frame_geometry(cfg: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(window samples W, hop samples H, n_fft N) for the config."""
  # Kaldi truncates samp_freq * ms / 1000; the epsilon keeps 25 ms at 16 kHz from becoming 399.
  win_length = int(cfg.sample_rate * cfg.win_ms / 1000.0 + 1e-6)
  hop_length = int(cfg.sample_rate * cfg.hop_ms / 1000.0 + 1e-6)
  n_fft = cfg.n_fft or 1 << (win_length - 1).bit_length()
  if hop_length <= 0 or win_length <= 1:
    raise ValueError(f"window {cfg.win_ms} ms / hop {cfg.hop_ms} ms is under two / one samples")
  if win_length > n_fft:
    raise ValueError(f"window of {win_length} samples does not fit n_fft={n_fft}")
  return win_length, hop_length, n_fft


def num_frames(num_samples: int, cfg: ml_collections.ConfigDict) -> int:
  """Frames for a clip of `num_samples` samples: the static T of `log_mel`.

  kaldi:   (n + H // 2) // H, i.e. round(n / H) (Kaldi/lhotse with snip_edges=False).
  librosa: 1 + n // H (center=True).
  """
  _, hop_length, _ = frame_geometry(cfg)
  if cfg.convention == "kaldi":
    return (num_samples + hop_length // 2) // hop_length
  if cfg.convention == "librosa":
    return 1 + num_samples // hop_length
  raise ValueError(f"unknown frontend convention {cfg.convention!r}; use 'kaldi' or 'librosa'")


def valid_frames(sample_counts: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
  """Valid frames per row (B,) from real samples per row (B,); an empty row has none."""
  counts = num_frames(sample_counts, cfg)
  return jnp.where(sample_counts > 0, counts, 0)


def _kaldi_mel(freq):
  return 1127.0 * np.log1p(np.asarray(freq, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def kaldi_mel_filterbank(num_bins: int, n_fft: int, sample_rate: float, low_freq: float,
                         high_freq: float) -> np.ndarray:
  """Kaldi/torchaudio/lhotse mel filterbank (F, M), float32, unnormalised triangles.

  Triangles are equally spaced on mel(f) = 1127 ln(1 + f / 700) between mel(low_freq) and
  mel(high_freq) (high_freq <= 0 counts down from Nyquist); FFT bin i sits at i * sr / n_fft and
  the Nyquist bin gets no weight, as in Kaldi.
  """
  nyquist = 0.5 * sample_rate
  if high_freq <= 0.0:
    high_freq += nyquist
  if not 0.0 <= low_freq < high_freq <= nyquist:
    raise ValueError(f"mel range [{low_freq}, {high_freq}] Hz does not fit Nyquist {nyquist} Hz")
  mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
  mel_delta = (mel_high - mel_low) / (num_bins + 1)
  edges = mel_low + mel_delta * np.arange(num_bins + 2)  # left, centre, right per bin
  bin_mel = _kaldi_mel(np.arange(n_fft // 2) * sample_rate / n_fft)[:, None]  # (F - 1, 1)
  rising = (bin_mel - edges[None, :-2]) / (edges[None, 1:-1] - edges[None, :-2])
  falling = (edges[None, 2:] - bin_mel) / (edges[None, 2:] - edges[None, 1:-1])
  weights = np.maximum(0.0, np.minimum(rising, falling))  # (F - 1, M)
  weights = np.concatenate([weights, np.zeros((1, num_bins))], axis=0)  # Nyquist bin: 0
  return weights.astype(np.float32)


def _slaney_hz_to_mel(freq):
  freq = np.asarray(freq, np.float64)
  linear = freq / (200.0 / 3)
  log_part = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
  return np.where(freq >= 1000.0, log_part, linear)


def _slaney_mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  linear = mel * (200.0 / 3)
  log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
  return np.where(mel >= 15.0, log_part, linear)


@functools.lru_cache(maxsize=16)
def slaney_mel_filterbank(num_bins: int, n_fft: int, sample_rate: float, fmin: float,
                          fmax: float) -> np.ndarray:
  """librosa.filters.mel(htk=False, norm='slaney') transposed to (F, M), float32.

  Slaney's scale is linear below 1 kHz (200/3 Hz per mel) and logarithmic above (27 mels per
  factor 6.4); triangles meet at their neighbours' centres in Hz and have unit area (2 / width).
  """
  fmax = fmax if fmax > 0 else 0.5 * sample_rate
  edges_hz = _slaney_mel_to_hz(
      np.linspace(_slaney_hz_to_mel(fmin), _slaney_hz_to_mel(fmax), num_bins + 2))
  fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (F,)
  widths = np.diff(edges_hz)  # (M + 1,)
  offsets = edges_hz[:, None] - fft_hz[None, :]  # (M + 2, F)
  rising = -offsets[:-2] / widths[:-1, None]
  falling = offsets[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))  # (M, F)
  weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
  return weights.T.astype(np.float32)


def mel_filterbank(cfg: ml_collections.ConfigDict) -> np.ndarray:
  """The (F, M) filterbank the config's convention uses."""
  _, _, n_fft = frame_geometry(cfg)
  if cfg.convention == "kaldi":
    return kaldi_mel_filterbank(cfg.num_mel_bins, n_fft, float(cfg.sample_rate),
                                float(cfg.kaldi.low_freq), float(cfg.kaldi.high_freq))
  return slaney_mel_filterbank(cfg.num_mel_bins, n_fft, float(cfg.sample_rate),
                               float(cfg.librosa.fmin), float(cfg.librosa.fmax))


def _window(cfg: ml_collections.ConfigDict, win_length: int) -> np.ndarray:
  """Analysis window (W,): Kaldi's symmetric windows, or librosa's periodic Hann."""
  if cfg.convention == "librosa":
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
  phase = 2 * np.pi * np.arange(win_length) / (win_length - 1)
  windows = {
      "povey": lambda: (0.5 - 0.5 * np.cos(phase)) ** 0.85,
      "hann": lambda: 0.5 - 0.5 * np.cos(phase),
      "hamming": lambda: 0.54 - 0.46 * np.cos(phase),
      "rectangular": lambda: np.ones(win_length),
  }
  if cfg.kaldi.window not in windows:
    raise ValueError(f"unknown kaldi window {cfg.kaldi.window!r}; use one of {sorted(windows)}")
  return windows[cfg.kaldi.window]()


def _source_indices(sample_counts: jax.Array, first_sample: int, num_padded: int,
                    num_samples: int, mode: str) -> tuple[jax.Array, jax.Array | None]:
  """Which real sample feeds each padded position (B, P), with edges handled at each row's end.

  mode "symmetric" (Kaldi): ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
  mode "reflect" (numpy/librosa): ... 2 1 | 0 1 ... n-1 | n-2 n-3 ...
  mode "constant": zeros outside [0, n); returns the keep mask (B, P) as well.
  """
  positions = first_sample + jnp.arange(num_padded)[None, :]  # (1, P)
  counts = jnp.maximum(sample_counts, 1)[:, None]  # (B, 1)
  if mode == "constant":
    keep = (positions >= 0) & (positions < counts)
    return jnp.clip(positions, 0, num_samples - 1), keep
  if mode == "symmetric":
    period = 2 * counts
    folded = jnp.mod(positions, period)
    folded = jnp.where(folded >= counts, period - 1 - folded, folded)
  elif mode == "reflect":
    period = jnp.maximum(2 * counts - 2, 1)
    folded = jnp.mod(positions, period)
    folded = jnp.where(folded >= counts, period - folded, folded)
  else:
    raise ValueError(f"unknown pad mode {mode!r}; use 'constant' or 'reflect'")
  return jnp.clip(folded, 0, num_samples - 1), None


def _frames(waveform: jax.Array, sample_counts: jax.Array, cfg: ml_collections.ConfigDict,
            num_out: int) -> jax.Array:
  """Raw frames (B, T, W); frame t starts at sample t * H + first_sample."""
  win_length, hop_length, n_fft = frame_geometry(cfg)
  num_samples = waveform.shape[1]
  if cfg.convention == "kaldi":
    # Kaldi: frame t is centred on t * H + H // 2, so its window starts at t * H + H//2 - W//2.
    first_sample, mode = hop_length // 2 - win_length // 2, "symmetric"
  else:
    # librosa: the n_fft frame is centred on t * H and the window sits centred inside it.
    first_sample = -(n_fft // 2) + (n_fft - win_length) // 2
    mode = cfg.librosa.pad_mode
  chunks_per_window = -(-win_length // hop_length)  # K
  num_chunks = num_out - 1 + chunks_per_window  # C
  source, keep = _source_indices(
      sample_counts, first_sample, num_chunks * hop_length, num_samples, mode)
  padded = jnp.take_along_axis(waveform, source, axis=1)  # (B, P)
  if keep is not None:
    padded = jnp.where(keep, padded, 0.0)
  chunks = padded.reshape(waveform.shape[0], num_chunks, hop_length)  # (B, C, H)
  frames = jnp.stack(
      [chunks[:, k:k + num_out] for k in range(chunks_per_window)], axis=2)  # (B, T, K, H)
  frames = frames.reshape(waveform.shape[0], num_out, chunks_per_window * hop_length)
  return frames[..., :win_length]


def _plain_rfft_power(frames: jax.Array, n_fft: int) -> jax.Array:
  """|rfft_N(frame)|^2: (..., W) -> (..., F)."""
  spectrum = jnp.fft.rfft(frames, n=n_fft, axis=-1)  # (..., F) complex64
  return jnp.square(spectrum.real) + jnp.square(spectrum.imag)


# XLA's partitioner replicates an FFT (it all-gathers a batch-sharded input first), so the rfft
# goes through custom_partitioning: each device transforms its own examples. custom_partitioning
# has no batching or differentiation rules; custom_vmap and custom_jvp below supply them.
_partitioned_rfft_power = custom_partitioning(_plain_rfft_power, static_argnums=(1,))


def _keep_leading_axes(sharding, ndim: int):
  spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
  return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[:-1], None))


def _rfft_power_partition(n_fft, mesh, arg_shapes, result_shape):
  del result_shape
  sharding = _keep_leading_axes(arg_shapes[0].sharding, len(arg_shapes[0].shape))
  return mesh, functools.partial(_plain_rfft_power, n_fft=n_fft), sharding, (sharding,)


def _rfft_power_infer(n_fft, mesh, arg_shapes, result_shape):
  del n_fft, mesh, result_shape
  return _keep_leading_axes(arg_shapes[0].sharding, len(arg_shapes[0].shape))


_partitioned_rfft_power.def_partition(
    partition=_rfft_power_partition, infer_sharding_from_operands=_rfft_power_infer,
    sharding_rule="... w -> ... f", need_replication_factors=("w", "f"))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _rfft_power(frames: jax.Array, n_fft: int) -> jax.Array:
  """|rfft_N(frame)|^2 (..., W) -> (..., F), partitioned along the leading (batch) axes."""

  @jax.custom_batching.custom_vmap
  def batched(frames):
    return _partitioned_rfft_power(frames, n_fft)

  @batched.def_vmap
  def _(axis_size, in_batched, frames):  # the op maps leading axes; the vmapped one is one more
    del axis_size
    return _partitioned_rfft_power(frames, n_fft), in_batched[0]

  return batched(frames)


@_rfft_power.defjvp
def _rfft_power_jvp(n_fft, primals, tangents):
  (frames,), (frames_dot,) = primals, tangents
  spectrum = jnp.fft.rfft(frames, n=n_fft, axis=-1)
  spectrum_dot = jnp.fft.rfft(frames_dot, n=n_fft, axis=-1)
  power_dot = 2 * (spectrum.real * spectrum_dot.real + spectrum.imag * spectrum_dot.imag)
  return _rfft_power(frames, n_fft), power_dot


def _power_spectrum(frames: jax.Array, n_fft: int, fft_impl: str) -> jax.Array:
  """|DFT_N(frame zero-padded to N)|^2 per frame: (B, T, W) -> (B, T, F)."""
  if fft_impl == "rfft":
    return _rfft_power(frames, n_fft)
  if fft_impl == "matmul":
    win_length, num_bins = frames.shape[-1], n_fft // 2 + 1
    phase = 2 * np.pi * np.outer(np.arange(win_length), np.arange(num_bins)) / n_fft  # (W, F)
    dft = jnp.asarray(np.concatenate([np.cos(phase), -np.sin(phase)], axis=1), jnp.float32)
    parts = jnp.einsum("btw,wf->btf", frames, dft,
                       precision=jax.lax.Precision.HIGHEST)  # (B,T,W) @ (W,2F) -> (B,T,2F)
    return jnp.square(parts[..., :num_bins]) + jnp.square(parts[..., num_bins:])
  raise ValueError(f"unknown fft_impl {fft_impl!r}; use 'rfft' or 'matmul'")


def log_mel(waveform: jax.Array, sample_mask: jax.Array,
            cfg: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Log-mel features of a padded waveform batch.

  Args:
    waveform: (B, S) int16 (scaled by 1/32768) or float in [-1, 1], 16 kHz mono.
    sample_mask: (B, S) bool, True on each row's real samples, which come first.
    cfg: `default_frontend_config()` or a variant.

  Returns:
    features (B, T, M) float32 with T = num_frames(S, cfg), padded frames set to cfg.pad_value;
    frame_mask (B, T) bool, True on the frames of real audio.
  """
  if cfg.convention not in ("kaldi", "librosa"):
    raise ValueError(f"unknown frontend convention {cfg.convention!r}; use 'kaldi' or 'librosa'")
  win_length, _, n_fft = frame_geometry(cfg)
  audio = waveform.astype(jnp.float32)
  if waveform.dtype == jnp.int16:
    audio = audio * (1.0 / 32768.0)
  sample_counts = jnp.sum(sample_mask, axis=1, dtype=jnp.int32)  # (B,)
  num_out = num_frames(waveform.shape[1], cfg)
  frames = _frames(audio, sample_counts, cfg, num_out)  # (B, T, W)

  if cfg.convention == "kaldi":
    if cfg.kaldi.remove_dc_offset:
      frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    if cfg.kaldi.preemphasis:
      previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
      frames = frames - cfg.kaldi.preemphasis * previous
  frames = frames * jnp.asarray(_window(cfg, win_length), jnp.float32)

  power = _power_spectrum(frames, n_fft, cfg.fft_impl)  # (B, T, F)
  filterbank = jnp.asarray(mel_filterbank(cfg))  # (F, M)
  mel = jnp.einsum("btf,fm->btm", power, filterbank,
                   precision=jax.lax.Precision.HIGHEST)  # (B,T,F) @ (F,M) -> (B,T,M)
  if cfg.convention == "kaldi":
    features = jnp.log(jnp.maximum(mel, cfg.kaldi.log_floor))
  else:
    features = jnp.log(mel + cfg.librosa.log_offset)
  if cfg.normalize:
    features = (features - cfg.norm_mean) / cfg.norm_std

  frame_counts = valid_frames(sample_counts, cfg)  # (B,)
  frame_mask = jnp.arange(num_out)[None, :] < frame_counts[:, None]  # (B, T)
  features = jnp.where(frame_mask[..., None], features, jnp.float32(cfg.pad_value))
  return features, frame_mask
