"""Supervised tagging: label vocabularies from prepare, multi-hot labels in batches, a tagging run."""
import collections
import json

import numpy as np

from alp_jax.data import pipeline
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.train import runs
from alp_jax.train import trainer

from conftest import make_test_config


def test_label_vocabulary_counts_match_manifests(tiny_corpus_dir):
  counts = collections.defaultdict(collections.Counter)
  for manifest in (tiny_corpus_dir / "raw" / "manifests").glob("*.jsonl"):
    for line in manifest.read_text().splitlines():
      for task, value in json.loads(line).get("labels", {}).items():
        counts[task].update(str(v) for v in (value if isinstance(value, list) else [value]))
  written = json.loads((tiny_corpus_dir / "labels.json").read_text())
  assert written == {task: dict(sorted(c.items())) for task, c in sorted(counts.items())}


def test_multi_hot_labels_and_weights(tiny_corpus_dir):
  cfg = pipeline.default_data_config()
  cfg.corpus_dir, cfg.label_task = str(tiny_corpus_dir), "sound_type"
  vocab = pipeline.label_vocabulary(cfg)
  transform = pipeline.ExampleTransform(str(tokenizer_lib.path_for(cfg)), 1600, 8, train=False,
                                        label_task="sound_type", label_vocab=tuple(vocab))
  base = {"captions": ["a sound"], "caption_index": -1, "audio": np.ones(3200, np.int16), "source_index": 0,
          "clip_key": 1}
  rng = np.random.default_rng(0)
  one = transform.random_map({**base, "labels": {"sound_type": vocab[1]}}, rng)
  np.testing.assert_array_equal(one["labels"], np.eye(len(vocab), dtype=np.float32)[1])
  assert one["label_weight"] == 1.0
  several = transform.random_map({**base, "labels": {"sound_type": [vocab[0], vocab[2]]}}, rng)
  assert several["labels"].sum() == 2 and several["labels"][0] == several["labels"][2] == 1
  missing = transform.random_map({**base, "labels": {"domain": "speech"}}, rng)
  assert missing["label_weight"] == 0.0 and not missing["labels"].any()
  batch = pipeline.eval_dataset(cfg, 8)[0]
  assert batch["labels"].shape == (8, len(vocab)) and set(np.unique(batch["label_weight"])) <= {0.0, 1.0}


def test_tagging_run_trains(tiny_corpus_dir, tmp_path):
  cfg = make_test_config("tagging", tiny_corpus_dir, total_steps=2, checkpoint_every=2,
                         mesh__num_devices=1)
  cfg.data.label_task = "domain"  # every demo clip has one
  summary = trainer.train(cfg, tmp_path / "tagger")
  assert summary["final_step"] == 2
  rows = [json.loads(line) for line in open(tmp_path / "tagger" / "metrics.jsonl")]
  assert all(np.isfinite(r["loss"]) and r["labelled_fraction"] == 1.0 for r in rows)
  # Untrained multi-label BCE over C classes starts near C * log(2).
  assert abs(rows[0]["loss"] - 3 * np.log(2)) < 1.0


def test_every_model_refuses_a_frontend_encoder_mel_mismatch(tiny_corpus_dir):
  import pytest
  from flax import nnx
  from alp_jax import models
  for name in ("clap", "cappa", "tagging"):
    cfg = make_test_config(name, tiny_corpus_dir)
    runs.set_data_sizes(cfg)
    cfg.frontend.num_mel_bins = 64
    with pytest.raises(ValueError, match="num_mel_bins"):
      nnx.eval_shape(lambda: models.build_model(cfg, rngs=nnx.Rngs(0)))
