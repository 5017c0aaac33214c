"""Audio-encoder initialisation from a trained checkpoint or an exported encoder (`config.model_init`).

The study compares training from scratch with initialising the audio encoder from an AudioSet-supervised
tagger: train one with the "tagging" objective, export it, and point model_init at the export (or the workdir).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from alp_jax import encoder_api
from alp_jax.data import paths
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import runs


def _flat(tree) -> dict:
  """{"a/b/kernel": leaf}: the same keys for a pure dict and for an nnx.State of Variables."""
  return {_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _key(path) -> str:
  parts = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
  return "/".join(p for p in parts if p not in ("value", "raw_value"))


def load_encoder_params(path: str | os.PathLike) -> dict:
  """Pure-dict audio-encoder parameters (numpy) from an export folder or a training workdir (its latest step)."""
  path = paths.resolve(path)
  if encoder_api.is_export(path):
    return encoder_api.AudioEncoder.load(path).encoder_params_pure()
  if ckpt_lib.directory(path).is_dir():
    return runs.restore_encoder(path)[1]
  raise FileNotFoundError(f"model_init={path} is neither an exported encoder (no {encoder_api.CONFIG_FILE}) "
                          f"nor a training workdir (no {ckpt_lib.CHECKPOINTS_DIR}/)")


def load_into_state(state: dict, path: str | os.PathLike, mesh) -> dict:
  """Replaces state['params'].audio_encoder by the encoder at `path`; a clear error on any shape mismatch."""
  loaded = _flat(load_encoder_params(path))
  target_state = encoder_api.get_encoder(state["params"])
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
  encoder_api.set_encoder(params, new_encoder)
  return {**state, "params": params}
