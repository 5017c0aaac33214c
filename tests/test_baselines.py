"""The log-mel statistics baseline against NumPy on the frontend's own log-mel; its fingerprint; embed_task and
the embeddings cache keep its 4M statistics as the pooled vector and its (T, 2M) frames."""
import csv

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from alp_jax.audio import frontend
from alp_jax.audio import io as audio_io
from alp_jax.evaluate import baselines
from alp_jax.evaluate import embed
from alp_jax.evaluate import tasks

RATE, SECONDS = 22050, 1.3


def _chirp(seed=0, seconds=SECONDS):
  """Stereo chirp 200 Hz -> 4 kHz plus noise, at 22.05 kHz."""
  t = np.arange(int(seconds * RATE)) / RATE
  chirp = 0.4 * np.sin(2 * np.pi * (200.0 * t + 0.5 * (4000.0 - 200.0) / seconds * t ** 2))
  noise = 0.02 * np.random.default_rng(seed).standard_normal((len(t), 2))
  return (chirp[:, None] * np.array([1.0, 0.6]) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
  return baselines.get("logmel-stats")


def _numpy_delta(c):
  """d_t = sum_{n=1,2} n (c_{t+n} - c_{t-n}) / 10, indices clamped to [0, T-1]."""
  length = len(c)
  at = lambda t: c[min(max(t, 0), length - 1)]
  return np.stack([sum(n * (at(t + n) - at(t - n)) for n in (1, 2)) / 10.0 for t in range(length)])


def test_pooled_statistics_match_numpy_on_the_frontend_log_mel(extractor):
  stereo = _chirp()
  out = extractor.embed(stereo, RATE)
  # Reference: the frontend's log-mel of the whole resampled mono clip in one row, then NumPy.
  mono16k = audio_io.resample(audio_io.to_mono(stereo), RATE, 16000)
  cfg = frontend.default_frontend_config()
  logmel, mask = frontend.log_mel(jnp.asarray(mono16k[None]), jnp.ones((1, len(mono16k)), bool), cfg)
  logmel = np.asarray(logmel)[0][np.asarray(mask)[0]].astype(np.float64)   # (T,M)
  delta = _numpy_delta(logmel)
  m = cfg.num_mel_bins
  assert len(logmel) == frontend.num_frames(len(mono16k), cfg) == 130
  # Attention frames: means over runs of 4 frames (25 Hz), the last run holding 130 - 128 = 2 frames.
  assert out["frames"].shape == (33, 2 * m) and out["frame_mask"].all() and out["pooled"].shape == (4 * m,)
  assert extractor.output_dim == 2 * m and extractor.pooled_dim == 4 * m
  full = np.concatenate([logmel, delta], axis=1)
  stacked = np.stack([full[i:i + 4].mean(0) for i in range(0, 130, 4)])
  np.testing.assert_allclose(out["frames"], stacked, rtol=1e-4, atol=1e-3)   # float32 FFTs of other lengths
  unstacked = baselines.get("logmel-stats", frame_stack=1).embed(stereo, RATE)["frames"]
  np.testing.assert_allclose(unstacked[:, :m], logmel, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(unstacked[:, m:], delta, rtol=1e-4, atol=1e-3)
  expected = np.concatenate([logmel.mean(0), logmel.std(0), delta.mean(0), delta.std(0)])
  np.testing.assert_allclose(out["pooled"], expected, rtol=1e-4, atol=1e-4)
  assert np.abs(delta).max() > 0.5   # the chirp moves: deltas are not trivially zero


def test_windows_cover_the_whole_clip_and_short_windows_agree_away_from_their_edges():
  stereo = _chirp(seed=1, seconds=2.5)
  whole = baselines.get("logmel-stats", frame_stack=1).embed(stereo, RATE)
  cut = baselines.get("logmel-stats", crop_seconds=1.0, frame_stack=1).embed(stereo, RATE)   # three windows, the last partial
  assert len(whole["frames"]) == len(cut["frames"]) == 250
  # Frames away from the window boundaries (at frames 100 and 200) are the same features.
  inner = np.r_[5:95, 105:195]
  np.testing.assert_allclose(cut["frames"][inner, :80], whole["frames"][inner, :80], rtol=1e-4, atol=1e-3)


def test_fingerprint_is_stable_and_names_the_settings(extractor):
  assert extractor.fingerprint() == baselines.get("logmel-stats").fingerprint()
  assert embed.encoder_fingerprint(extractor) == extractor.fingerprint()
  other = frontend.default_frontend_config()
  other.num_mel_bins = 64
  assert baselines.get("logmel-stats", other).fingerprint() != extractor.fingerprint()
  assert baselines.get("logmel-stats", crop_seconds=5.0).fingerprint() != extractor.fingerprint()
  assert extractor.meta["baseline"] == "logmel-stats" and extractor.meta["frontend"]["num_mel_bins"] == 80
  with pytest.raises(ValueError, match="logmel-stats"):
    baselines.get("mfcc")


def test_embed_task_keeps_the_statistics_as_pooled_and_the_cache_round_trips(tmp_path, extractor):
  (tmp_path / "audio").mkdir()
  rows = {"train": [], "test": []}
  for i in range(6):
    name = f"audio/c{i}.wav"
    sf.write(tmp_path / name, _chirp(seed=i, seconds=0.4 + 0.1 * i), RATE)
    rows["train" if i < 4 else "test"].append((name, ("a", "b")[i % 2]))
  for split, split_rows in rows.items():
    with open(tmp_path / f"{split}.csv", "w", newline="") as f:
      csv.writer(f).writerows([("path", "label"), *split_rows])
  task = tasks.read_task(tmp_path)
  first = embed.embed_task(extractor, task, cache_dir=tmp_path / "cache", log=None)
  train = first.splits["train"]
  assert train.pooled.shape == (4, 4 * 80) and [f.shape[1] for f in train.frames] == [160] * 4
  direct = extractor.embed(*audio_io.decode(tmp_path / "audio/c3.wav"))
  np.testing.assert_array_equal(train.pooled[3], direct["pooled"].astype(np.float16))   # the store is float16
  np.testing.assert_array_equal(train.frames[3], direct["frames"].astype(np.float16))
  assert not np.allclose(train.pooled[3, :160], train.frames[3].mean(axis=0))   # not the mean of the frames
  again = embed.embed_task(extractor, task, cache_dir=tmp_path / "cache", log=None)
  assert again.cached and sorted(p.name for p in (tmp_path / "cache").glob("*/*")) == ["test.frames", "train.frames"]
  for split in ("train", "test"):
    np.testing.assert_array_equal(again.splits[split].pooled, first.splits[split].pooled)
    for a, b in zip(again.splits[split].frames, first.splits[split].frames):
      np.testing.assert_array_equal(a, b)
