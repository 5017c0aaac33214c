"""Probe trainer on features: separable tasks are learned, shuffled labels stay at chance, AP/mAP against
hand computations, masked attention pooling against NumPy, determinism, task-folder reading."""
import numpy as np
import pytest

from alp_jax.evaluate import probe
from alp_jax.evaluate import tasks

CLASSES, WIDTH, FRAMES = 4, 16, 12
CONFIG = probe.ProbeConfig(min_steps=200)


def _separable(rng, n, centers):
  labels = rng.integers(0, len(centers), n)
  return (centers[labels] + rng.normal(size=(n, centers.shape[1]))).astype(np.float32), labels.astype(np.int32)


@pytest.fixture(scope="module")
def features():
  rng = np.random.default_rng(0)
  centers = 2.5 * rng.normal(size=(CLASSES, WIDTH))
  return _separable(rng, 160, centers), _separable(rng, 80, centers)


def test_average_precision_by_hand():
  # Ranked: + - + - +  -> precisions at the hits 1/1, 2/3, 3/5.
  ap = probe.average_precision(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 0, 1], bool))
  assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
  # Tie at 0.8 (one +, one -) is one threshold: recall 0.5 at precision 1/3, then recall 1 at precision 2/4.
  ap = probe.average_precision(np.array([0.9, 0.8, 0.8, 0.1]), np.array([0, 1, 0, 1], bool))
  assert ap == pytest.approx(0.5 * (1 / 3) + 0.5 * (2 / 4))
  # Order of the input does not matter.
  ap_shuffled = probe.average_precision(np.array([0.1, 0.8, 0.9, 0.8]), np.array([1, 0, 0, 1], bool))
  assert ap_shuffled == pytest.approx(ap)
  assert np.isnan(probe.average_precision(np.array([0.3, 0.2]), np.array([0, 0], bool)))


def test_mean_average_precision_skips_classes_without_positives():
  scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.7, 0.3, 0.6]])
  targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]], np.float32)
  # class 0: ranks 0.9(+) 0.7(-) 0.2(-) -> AP 1; class 1: ranks 0.8(-) 0.3(+) 0.1(-) -> AP 1/2; class 2: none.
  assert probe.mean_average_precision(scores, targets) == pytest.approx((1.0 + 0.5) / 2)


def test_linear_probe_learns_separable_and_not_shuffled(features):
  (train_x, train_y), (test_x, test_y) = features
  result = probe.train_and_evaluate({"features": train_x}, train_y, {"features": test_x}, test_y,
                                    num_classes=CLASSES, multi_label=False, config=CONFIG)
  assert result.metric == "accuracy" and result.value >= 0.97
  assert len(result.grid) == 4 and result.num_fit + result.num_valid == 160
  low, high = result.interval
  assert low <= result.value <= high and high - low < 0.2   # narrower than [0, 1] (zero width at 100%)
  assert result.test_scores.shape == (80, CLASSES) and "test_scores" not in result.to_dict()
  assert probe.accuracy(result.test_scores, result.test_targets) == result.value
  shuffled = np.random.default_rng(1).permutation(train_y)
  chance = probe.train_and_evaluate({"features": train_x}, shuffled, {"features": test_x}, test_y,
                                    num_classes=CLASSES, multi_label=False, config=CONFIG)
  assert chance.value < 0.5   # chance is 0.25; 80 test clips
  assert chance.interval[0] < chance.value < chance.interval[1] < low   # far below the learned probe's
  assert 0.05 < chance.interval[1] - chance.interval[0] < 0.4   # ~ 2 x 1.96 sqrt(p (1 - p) / 80)


def test_multi_label_probe_reaches_high_map(features):
  (train_x, train_y), (test_x, test_y) = features
  hot = lambda y: np.eye(CLASSES, dtype=np.float32)[y] + np.eye(CLASSES, dtype=np.float32)[(y + 1) % CLASSES]
  result = probe.train_and_evaluate({"features": train_x}, hot(train_y), {"features": test_x}, hot(test_y),
                                    num_classes=CLASSES, multi_label=True, config=CONFIG)
  assert result.metric == "map" and result.value >= 0.95


def test_attention_pool_masks_padding_like_numpy():
  import jax
  rng = np.random.default_rng(2)
  params = probe.init_params(jax.random.key(0), probe.ATTENTION, WIDTH, CLASSES, heads=2)
  frames = rng.normal(size=(2, 5, WIDTH)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  frames[0, 3:] = 100.0   # padding content must not leak
  pooled = np.asarray(probe.attention_pool(params, frames, mask))
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  heads, head_width = p["query"].shape
  for b in range(2):
    valid = frames[b][mask[b]].astype(np.float64)
    keys = (valid @ p["key"]).reshape(len(valid), heads, head_width)
    values = (valid @ p["value"]).reshape(len(valid), heads, head_width)
    expected = []
    for h in range(heads):
      logits = keys[:, h] @ p["query"][h] / np.sqrt(head_width)
      weights = np.exp(logits - logits.max())
      expected.append((weights / weights.sum()) @ values[:, h])
    np.testing.assert_allclose(pooled[b], np.concatenate(expected), rtol=1e-4, atol=1e-5)


def test_attention_probe_finds_one_informative_frame_and_is_deterministic():
  rng = np.random.default_rng(3)
  centers = 3.0 * rng.normal(size=(CLASSES, WIDTH))

  def clips(n):
    labels = rng.integers(0, CLASSES, n)
    frames = [rng.normal(size=(int(rng.integers(4, FRAMES + 1)), WIDTH)).astype(np.float32) for _ in range(n)]
    for f, label in zip(frames, labels):
      f[rng.integers(len(f))] += centers[label]
    return probe.pad_frames(frames, FRAMES), labels.astype(np.int32)

  (train, train_y), (test, test_y) = clips(120), clips(60)
  run = lambda: probe.train_and_evaluate(train, train_y, test, test_y, num_classes=CLASSES, multi_label=False,
                                         config=CONFIG)
  first, second = run(), run()
  assert first.value >= 0.9
  assert first.to_dict() == second.to_dict()


def test_read_task_single_and_multi_label(tmp_path):
  (tmp_path / "train.csv").write_text("path,label\na.wav,dog\nb.wav,cat;dog\n")
  (tmp_path / "test.csv").write_text("path,label\nsub/c.wav,bird\n")
  task = tasks.read_task(tmp_path)
  assert task.multi_label and task.classes == ["bird", "cat", "dog"]
  assert task.splits["test"][0].path == tmp_path / "sub" / "c.wav"
  np.testing.assert_array_equal(task.targets(task.splits["train"]), [[0, 0, 1], [0, 1, 1]])
  (tmp_path / "train.csv").write_text("path,label\na.wav,dog\nb.wav,cat\n")
  single = tasks.read_task(tmp_path)
  assert single.metric == "accuracy"
  np.testing.assert_array_equal(single.targets(single.splits["train"]), [2, 1])
  (tmp_path / "test.csv").write_text("file,label\nc.wav,bird\n")
  with pytest.raises(tasks.TaskFormatError, match="test.csv"):
    tasks.read_task(tmp_path)


def test_validation_split_is_seeded_and_disjoint():
  fit, valid = tasks.validation_split(40, 0.15, seed=0)
  again_fit, again_valid = tasks.validation_split(40, 0.15, seed=0)
  np.testing.assert_array_equal(fit, again_fit)
  np.testing.assert_array_equal(valid, again_valid)
  assert len(valid) == 6 and not set(fit) & set(valid) and len(fit) + len(valid) == 40


def test_given_validation_split_is_used_for_selection_then_merged(features):
  (train_x, train_y), (test_x, test_y) = features
  result = probe.train_and_evaluate({"features": train_x[:120]}, train_y[:120], {"features": test_x}, test_y,
                                    num_classes=CLASSES, multi_label=False, config=CONFIG,
                                    valid=({"features": train_x[120:]}, train_y[120:]))
  assert (result.num_fit, result.num_valid) == (120, 40)
  assert result.value >= 0.97 and all(0.0 <= g["valid"] <= 1.0 for g in result.grid)
