"""The validation-loss evaluator: it scores held-out clips only (refused at startup otherwise, before compiling),
and every process runs the same number of batches (the loss's collectives span processes)."""
import json

import ml_collections
import numpy as np
import pytest

from alp_jax import sharding as sharding_lib
from alp_jax.data import pipeline
from alp_jax.evaluate.evaluators import validation_loss
from alp_jax.train import evaluators, runs
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import state as state_lib
from alp_jax.train import trainer

from conftest import make_test_config

# The demo corpus has demo_speech 17, demo_music 12, demo_sound 12, demo_mix 7 clips.
TRAIN_SOURCES = ("demo_music", "demo_sound")
HELD_OUT = ("demo_speech", "demo_mix")


def test_agreed_batch_count_is_the_fewest_any_host_has_capped():
  assert validation_loss.agreed_batch_count([3, 2], cap=4) == 2
  assert validation_loss.agreed_batch_count([5, 5, 6], cap=4) == 4
  assert validation_loss.agreed_batch_count([7], cap=4) == 4
  assert validation_loss.agreed_batch_count([2, 0], cap=4) == 0
  assert validation_loss.agreed_batch_count(np.array([3, 9]), cap=8) == 3


def test_unequal_host_slices_agree_on_one_count(tiny_corpus_dir):
  """Two hosts' shares of the held-out sources give them different batch counts; both run the agreed one."""
  cfg = make_test_config("clap", tiny_corpus_dir).data
  cfg.sources = HELD_OUT
  counts = [len(pipeline.eval_dataset(cfg, 8, process_index=p, process_count=2, drop_remainder=True))
            for p in range(2)]
  assert counts == [3, 2]   # 9+4 and 8+3 clips in host batches of 4
  assert validation_loss.agreed_batch_count(counts, cap=4) == 2


def _corpus(path, sources):
  path.mkdir(parents=True, exist_ok=True)
  (path / "corpus.json").write_text(json.dumps({"sources": {s: {} for s in sources}}))
  return path


def _config(train_corpus, train_sources=(), **val):
  cfg = ml_collections.ConfigDict(dict(data=dict(corpus_dir=str(train_corpus), sources=train_sources,
                                                 label_task="")))
  return cfg, ml_collections.ConfigDict(dict(type="validation_loss", **val))


@pytest.mark.parametrize("train_sources, val, field", [
    ((), {}, "config.evaluators.val.corpus_dir"),                                # no default any more
    ((), {"corpus_dir": "SAME"}, "is the training corpus"),
    ((), {"corpus_dir": "SAME/"}, "is the training corpus"),                     # spelt differently
    ((), {"sources": ("b",)}, "config.data.sources is empty"),                   # all sources are trained on
    (("a", "b"), {"sources": ("b",)}, "also in config.data.sources"),
    (("a",), {"sources": ("z",)}, "not in"),
])
def test_training_data_is_refused_naming_the_field(tmp_path, train_sources, val, field):
  train_corpus = _corpus(tmp_path / "train", ("a", "b"))
  val = {k: (v.replace("SAME", str(train_corpus)) if isinstance(v, str) else v) for k, v in val.items()}
  cfg, eval_cfg = _config(train_corpus, train_sources, **val)
  with pytest.raises(ValueError, match=field):
    validation_loss.ValidationLoss.check_config(cfg, eval_cfg, "val")


def test_held_out_corpus_or_sources_are_accepted(tmp_path):
  train_corpus = _corpus(tmp_path / "train", ("a", "b"))
  held_out = _corpus(tmp_path / "held_out", ("c",))
  validation_loss.ValidationLoss.check_config(*_config(train_corpus, corpus_dir=str(held_out)), "val")
  validation_loss.ValidationLoss.check_config(*_config(train_corpus, ("a",), sources=("b",)), "val")


def test_trainer_refuses_before_compiling(tiny_corpus_dir, tmp_path, monkeypatch):
  cfg = make_test_config("clap", tiny_corpus_dir, eval_every=2, best_metric="val/loss")
  cfg.evaluators.val = ml_collections.ConfigDict(dict(type="validation_loss", batches=2))

  def compile_(*args, **kwargs):
    raise AssertionError("compiled before refusing the evaluator config")
  monkeypatch.setattr(trainer.step_lib, "make_train_step", compile_)
  with pytest.raises(ValueError, match="config.evaluators.val.corpus_dir"):
    trainer.train(cfg, tmp_path / "run")


def test_every_host_runs_the_agreed_count(tiny_corpus_dir, monkeypatch):
  """One process; the all-gather faked to report a host with fewer batches: this host runs that many."""
  cfg = make_test_config("clap", tiny_corpus_dir, data__sources=TRAIN_SOURCES, mesh__num_devices=1)
  cfg.evaluators.val = ml_collections.ConfigDict(dict(type="validation_loss", batches=4, sources=HELD_OUT))
  runs.set_data_sizes(cfg)
  mesh = sharding_lib.mesh_from_config(cfg.mesh, sharding_lib.devices_from_config(cfg.mesh))  # first device only
  tx, _ = optimizer_lib.make_optimizer(cfg.optimizer, cfg.total_steps)
  graphdef, _, shardings = state_lib.state_shardings(cfg, mesh, tx)
  state = state_lib.init_state(cfg, mesh, tx, shardings, cfg.seed)

  built = evaluators.build_all(cfg, graphdef=graphdef, mesh=mesh)["val"]
  assert built.host_counts.tolist() == [3] and built.num_batches == 3   # 24 clips, batches of 8: no collective
  full = dict(built.run(state))
  assert np.isfinite(full["loss"])

  logged = []
  monkeypatch.setattr(validation_loss, "gather_host_counts", lambda local: np.array([local, local - 2]))
  short = validation_loss.ValidationLoss(cfg, cfg.evaluators.val, graphdef=graphdef, mesh=mesh, log=logged.append)
  scored = []
  run_one = short._evaluate
  short._evaluate = lambda *args: scored.append(1) or run_one(*args)
  assert short.num_batches == 1
  first = dict(short.run(state))
  assert len(scored) == 1 and first["loss"] != full["loss"]
  assert logged == [f"[eval val] processes have [3, 1] full batches of {tiny_corpus_dir} (sources "
                    f"{list(HELD_OUT)}); every process runs 1"]

  monkeypatch.setattr(validation_loss, "gather_host_counts", lambda local: np.array([local, 0]))
  with pytest.raises(ValueError, match=r"fewer held-out clips than one host batch.*\[3, 0\]"):
    validation_loss.ValidationLoss(cfg, cfg.evaluators.val, graphdef=graphdef, mesh=mesh)


@pytest.mark.slow
def test_two_processes_with_unequal_slices_run_the_same_batches(tiny_corpus_dir, tmp_path):
  """Two real processes whose shares of the held-out sources hold 3 and 2 batches: both run 2, no hang."""
  import subprocess
  import sys
  from test_train_processes import REPO, _env, _free_port
  config = tmp_path / "clap_val.py"
  config.write_text(
      "import ml_collections\nfrom alp_jax.configs import clap\n\n\ndef get_config(arg=None):\n"
      "  c = clap.get_config(arg)\n  c.eval_every = 2\n"
      f"  c.data.sources = {TRAIN_SOURCES!r}\n"
      f"  c.evaluators.val = ml_collections.ConfigDict(dict(type='validation_loss', batches=4, sources={HELD_OUT!r}))\n"
      "  return c\n")
  workdir, port = tmp_path / "run", _free_port()
  command = [sys.executable, "-m", "alp_jax.train", f"--config={config}:tiny", f"--workdir={workdir}",
             f"--config.data.corpus_dir={tiny_corpus_dir}", "--config.batch_size=8", "--config.data.crop_seconds=1.0",
             "--config.data.max_caption_tokens=16", "--config.data.num_threads=2", "--config.log_every=1",
             "--config.tensorboard=False", "--config.peak_flops_per_device=1e9", "--config.total_steps=2",
             "--config.checkpoint_every=2", "--config.best_metric=val/loss"]
  procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(2, ALP_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", ALP_NUM_PROCESSES="2",
                                     ALP_PROCESS_ID=str(i)))
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=300)[0] for p in procs]   # the old evaluator hung here
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  assert "processes have [3, 2] full batches" in outs[0] and "every process runs 2" in outs[0]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  [val] = [r["val/loss"] for r in rows if r["split"] == "eval" and "val/loss" in r]
  assert np.isfinite(val)
