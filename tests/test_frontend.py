"""Tests of the on-device log-mel frontend and SpecAugment against independent references.

References: librosa itself for the "librosa" convention; for the "kaldi" convention a per-frame
NumPy transcription of Kaldi's feature-window.cc / mel-computations.cc written here (loops,
float64). Dimension letters: B batch, S samples, T frames, M mel bins.
"""
import functools
import math

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from alp_jax.audio import frontend
from alp_jax.audio import specaugment

SR = 16000
LIBROSA_TOLERANCE = 1e-3  # max |log-mel - librosa log-mel| (docs/frontend.md)
KALDI_TOLERANCE = 1e-3  # max |log-mel - NumPy Kaldi log-mel|


def chirp_and_noise(num_samples: int, seed: int = 0) -> np.ndarray:
  """A 100 Hz -> 7 kHz chirp plus white noise at -20 dB, float64 in [-1, 1]."""
  t = np.arange(num_samples) / SR
  rate = (7000.0 - 100.0) / t[-1]
  chirp = 0.3 * np.sin(2 * np.pi * (100.0 * t + 0.5 * rate * t ** 2))
  return chirp + 0.03 * np.random.default_rng(seed).standard_normal(num_samples)


def jitted_log_mel(cfg):
  return jax.jit(functools.partial(frontend.log_mel, cfg=cfg))


def prefix_mask(lengths, num_samples):
  return np.arange(num_samples)[None, :] < np.asarray(lengths)[:, None]


# ----------------------------------------------------------------------------------------------
# librosa convention


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_librosa_convention_matches_librosa(pad_mode):
  num_samples, short = 16037, 9001
  audio = chirp_and_noise(num_samples).astype(np.float32)
  batch = np.stack([audio, audio])
  batch[1, short:] = 0.5  # garbage behind the mask must not leak into valid frames
  cfg = frontend.default_frontend_config()
  cfg.convention = "librosa"
  cfg.librosa.pad_mode = pad_mode
  features, frame_mask = jitted_log_mel(cfg)(batch, prefix_mask([num_samples, short], num_samples))
  features = np.asarray(features)
  for row, length in enumerate([num_samples, short]):
    mel = librosa.feature.melspectrogram(
        y=audio[:length].astype(np.float64), sr=SR, n_fft=512, win_length=400, hop_length=160,
        n_mels=80, pad_mode=pad_mode)
    reference = np.log(mel + 1e-10).T  # (T, M)
    assert reference.min() > math.log(1e-6)  # all bins well above the silence floor
    assert int(frame_mask[row].sum()) == reference.shape[0]
    np.testing.assert_array_less(
        np.abs(features[row, :reference.shape[0]] - reference), LIBROSA_TOLERANCE)
    np.testing.assert_array_equal(features[row, reference.shape[0]:], np.float32(cfg.pad_value))
  assert features.shape == (2, 1 + num_samples // 160, 80)


@pytest.mark.parametrize("num_bins,n_fft,fmin,fmax",
                         [(80, 512, 0.0, 0.0), (64, 1024, 50.0, 7000.0)])
def test_slaney_filterbank_matches_librosa(num_bins, n_fft, fmin, fmax):
  ours = frontend.slaney_mel_filterbank(num_bins, n_fft, float(SR), fmin, fmax)
  theirs = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=num_bins, fmin=fmin,
                               fmax=fmax or None).T
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# kaldi convention: independent NumPy transcription of Kaldi


def kaldi_mel_banks_reference(num_bins, n_fft, sample_rate, low_freq, high_freq):
  """Kaldi MelBanks::MelBanks as loops (F, M), Nyquist bin left at zero."""
  def mel(freq):
    return 1127.0 * math.log(1.0 + freq / 700.0)
  nyquist = 0.5 * sample_rate
  high = high_freq if high_freq > 0 else nyquist + high_freq
  mel_low, mel_high = mel(low_freq), mel(high)
  delta = (mel_high - mel_low) / (num_bins + 1)
  banks = np.zeros((n_fft // 2 + 1, num_bins))
  for b in range(num_bins):
    left, centre, right = (mel_low + b * delta, mel_low + (b + 1) * delta,
                           mel_low + (b + 2) * delta)
    for i in range(n_fft // 2):
      m = mel(sample_rate * i / n_fft)
      if left < m < right:
        if m <= centre:
          banks[i, b] = (m - left) / (centre - left)
        else:
          banks[i, b] = (right - m) / (right - centre)
  return banks


def kaldi_fbank_reference(samples, num_bins=80, low_freq=20.0, high_freq=-400.0):
  """Kaldi ComputeFeatures(snip_edges=false, dither=0) for one clip, float64, (T, M)."""
  length, shift, n_fft = 400, 160, 512
  num = len(samples)
  count = (num + shift // 2) // shift
  t = np.arange(length)
  povey = (0.5 - 0.5 * np.cos(2 * np.pi * t / (length - 1))) ** 0.85
  banks = kaldi_mel_banks_reference(num_bins, n_fft, SR, low_freq, high_freq)
  out = np.zeros((count, num_bins))
  for f in range(count):
    start = f * shift + shift // 2 - length // 2
    window = np.zeros(length)
    for s in range(length):
      index = start + s
      while index < 0 or index >= num:  # feature-window.cc ExtractWindow
        index = -index - 1 if index < 0 else 2 * num - 1 - index
      window[s] = samples[index]
    window -= window.mean()
    for s in range(length - 1, 0, -1):
      window[s] -= 0.97 * window[s - 1]
    window[0] -= 0.97 * window[0]
    window *= povey
    power = np.abs(np.fft.rfft(window, n=n_fft)) ** 2
    out[f] = np.log(np.maximum(power @ banks, np.finfo(np.float32).eps))
  return out


@pytest.mark.parametrize("args", [(80, 512, 16000.0, 20.0, -400.0), (40, 1024, 16000.0, 0.0, 0.0),
                                  (23, 256, 8000.0, 64.0, 3800.0)])
def test_kaldi_filterbank_matches_reference(args):
  np.testing.assert_allclose(frontend.kaldi_mel_filterbank(*args),
                             kaldi_mel_banks_reference(*args), rtol=1e-6, atol=1e-7)


def test_kaldi_pipeline_matches_numpy_reference():
  num_samples, lengths = 8000, [8000, 5043, 150]
  audio = np.round(chirp_and_noise(num_samples, seed=1) * 32767).astype(np.int16)
  batch = np.stack([audio] * 3)
  batch[1, 5043:] = 12345  # garbage behind the mask
  cfg = frontend.default_frontend_config()
  features, frame_mask = jitted_log_mel(cfg)(batch, prefix_mask(lengths, num_samples))
  features = np.asarray(features)
  assert features.shape == (3, 50, 80) and features.dtype == np.float32
  for row, length in enumerate(lengths):
    reference = kaldi_fbank_reference(audio[:length].astype(np.float64) / 32768.0)
    assert int(frame_mask[row].sum()) == reference.shape[0]
    np.testing.assert_array_less(
        np.abs(features[row, :reference.shape[0]] - reference), KALDI_TOLERANCE)
    np.testing.assert_array_equal(features[row, reference.shape[0]:], np.float32(math.log(1e-10)))


def test_frame_counts_follow_kaldi_and_librosa_rules():
  kaldi = frontend.default_frontend_config()
  librosa_cfg = frontend.default_frontend_config()
  librosa_cfg.convention = "librosa"
  assert frontend.frame_geometry(kaldi) == (400, 160, 512)
  # Kaldi snip_edges=false: round(n / 160), halves up.
  expected_kaldi = {0: 0, 79: 0, 80: 1, 239: 1, 240: 2, 400: 3, 16000: 100, 16079: 100,
                    16080: 101, 64000: 400, 160000: 1000}
  # librosa center=True: one frame per hop start, plus the frame centred on the last sample.
  expected_librosa = {1: 1, 159: 1, 160: 2, 16000: 101, 64000: 401, 160000: 1001}
  for n, count in expected_kaldi.items():
    assert frontend.num_frames(n, kaldi) == count
  for n, count in expected_librosa.items():
    assert frontend.num_frames(n, librosa_cfg) == count
  lengths = jnp.array([0, 79, 80, 16079, 16080])
  np.testing.assert_array_equal(frontend.valid_frames(lengths, kaldi), [0, 0, 1, 100, 101])
  np.testing.assert_array_equal(frontend.valid_frames(lengths, librosa_cfg), [0, 1, 1, 101, 101])
  for num_samples, count in [(64000, 400), (16080, 101)]:  # shapes only: no compilation
    shapes = jax.eval_shape(functools.partial(frontend.log_mel, cfg=kaldi),
                            jax.ShapeDtypeStruct((4, num_samples), jnp.int16),
                            jax.ShapeDtypeStruct((4, num_samples), jnp.bool_))
    assert shapes[0].shape == (4, count, 80) and shapes[0].dtype == jnp.float32
    assert shapes[1].shape == (4, count) and shapes[1].dtype == jnp.bool_


# ----------------------------------------------------------------------------------------------
# padding, input scaling, normalisation, DFT implementations


def test_padding_changes_no_valid_frame():
  clip_samples, padded_samples = 4801, 8000
  clip = np.round(chirp_and_noise(clip_samples, seed=2) * 20000).astype(np.int16)
  cfg = frontend.default_frontend_config()
  alone, alone_mask = jitted_log_mel(cfg)(clip[None], np.ones((1, clip_samples), bool))
  padded = np.zeros((2, padded_samples), np.int16)
  padded[:, :clip_samples] = clip
  padded[1, clip_samples:] = -7000  # masked samples are never read
  padded_mask = prefix_mask([clip_samples] * 2, padded_samples)
  features, frame_mask = jitted_log_mel(cfg)(padded, padded_mask)
  valid = frontend.num_frames(clip_samples, cfg)
  assert valid == 30 and int(alone_mask.sum()) == valid
  np.testing.assert_array_equal(np.asarray(frame_mask).sum(axis=1), [valid, valid])
  np.testing.assert_allclose(features[0, :valid], alone[0], atol=1e-5)
  np.testing.assert_array_equal(features[0], features[1])
  # int16 input is the float waveform times 32768
  as_float = jitted_log_mel(cfg)(padded.astype(np.float32) / 32768.0, padded_mask)[0]
  np.testing.assert_allclose(as_float, features, atol=1e-5)


def test_normalisation_and_matmul_dft():
  num_samples, length = 4000, 3000
  audio = np.round(chirp_and_noise(num_samples, seed=3) * 20000).astype(np.int16)
  mask = prefix_mask([length], num_samples)
  cfg = frontend.default_frontend_config()
  raw = np.asarray(jitted_log_mel(cfg)(audio[None], mask)[0])
  normalised_cfg = frontend.default_frontend_config()
  normalised_cfg.normalize = True
  normalised_cfg.pad_value = 0.0
  normalised = np.asarray(jitted_log_mel(normalised_cfg)(audio[None], mask)[0])
  valid = frontend.num_frames(length, cfg)
  np.testing.assert_allclose(normalised[0, :valid], (raw[0, :valid] + 4.27) / 4.57, atol=1e-5)
  np.testing.assert_array_equal(normalised[0, valid:], 0.0)
  matmul_cfg = frontend.default_frontend_config()
  matmul_cfg.fft_impl = "matmul"
  via_matmul = np.asarray(jitted_log_mel(matmul_cfg)(audio[None], mask)[0])
  np.testing.assert_allclose(via_matmul, raw, atol=2e-3)


def test_rfft_path_vmaps_and_differentiates_like_the_matmul_dft():
  num_samples = 1600
  audio = (chirp_and_noise(2 * num_samples, seed=5).reshape(2, num_samples) * 0.5)
  audio = audio.astype(np.float32)
  mask = np.ones((2, num_samples), bool)
  rfft_cfg = frontend.default_frontend_config()
  matmul_cfg = frontend.default_frontend_config()
  matmul_cfg.fft_impl = "matmul"

  def features(cfg, waveform):
    return frontend.log_mel(waveform, mask, cfg)[0]

  per_row = jax.jit(jax.vmap(lambda row, row_mask: frontend.log_mel(
      row[None], row_mask[None], rfft_cfg)[0][0]))(audio, mask)
  np.testing.assert_allclose(per_row, jitted_log_mel(rfft_cfg)(audio, mask)[0], atol=1e-5)
  direction = np.random.default_rng(6).standard_normal(audio.shape).astype(np.float32)
  _, rfft_tangent = jax.jit(lambda w, d: jax.jvp(
      functools.partial(features, rfft_cfg), (w,), (d,)))(audio, direction)
  _, matmul_tangent = jax.jit(lambda w, d: jax.jvp(
      functools.partial(features, matmul_cfg), (w,), (d,)))(audio, direction)
  scale = np.abs(matmul_tangent).max()
  np.testing.assert_allclose(rfft_tangent / scale, matmul_tangent / scale, atol=1e-3)


def test_batch_sharded_frontend_needs_no_collectives():
  """On a batch-sharded mesh each device featurises its own examples (no all-gather)."""
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  by_batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  num_samples = 4000
  audio = np.round(chirp_and_noise(num_samples, seed=4) * 20000).astype(np.int16)
  batch = np.stack([np.roll(audio, 97 * row) for row in range(8)])
  mask = prefix_mask(np.linspace(1000, num_samples, 8).astype(int), num_samples)
  cfg = frontend.default_frontend_config()
  cfg.spec_augment.time_warp_factor = 5

  def featurise(key, waveform, sample_mask):
    features, frame_mask = frontend.log_mel(waveform, sample_mask, cfg)
    return frontend.spec_augment(key, features, frame_mask, cfg.spec_augment), frame_mask

  step = jax.jit(featurise)
  sharded_args = (jax.random.key(0), jax.device_put(batch, by_batch),
                  jax.device_put(mask, by_batch))
  compiled = step.lower(*sharded_args).compile()
  hlo = compiled.as_text()
  assert "all-gather" not in hlo and "all-reduce" not in hlo and "all-to-all" not in hlo
  sharded = compiled(*sharded_args)
  single = step(jax.random.key(0), batch, mask)
  assert sharded[0].sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_allclose(sharded[0], single[0], atol=1e-4)
  np.testing.assert_array_equal(sharded[1], single[1])


# ----------------------------------------------------------------------------------------------
# SpecAugment


def augment_config(**overrides):
  cfg = specaugment.default_spec_augment_config()
  cfg.prob = 1.0
  cfg.time_warp_factor = 0
  cfg.num_freq_masks = 0
  cfg.num_time_masks = 0
  cfg.update(overrides)
  return cfg


def runs_of_true(flags):
  """[(start, stop)] of the runs of True in a 1-D bool array."""
  edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def random_features(batch, frames, bins, lengths, seed=0):
  features = np.random.default_rng(seed).standard_normal((batch, frames, bins)).astype(np.float32)
  frame_mask = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]
  return jnp.asarray(features), jnp.asarray(frame_mask)


def test_frequency_masks_counts_widths_and_fill():
  batch, frames, bins = 32, 60, 80
  lengths = [60, 45] * 16
  features, frame_mask = random_features(batch, frames, bins, lengths)
  cfg = augment_config(num_freq_masks=2, max_freq_width=27)
  out = np.asarray(jax.jit(functools.partial(specaugment.spec_augment, cfg=cfg))(
      jax.random.key(0), features, frame_mask))
  features, frame_mask = np.asarray(features), np.asarray(frame_mask)
  widest = 0
  for row in range(batch):
    valid = frame_mask[row]
    changed = out[row] != features[row]
    assert not changed[~valid].any()  # padded frames untouched
    columns = changed[valid].any(axis=0)
    assert (changed[valid] == columns[None, :]).all()  # whole bands over every valid frame
    runs = runs_of_true(columns)
    assert len(runs) <= 2 and all(stop - start <= 2 * 27 for start, stop in runs)
    assert columns.sum() <= 2 * 27
    widest = max([widest] + [stop - start for start, stop in runs])
    mean = features[row][valid].mean()
    np.testing.assert_allclose(out[row][valid][:, columns], mean, rtol=1e-5)
    np.testing.assert_array_equal(out[row][~changed], features[row][~changed])
  assert widest >= 20  # 64 uniform widths in [0, 27]: max < 20 has probability ~1e-9


def test_time_masks_stay_inside_valid_frames_and_budget():
  batch, frames, bins = 32, 200, 8
  lengths = [200, 120, 60, 0] * 8
  features, frame_mask = random_features(batch, frames, bins, lengths, seed=1)
  cfg = augment_config(num_time_masks=10, max_time_width=10, max_time_fraction=0.15,
                       mask_value="zero")
  out = np.asarray(jax.jit(functools.partial(specaugment.spec_augment, cfg=cfg))(
      jax.random.key(1), features, frame_mask))
  features = np.asarray(features)
  masked_any = False
  for row, length in enumerate(lengths):
    changed = out[row] != features[row]
    rows = changed.any(axis=1)
    assert (changed[rows] == True).all()  # noqa: E712  (whole frames)
    assert not rows[length:].any()
    budget = 0.15 * length  # lhotse: ceil(budget / 10) masks of at most budget / masks frames
    masks = min(10, math.ceil(budget / 10)) if length else 0
    assert len(runs_of_true(rows)) <= masks
    assert rows.sum() <= budget
    np.testing.assert_array_equal(out[row][changed], 0.0)
    masked_any |= rows.any()
  assert masked_any


def test_spec_augment_keys_probability_and_switch():
  features, frame_mask = random_features(32, 100, 16, [100] * 32, seed=2)
  cfg = augment_config(num_freq_masks=2, max_freq_width=8, num_time_masks=2, max_time_width=10,
                       prob=0.5)
  augment = jax.jit(functools.partial(specaugment.spec_augment, cfg=cfg))
  first = np.asarray(augment(jax.random.key(3), features, frame_mask))
  again = np.asarray(augment(jax.random.key(3), features, frame_mask))
  other = np.asarray(augment(jax.random.key(4), features, frame_mask))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  touched = (first != np.asarray(features)).any(axis=(1, 2))
  assert 0 < touched.sum() < 32  # prob 0.5 over 32 examples
  cfg.enabled = False
  assert specaugment.spec_augment(jax.random.key(3), features, frame_mask, cfg) is features


def test_time_warp_is_a_monotone_two_piece_resampling():
  batch, frames, lengths = 8, 100, [100, 90, 60, 20] * 2
  ramp = np.broadcast_to(np.arange(frames, dtype=np.float32)[None, :, None], (batch, frames, 4))
  frame_mask = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]
  cfg = augment_config(time_warp_factor=10)
  out = np.asarray(jax.jit(functools.partial(specaugment.spec_augment, cfg=cfg))(
      jax.random.key(5), jnp.asarray(ramp), jnp.asarray(frame_mask)))
  warped_any = False
  for row, length in enumerate(lengths):
    np.testing.assert_array_equal(out[row, length:], ramp[row, length:])
    source = out[row, :length, 0]  # for a ramp input the output is the source position
    np.testing.assert_array_equal(out[row, :length], np.repeat(source[:, None], 4, axis=1))
    assert (np.diff(source) >= -1e-5).all() and source[0] >= 0 and source[-1] <= length - 1
    kinks = np.abs(np.diff(source, 2)) > 1e-3  # piecewise linear: two slopes joined at c'
    assert kinks.sum() <= 4  # the join and clipping at the ends of the two pieces
    if length <= 2 * 10 + 1:
      np.testing.assert_array_equal(out[row], ramp[row])
    warped_any |= not np.allclose(source, np.arange(length))
  assert warped_any
