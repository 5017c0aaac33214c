"""The audio-encoder registry and what every model shares about its parts.

An audio encoder is found by `config.model.audio.name`: adding one is a new file plus one line in
AUDIO_ENCODERS (constructor `(cfg, *, rngs)`, call contract in alp_jax/models/audio_encoder.py).

Capabilities: each model class declares the parts it has as a class attribute
`capabilities` (a frozenset of the names below). Objectives and evaluators read these flags
instead of lists of model names, so a new model that has a text tower is evaluated like the others.
Every model keeps its audio encoder reachable as the attribute `audio_encoder`.
"""
from __future__ import annotations

import contextlib

import ml_collections
from flax import nnx
from flax.core import meta

from alp_jax.models import audio_encoder, zipformer

AUDIO_ENCODER = "audio_encoder"      # waveform -> frames (every model)
TEXT_TOWER = "text_tower"            # caption -> embedding aligned with the audio embedding
CAPTION_DECODER = "caption_decoder"  # log p(caption | audio frames), decoding
CLASSIFIER = "classifier"            # frames -> class logits (supervised tagging)
CAPABILITIES = (AUDIO_ENCODER, TEXT_TOWER, CAPTION_DECODER, CLASSIFIER)

AUDIO_ENCODERS = {
    "transformer": audio_encoder.TransformerAudioEncoder,
    "zipformer": zipformer.Zipformer,
}


def capabilities_of(model) -> frozenset[str]:
  """The parts a model (instance or class) declares; an object without the flag has none."""
  return frozenset(getattr(model, "capabilities", ()))


def sharding_context() -> contextlib.AbstractContextManager:
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
  with sharding_context():
    return AUDIO_ENCODERS[cfg.name](cfg, rngs=rngs)
