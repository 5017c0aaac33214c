"""The grain pipeline: shapes, mixture proportions, exact resume, host sharding, subsets, caption policy."""
import collections

import numpy as np
import pytest

from alp_jax.data import pipeline
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import subsets
from alp_jax.data import tokenizer as tokenizer_lib

from corpus_fixtures import write_good_clips, write_manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline_corpus")
  manifests = []
  for name, n, seconds, seed in [("alpha", 10, 1.0, 1), ("beta", 6, 2.0, 2), ("gamma", 4, 0.5, 3)]:
    manifests.append(write_manifest(root / f"{name}.jsonl", write_good_clips(root, n, name, seed, seconds)))
  out = root / "prepared"
  prepare_lib.prepare(manifests, out, quiet=True)
  tokenizer_lib.train(out, vocab_size=64, quiet=True)
  return out


def _cfg(corpus, **overrides):
  cfg = pipeline.default_data_config()
  cfg.corpus_dir = str(corpus)
  cfg.crop_seconds = 0.75
  cfg.max_caption_tokens = 12
  cfg.num_threads = 2
  cfg.update(overrides)
  return cfg


def test_batch_shapes_and_masks(corpus):
  cfg = _cfg(corpus)
  batch = pipeline.train_dataset(cfg, 4)[0]
  assert batch["audio"].shape == (4, 12000) and batch["audio"].dtype == np.int16
  assert batch["audio_mask"].dtype == bool and batch["caption_tokens"].dtype == np.int32
  assert batch["caption_tokens"].shape == batch["caption_mask"].shape == (4, 12)
  for tokens, mask in zip(batch["caption_tokens"], batch["caption_mask"]):
    n = int(mask.sum())
    assert np.all(tokens[n:] == tokenizer_lib.PAD_ID)
    # A caption ends with EOS, unless it was cut at max_caption_tokens: then it fills the row and has none.
    assert tokens[n - 1] == tokenizer_lib.EOS_ID or (n == len(tokens) and tokenizer_lib.EOS_ID not in tokens)
  # Eval: deterministic crop from the start; gamma clips (0.5 s) are padded and masked.
  ev = pipeline.eval_dataset(cfg, 20)[0]
  gamma = ev["source"] == 2
  assert gamma.sum() == 4
  np.testing.assert_array_equal(ev["audio_mask"][gamma].sum(axis=1), 8000)
  assert not ev["audio"][gamma][:, 8000:].any()
  np.testing.assert_array_equal(ev["audio"], pipeline.eval_dataset(cfg, 20)[0]["audio"])


def test_mixture_matches_weights(corpus):
  cfg = _cfg(corpus, source_weights={"gamma": 3.0})
  sources = pipeline.load_sources(corpus)
  hours = np.array([s.hours for s in sources]) * np.array([1.0, 1.0, 3.0])
  expected = hours / hours.sum()  # 10 s : 12 s : 3 x 2 s
  ds = pipeline.train_dataset(cfg, 8)
  counts = collections.Counter()
  for i in range(40):
    counts.update(ds[i]["source"].tolist())
  observed = np.array([counts[k] for k in range(3)]) / 320
  np.testing.assert_allclose(observed, expected, atol=0.02)
  explicit = pipeline.mixture_weights(sources, _cfg(corpus, mixture="explicit", source_weights={"alpha": 2.0}))
  np.testing.assert_allclose(explicit, [0.5, 0.25, 0.25])


def test_iterator_state_restores_identical_batches(corpus):
  cfg = _cfg(corpus)
  it = pipeline.to_iterator(pipeline.train_dataset(cfg, 4), cfg)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  resumed = pipeline.to_iterator(pipeline.train_dataset(cfg, 4), cfg)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_two_processes_see_disjoint_examples_covering_the_data(corpus):
  cfg = _cfg(corpus)
  total = sum(len(s.subset_key) for s in pipeline.load_sources(corpus))
  seen = []
  for p in range(2):
    keys = np.concatenate([b["clip_key"] for b in pipeline.eval_dataset(cfg, 4, process_index=p, process_count=2)])
    seen.append(set(keys.tolist()))
    # Training side: over many batches a process draws only from its own share.
    train = pipeline.train_dataset(cfg, 4, process_index=p, process_count=2)
    train_keys = set(np.concatenate([train[i]["clip_key"] for i in range(30)]).tolist())
    assert train_keys <= seen[p]
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == total
  with pytest.raises(ValueError, match="divisible"):
    pipeline.train_dataset(cfg, 5, process_index=0, process_count=2)


def test_nested_subsets_contained_and_sized():
  keys = np.array([subsets.subset_key(f"clip-{i}") for i in range(20000)])
  previous = set()
  for fraction in (0.04, 0.1, 0.4, 1.0):
    chosen = set(subsets.subset_indices(keys, fraction).tolist())
    assert previous <= chosen
    assert abs(len(chosen) / len(keys) - fraction) < 0.01
    previous = chosen
  with pytest.raises(ValueError):
    subsets.subset_indices(keys, 0.0)


def test_subset_fraction_in_pipeline_is_nested(corpus):
  small = np.concatenate([b["clip_key"] for b in pipeline.eval_dataset(_cfg(corpus, subset_fraction=0.5), 1)])
  full = np.concatenate([b["clip_key"] for b in pipeline.eval_dataset(_cfg(corpus, subset_fraction=1.0), 1)])
  assert set(small.tolist()) < set(full.tolist())
  assert 0.2 < len(small) / len(full) < 0.8


def test_every_caption_policy_visits_each_caption_once_per_epoch(corpus):
  cfg = _cfg(corpus, sources=("alpha",), caption_policy="every")
  ds = pipeline.train_dataset(cfg, 4)
  pairs = [(k, tuple(t)) for i in range(5) for k, t in zip(ds[i]["clip_key"], ds[i]["caption_tokens"])]
  assert len(set(pairs)) == 20  # 10 clips x 2 captions, one epoch = 5 batches of 4
  random_policy = pipeline.train_dataset(_cfg(corpus, sources=("alpha",)), 5)
  assert len({int(k) for k in random_policy[0]["clip_key"]} | {int(k) for k in random_policy[1]["clip_key"]}) == 10


def test_worker_processes_give_the_same_batches(corpus):
  cfg = _cfg(corpus)
  threaded = pipeline.to_iterator(pipeline.train_dataset(cfg, 4), cfg)
  cfg_mp = _cfg(corpus, worker_count=1)
  multiproc = pipeline.to_iterator(pipeline.train_dataset(cfg_mp, 4), cfg_mp)
  for _ in range(3):
    a, b = next(threaded), next(multiproc)
    np.testing.assert_array_equal(a["audio"], b["audio"])
    np.testing.assert_array_equal(a["caption_tokens"], b["caption_tokens"])
