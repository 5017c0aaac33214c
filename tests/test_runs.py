"""A training run on disk (alp_jax/train/runs.py): config files, config.json, the run's own tokenizer, and an
export that never writes over what it did not make. No training here: the trainer's own calls are checked in
test_train.py on its trained runs."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from alp_jax import encoder_api
from alp_jax import export as export_lib
from alp_jax.data import paths
from alp_jax.data import pipeline
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.train import runs

from conftest import tiny_encoder_meta

WORDS = ("low", "high", "tone", "sound", "the", "of", "a", "recording", "noise", "beep", "pitched", "steady")
CAPTION = "a low pitched steady tone of the recording"


def _corpus(folder, vocab_size: int, seed: int = 0):
  """A folder with captions.txt and a tokenizer trained on it (all the run-tokenizer code reads of a corpus)."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  (folder / "captions.txt").write_text("\n".join(" ".join(rng.choice(WORDS, 6)) for _ in range(300)) + "\n")
  tokenizer_lib.train(folder, vocab_size=vocab_size, quiet=True)
  return folder


def _config(corpus_dir) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"data": pipeline.default_data_config().to_dict() | {"corpus_dir": str(corpus_dir)}})


def test_load_config_from_the_working_directory_or_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)   # configs/ is not here: found from the repository root
  assert runs.load_config("configs/clap.py:tiny").model.name == "two_towers"
  with pytest.raises(FileNotFoundError, match=rf"'configs/nope.py' not found \(looked in {tmp_path} and "):
    runs.load_config("configs/nope.py:tiny")


def test_load_config_by_module_name_and_by_path_from_another_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  by_name = runs.load_config("alp_jax.configs.hybrid:tiny")
  assert by_name.model.name == "hybrid" and by_name.batch_size == 16
  package_file = pathlib.Path(runs.config_file("alp_jax.configs.hybrid:tiny").partition(":")[0])
  assert package_file.parent.name == "configs" and package_file.parent.parent.name == "alp_jax"
  assert runs.load_config(f"{package_file}:tiny").to_dict() == by_name.to_dict()
  assert runs.load_config("alp_jax.configs.clap").batch_size == 256   # no variant
  (tmp_path / "mine").mkdir()   # a relative path from the working directory comes first
  (tmp_path / "mine" / "exp.py").write_text(
      "from alp_jax.configs import clap\n\ndef get_config(arg=None):\n  c = clap.get_config(arg)\n"
      "  c.seed = 7\n  return c\n")
  assert runs.config_file("mine/exp.py:tiny") == f"{tmp_path / 'mine' / 'exp.py'}:tiny"
  assert runs.load_config("mine/exp.py:tiny").seed == 7
  with pytest.raises(FileNotFoundError, match="config module 'alp_jax.configs.nope' not found"):
    runs.load_config("alp_jax.configs.nope:tiny")


def test_the_train_cli_takes_a_module_name_from_another_directory(tmp_path):
  """--config alp_jax.configs.clap:tiny (and overrides) reach the trainer: it stops at the missing corpus."""
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent), JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "alp_jax.train", "--config", "alp_jax.configs.clap:tiny",
                           f"--workdir={tmp_path / 'run'}", f"--config.data.corpus_dir={tmp_path / 'no_corpus'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "error:" in result.stderr and "no_corpus" in result.stderr, result.stderr[-2000:]


def test_read_config_names_a_folder_that_is_not_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a training workdir \\(no config.json\\)"):
    runs.read_config(tmp_path)


def test_a_run_keeps_its_tokenizer_when_the_corpus_is_rebuilt(tmp_path):
  corpus = _corpus(tmp_path / "corpus", vocab_size=40)
  workdir = tmp_path / "run"
  config = _config(corpus)
  tok = runs.start_tokenizer(workdir, config, log=None)   # the trainer's first-start call
  runs.write_config(workdir, config)
  copy = workdir / tokenizer_lib.MODEL_FILE
  assert config.data.tokenizer == str(copy) and config.data.tokenizer_sha1 == paths.sha1(copy) == tok.sha1
  before = tok.encode(CAPTION)
  # The corpus's tokenizer is rebuilt with another vocabulary: its ids differ, the run's do not.
  _corpus(corpus, vocab_size=60, seed=1)
  assert tokenizer_lib.Tokenizer(corpus / tokenizer_lib.MODEL_FILE).encode(CAPTION) != before
  assert runs.tokenizer(workdir).encode(CAPTION) == before
  # Resuming (a checkpoint exists) keeps the run's copy and says once that the corpus's tokenizer changed.
  (workdir / "checkpoints" / "2").mkdir(parents=True)
  lines = []
  fresh = _config(corpus)
  assert runs.start_tokenizer(workdir, fresh, log=lines.append).encode(CAPTION) == before
  assert fresh.data.tokenizer == str(copy) and fresh.data.tokenizer_sha1 == tok.sha1
  assert len(lines) == 1 and "changed since this run started" in lines[0] and str(copy) in lines[0]


def test_a_replaced_run_tokenizer_is_an_error_naming_both_sha1s(tmp_path):
  corpus = _corpus(tmp_path / "corpus", vocab_size=40)
  workdir = tmp_path / "run"
  config = _config(corpus)
  recorded = runs.start_tokenizer(workdir, config, log=None).sha1
  runs.write_config(workdir, config)
  other = _corpus(tmp_path / "other", vocab_size=60, seed=1) / tokenizer_lib.MODEL_FILE
  copy = workdir / tokenizer_lib.MODEL_FILE
  copy.write_bytes(other.read_bytes())
  found = paths.sha1(copy)
  with pytest.raises(ValueError) as error:
    runs.tokenizer(workdir)
  message = str(error.value)
  assert recorded in message and found in message and str(copy) in message and str(workdir / "config.json") in message


def test_a_run_from_before_run_tokenizers_falls_back_to_the_corpus_with_a_note(tmp_path):
  corpus = _corpus(tmp_path / "corpus", vocab_size=40)
  workdir = tmp_path / "old_run"
  (workdir / "checkpoints" / "4").mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({"data": {"corpus_dir": str(corpus), "tokenizer": ""}}))
  lines = []
  tok = runs.tokenizer(workdir, log=lines.append)
  assert tok.path == str(corpus / tokenizer_lib.MODEL_FILE) and len(lines) == 1 and "keeps no" in lines[0]
  config = _config(corpus)
  lines.clear()
  assert runs.start_tokenizer(workdir, config, log=lines.append).sha1 == tok.sha1
  assert config.data.tokenizer == "" and not config.data.tokenizer_sha1 and len(lines) == 1
  assert not (workdir / tokenizer_lib.MODEL_FILE).exists()


def _listing(folder) -> dict:
  return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
          for root, _, names in os.walk(folder) for name in names}


def test_export_refuses_a_folder_that_is_not_an_export_and_leaves_it_intact(tmp_path, capsys):
  run = tmp_path / "run"
  (run / "checkpoints" / "4").mkdir(parents=True)
  (run / "config.json").write_text("{}")
  (run / "metrics.jsonl").write_text('{"step": 1}\n')
  before = _listing(run)
  # A mistyped --out (the workdir itself, or its parent) is refused before any work.
  for out in (run, tmp_path):
    assert export_lib.main(["--workdir", str(run), "--out", str(out)]) == 2
    assert "is not empty and is not an exported encoder" in capsys.readouterr().err
  assert _listing(run) == before
  encoder = encoder_api.AudioEncoder.build(tiny_encoder_meta(), seed=0)
  with pytest.raises(FileExistsError, match="not an exported encoder"):
    encoder.save(run)
  assert _listing(run) == before


def test_save_replaces_an_earlier_export(tmp_path):
  out = tmp_path / "enc"
  first = encoder_api.AudioEncoder.build({**tiny_encoder_meta(), "step": 1}, seed=0)
  first.save(out)
  (out / "README.txt").write_text("mine")
  second = encoder_api.AudioEncoder.build({**tiny_encoder_meta(), "step": 2}, seed=1)
  second.save(out)
  loaded = encoder_api.AudioEncoder.load(out)
  assert loaded.meta["step"] == 2 and (out / "README.txt").read_text() == "mine"
  for a, b in zip(jax.tree.leaves(loaded.encoder_params_pure()), jax.tree.leaves(second.encoder_params_pure())):
    np.testing.assert_array_equal(a, b)
  # A crash mid-export keeps the previous one: tests/test_export_safety.py.
