"""Parameter averaging (config.optimizer.average_period, icefall's model_avg): the running average equals the
arithmetic mean of the parameters at steps P, 2P, ...; it is saved in checkpoints and restored; export
--averaged writes it, and refuses a run that kept none."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alp_jax import encoder_api
from alp_jax import export as export_cli
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import runs
from alp_jax.train import state as state_lib
from alp_jax.train import step as step_lib

from conftest import load_config, make_test_config
from test_train import _one_device_mesh


@pytest.mark.parametrize("period", [1, 3])
def test_the_average_is_the_mean_of_the_parameters_every_period(period):
  rng = np.random.default_rng(period)
  trajectory = [{"w": rng.normal(size=(3, 2)).astype(np.float32), "b": rng.normal(size=(2,)).astype(np.float32)}
                for _ in range(13)]   # trajectory[n]: the parameters after step n (0: initial)
  update = jax.jit(step_lib.update_average, static_argnums=3)
  average = jax.tree.map(jnp.asarray, trajectory[0])
  for n in range(1, len(trajectory)):
    before = average
    average = update(average, jax.tree.map(jnp.asarray, trajectory[n]), jnp.int32(n), period)
    if n % period:
      jax.tree.map(np.testing.assert_array_equal, average, before)   # untouched between updates
    else:
      snapshots = trajectory[period:n + 1:period]
      want = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *snapshots)
      jax.tree.map(lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6), average, want)


def _tiny_run(workdir, average_period: int, step: int):
  """A tiny CLAP 'run' on disk without training (and without compiling an init): config.json and one checkpoint
  of a state with random values (params_avg differs from params). Returns the saved state."""
  cfg = load_config("clap", "tiny")
  cfg.optimizer.average_period = average_period
  tx, _ = optimizer_lib.make_optimizer(cfg.optimizer, cfg.total_steps)
  _, abstract, shardings = state_lib.state_shardings(cfg, _one_device_mesh(), tx)
  rng = np.random.default_rng(0)

  def random_leaf(leaf, sharding):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      value = rng.normal(size=leaf.shape)
    else:
      value = rng.integers(0, 100, size=leaf.shape)
    return jax.device_put(value.astype(leaf.dtype), sharding)
  state = jax.tree.map(random_leaf, abstract, shardings)
  state["step"] = jax.device_put(np.int32(step), shardings["step"])
  runs.write_config(workdir, cfg)
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  checkpointer.save(step, state, force=True)
  checkpointer.close()
  return state


def _pure_encoder(params):
  return jax.tree.map(np.asarray, runs._to_numpy_pure(encoder_api.get_encoder(params)))


def test_the_average_is_checkpointed_restored_and_exported(tmp_path):
  saved = _tiny_run(tmp_path / "run", average_period=2, step=6)
  _, _, restored, step = runs.restore(tmp_path / "run", mesh=_one_device_mesh())
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored["params_avg"]),
               jax.device_get(saved["params_avg"]))

  meta = export_cli.export(tmp_path / "run", tmp_path / "enc_avg", averaged=True, quiet=True)
  assert meta["averaged"] == {"period": 2, "first_step": 2, "last_step": 6, "snapshots": 3}
  exported = encoder_api.AudioEncoder.load(tmp_path / "enc_avg").encoder_params_pure()
  want, plain = _pure_encoder(saved["params_avg"]), _pure_encoder(saved["params"])
  assert jax.tree.structure(exported) == jax.tree.structure(want)
  jax.tree.map(np.testing.assert_array_equal, exported, want)
  assert not any(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(plain)))


def test_export_averaged_of_a_run_without_an_average_is_a_clear_error(tmp_path, capsys):
  cfg = load_config("clap", "tiny")
  runs.write_config(tmp_path / "run", cfg)   # average_period 0: refused before any checkpoint is read
  assert export_cli.main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "enc"), "--averaged"]) == 2
  err = capsys.readouterr().err
  assert "kept no parameter average" in err and "optimizer.average_period is 0" in err
  assert not (tmp_path / "enc").exists()
  with pytest.raises(runs.NoAverageError, match="comes before the parameter average's first update"):
    runs.check_average(tmp_path / "run", _config_with_average(4), step=3)


def _config_with_average(period):
  cfg = load_config("clap", "tiny")
  cfg.optimizer.average_period = period
  return cfg


@pytest.mark.slow
def test_training_with_scaled_adam_keeps_the_mean_of_the_checkpointed_parameters(tiny_corpus_dir, tmp_path):
  """End to end: ScaledAdam + Eden + averaging every 2 steps, interrupted at step 4 and resumed to 6; the
  average at step 6 is the mean of the parameters at steps 2, 4 and 6 (all checkpointed)."""
  from alp_jax.train import trainer
  overrides = dict(mesh__num_devices=1, checkpoint_every=2, keep_checkpoints=5, optimizer__name="scaled_adam", optimizer__clip_norm=0.0,
                   optimizer__learning_rate=0.045, optimizer__schedule="eden", optimizer__eden__steps_per_epoch=3,
                   optimizer__average_period=2)
  trainer.train(make_test_config("clap", tiny_corpus_dir, total_steps=4, **overrides), tmp_path / "run")
  summary = trainer.train(make_test_config("clap", tiny_corpus_dir, total_steps=6, **overrides), tmp_path / "run")
  assert summary["start_step"] == 4 and summary["final_step"] == 6
  states = {s: runs.restore(tmp_path / "run", s, mesh=_one_device_mesh())[2] for s in (2, 4, 6)}
  mean = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *(jax.device_get(states[s]["params"])
                                                                 for s in (2, 4, 6)))
  jax.tree.map(lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6),
               jax.device_get(states[6]["params_avg"]), mean)
  assert json.loads((tmp_path / "run" / "config.json").read_text())["optimizer"]["name"] == "scaled_adam"
