"""Reading a local checkpoint folder in the Hugging Face layout (no hub access, ever): the user points at a folder.

  folder = hf_checkpoint.Folder(PATH, kind="BERT")     # checks config.json and the weights file(s) are there
  folder.config                                       # config.json as a dict
  array = folder.tensor("encoder.layer.0.attention.self.query.weight", (768, 768))   # float32 numpy

A folder holds config.json and model.safetensors, or a sharded model.safetensors.index.json with the shards it
names (what `save_pretrained` writes); tokenizer.json beside them is read by alp_jax/data/tokenizer.py. Older
`pytorch_model.bin` files are not read (they need PyTorch): convert them once with `save_pretrained(...,
safe_serialization=True)` where PyTorch is installed. Every missing file or tensor is a FileNotFoundError /
KeyError naming the folder, the file and the tensor. Tensors are returned as float32 numpy arrays
(bfloat16/float16 checkpoints are widened).

The weight-layout helpers turn a PyTorch `nn.Linear` weight (out, in) into our kernels: `dense_kernel` (in, out),
`attention_in_kernel` (D, H, Dh) for query/key/value projections, `attention_out_kernel` (H, Dh, D).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class Folder:
  """A checkpoint folder: config.json plus safetensors weights, every tensor name checked on request."""

  def __init__(self, path: str | os.PathLike, *, kind: str):
    self.path, self.kind = Path(path), kind
    if not self.path.is_dir():
      raise FileNotFoundError(f"{kind} checkpoint folder {self.path} does not exist; point at a folder in the "
                              f"Hugging Face layout ({CONFIG_FILE} + {WEIGHTS_FILE}), e.g. one written by "
                              f"save_pretrained (nothing is downloaded)")
    config_path = self.path / CONFIG_FILE
    if not config_path.is_file():
      raise FileNotFoundError(f"{kind} checkpoint {self.path}: no {CONFIG_FILE} (the model's architecture); the "
                              f"folder must hold {CONFIG_FILE} and {WEIGHTS_FILE} as written by save_pretrained")
    try:
      self.config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    self._shard_of = self._weight_files()
    self._open: dict[str, object] = {}

  def _weight_files(self) -> dict[str, Path]:
    """{tensor name: the safetensors file holding it}."""
    single, index = self.path / WEIGHTS_FILE, self.path / INDEX_FILE
    if single.is_file():
      from safetensors import safe_open
      with safe_open(str(single), framework="numpy") as f:
        return {name: single for name in f.keys()}
    if index.is_file():
      weight_map = json.loads(index.read_text()).get("weight_map", {})
      missing = sorted({file for file in weight_map.values() if not (self.path / file).is_file()})
      if missing:
        raise FileNotFoundError(f"{self.kind} checkpoint {self.path}: {INDEX_FILE} names shard(s) that are "
                                f"missing: {missing[:5]}")
      return {name: self.path / file for name, file in weight_map.items()}
    found = sorted(p.name for p in self.path.iterdir())
    hint = (" (pytorch_model.bin is not read: re-save with save_pretrained(..., safe_serialization=True))"
            if "pytorch_model.bin" in found else "")
    raise FileNotFoundError(f"{self.kind} checkpoint {self.path}: no {WEIGHTS_FILE} (nor {INDEX_FILE}); the "
                            f"folder holds {found[:10]}{hint}")

  def names(self) -> list[str]:
    return sorted(self._shard_of)

  def has(self, name: str) -> bool:
    return name in self._shard_of

  def setting(self, key: str, default=None, *, required: bool = True):
    """config.json's `key`; a clear KeyError if it is required and absent."""
    if key in self.config:
      return self.config[key]
    if required and default is None:
      raise KeyError(f"{self.path / CONFIG_FILE}: no {key!r}; this does not look like a {self.kind} config")
    return default

  def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The tensor `name` as float32 numpy, checked against `shape` when given."""
    if name not in self._shard_of:
      near = [n for n in self._shard_of if n.split(".")[-1] == name.split(".")[-1]][:3]
      raise KeyError(f"{self.kind} checkpoint {self.path}: tensor {name!r} is missing from the weights "
                     f"({len(self._shard_of)} tensors; e.g. {near or self.names()[:3]}); is it a {self.kind} "
                     f"checkpoint, saved whole?")
    file = self._shard_of[name]
    handle = self._open.get(file)
    if handle is None:
      from safetensors import safe_open
      handle = self._open[file] = safe_open(str(file), framework="flax")   # reads bfloat16 too
    array = np.asarray(handle.get_tensor(name), np.float32)
    if shape is not None and tuple(array.shape) != tuple(shape):
      raise ValueError(f"{self.kind} checkpoint {self.path}: tensor {name!r} has shape {tuple(array.shape)}, "
                       f"expected {tuple(shape)} from {CONFIG_FILE}")
    return array

  def first_present(self, *names: str) -> str:
    """The first of `names` the weights hold (alternative spellings); KeyError naming them all if none."""
    for name in names:
      if name in self._shard_of:
        return name
    raise KeyError(f"{self.kind} checkpoint {self.path}: none of the tensors {list(names)} is in the weights")

  def prefix(self, *candidates: str) -> str:
    """The first candidate prefix ("bert.", "model.", "") under which some tensor name starts."""
    for candidate in candidates:
      if any(n.startswith(candidate) for n in self._shard_of):
        return candidate
    return ""


def dense_kernel(weight: np.ndarray) -> np.ndarray:
  """nn.Linear weight (out, in) -> kernel (in, out)."""
  return np.ascontiguousarray(weight.T)


def attention_in_kernel(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """q/k/v nn.Linear weight (H*Dh, D) -> (D, H, Dh) (layers.Attention's query/key/value kernels)."""
  out_width, width = weight.shape
  return np.ascontiguousarray(weight.T.reshape(width, num_heads, out_width // num_heads))


def attention_bias(bias: np.ndarray, num_heads: int) -> np.ndarray:
  """(H*Dh,) -> (H, Dh)."""
  return bias.reshape(num_heads, -1)


def attention_out_kernel(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """out-projection nn.Linear weight (D, H*Dh) -> (H, Dh, D)."""
  width, in_width = weight.shape
  return np.ascontiguousarray(weight.T.reshape(num_heads, in_width // num_heads, width))


def attention_params(folder: Folder, prefix: str, names: tuple[str, str, str, str], num_heads: int) -> dict:
  """layers.Attention parameters from four nn.Linear layers `prefix + name` (query, key, value, output)."""
  q, k, v, o = (f"{prefix}{n}" for n in names)
  return {
      "query_kernel": attention_in_kernel(folder.tensor(q + ".weight"), num_heads),
      "key_kernel": attention_in_kernel(folder.tensor(k + ".weight"), num_heads),
      "value_kernel": attention_in_kernel(folder.tensor(v + ".weight"), num_heads),
      "query_bias": attention_bias(folder.tensor(q + ".bias"), num_heads),
      "key_bias": attention_bias(folder.tensor(k + ".bias"), num_heads),
      "value_bias": attention_bias(folder.tensor(v + ".bias"), num_heads),
      "out_kernel": attention_out_kernel(folder.tensor(o + ".weight"), num_heads),
      "out_bias": folder.tensor(o + ".bias"),
  }


def layer_norm_params(folder: Folder, name: str) -> dict:
  """nnx.LayerNorm {scale, bias} from `name`.weight/.bias (or the old .gamma/.beta spelling)."""
  return {"scale": folder.tensor(folder.first_present(name + ".weight", name + ".gamma")),
          "bias": folder.tensor(folder.first_present(name + ".bias", name + ".beta"))}


def mlp_params(folder: Folder, hidden: str, out: str) -> dict:
  """layers.Mlp parameters from two nn.Linear layers."""
  return {"hidden_kernel": dense_kernel(folder.tensor(hidden + ".weight")),
          "hidden_bias": folder.tensor(hidden + ".bias"),
          "out_kernel": dense_kernel(folder.tensor(out + ".weight")),
          "out_bias": folder.tensor(out + ".bias")}


def vocab_rows(table: np.ndarray, our_to_hf: np.ndarray | None, where: str) -> np.ndarray:
  """A (V_hf, ...) vocabulary-indexed array -> rows in our id order (our id i = the checkpoint's our_to_hf[i])."""
  if our_to_hf is None:
    return table
  if len(our_to_hf) != table.shape[0]:
    raise ValueError(f"{where}: the checkpoint's vocabulary has {table.shape[0]} entries but the tokenizer has "
                     f"{len(our_to_hf)}; use the tokenizer.json that belongs to this checkpoint")
  return table[our_to_hf]
