"""Pretrained text sides (`config.model.text.pretrained`, `config.model.decoder.pretrained`): a local Hugging Face
BERT / BART folder whose architecture the run records and whose weights it starts from.

  text_init.configure(config)                    # trainer, before config.json: architecture + tokenizer checks
  state = text_init.load_into_state(state, config)   # trainer, at the first start: the checkpoint's weights

`configure` copies each folder's config.json fields into `pretrained_arch` (so the run rebuilds without the
folder) and checks that the run's tokenizer is a Hugging Face tokenizer.json (config.data.tokenizer =
FOLDER/tokenizer.json): the checkpoint's token ids only mean something through its own tokenizer.
`load_into_state` replaces every parameter of the text encoder / decoder by the checkpoint's (embedding rows
reordered to our ids through the tokenizer's `our_to_hf`), except the decoder's NEW_PARAMS (hf_bart.py), which
keep their fresh initialisation; a parameter the checkpoint does not fill, or a shape that differs, is an error.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np

from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.models import hf_bart, hf_bert
from alp_jax.train import freeze

# config.model field -> (the module attribute holding that part, its loader module, new parameters)
PARTS = {"text": ("text_encoder", hf_bert, ()), "decoder": ("decoder", hf_bart, hf_bart.NEW_PARAMS)}


def pretrained_parts(config: ml_collections.ConfigDict) -> list[str]:
  """The config.model fields ("text", "decoder") that name a pretrained folder."""
  return [f for f in PARTS if f in config.model and config.model[f].get("pretrained")]


def run_tokenizer(config: ml_collections.ConfigDict):
  """The run's tokenizer, which must be a tokenizer.json when a text side is pretrained."""
  tok = tokenizer_lib.Tokenizer(tokenizer_lib.path_for(config.data))
  if not hasattr(tok, "our_to_hf"):
    folders = [config.model[f].pretrained for f in pretrained_parts(config)]
    raise ValueError(f"config.model.*.pretrained names {folders}, but the run's tokenizer {tok.path} is a "
                     f"sentencepiece model; a pretrained text side needs its own tokenizer: set "
                     f"config.data.tokenizer={folders[0]}/tokenizer.json")
  return tok


def configure(config: ml_collections.ConfigDict) -> None:
  """Records each pretrained folder's architecture in config.model.<part>.pretrained_arch; checks the tokenizer."""
  parts = pretrained_parts(config)
  if not parts:
    return
  run_tokenizer(config)
  with config.unlocked():
    for field in parts:
      _, module, _ = PARTS[field]
      config.model[field].pretrained_arch = ml_collections.ConfigDict(module.architecture(
          config.model[field].pretrained))


def load_into_state(state: dict, config: ml_collections.ConfigDict) -> tuple[dict, list[str]]:
  """state with the pretrained parts' parameters from their folders; also one line per part for the log."""
  parts = pretrained_parts(config)
  if not parts:
    return state, []
  our_to_hf = run_tokenizer(config).our_to_hf
  params = state["params"]
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  paths = [freeze.leaf_path(k) for k, _ in flat]
  loaded_at: dict[tuple[str, ...], np.ndarray] = {}
  lines = []
  for field in parts:
    attr, module, new = PARTS[field]
    cfg = config.model[field]
    [(prefix, _)] = freeze.resolve(paths, (attr,))
    loaded = module.load_params(cfg.pretrained, cfg.pretrained_arch, our_to_hf)
    below = {p[len(prefix):]: p for p in paths if p[:len(prefix)] == prefix}
    missing = sorted("/".join(rest) for rest in below if "/".join(rest) not in loaded and rest[0] not in new)
    extra = sorted(k for k in loaded if tuple(k.split("/")) not in below)
    if missing or extra:
      raise ValueError(f"{cfg.pretrained}: the checkpoint does not fill config.model.{field}'s parameters "
                       f"(missing {missing[:8]}, unexpected {extra[:8]}); this is a bug in {module.__name__}")
    for key, value in loaded.items():
      loaded_at[prefix + tuple(key.split("/"))] = value
    n = sum(v.size for v in loaded.values())
    fresh = [k for k in new if any(rest[:1] == (k,) for rest in below)]
    lines.append(f"{'/'.join(prefix)} initialised from {cfg.pretrained} ({n / 1e6:.2f}M parameters"
                 f"{'; fresh: ' + ', '.join(fresh) if fresh else ''})")

  def put(key_path, leaf):
    path = freeze.leaf_path(key_path)
    if path not in loaded_at:
      return leaf
    value = loaded_at[path]
    if tuple(value.shape) != tuple(leaf.shape):
      raise ValueError(f"pretrained parameter {'/'.join(path)}: checkpoint shape {tuple(value.shape)} vs model "
                       f"{tuple(leaf.shape)}")
    return jax.device_put(np.asarray(value, leaf.dtype), leaf.sharding)

  out = {**state, "params": jax.tree_util.tree_map_with_path(put, params)}
  if "params_avg" in state:   # the running average starts from the initial parameters (train/state.py)
    out["params_avg"] = jax.tree_util.tree_map_with_path(put, state["params_avg"])
  return out, lines
