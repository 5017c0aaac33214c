"""Frozen parameter groups (config.optimizer.frozen) and LiT-style alignment training (alp_jax/evaluate/lit.py)."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alp_jax import AudioEncoder
from alp_jax import encoder_api
from alp_jax import sharding as sharding_lib
from alp_jax.evaluate import lit
from alp_jax.train import freeze
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import runs
from alp_jax.train import state as state_lib

from conftest import load_config, write_caption_task

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def _flat(tree) -> dict:
  return {"/".join(freeze.leaf_path(k)): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


@pytest.fixture(scope="module")
def caption_task(tmp_path_factory):
  return write_caption_task(tmp_path_factory.mktemp("tones_task"), clips=36)


LIT_KWARGS = dict(steps=3, batch_size=8, vocab_size=64,
                  overrides={"data.num_threads": 2, "tensorboard": False, "peak_flops_per_device": 1e9,
                             "checkpoint_every": 1, "grad_accum_steps": 2, "mesh.num_devices": 1})


@pytest.fixture(scope="module")
def lit_run(encoder_dir, caption_task, tmp_path_factory):
  """train_text_side end to end: hybrid tiny, 3 steps of batch 8 (exact accumulation over 2 micro-batches),
  a checkpoint after every step."""
  workdir = tmp_path_factory.mktemp("lit")
  lines = []
  out = lit.train_text_side(encoder_dir, caption_task, workdir, log=lines.append, **LIT_KWARGS)
  return out, lines


def test_train_text_side_end_to_end(lit_run, encoder_dir, caption_task, capsys):
  workdir, lines = lit_run
  record = json.loads((workdir / lit.LIT_FILE).read_text())
  assert record["final_step"] == 3 and record["model"] == "hybrid" and record["frozen"] == ["audio_encoder"]
  assert record["train_clips"] == 24 and record["skipped_records"] == 0
  assert (workdir / "checkpoints" / "3").is_dir()
  assert (workdir / lit.CORPUS_DIR / "tokenizer.model").is_file()
  assert any(line.startswith("[lit] done") for line in lines)
  # A missing "source" became the task's name; "tones" came from the file.
  corpus = json.loads((workdir / lit.CORPUS_DIR / "corpus.json").read_text())
  assert sorted(corpus["sources"]) == sorted({caption_task.name, "tones"})
  config = runs.read_config(workdir)
  assert config.model.audio.to_dict() == json.loads((encoder_dir / "encoder_config.json").read_text())["audio"]
  assert list(config.optimizer.frozen) == ["audio_encoder"] and config.model_init == str(encoder_dir)
  # The same call on the finished workdir returns at once; other settings are refused.
  capsys.readouterr()
  assert lit.train_text_side(encoder_dir, caption_task, workdir, **LIT_KWARGS) == workdir
  assert "nothing to do" in capsys.readouterr().out
  with pytest.raises(ValueError, match="seed: 0 there, 1 now"):
    lit.train_text_side(encoder_dir, caption_task, workdir, **{**LIT_KWARGS, "seed": 1}, log=None)


def test_frozen_audio_encoder_is_bit_identical_and_the_text_side_trains(lit_run, encoder_dir):
  workdir = lit_run[0]
  want = _flat(AudioEncoder.load(encoder_dir).encoder_params_pure())
  by_step = {}
  for step in (1, 3):
    _, graphdef, state, _ = runs.restore(workdir, step)
    by_step[step] = _flat(state["params"])
    got = _flat(encoder_api.get_encoder(state["params"]))
    assert want.keys() == got.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"step {step}: {k}")
  # Every text-side group moved between step 1 and step 3.
  first, last = by_step[1], by_step[3]
  for group in ("towers/text_encoder/", "towers/text_head/", "towers/audio_head/", "decoder/"):
    keys = [k for k in last if k.startswith(group)]
    changed = [k for k in keys if not np.array_equal(first[k], last[k])]
    assert keys and len(changed) > 0.9 * len(keys), (group, sorted(set(keys) - set(changed)))
  # No optimizer state is kept for the frozen encoder.
  n_frozen, n_trainable = freeze.count(state["params"], ("audio_encoder",))
  assert n_frozen > 0 and sum(x.size for x in jax.tree.leaves(state["opt_state"])) < 2 * n_trainable + 100
  # The run's graph marks the encoder frozen; a frozen encoder runs in evaluation mode (no SpecAugment, no
  # dropout) even when asked to train.
  from flax import nnx
  model = nnx.merge(graphdef, state["params"], state["rest"])
  assert encoder_api.get_encoder(model).frozen is True
  cfg = load_config("clap", "tiny")
  cfg.model.vocab_size = 64
  cfg.model.audio.dropout = 0.1
  cfg.optimizer.frozen = ("audio_encoder",)
  small = state_lib.build_model(cfg, rngs=nnx.Rngs(0))
  audio = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32) * 0.1)
  mask = jnp.ones((2, 16000), bool)
  eval_frames, _ = small.encode_audio(audio, mask)
  train_frames, _ = small.encode_audio(audio, mask, train=True, rngs=nnx.Rngs(augment=1, dropout=2))
  np.testing.assert_array_equal(np.asarray(train_frames), np.asarray(eval_frames))
  small.audio_encoder.frozen = False
  unfrozen, _ = small.encode_audio(audio, mask, train=True, rngs=nnx.Rngs(augment=1, dropout=2))
  assert not np.array_equal(np.asarray(unfrozen), np.asarray(eval_frames))


def test_unknown_or_ambiguous_frozen_name_is_a_clear_error():
  cfg = load_config("hybrid", "tiny")
  cfg.model.vocab_size = 64
  mesh = sharding_lib.mesh_from_config(sharding_lib.default_mesh_config())
  # "audio_encoder" names the hybrid's towers/audio_encoder; the mask covers exactly its leaves.
  params = state_lib.split_model(state_lib.build_abstract_model(cfg))[1]
  mask = jax.tree_util.tree_flatten_with_path(freeze.frozen_mask(params, ("audio_encoder",)))[0]
  assert {freeze.leaf_path(k)[:2] for k, frozen in mask if frozen} == {("towers", "audio_encoder")}
  assert not any(frozen for k, frozen in mask if freeze.leaf_path(k)[:2] != ("towers", "audio_encoder"))
  cfg.optimizer.frozen = ("audio_encodr",)
  tx, _ = optimizer_lib.make_optimizer(cfg.optimizer, 10)
  with pytest.raises(ValueError, match=r"unknown parameter group 'audio_encodr'.*\['decoder', 'towers'\]"):
    state_lib.state_shardings(cfg, mesh, tx)
  with pytest.raises(ValueError, match=r"'blocks'.*several nested modules"):
    freeze.frozen_mask(params, ("blocks",))


def test_missing_train_split_is_a_clear_error(tmp_path, encoder_dir):
  (tmp_path / "test.jsonl").write_text("")
  with pytest.raises(FileNotFoundError, match="no train.jsonl"):
    lit.train_text_side(encoder_dir, tmp_path, tmp_path / "run", log=None)


def test_cli_lit_suite_reports_retrieval_and_captioning_and_repeats(tmp_path, encoder_dir, caption_task):
  """--suite lit: train the text side (3 steps) on the task's train split, score its test split; scoring the
  finished LiT run again through --workdir gives the same numbers."""
  from alp_jax.evaluate.__main__ import main
  out = tmp_path / "lit.json"
  args = ["--task-dir", str(caption_task), "--beam-sizes", "1"]
  # configs/hybrid.py:tiny on the first device only (not a sharding test; 8-device compiles are slow).
  lit_config = tmp_path / "hybrid_one_device.py"
  lit_config.write_text(f"from alp_jax.train import runs\n\n\ndef get_config(arg=None):\n"
                        f"  c = runs.load_config('{CONFIGS}/hybrid.py:' + (arg or ''))\n"
                        f"  c.mesh.num_devices = 1\n  return c\n")
  assert main(["--encoder", str(encoder_dir), *args, "--suite", "lit", "--lit-config", f"{lit_config}:tiny",
               "--lit-steps", "3", "--lit-batch-size", "8", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  rows = {(r["method"], r["metric"]): r["value"] for r in result["results"]}
  assert {p for p, _ in rows} == {"lit_retrieval", "lit_retrieval_likelihood", "lit_greedy"}
  assert {m for p, m in rows if p == "lit_greedy"} == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
  assert all(0.0 <= rows[("lit_retrieval", f"{d}/R@{k}")] <= 1.0 for d in ("a2t", "t2a") for k in (1, 5, 10))
  [run] = result["protocol"]["lit"]
  assert run["steps"] == 3 and run["model"] == "hybrid" and run["frozen"] == ["audio_encoder"]
  workdir = tmp_path / "lit_lit" / caption_task.name
  assert run["workdir"] == str(workdir) and (workdir / "checkpoints" / "3").is_dir()
  # The LiT run's encoder is the given one, bit for bit.
  given = AudioEncoder.load(encoder_dir).encoder_params_pure()
  trained = runs.restore_encoder(workdir)[1]
  assert _flat(given).keys() == _flat(trained).keys()
  for key, value in _flat(given).items():
    np.testing.assert_array_equal(_flat(trained)[key], value, err_msg=key)
  again = tmp_path / "again.json"
  assert main(["--workdir", str(workdir), *args, "--suite", "retrieval,captioning", "--out", str(again)]) == 0
  assert {("lit_" + r["method"], r["metric"]): r["value"] for r in json.loads(again.read_text())["results"]} == rows
