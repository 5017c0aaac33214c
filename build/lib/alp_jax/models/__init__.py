"""Model registry: a model is found by the name in config.model.name.

Adding one is a new file plus one line in MODELS; no trainer changes. Entries are classes
`(config, *, rngs) -> nnx.Module` built from the whole config, each declaring its `capabilities`
(alp_jax/models/encoders.py). The audio-encoder registry lives in alp_jax/models/encoders.py, which
model files import directly (no model file imports this package module, so there is no cycle).
"""
from __future__ import annotations

import ml_collections
from flax import nnx

from alp_jax.models import captioner, encoders, hybrid, tagger, two_towers
from alp_jax.models.encoders import (AUDIO_ENCODERS, capabilities_of, check_frontend_matches_encoder,
                                     encoder_from_config)

__all__ = ["MODELS", "AUDIO_ENCODERS", "build_model", "encoder_from_config", "capabilities_of",
           "check_frontend_matches_encoder"]

MODELS = {
    "two_towers": two_towers.TwoTowers,
    "captioner": captioner.Captioner,
    "hybrid": hybrid.Hybrid,
    "tagger": tagger.Tagger,
}


def build_model(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """The model named by config.model.name, built from the whole config."""
  if config.model.name not in MODELS:
    raise ValueError(f"unknown model {config.model.name!r}; registered: {sorted(MODELS)}")
  with encoders.sharding_context():
    return MODELS[config.model.name](config, rngs=rngs)
