"""TwoTowers: padding invariance end to end, bf16 policy, temperature/bias, registry."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from alp_jax import models
from alp_jax.audio import frontend
from alp_jax.models import two_towers

VOCAB = 64
SAMPLES = 8000  # 0.5 s at 16 kHz


def _config(loss_kind="softmax", dtype="float32", **model_overrides):
  config = ml_collections.ConfigDict()
  config.model = two_towers.default_config()
  config.model.vocab_size = VOCAB
  config.model.head.hidden_dim, config.model.head.embed_dim = 32, 16
  config.model.audio.dtype = config.model.text.dtype = dtype
  config.model.update(model_overrides)
  config.frontend = frontend.default_frontend_config()
  config.loss = ml_collections.ConfigDict({"kind": loss_kind})
  return config


def _batch(audio_samples=SAMPLES, caption_length=8):
  rng = np.random.default_rng(0)
  audio = rng.integers(-8000, 8000, (2, audio_samples)).astype(np.int16)
  audio_mask = np.zeros((2, audio_samples), bool)
  audio_mask[0, :5000], audio_mask[1, :] = True, True
  audio[~audio_mask] = 0
  tokens = rng.integers(4, VOCAB, (2, caption_length)).astype(np.int32)
  caption_mask = np.zeros((2, caption_length), bool)
  caption_mask[0, :4], caption_mask[1, :6] = True, True
  tokens[~caption_mask] = 0
  return {"audio": audio, "audio_mask": audio_mask, "caption_tokens": tokens,
          "caption_mask": caption_mask, "source": np.zeros((2,), np.int32)}


def _pad(batch, extra_samples, extra_tokens):
  padded = dict(batch)
  for key, extra in (("audio", extra_samples), ("audio_mask", extra_samples),
                     ("caption_tokens", extra_tokens), ("caption_mask", extra_tokens)):
    padded[key] = np.pad(batch[key], ((0, 0), (0, extra)))
  return padded


# Jitted calls: one compile per shape is far cheaper than op-by-op eager execution.
_forward = nnx.jit(lambda model, batch: model(batch))
_train_forward = nnx.jit(lambda model, batch, rngs: model(batch, train=True, rngs=rngs))


@pytest.fixture(scope="module")
def model():
  return models.build_model(_config(), rngs=nnx.Rngs(0))


def test_outputs_and_appended_padding_changes_no_embedding(model):
  batch = _batch()
  (audio_emb, text_emb), out = _forward(model, batch)
  assert audio_emb.shape == text_emb.shape == (2, 16)
  assert audio_emb.dtype == text_emb.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(audio_emb, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(text_emb, axis=-1), 1.0, rtol=1e-5)
  assert out["audio_frames"].shape[:2] == out["audio_frame_mask"].shape
  np.testing.assert_allclose(float(out["temperature"]), 0.07, rtol=1e-6)
  assert "bias" not in out

  (long_audio_emb, long_text_emb), _ = _forward(model, _pad(batch, 3200, 5))
  np.testing.assert_allclose(np.asarray(long_audio_emb), np.asarray(audio_emb), atol=2e-5)
  np.testing.assert_allclose(np.asarray(long_text_emb), np.asarray(text_emb), atol=2e-5)

  embedded_audio, audio_dict = nnx.jit(lambda m, a, am: m.embed_audio(a, am))(
      model, batch["audio"], batch["audio_mask"])
  embedded_text, _ = nnx.jit(lambda m, t, tm: m.embed_text(t, tm))(
      model, batch["caption_tokens"], batch["caption_mask"])
  np.testing.assert_allclose(np.asarray(embedded_audio), np.asarray(audio_emb), atol=1e-6)
  np.testing.assert_allclose(np.asarray(embedded_text), np.asarray(text_emb), atol=1e-6)
  assert "pooled" in audio_dict and "frames" in audio_dict


def test_bfloat16_compute_keeps_float32_params_and_embeddings(model):
  bf16 = models.build_model(_config(dtype="bfloat16"), rngs=nnx.Rngs(0))
  params = jax.tree.leaves(nnx.state(bf16, nnx.Param))
  assert params and all(p.dtype == jnp.float32 for p in params)
  batch = _batch()
  (audio_emb, text_emb), out = _forward(bf16, batch)
  assert audio_emb.dtype == text_emb.dtype == jnp.float32
  assert out["audio_frames"].dtype == jnp.bfloat16
  # Same seed -> same float32 parameters: bf16 compute lands close to the float32 model.
  (ref_audio, ref_text), _ = _forward(model, batch)
  assert np.all(np.sum(np.asarray(audio_emb) * np.asarray(ref_audio), -1) > 0.99)
  assert np.all(np.sum(np.asarray(text_emb) * np.asarray(ref_text), -1) > 0.99)


def test_train_mode_and_learnable_temperature():
  config = _config()
  config.model.audio.dropout = config.model.text.dropout = 0.1
  config.model.temperature.learnable = True
  config.frontend.spec_augment.time_warp_factor = 0  # masks only: time warping compiles slowly
  model = models.build_model(config, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(float(model.temperature()), 0.07, rtol=1e-6)
  batch = _batch()
  (clean, clean_text), _ = _forward(model, batch)
  (noisy, noisy_text), _ = _train_forward(model, batch, nnx.Rngs(5))
  (again, again_text), _ = _train_forward(model, batch, nnx.Rngs(5))
  assert not np.allclose(np.asarray(noisy), np.asarray(clean), atol=1e-4)
  assert not np.allclose(np.asarray(noisy_text), np.asarray(clean_text), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(noisy), np.asarray(again))
  np.testing.assert_array_equal(np.asarray(noisy_text), np.asarray(again_text))

  def similarity_over_temperature(m):
    (audio_emb, text_emb), out = m(batch)  # traced under nnx.jit below
    return jnp.sum(audio_emb * text_emb) / out["temperature"]

  only_temperature = nnx.DiffState(0, nnx.PathContains("log_temperature"))
  grads = nnx.jit(nnx.grad(similarity_over_temperature, argnums=only_temperature))(model)
  # d/d(log t) of s / exp(log t) = -s / t
  want = -float(jnp.sum(clean * clean_text)) / 0.07
  np.testing.assert_allclose(float(grads["log_temperature"][...]), want, rtol=1e-4)


def test_logit_bias_model_gets_siglip_temperature_and_bias():
  sigmoid = models.build_model(_config(loss_kind="sigmoid", logit_bias=True), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(float(sigmoid.temperature()), 0.1, rtol=1e-6)  # SigLIP t' = log 10
  np.testing.assert_allclose(float(sigmoid.logit_bias[...]), -10.0)
  assert isinstance(sigmoid.log_temperature, nnx.Param)
  # The model reads only config.model: the loss kind alone adds no bias.
  assert models.build_model(_config(loss_kind="sigmoid"), rngs=nnx.Rngs(0)).logit_bias is None


def test_registry_rejects_unknown_names():
  config = _config()
  config.model.name = "nope"
  with pytest.raises(ValueError, match="two_towers"):
    models.build_model(config, rngs=nnx.Rngs(0))
  audio_cfg = config.model.audio
  audio_cfg.name = "zipformer_missing"
  with pytest.raises(ValueError, match="transformer"):
    models.encoder_from_config(audio_cfg, rngs=nnx.Rngs(0))
