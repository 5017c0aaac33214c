"""The trainer in one process: sharded = unsharded, restore onto another mesh, export + AudioEncoder,
encoder initialisation, non-finite handling."""
import json

import jax
import numpy as np
import pytest

from alp_jax import AudioEncoder
from alp_jax import encoder_api
from alp_jax import export as export_lib
from alp_jax import sharding as sharding_lib
from alp_jax.data import paths
from alp_jax.train import encoder_init
from alp_jax.train import runs as runs_lib
from alp_jax.train import trainer

from conftest import make_test_config


def _losses(workdir):
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def runs(tiny_corpus_dir, tmp_path_factory):
  """The same tiny contrastive run on 1 device and on 8 devices (same global batch)."""
  out = {}
  for n in (1, 8):
    workdir = tmp_path_factory.mktemp(f"clap_{n}dev")
    cfg = make_test_config("clap", tiny_corpus_dir, mesh__num_devices=n)
    summary = trainer.train(cfg, workdir)
    out[n] = (workdir, summary)
  return out


def test_sharded_equals_unsharded(runs):
  one, eight = _losses(runs[1][0]), _losses(runs[8][0])
  assert sorted(one) == [1, 2, 3, 4]
  np.testing.assert_allclose([eight[s] for s in sorted(one)], [one[s] for s in sorted(one)], rtol=2e-4)
  assert runs[8][1]["final_step"] == 4


def _params(state):
  return {"/".join(map(str, k)): np.asarray(v) for k, v in
          jax.tree_util.tree_flatten_with_path(jax.device_get(state["params"]))[0]}


def test_restore_onto_a_different_mesh(runs):
  devices = jax.devices()
  mesh1 = sharding_lib.mesh_from_config(sharding_lib.default_mesh_config(), devices[:1])
  mesh8 = sharding_lib.mesh_from_config(sharding_lib.default_mesh_config(), devices)
  for n, workdir_summary in runs.items():
    workdir = workdir_summary[0]
    _, _, on1, step1 = runs_lib.restore(workdir, mesh=mesh1)
    _, _, on8, step8 = runs_lib.restore(workdir, mesh=mesh8)
    assert step1 == step8 == 4
    leaves8 = jax.tree.leaves(on8["params"])
    assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated for x in leaves8)
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(on1["params"]))
    p1, p8 = _params(on1), _params(on8)
    assert p1.keys() == p8.keys()
    for k in p1:
      np.testing.assert_array_equal(p1[k], p8[k], err_msg=k)


def test_export_and_audio_encoder_embed(runs, tmp_path):
  workdir = runs[8][0]
  meta = export_lib.export(workdir, tmp_path / "enc", quiet=True)
  assert meta["step"] == 4 and meta["num_params"] > 0
  enc = AudioEncoder.load(tmp_path / "enc")
  rng = np.random.default_rng(0)
  stereo_44k = rng.standard_normal((int(2.5 * 44100), 2)).astype(np.float32) * 0.1
  first = enc.embed(stereo_44k, 44100)
  second = enc.embed(stereo_44k, 44100)
  np.testing.assert_array_equal(first["frames"], second["frames"])
  np.testing.assert_array_equal(first["pooled"], second["pooled"])
  # 2.5 s at 25 frames/s: 62-63 valid frames over three 1 s windows; pooled is their mean.
  assert 60 <= len(first["frames"]) <= 64 and first["frames"].shape[1] == enc.output_dim
  np.testing.assert_allclose(first["pooled"], first["frames"].mean(axis=0), rtol=1e-5, atol=1e-6)
  mono_8k = rng.standard_normal(8000 * 3).astype(np.float32) * 0.1
  batch = enc.embed_batch([stereo_44k, mono_8k], [44100, 8000])
  np.testing.assert_array_equal(batch[0]["pooled"], first["pooled"])
  assert not np.allclose(batch[1]["pooled"], first["pooled"])
  # The exported weights are the trained encoder's.
  trained = encoder_init.load_encoder_params(workdir)
  exported = enc.encoder_params_pure()
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(exported)):
    np.testing.assert_array_equal(a, b)


def test_the_run_keeps_its_own_tokenizer(runs):
  workdir = runs[1][0]
  config = runs_lib.read_config(workdir)
  copy = workdir / "tokenizer.model"
  assert config.data.tokenizer == str(copy) and config.data.tokenizer_sha1 == paths.sha1(copy)
  assert runs_lib.tokenizer(workdir, config, log=None).sha1 == config.data.tokenizer_sha1


def test_export_refuses_the_workdir_as_out_and_leaves_the_run_intact(runs, capsys):
  workdir = runs[8][0]
  before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  assert export_lib.main(["--workdir", str(workdir), "--out", str(workdir)]) == 2
  assert "is not an exported encoder" in capsys.readouterr().err
  assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before


def _one_device_mesh():
  """The mesh of a test that is not about sharding: the first device only (8-device compiles are slow)."""
  return sharding_lib.mesh_from_config(sharding_lib.default_mesh_config(), jax.devices()[:1])


def test_model_init_from_exported_encoder(runs, tiny_corpus_dir, tmp_path):
  export_lib.export(runs[8][0], tmp_path / "enc", quiet=True)
  cfg = make_test_config("cappa", tiny_corpus_dir, model_init=str(tmp_path / "enc"), total_steps=0)
  from alp_jax.train import optimizer as optimizer_lib
  from alp_jax.train import state as state_lib
  runs_lib.set_data_sizes(cfg)
  mesh = _one_device_mesh()
  tx, _ = optimizer_lib.make_optimizer(cfg.optimizer, 10)
  _, _, shardings = state_lib.state_shardings(cfg, mesh, tx)
  state = state_lib.init_state(cfg, mesh, tx, shardings, seed=1)
  loaded = encoder_init.load_into_state(state, tmp_path / "enc", mesh)
  want = jax.tree.leaves(AudioEncoder.load(tmp_path / "enc").encoder_params_pure())
  got = jax.tree.leaves(jax.device_get(encoder_api.get_encoder(loaded["params"])))
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)
  # A different encoder size is refused with a message naming the mismatch.
  cfg_small = make_test_config("cappa", tiny_corpus_dir)
  cfg_small.model.audio.stack = 2
  runs_lib.set_data_sizes(cfg_small)
  _, _, shardings_small = state_lib.state_shardings(cfg_small, mesh, tx)
  state_small = state_lib.init_state(cfg_small, mesh, tx, shardings_small, seed=1)
  with pytest.raises(ValueError, match="shape mismatches"):
    encoder_init.load_into_state(state_small, tmp_path / "enc", mesh)


def test_nonfinite_stops_naming_the_step_and_skip_continues(tiny_corpus_dir, tmp_path):
  cfg = make_test_config("clap", tiny_corpus_dir, total_steps=3, checkpoint_every=1, mesh__num_devices=1)
  cfg.optimizer.learning_rate = float("nan")
  with pytest.raises(trainer.NonFiniteLossError, match="step 1;"):
    trainer.train(cfg, tmp_path / "stop")
  assert not (tmp_path / "stop" / "checkpoints" / "1").exists()
  cfg.nonfinite = "skip"
  summary = trainer.train(cfg, tmp_path / "skip")
  assert summary["final_step"] == 3
  rows = [json.loads(line) for line in open(tmp_path / "skip" / "metrics.jsonl")]
  assert [r["nonfinite"] for r in rows] == [1.0, 2.0, 3.0]
  # Rejected updates leave the parameters at their initial values.
  from alp_jax.train import optimizer as optimizer_lib
  from alp_jax.train import state as state_lib
  mesh = _one_device_mesh()
  restored_cfg, _, restored, _ = runs_lib.restore(tmp_path / "skip", mesh=mesh)
  tx, _ = optimizer_lib.make_optimizer(restored_cfg.optimizer, restored_cfg.total_steps)
  _, _, shardings = state_lib.state_shardings(restored_cfg, mesh, tx)
  initial = state_lib.init_state(restored_cfg, mesh, tx, shardings, restored_cfg.seed)
  a, b = _params(restored), _params(initial)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_periodic_evaluation_and_best_checkpoint(tiny_corpus_dir, tmp_path):
  import ml_collections
  cfg = make_test_config("clap", tiny_corpus_dir, total_steps=4, checkpoint_every=2, eval_every=2,
                         best_metric="val/loss", keep_checkpoints=1, mesh__num_devices=1,
                         data__sources=("demo_music", "demo_sound", "demo_mix"))
  # Held out: a source the run does not train on (tests/test_validation_loss.py).
  cfg.evaluators.val = ml_collections.ConfigDict(dict(type="validation_loss", batches=2, sources=("demo_speech",)))
  trainer.train(cfg, tmp_path / "run")
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  evals = [(r["step"], r["val/loss"]) for r in rows if r["split"] == "eval" and "val/loss" in r]
  assert [s for s, _ in evals] == [2, 4] and all(np.isfinite(v) for _, v in evals)
  # keep=1 with a best metric keeps the best-scoring checkpoint.
  saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
  best_step = min(evals, key=lambda e: e[1])[0]
  assert best_step in saved
