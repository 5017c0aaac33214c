"""Test setup: CPU with 8 fake devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


def pytest_configure(config):
  import jax  # noqa: F401  (first import happens here, after the flags)


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory):
  """A small demo corpus, built and prepared once per test session."""
  from alp_jax.data import demo_corpus
  out = tmp_path_factory.mktemp("demo_corpus")
  demo_corpus.build(out, num_clips=48, seed=0, clip_seconds=2.0, workers=2, quiet=True)
  return out
