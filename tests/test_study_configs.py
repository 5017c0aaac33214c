"""The study variants (configs/*.py:study, study_init): the paper's budgets and the toolkit's optimizer, schedule,
encoder and decoder, and they build: the optimizer accepts the settings and the captioner's shapes are the
toolkit's (checked abstractly, without materialising ~170M parameters)."""
import jax
import pytest
from flax import nnx

from alp_jax import models
from alp_jax.data import pipeline
from alp_jax.models import zipformer
from alp_jax.train import optimizer as optimizer_lib

from conftest import load_config


@pytest.mark.parametrize("name", ("clap", "cappa", "hybrid"))
def test_study_variants_carry_the_papers_budgets_and_the_toolkits_optimizer(name):
  scratch, init = load_config(name, "study"), load_config(name, "study_init")
  assert (scratch.total_steps, init.total_steps) == (600_000, 200_000)
  assert scratch.data.batch_seconds == 8 * 640   # the paper: 640 s of audio per GPU on 8 GPUs, duration-bucketed
  shapes = pipeline.bucket_shapes(scratch.data, row_multiple=8)   # every padded shape holds at most the budget
  assert len(shapes) == len(scratch.data.bucket_seconds)
  assert all(shape.rows * shape.seconds <= 8 * 640 for shape in shapes), shapes
  assert scratch.model.audio.name == "zipformer"
  assert scratch.model.audio.encoder_dim == zipformer.default_config("m").encoder_dim
  assert load_config(name, "study,zipformer_768").model.audio.encoder_dim == zipformer.default_config("768").encoder_dim
  tx, schedule = optimizer_lib.make_optimizer(scratch.optimizer, scratch.total_steps)   # ScaledAdam accepts them
  del tx
  # Eden2 (icefall): 0.045 x ((b^2 + 7500^2) / 7500^2)^-1/2, b = step + 1, warmup 0.5 -> 1 over 500 batches.
  for step in (0, 499, 7499, 100_000):
    b = step + 1
    warm = 1.0 if b >= 500 else 0.5 + 0.5 * b / 500
    want = 0.045 * ((b ** 2 + 7500 ** 2) / 7500 ** 2) ** -0.5 * warm
    assert float(schedule(step)) == pytest.approx(want, rel=1e-5), step
  with pytest.raises(ValueError, match="choose one"):
    load_config(name, "study,study_init")


def test_study_captioner_has_the_toolkits_decoder():
  config = load_config("cappa", "study")
  model = nnx.eval_shape(lambda: models.build_model(config, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(nnx.state(model.decoder, nnx.Param))
  names = {"/".join(str(getattr(k, "key", k)) for k in path) for path, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]}
  assert sorted(n for n in names if "bias" in n) == ["output_bias"]       # bias=False but the vocabulary projection
  assert not any(n.startswith("final_norm") for n in names)               # post-LN: no final LayerNorm
  query = next(v for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
               if "self_attention/query_kernel" in "/".join(str(getattr(k, "key", k)) for k in path))
  assert query.shape[-2:] == (8, 96)                                      # 8 heads of 768 / 8
  # The Zipformer-M's 512-d frames reach the 768-wide decoder through a bias-free projection (the toolkit's).
  assert params["audio_projection"].shape == (max(config.model.audio.encoder_dim), 768)
