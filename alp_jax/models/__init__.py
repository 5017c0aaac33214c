"""Model registries: a model or audio encoder is found by the name in its config.

Adding one is a new file plus one line here; no trainer changes. Entries are callables
`(cfg, *, rngs) -> nnx.Module`: for MODELS cfg is the whole config, for AUDIO_ENCODERS it is
config.model.audio. Model files reach the encoder registry at construction time through the
module (`from alp_jax import models; models.encoder_from_config(...)`), which keeps the import
cycle with this file harmless.
"""
from __future__ import annotations

import contextlib

import ml_collections
from flax import nnx
from flax.core import meta

from alp_jax.models import audio_encoder, two_towers
from alp_jax.models import captioner, hybrid, tagger

AUDIO_ENCODERS = {
    "transformer": audio_encoder.TransformerAudioEncoder,
}

MODELS = {
    "two_towers": two_towers.TwoTowers,
    "captioner": captioner.Captioner,
    "hybrid": hybrid.Hybrid,
    "tagger": tagger.Tagger,
}


def _sharding_context() -> contextlib.AbstractContextManager:
  """Eager parameter sharding only while a mesh is active (it needs a mesh and axis rules)."""
  if meta.global_mesh_defined():
    return contextlib.nullcontext()
  return nnx.use_eager_sharding(False)


def check_frontend_matches_encoder(config: ml_collections.ConfigDict) -> None:
  """Every model that runs the frontend into an audio encoder: mel bins must agree."""
  if config.model.audio.num_mel_bins != config.frontend.num_mel_bins:
    raise ValueError(f"config.model.audio.num_mel_bins={config.model.audio.num_mel_bins} differs "
                     f"from config.frontend.num_mel_bins={config.frontend.num_mel_bins}")


def encoder_from_config(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """The audio encoder named by cfg.name (config.model.audio)."""
  if cfg.name not in AUDIO_ENCODERS:
    raise ValueError(f"unknown audio encoder {cfg.name!r}; registered: {sorted(AUDIO_ENCODERS)}")
  with _sharding_context():
    return AUDIO_ENCODERS[cfg.name](cfg, rngs=rngs)


def build_model(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """The model named by config.model.name, built from the whole config."""
  if config.model.name not in MODELS:
    raise ValueError(f"unknown model {config.model.name!r}; registered: {sorted(MODELS)}")
  with _sharding_context():
    return MODELS[config.model.name](config, rngs=rngs)
