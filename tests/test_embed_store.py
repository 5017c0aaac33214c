"""The float16 embeddings store (round trip, a killed write never read back), batched embedding against the
per-clip AudioEncoder.embed, the memo, and the attention probe fed from the store against whole in-memory arrays."""
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_encoder_meta

from alp_jax import encoder_api
from alp_jax.audio import io as audio_io
from alp_jax.evaluate import embed, embed_store, probe, tasks

WIDTH = 6


def _clips(rng, n, low=3, high=20):
  return [rng.normal(size=(int(rng.integers(low, high)), WIDTH)).astype(np.float32) for _ in range(n)]


def test_store_round_trip_views_and_batches(tmp_path):
  rng = np.random.default_rng(0)
  frames = _clips(rng, 5)
  pooled = rng.normal(size=(5, 4)).astype(np.float32)
  writer = embed_store.Writer(tmp_path / "train.frames", frames=True)
  for i in range(5):
    writer.add(2 * i, pooled[i], frames[i])
  writer.skip("x.wav", "x.wav: broken")
  store = writer.finish()
  again = embed_store.open_store(tmp_path / "train.frames")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["train.frames"]   # no .tmp-* left
  for s in (store, again):
    np.testing.assert_array_equal(s.pooled, pooled.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(s.kept, [0, 2, 4, 6, 8])
    assert s.skipped == [("x.wav", "x.wav: broken")] and len(s.frames) == 5
    for got, want in zip(s.frames, frames):
      assert got.dtype == np.float32
      np.testing.assert_array_equal(got, want.astype(np.float16))
  clips = again.frames
  joined = clips.take([3, 1]).concat(embed_store.ClipFrames.from_list(frames[:2]))
  np.testing.assert_array_equal(joined.lengths, [len(frames[3]), len(frames[1]), len(frames[0]), len(frames[1])])
  np.testing.assert_array_equal(joined[2], frames[0])   # the in-memory part keeps float32
  batch, mask = joined.padded(np.array([0, 2]))
  longest = max(len(frames[3]), len(frames[0]))
  assert batch.shape == (2, embed_store.bucket_length(longest), WIDTH) and batch.shape[1] >= longest
  np.testing.assert_array_equal(mask.sum(axis=1), [len(frames[3]), len(frames[0])])
  np.testing.assert_array_equal(batch[1, :len(frames[0])], frames[0])
  assert not batch[~mask].any()
  assert [embed_store.bucket_length(n) for n in (1, 8, 9, 250)] == [8, 8, 16, 256]
  # A pooled-only store says what to do when frames are asked of it.
  writer = embed_store.Writer(tmp_path / "train.pooled", frames=False)
  writer.add(0, pooled[0], None)
  with pytest.raises(ValueError, match="frames=True"):
    writer.finish().frames


def test_a_killed_write_is_never_read_and_is_cleaned_up(tmp_path):
  folder = tmp_path / "test.frames"
  writer = embed_store.Writer(folder, frames=True)
  writer.add(0, np.ones(4, np.float32), np.ones((3, 4), np.float32))
  writer._pooled.flush()
  writer._cleanup.detach()   # a kill: nothing of the writer runs any more (no finish, no clean-up)
  # As a process that is gone left it (pid_max is below 2^22, so this pid is never alive).
  left = tmp_path / "test.frames.tmp-999999999-0123abcd"
  os.rename(writer.tmp, left)
  del writer
  assert (left / "pooled.f16").stat().st_size > 0 and not (left / embed_store.COMPLETE).exists()
  assert embed_store.open_store(folder) is None and embed_store.open_store(left) is None
  writer = embed_store.Writer(folder, frames=True)   # the next write removes the dead process's folder
  writer.add(0, np.zeros(4, np.float32), np.zeros((2, 4), np.float32))
  writer.finish()
  assert [p.name for p in tmp_path.iterdir()] == ["test.frames"]
  assert embed_store.open_store(folder).lengths.tolist() == [2]


# -------------------------------------------------------------------------------------------------------------
# Batched embedding of a task against AudioEncoder.embed, clip by clip.

SECONDS = (0.5, 2.3, 0.004, 1.0, 1.7, 0.9, 3.2)   # 1 s windows; 0.004 s (64 samples) gives no frame


def _source(i, seconds):
  def load():
    if seconds is None:
      raise audio_io.AudioDecodeError(f"clip{i}.wav: cannot decode")
    t = np.arange(int(seconds * 16000)) / 16000
    noise = np.random.default_rng(i).normal(size=t.shape)
    return (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * noise).astype(np.float32), 16000
  return tasks.AudioSource(key=f"mem:clip{i}", load=load)


def _task(name, seconds):
  examples = [tasks.Example(path=Path(f"/mem/clip{i}.wav"), labels=(("a", "b")[i % 2],), audio=_source(i, s))
              for i, s in enumerate(seconds)]
  return tasks.Task(name=name, directory=Path("/mem"), splits={"train": examples[:5], "test": examples[5:]},
                    classes=["a", "b"], metric=tasks.SINGLE_LABEL)


@pytest.fixture(scope="module")
def encoder():
  return encoder_api.AudioEncoder.build(tiny_encoder_meta(), seed=0)


def test_batched_embeddings_match_the_per_clip_path_and_the_memo_reuses_them(tmp_path, encoder):
  task = _task("t", SECONDS[:2] + (None,) + SECONDS[2:])   # clip 2 does not decode, clip 3 is too short
  memo = {}
  got = embed.embed_task(encoder, task, memo=memo, frames=True, windows_per_batch=3, log=None)
  train = got.splits["train"]
  np.testing.assert_array_equal(train.kept, [0, 1, 4])
  assert [reason.split(": ")[1].split(" (")[0] for _, reason in got.skipped] == [
      "cannot decode", "too short for one encoder frame"]
  for split, emb in got.splits.items():
    for row, index in enumerate(emb.kept):
      want = encoder.embed(*task.splits[split][index].audio.load())
      np.testing.assert_allclose(emb.frames[row], want["frames"], rtol=2e-3, atol=2e-3)   # float16 rounding
      np.testing.assert_allclose(emb.pooled[row], want["pooled"], rtol=2e-3, atol=1e-3)
  # A pooled-only embedding of the same clips comes from the memo (no encoder call) and equals the frames' run.
  calls = []
  encode = encoder.encode_windows
  encoder.encode_windows = lambda *a, **k: calls.append(k) or encode(*a, **k)
  try:
    pooled_only = embed.embed_task(encoder, task, memo=memo, frames=False, log=None)
    assert not calls
    np.testing.assert_array_equal(pooled_only.splits["train"].pooled, train.pooled)
    # Without a memo, pooled only: the mean is reduced on the device, no frame comes back.
    fresh = embed.embed_task(encoder, task, frames=False, windows_per_batch=3, log=None)
    assert calls and all(k == {"frames": False} for k in calls)
    np.testing.assert_allclose(fresh.splits["train"].pooled, train.pooled, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="pooled vectors only"):
      fresh.splits["train"].frames
  finally:
    encoder.encode_windows = encode


def test_cache_is_reused_and_a_half_written_store_is_not(tmp_path, encoder):
  task = _task("cached", SECONDS[:4] + SECONDS[5:])
  first = embed.embed_task(encoder, task, cache_dir=tmp_path, frames=False, windows_per_batch=3, log=None)
  [entry] = list(tmp_path.iterdir())
  assert sorted(p.name for p in entry.iterdir()) == ["test.pooled", "train.pooled"] and not first.cached
  again = embed.embed_task(encoder, task, cache_dir=tmp_path, frames=False, windows_per_batch=3, log=None)
  assert again.cached and again.seconds == 0.0
  np.testing.assert_array_equal(again.splits["train"].pooled, first.splits["train"].pooled)
  # A run killed while writing the test split: its marker never came, the folder is renamed away.
  (entry / "test.pooled" / embed_store.COMPLETE).unlink()
  os.rename(entry / "test.pooled", entry / "test.pooled.tmp-999999999-0123abcd")
  third = embed.embed_task(encoder, task, cache_dir=tmp_path, frames=False, windows_per_batch=3, log=None)
  assert not third.cached and sorted(p.name for p in entry.iterdir()) == ["test.pooled", "train.pooled"]
  np.testing.assert_array_equal(third.splits["test"].pooled, first.splits["test"].pooled)


# -------------------------------------------------------------------------------------------------------------
# The attention probe from the store.

CLASSES = 3
CONFIG = probe.ProbeConfig(min_steps=24, epochs=1, batch_size=16, learning_rates=(1e-2,), weight_decays=(1e-4,))


def _labelled(rng, n, centers):
  labels = rng.integers(0, CLASSES, n).astype(np.int32)
  frames = _clips(rng, n, 2, 9)   # one length bucket (8): one compiled step
  for f, label in zip(frames, labels):
    f[rng.integers(len(f))] += centers[label]
  return frames, labels


def _store(folder, frames):
  writer = embed_store.Writer(folder, frames=True)
  for i, f in enumerate(frames):
    writer.add(i, f.mean(axis=0), f)
  return writer.finish().frames


def test_attention_probe_from_the_store_equals_the_in_memory_arrays(tmp_path):
  rng = np.random.default_rng(1)
  centers = 3.0 * rng.normal(size=(CLASSES, WIDTH))
  (train, train_y), (test, test_y) = _labelled(rng, 48, centers), _labelled(rng, 20, centers)
  as16 = lambda clips: [c.astype(np.float16).astype(np.float32) for c in clips]   # what the store keeps
  stored = probe.train_and_evaluate({"clips": _store(tmp_path / "train", train)}, train_y,
                                    {"clips": _store(tmp_path / "test", test)}, test_y, num_classes=CLASSES,
                                    multi_label=False, config=CONFIG)
  padded = probe.train_and_evaluate(probe.pad_frames(as16(train), 10), train_y, probe.pad_frames(as16(test), 10),
                                    test_y, num_classes=CLASSES, multi_label=False, config=CONFIG)
  assert stored.value == padded.value and stored.grid == padded.grid
  np.testing.assert_allclose(stored.test_scores, padded.test_scores, rtol=1e-5, atol=1e-5)


def test_streamed_attention_training_equals_one_scan_over_whole_arrays(tmp_path):
  """probe.fit on clips (host minibatches, length buckets, standardised on the device) against the whole-array
  scan (probe._train_steps) on frames padded to the longest clip and standardised in NumPy."""
  rng = np.random.default_rng(2)
  frames, labels = _labelled(rng, 40, 3.0 * rng.normal(size=(CLASSES, WIDTH)))
  clips = embed_store.ClipFrames.from_list(frames)
  rows = np.arange(40)
  schedule = probe._Schedule.for_examples(40, CONFIG)
  mean, std = probe._standardiser({"clips": clips})
  every = np.concatenate(frames).astype(np.float64)
  np.testing.assert_allclose(mean, every.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(std, every.std(axis=0), rtol=1e-6)
  common = dict(learning_rate=1e-2, weight_decay=1e-4, num_classes=CLASSES, multi_label=False, schedule=schedule,
                config=CONFIG)
  streamed = probe.fit({"clips": clips, "mean": mean, "std": std}, labels, rows, **common)
  whole = probe.pad_frames(frames)
  whole = {"frames": ((whole["frames"] - mean) / std * whole["mask"][..., None]).astype(np.float32),
           "mask": whole["mask"]}
  params = probe.init_params(jax.random.key(CONFIG.seed), probe.ATTENTION, WIDTH, CLASSES, CONFIG.attention_heads)
  opt_state = probe._optimizer().init(params)
  opt_state.hyperparams["learning_rate"] = jnp.asarray(1e-2, jnp.float32)
  opt_state.hyperparams["weight_decay"] = jnp.asarray(1e-4, jnp.float32)
  batch_rows, batch_weights = schedule.batches(rows, CONFIG.seed)
  scanned = probe._train_steps(params, opt_state, whole, labels, batch_rows, batch_weights, False)
  for name in scanned:
    np.testing.assert_allclose(streamed[name], scanned[name], rtol=1e-4, atol=1e-5)
