"""The representation benchmark's run specs: NAME=CONFIG;field=value overrides, and clear errors."""
import pytest

from alp_jax.benchmarks import representation


def test_run_spec_overrides_config_fields():
  name, spec, overrides = representation.parse_run(
      "wide=alp_jax.configs.clap:demo;model.audio.size=mini;frontend.spec_augment.enabled=True;batch_size=32")
  assert (name, spec) == ("wide", "alp_jax.configs.clap:demo")
  config = representation.build_config(spec, overrides, corpus="some/corpus")
  assert config.model.audio.size == "mini" and config.frontend.spec_augment.enabled is True
  assert config.batch_size == 32 and config.data.corpus_dir == "some/corpus"


def test_bad_run_specs_are_refused():
  with pytest.raises(ValueError, match="NAME=CONFIG"):
    representation.parse_run("alp_jax.configs.clap:demo")
  with pytest.raises(ValueError, match="field=value"):
    representation.parse_run("a=alp_jax.configs.clap:demo;batch_size")
  with pytest.raises(KeyError, match="no such field"):
    representation.build_config("alp_jax.configs.clap:demo", {"model.audio.sise": "mini"}, None)
