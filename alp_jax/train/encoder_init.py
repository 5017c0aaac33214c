"""Audio-encoder initialisation from a trained checkpoint or an exported encoder (`config.model_init`).

The study compares training from scratch with initialising the audio encoder from an AudioSet-supervised
tagger: train one with the "tagging" objective, export it, and point model_init at the export (or the workdir).
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx

ENCODER_ATTR = "audio_encoder"
# Where each model keeps its audio encoder (attribute path): at the top (two_towers, captioner, tagger) or inside
# the shared two towers (hybrid).
ENCODER_PATHS = ((ENCODER_ATTR,), ("towers", ENCODER_ATTR))


def encoder_path(tree) -> tuple[str, ...]:
  """The key path of the audio encoder in a params tree (dict or nnx.State) or an nnx model."""
  for path in ENCODER_PATHS:
    node, found = tree, True
    for key in path:
      if isinstance(node, nnx.Module):
        found = hasattr(node, key)
        node = getattr(node, key, None)
      else:
        found = key in node
        node = node[key] if found else None
      if not found:
        break
    if found:
      return path
  raise KeyError(f"no audio encoder at any of {['/'.join(p) for p in ENCODER_PATHS]}")


def get_encoder(tree):
  """The audio-encoder subtree of a params tree, or the audio-encoder module of an nnx model."""
  node = tree
  for key in encoder_path(tree):
    node = getattr(node, key) if isinstance(node, nnx.Module) else node[key]
  return node


def set_encoder(params, value) -> None:
  """Replaces the audio-encoder subtree of a params tree (dict or nnx.State) in place."""
  *parents, last = encoder_path(params)
  node = params
  for key in parents:
    node = node[key]
  node[last] = value


def _flat(tree) -> dict:
  """{"a/b/kernel": leaf}: the same keys for a pure dict and for an nnx.State of Variables."""
  return {_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _key(path) -> str:
  parts = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
  return "/".join(p for p in parts if p not in ("value", "raw_value"))


def load_encoder_params(path: str | os.PathLike) -> dict:
  """Pure-dict audio-encoder parameters (numpy) from an export folder or a training workdir."""
  from alp_jax import encoder_api
  path = Path(path)
  if (path / encoder_api.CONFIG_FILE).exists():
    return encoder_api.AudioEncoder.load(path).encoder_params_pure()
  if (path / "checkpoints").is_dir():
    from alp_jax import export
    return export.encoder_params_from_workdir(path)
  raise FileNotFoundError(f"model_init={path} is neither an exported encoder (no {encoder_api.CONFIG_FILE}) "
                          f"nor a training workdir (no checkpoints/)")


def load_into_state(state: dict, path: str | os.PathLike, mesh) -> dict:
  """Replaces state['params'].audio_encoder by the encoder at `path`; a clear error on any shape mismatch."""
  loaded = _flat(load_encoder_params(path))
  target_state = get_encoder(state["params"])
  target = _flat(target_state)
  missing = sorted(set(target) - set(loaded))
  extra = sorted(set(loaded) - set(target))
  mismatched = [f"{k}: checkpoint {tuple(np.shape(loaded[k]))} vs model {tuple(target[k].shape)}"
                for k in sorted(set(target) & set(loaded)) if tuple(np.shape(loaded[k])) != tuple(target[k].shape)]
  if missing or extra or mismatched:
    raise ValueError(f"model_init {path}: the audio encoder does not match config.model.audio.\n"
                     f"  missing in checkpoint: {missing[:10]}\n  unexpected in checkpoint: {extra[:10]}\n"
                     f"  shape mismatches: {mismatched[:10]}\n"
                     f"Use the same config.model.audio (size, stack, mel bins) as the run that produced it.")

  def put(path_parts, leaf):
    return jax.device_put(np.asarray(loaded[_key(path_parts)], leaf.dtype), leaf.sharding)

  new_encoder = jax.tree_util.tree_map_with_path(put, target_state)
  params = state["params"]
  set_encoder(params, new_encoder)
  return {**state, "params": params}
