"""Duration-bucketed batches (data.batch_seconds): fixed shapes, the seconds budget, every clip once per epoch,
the same global batches on any process layout, exact resume, padded rows that count nowhere (losses, gradients,
compute ledger), and a short bucketed run of the trainer on 8 devices."""
import collections
import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from alp_jax import losses, models, objectives
from alp_jax import sharding as sharding_lib
from alp_jax.data import durations
from alp_jax.data import pipeline
from alp_jax.data import prepare as prepare_lib
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.train import compute as compute_lib
from alp_jax.train import trainer

from conftest import load_config, make_test_config
from corpus_fixtures import write_good_clips, write_manifest

EDGES = (0.5, 1.0, 2.0)
CLIPS = {"short": (7, 0.4), "mid": (5, 0.9), "long": (4, 1.6)}   # source -> (clips, seconds); long: cropped


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("bucket_corpus")
  manifests = [write_manifest(root / f"{name}.jsonl", write_good_clips(root, n, name, seed, seconds))
               for seed, (name, (n, seconds)) in enumerate(sorted(CLIPS.items()))]
  out = root / "prepared"
  prepare_lib.prepare(manifests, out, quiet=True, durations=durations.DurationRule(min_seconds=0.1))  # 0.4 s clips
  tokenizer_lib.train(out, vocab_size=64, quiet=True)
  return out


def _cfg(corpus, **overrides):
  cfg = pipeline.default_data_config()
  cfg.update(corpus_dir=str(corpus), max_caption_tokens=12, num_threads=2, batch_seconds=4.0, bucket_seconds=EDGES,
             mixture="explicit", source_weights={name: float(n) for name, (n, _) in CLIPS.items()})  # no mixing
  cfg.update(overrides)
  return cfg


def _epoch_batches(cfg, epoch, row_multiple=2):
  """The host batches (1 process) of `epoch` and the planner's count of them."""
  planner, _ = pipeline.bucket_planner(cfg, row_multiple)
  start = sum(planner.batches_in_epoch(e) for e in range(epoch))
  ds = pipeline.train_dataset(cfg, 0, row_multiple=row_multiple)
  return [ds[i] for i in range(start, start + planner.batches_in_epoch(epoch))]


def test_shapes_budget_and_every_clip_once_per_epoch(corpus):
  cfg = _cfg(corpus)
  shapes = pipeline.bucket_shapes(cfg, 2)
  assert [(s.rows, s.samples) for s in shapes] == [(8, 8000), (4, 16000), (2, 32000)]   # rows x edge <= 4 s
  allowed = {spec["audio"][0] for spec in pipeline.batch_specs(cfg, 0, row_multiple=2)}
  assert allowed == {(s.rows, s.samples) for s in shapes}
  assert [s.name for s in pipeline.load_sources(corpus)] == sorted(CLIPS)
  expected = collections.Counter()
  for index, source in enumerate(pipeline.load_sources(corpus)):
    expected.update(index * 2**40 + r for r in range(len(source.num_samples)))
  edge_of = {s.samples: s.seconds for s in shapes}
  for epoch in (0, 1):
    seen = collections.Counter()
    for batch in _epoch_batches(cfg, epoch):
      rows, samples = batch["audio"].shape
      assert (rows, samples) in allowed and all(v.shape[0] == rows for v in batch.values())
      real = batch["audio_mask"].any(axis=1)
      seconds = batch["audio_mask"].sum(axis=1) / 16000
      assert seconds.sum() <= cfg.batch_seconds
      # A clip sits in the first bucket it fits: longer than the edge below, no longer than its own.
      lower = max([e for e in EDGES if e < edge_of[samples]], default=0.0)
      assert np.all((seconds[real] > lower) & (seconds[real] <= edge_of[samples]))
      assert np.all(batch["source"][~real] == -1) and not batch["caption_mask"][~real].any()
      assert not batch["audio"][~batch["audio_mask"]].any()
      seen.update(batch["clip_key"][real].tolist())
    assert seen == expected, epoch


def test_long_clips_are_cropped_to_the_last_bucket(corpus):
  cfg = _cfg(corpus, bucket_seconds=(0.5, 1.0), batch_seconds=2.0)
  long_index = sorted(CLIPS).index("long")
  batches = _epoch_batches(cfg, 0)
  longs = [b for b in batches if (b["source"] == long_index).any()]
  assert longs and all(b["audio"].shape == (2, 16000) for b in longs)
  assert all(b["audio_mask"][b["source"] == long_index].all() for b in longs)   # 1.6 s cropped to the full 1 s


def test_mixing_gives_each_source_its_quota(corpus):
  cfg = _cfg(corpus, source_weights={"short": 1.0, "mid": 2.0, "long": 5.0})   # weights 1/8, 2/8, 5/8 of 16
  per_source = [collections.Counter() for _ in range(2)]
  for epoch in (0, 1):
    for batch in _epoch_batches(cfg, epoch):
      per_source[epoch].update(batch["source"][batch["source"] >= 0].tolist())
  names = sorted(CLIPS)
  for counts in per_source:
    assert {names[k]: v for k, v in counts.items()} == {"short": 2, "mid": 4, "long": 10}


def test_same_global_batches_on_any_process_layout_and_exact_resume(corpus):
  cfg = _cfg(corpus)
  single = pipeline.train_dataset(cfg, 0, row_multiple=2)
  hosts = [pipeline.train_dataset(cfg, 0, process_index=p, process_count=2) for p in range(2)]
  emulated = pipeline.host_iterator(_cfg(corpus, emulate_process_count=2), 0)
  for i in range(6):
    parts = [h[i] for h in hosts]
    assert parts[0]["audio"].shape == parts[1]["audio"].shape   # both processes run the same compiled shape
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    from_iter = next(emulated)
    for k, v in single[i].items():
      np.testing.assert_array_equal(joined[k], v, err_msg=k)
      np.testing.assert_array_equal(from_iter[k], v, err_msg=k)
  copied = pickle.loads(pickle.dumps(single))   # as grain sends it to worker processes
  np.testing.assert_array_equal(copied[5]["clip_key"], single[5]["clip_key"])
  it = pipeline.to_iterator(single, cfg)
  for _ in range(3):
    next(it)
  state = it.get_state()
  after = [next(it)["clip_key"] for _ in range(3)]
  resumed = pipeline.to_iterator(pipeline.train_dataset(cfg, 0, row_multiple=2), cfg)
  resumed.set_state(state)
  for expected in after:
    np.testing.assert_array_equal(next(resumed)["clip_key"], expected)


def test_bad_settings_are_named(corpus):
  with pytest.raises(ValueError, match="bucket_seconds must be increasing"):
    pipeline.bucket_shapes(_cfg(corpus, bucket_seconds=(1.0, 0.5)))
  with pytest.raises(ValueError, match="batch_seconds=3 holds no batch of the 1 s bucket.*multiple of 4.*>= 4"):
    pipeline.bucket_shapes(_cfg(corpus, batch_seconds=3.0, bucket_seconds=(0.5, 1.0)), row_multiple=4)


# --- Padded rows count nowhere.

def _embeddings(b=6, d=5, seed=0):
  rng = np.random.default_rng(seed)
  a, t = rng.normal(size=(2, b, d))
  return [jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), jnp.float32) for x in (a, t)]


@pytest.mark.parametrize("loss", ["softmax_mean", "softmax_sum", "sigmoid", "sigmoid_chunked", "regulariser"])
def test_contrastive_losses_ignore_padded_rows(loss):
  audio, text = _embeddings(8)
  valid = jnp.array([1, 1, 0, 1, 1, 0, 1, 1], bool)
  keep = np.flatnonzero(np.asarray(valid))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  fns = {"softmax_mean": lambda a, t, v: losses.contrastive_softmax(a, t, 0.07, "mean", valid=v),
         "softmax_sum": lambda a, t, v: losses.contrastive_softmax(a, t, 0.07, "sum", valid=v),
         "sigmoid": lambda a, t, v: losses.contrastive_sigmoid(a, t, 0.1, -1.0, valid=v),
         "sigmoid_chunked": lambda a, t, v: losses.contrastive_sigmoid_chunked(a, t, 0.1, -1.0, mesh=mesh, valid=v),
         "regulariser": lambda a, t, v: losses.embedding_regulariser(a, t, v)}
  fn = fns[loss]
  if loss == "sigmoid_chunked":
    rows = NamedSharding(mesh, PartitionSpec("data"))
    audio, text, valid = (jax.device_put(x, rows) for x in (audio, text, valid))
  value, (g_audio, g_text) = jax.value_and_grad(fn, argnums=(0, 1))(audio, text, valid)
  # The reference: the same loss on the real rows alone (no padding anywhere), unsharded.
  reference_fn = fns["sigmoid" if loss == "sigmoid_chunked" else loss]
  ref, (r_audio, r_text) = jax.value_and_grad(reference_fn, argnums=(0, 1))(
      jnp.asarray(audio)[keep], jnp.asarray(text)[keep], None)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g_audio)[keep], r_audio, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.asarray(g_text)[keep], r_text, rtol=1e-4, atol=1e-7)
  assert not np.asarray(g_audio)[~np.asarray(valid)].any() and not np.asarray(g_text)[~np.asarray(valid)].any()


@pytest.mark.parametrize("name", ["clap", pytest.param("cappa", marks=pytest.mark.slow)])
def test_objective_loss_and_gradients_ignore_padded_rows(name):
  cfg = load_config(name, "tiny")
  cfg.model.vocab_size = 32
  if name == "clap":
    cfg.loss.embedding_regulariser = 1.0
  model = models.build_model(cfg, rngs=nnx.Rngs(0))
  objective = objectives.get(cfg.loss)
  rng = np.random.default_rng(1)
  lengths = np.array([4000, 0, 2500, 3000, 0, 1800])   # rows 1 and 4 are padding
  mask = np.arange(4000)[None] < lengths[:, None]
  tokens = np.where(np.arange(8)[None] < np.array([4, 0, 3, 6, 0, 2])[:, None], rng.integers(4, 32, (6, 8)), 0)
  batch = {"audio": np.where(mask, rng.normal(size=mask.shape) * 3000, 0).astype(np.int16), "audio_mask": mask,
           "caption_tokens": tokens.astype(np.int32), "caption_mask": tokens != 0}
  parallel = jnp.array([True, False, False, True, True, False])
  keep = np.flatnonzero(lengths)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def loss_and_grads(p, b, par):
    return jax.value_and_grad(lambda q: objective.loss(nnx.merge(graphdef, q, rest), b, train=False, rng=None,
                                                       parallel=par)[0])(p)
  value, grads = loss_and_grads(params, batch, parallel)
  ref, ref_grads = loss_and_grads(params, {k: v[keep] for k, v in batch.items()}, parallel[keep])
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=2e-4, atol=1e-5)


def test_ledger_counts_real_rows_and_seconds(tmp_path):
  ledger = compute_lib.Ledger(tmp_path, source_names=["a", "b"], batch_size=4, flops_per_step=10.0,
                              xla_flops_per_step=0.0, start_step=0, log=lambda _: None)
  mask = np.zeros((4, 100), bool)
  mask[0, :50], mask[2, :16] = True, True
  assert ledger.count({"audio_mask": mask, "source": np.array([1, -1, 0, -1], np.int32)}, flops=7.0) == 2
  assert ledger.count({"audio_mask": np.ones((4, 100), bool), "source": np.zeros(4, np.int32)}) == 4
  totals = ledger.save(2)
  assert totals["samples"] == 6 and totals["flops"] == 17.0
  assert totals["per_source"]["b"] == {"samples": 1, "audio_seconds": round(50 / 16000, 3)}
  assert totals["per_source"]["a"]["samples"] == 5


# --- The trainer.

def test_bucketed_training_on_8_devices(corpus, tmp_path):
  cfg = make_test_config("clap", corpus, total_steps=3, checkpoint_every=3, mesh__num_devices=8,
                         data__batch_seconds=8.0, data__bucket_seconds=(0.5, 1.0),
                         data__mixture="explicit", data__source_weights={n: float(c) for n, (c, _) in CLIPS.items()})
  summary = trainer.train(cfg, tmp_path)   # asserts one trace per bucket shape itself
  assert summary["final_step"] == 3 and all(np.isfinite(v) for v in summary["losses"].values())
  # The same three global batches, straight from the pipeline: the ledger counted their real rows only.
  batches = [pipeline.train_dataset(cfg.data, 0, row_multiple=8)[i] for i in range(3)]
  assert {b["audio"].shape for b in batches} <= {(16, 8000), (8, 16000)}
  compute = json.loads((tmp_path / "compute.json").read_text())
  assert compute["samples"] == sum(int(b["audio_mask"].any(axis=1).sum()) for b in batches)
  seconds = sum(s["audio_seconds"] for s in compute["per_source"].values())
  np.testing.assert_allclose(seconds, sum(b["audio_mask"].sum() for b in batches) / 16000, atol=0.01)


@pytest.mark.slow
def test_accumulation_stays_exact_with_padded_rows(tiny_corpus_dir):
  """grad_accum_steps=4 on a batch with padded rows gives the k=1 loss and gradients (train/step.py)."""
  from test_accumulation import BATCH, Setup, _assert_same_gradients
  setup = Setup("clap", tiny_corpus_dir)
  host = pipeline.train_dataset(setup.cfg.data, BATCH)[0]
  padded = np.arange(BATCH) % 5 == 2   # spread over micro-batches and shards
  host["audio"][padded], host["audio_mask"][padded] = 0, False
  host["caption_tokens"][padded], host["caption_mask"][padded] = tokenizer_lib.PAD_ID, False
  setup.batch = sharding_lib.host_to_global(host, setup.mesh)
  loss_1, grads_1 = setup.loss_and_grads(1)
  loss_4, grads_4 = setup.loss_and_grads(4)
  np.testing.assert_allclose(loss_4, loss_1, rtol=1e-5)
  _assert_same_gradients(grads_4, grads_1)
