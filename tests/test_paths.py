"""Remote workdirs, checkpoints, exports and corpora: a gs:// path reaches Orbax, the metrics writer, the exporter
and the corpus readers unchanged (never the local folder `gs:/bucket/...` that pathlib makes of it).

Offline: etils.epath.testing.mock_epath sends every epath file operation on gs://bucket/... to a local folder, and
spies record what Orbax and tensorboardX are handed."""
import json
import os

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorboardX
from etils.epath import testing as epath_testing

from alp_jax import encoder_api
from alp_jax.data import paths
from alp_jax.data import pipeline
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import metrics as metrics_lib
from alp_jax.train import runs

from conftest import load_config, tiny_encoder_meta

BUCKET = "gs://bucket"


@pytest.fixture
def bucket(tmp_path):
  """gs://bucket/... is tmp_path/bucket/... for every epath operation; yields that local folder."""
  root = tmp_path / "bucket"
  root.mkdir()

  def local(path):
    text = os.fspath(path)
    return str(root) + text[len(BUCKET):] if text.startswith(BUCKET) else text

  def redirect(original, path, *args, **kwargs):
    if args and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]).startswith(BUCKET):
      args = (local(args[0]),) + args[1:]   # rename / replace / copy destinations
    return original(local(path), *args, **kwargs)

  names = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rename", "replace",
           "rmtree", "stat", "walk")
  with epath_testing.mock_epath(**{name: redirect for name in names}):
    yield root


class _Stop(Exception):
  pass


def test_resolve_leaves_remote_paths_and_makes_local_ones_absolute(tmp_path, monkeypatch):
  assert os.fspath(paths.resolve(f"{BUCKET}/run")) == f"{BUCKET}/run"
  monkeypatch.chdir(tmp_path)
  assert os.fspath(paths.resolve("run")) == str(tmp_path / "run")
  assert os.fspath(ckpt_lib.directory(f"{BUCKET}/run")) == f"{BUCKET}/run/checkpoints"


def test_checkpoint_manager_gets_the_remote_directory(monkeypatch, bucket):
  seen = []

  def spy(self, directory, *args, **kwargs):
    seen.append(os.fspath(directory))
    raise _Stop

  monkeypatch.setattr(ocp.CheckpointManager, "__init__", spy)
  with pytest.raises(_Stop):
    ckpt_lib.Checkpointer(f"{BUCKET}/run")
  # Restoring a run reads its config.json through epath and hands Orbax the same directory.
  config = load_config("clap", "tiny")
  config.model.vocab_size = 64
  (bucket / "run").mkdir()
  (bucket / "run" / "config.json").write_text(config.to_json_best_effort())
  with pytest.raises(_Stop):
    runs.restore(f"{BUCKET}/run")
  assert seen == [f"{BUCKET}/run/checkpoints"] * 2


def test_metrics_are_written_through_epath(monkeypatch, bucket):
  logdirs = []

  class SummaryWriter:
    def __init__(self, logdir):
      logdirs.append(logdir)

    def add_scalar(self, *args):
      pass

    def close(self):
      pass

  monkeypatch.setattr(tensorboardX, "SummaryWriter", SummaryWriter)
  writer = metrics_lib.MetricWriter(f"{BUCKET}/run", tensorboard=True)
  writer.write(3, {"loss": 1.5})
  writer.close()
  assert logdirs == [f"{BUCKET}/run/tensorboard"]
  rows = [json.loads(line) for line in (bucket / "run" / "metrics.jsonl").read_text().splitlines()]
  assert rows == [{"step": 3, "split": "train", "loss": 1.5}]


def test_a_resumed_writer_drops_later_rows_through_epath(monkeypatch, bucket):
  purges = []

  class SummaryWriter:
    def __init__(self, logdir, purge_step=None):
      purges.append(purge_step)
      (bucket / "run" / "tensorboard").mkdir(parents=True, exist_ok=True)

    def add_scalar(self, *args):
      pass

    def close(self):
      pass

  monkeypatch.setattr(tensorboardX, "SummaryWriter", SummaryWriter)
  writer = metrics_lib.MetricWriter(f"{BUCKET}/run", tensorboard=True, resume_step=0)
  for step in (1, 2, 3):
    writer.write(step, {"loss": float(step)})
  writer.close()
  writer = metrics_lib.MetricWriter(f"{BUCKET}/run", tensorboard=True, resume_step=2)
  writer.write(3, {"loss": 3.5})
  writer.close()
  assert purges == [None, 3] and writer.dropped_rows == 1
  rows = [json.loads(line) for line in (bucket / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.5)]


def test_the_exporter_writes_to_the_remote_folder(monkeypatch, bucket):
  encoder = encoder_api.AudioEncoder.build(tiny_encoder_meta(), seed=0)
  config = load_config("clap", "tiny")
  config.data.crop_seconds = 1.0
  restored_from, saved_to = [], []

  def restore_encoder(workdir, step=None, averaged=False):
    restored_from.append(os.fspath(workdir))
    return config, encoder.encoder_params_pure(), 4

  def save(self, directory, state, **kwargs):
    saved_to.append(os.fspath(directory))

  monkeypatch.setattr(runs, "restore_encoder", restore_encoder)
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", save)
  meta = runs.export_encoder(f"{BUCKET}/run", f"{BUCKET}/enc")
  assert restored_from == [f"{BUCKET}/run"] and saved_to == [f"{BUCKET}/enc/params"]
  assert meta["source_workdir"] == f"{BUCKET}/run" and meta["step"] == 4
  assert json.loads((bucket / "enc" / "encoder_config.json").read_text()) == meta


def test_a_remote_corpus_and_its_tokenizer_are_read_through_epath(bucket):
  corpus = bucket / "corpus"
  (corpus / "index").mkdir(parents=True)
  rng = np.random.default_rng(0)
  (corpus / "captions.txt").write_text("\n".join(" ".join(rng.choice(["a", "low", "high", "tone", "beep", "of"], 5))
                                                 for _ in range(200)) + "\n")
  tokenizer_lib.train(corpus, vocab_size=30, quiet=True)
  np.savez(corpus / "index" / "tones.npz", subset_key=np.zeros(2), num_captions=np.ones(2, np.int32),
           num_samples=np.full(2, 16000))
  (corpus / "corpus.json").write_text(json.dumps({"sources": {"tones": {
      "clips": 2, "captions": 2, "hours": 1 / 1800, "shards": ["shards/tones/0.array_record"],
      "index": "index/tones.npz"}}}))
  [source] = pipeline.load_sources(f"{BUCKET}/corpus")
  assert source.shards == (f"{BUCKET}/corpus/shards/tones/0.array_record",) and len(source.subset_key) == 2
  data_cfg = ml_collections.ConfigDict({"corpus_dir": f"{BUCKET}/corpus", "tokenizer": ""})
  assert os.fspath(tokenizer_lib.path_for(data_cfg)) == f"{BUCKET}/corpus/tokenizer.model"
  remote = tokenizer_lib.Tokenizer(tokenizer_lib.path_for(data_cfg))
  assert remote.encode("a low tone") == tokenizer_lib.Tokenizer(corpus / "tokenizer.model").encode("a low tone")
