"""Strict configs: an unknown variant is an error, only tiny configs name a corpus by default, and a resume with
another config is refused (but for RESUME_MAY_CHANGE, whose earlier config.json is kept). No training: a start
is run up to the data pipeline, where the trainer has made every check and written config.json."""
import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from alp_jax.configs import common
from alp_jax.data import pipeline
from alp_jax.train import runs
from alp_jax.train import trainer

from conftest import load_config
from test_runs import _corpus, _listing

MODULES = ("clap", "cappa", "hybrid", "tagging")


@pytest.mark.parametrize("name", MODULES)
def test_an_unknown_variant_is_an_error_listing_the_known_ones(name):
  known = importlib.import_module(f"alp_jax.configs.{name}").VARIANTS
  for variant in known:
    load_config(name, variant)
  with pytest.raises(ValueError) as error:
    load_config(name, "tiny,tinny")
  assert str(error.value) == f"configs/{name}.py: unknown variant 'tinny'; known variants: {', '.join(known)}"


def test_the_cli_prints_the_unknown_variant_without_a_traceback(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent), JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "alp_jax.train", "--config", "configs/clap.py:tinny",
                           f"--workdir={tmp_path / 'run'}"], env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.startswith("error: configs/clap.py: unknown variant 'tinny'; known variants: tiny, demo")
  assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_only_tiny_configs_name_a_corpus_and_training_without_one_fails_first(tmp_path):
  for name in MODULES:
    for variant in ("", "small", "base"):
      assert load_config(name, variant).data.corpus_dir == "", (name, variant)
    assert load_config(name, "tiny").data.corpus_dir == common.DEMO_CORPUS
  with pytest.raises(ValueError, match=r"config.data.corpus_dir is not set: pass --config.data.corpus_dir=PATH "
                                       r"\(a prepared corpus, python -m alp_jax.data.prepare\)"):
    trainer.train(load_config("clap", "base"), tmp_path / "run")
  assert not (tmp_path / "run").exists()


class _Started(Exception):
  pass


def _start(config, workdir):
  """trainer.train up to the data pipeline: a (re)start's checks, the run's tokenizer and config.json."""
  with pytest.raises(_Started):
    trainer.train(config, workdir)


def _config(corpus, **changes):
  config = load_config("clap", "tiny")
  config.data.corpus_dir = str(corpus)
  config.update(changes)
  return config


@pytest.fixture
def run(tmp_path, monkeypatch):
  """A workdir started with clap:tiny on a small corpus, with a (stand-in) checkpoint at step 2."""
  def stop(*args, **kwargs):
    raise _Started
  monkeypatch.setattr(pipeline, "host_iterator", stop)
  corpus = _corpus(tmp_path / "corpus", vocab_size=40)
  workdir = tmp_path / "run"
  _start(_config(corpus), workdir)
  (workdir / "checkpoints" / "2").mkdir(parents=True)
  return corpus, workdir


def test_a_resume_with_another_config_is_refused_naming_each_field(run, tmp_path):
  corpus, workdir = run
  other = _corpus(tmp_path / "other", vocab_size=40, seed=1)
  before = _listing(workdir)
  config = _config(other)
  config.model.audio.size = "small"
  with pytest.raises(ValueError) as error:
    trainer.train(config, workdir)
  message = str(error.value)
  assert f'data.corpus_dir: "{corpus}" -> "{other}"' in message
  assert 'model.audio.size: "tiny" -> "small"' in message
  assert "new --workdir" in message and "revert" in message and "total_steps" in message
  assert "tokenizer" not in message.split("may not change:")[1].split("To train")[0]
  assert _listing(workdir) == before


def test_a_resume_may_change_total_steps_and_keeps_the_old_config(run):
  corpus, workdir = run
  first = json.loads((workdir / "config.json").read_text())
  _start(_config(corpus), workdir)   # the identical command: nothing to keep
  assert not (workdir / "config_history").exists()
  assert json.loads((workdir / "config.json").read_text()) == first
  _start(_config(corpus, total_steps=500, log_every=5), workdir)
  (kept,) = (workdir / "config_history").iterdir()
  assert kept.name.startswith("config-step2-") and json.loads(kept.read_text()) == first
  now = json.loads((workdir / "config.json").read_text())
  assert now["total_steps"] == 500 and now["data"]["tokenizer_sha1"] == first["data"]["tokenizer_sha1"]
  _start(_config(corpus, total_steps=500, log_every=5), workdir)
  assert len(list((workdir / "config_history").iterdir())) == 1


def test_config_differences_name_nested_and_absent_fields():
  old = {"a": 1, "data": {"corpus_dir": "x", "source_weights": {}}, "lr": float("nan")}
  new = {"a": 1, "data": {"corpus_dir": "y", "source_weights": {"s": 2.0}, "new": 0}, "lr": float("nan")}
  got = [(f, runs.show(a), runs.show(b)) for f, a, b in runs.config_differences(old, new)]
  assert got == [("data.corpus_dir", '"x"', '"y"'), ("data.new", "(absent)", "0"),
                 ("data.source_weights.s", "(absent)", "2.0")]
