"""alp-jax: audio-language pretraining (contrastive and captioning) in JAX / Flax NNX."""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy: `from alp_jax import AudioEncoder` should not import jax for data-only commands.
  if name == "AudioEncoder":
    from alp_jax.encoder_api import AudioEncoder
    return AudioEncoder
  raise AttributeError(name)
