"""`AudioEncoder`: an exported audio encoder as a plain Python object, and the one way to write one.

  from alp_jax import AudioEncoder
  enc = AudioEncoder.load(ENC_DIR)
  out = enc.embed(waveform, sample_rate)      # any length, sample rate, channel count (N,) or (N, C)
  out["frames"] (T', D), out["frame_mask"] (T',), out["pooled"] (D,) = mean over valid frames
  outs = enc.embed_batch([w1, w2], [sr1, sr2])

Layers (per-layer probes): `AudioEncoder.load(ENC_DIR, layer=k)`, `AudioEncoder.build(meta, layer=k)` or
`enc.at_layer(k)` (a view sharing the weights and the compiled function) embed with another layer; `embed` returns
the same dict. A layer is
  "last"      (default) the encoder's output: the last block after the final LayerNorm, what training used
  k           an int in [0, num_layers): block k's raw output (residual stream, no final LayerNorm), so
              k = num_layers - 1 is "last" without the final LayerNorm
  "patch"     the patch embedding plus positions, before block 0 (encoders that report it)
"layer_k" and "k" name block k too. `enc.embed_layers(waveform, sr)` -> {"patch", "layer_0", ..., "last": (T, D)
frames} from one forward pass. An unknown layer is a ValueError naming the valid ones.

Audio is downmixed, resampled to 16 kHz (libsoxr), cut into fixed windows of the training crop length
(the last one padded and masked) and encoded window by window in fixed-size batches, so one compiled
function serves every length. Same input, same output: no randomness at inference.

An export folder (local or gs://...) is ENC_DIR/params (the encoder's parameters, Orbax) and
ENC_DIR/encoder_config.json (`meta_from_config`: frontend settings, config.model.audio, crop_seconds, plus
provenance). encoder_config.json is always written last, so a folder that holds it is a whole encoder.
`write_export` replaces an earlier export but never writes into a non-empty folder that is not one (nor deletes
anything of it). `get_encoder` finds the audio encoder inside a model or its parameters.

How `write_export` replaces a local ENC_DIR (parent P, name N) so that no crash loses the previous export:
  1. write the new export whole into P/.N.tmp-PID-HEX (params, then encoder_config.json)
  2. rename ENC_DIR to P/.N.old-PID-HEX          (only if ENC_DIR exists)
  3. rename P/.N.tmp-PID-HEX to ENC_DIR
  4. move the old folder's other files (a README of yours ...) into ENC_DIR, delete P/.N.old-PID-HEX
A process killed at any point leaves:
  during 1 or between 1 and 2   ENC_DIR untouched (the previous export, loadable) + a .N.tmp-* folder
  between 2 and 3               no ENC_DIR; the previous export, whole, in .N.old-* (`read_meta` names it)
  after 3, before 4 is done     ENC_DIR = the new export, whole; the previous one (and any files of yours not yet
                                moved) in .N.old-*
The next `write_export` to ENC_DIR first finishes that: it renames a lone .N.old-* back to a missing ENC_DIR,
moves files of yours out of .N.old-* into ENC_DIR, and deletes .N.tmp-* / .N.old-* folders that hold nothing but
params* and encoder_config.json* (a .N.tmp-* of a process still alive on this host is left alone). Nothing else
is ever deleted. One process writes an export (the export CLI, process 0), as before.

Remote paths (gs://...): a rename there is a copy and a delete, not atomic, so the export is written in place as
before: encoder_config.json is removed, params rewritten, encoder_config.json written last. A crash in between
leaves ENC_DIR without encoder_config.json (no encoder: `load` says so, the next export replaces it); the
previous export is lost then.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
import secrets
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from alp_jax import models
from alp_jax.audio import frontend
from alp_jax.audio import io as audio_io
from alp_jax.audio import windows as windows_lib
from alp_jax.data import paths

CONFIG_FILE = "encoder_config.json"
PARAMS_DIR = "params"
ENCODER_ATTR = "audio_encoder"
# Where each model keeps its audio encoder (attribute path): at the top (two_towers, captioner, tagger) or inside
# the shared two towers (hybrid).
ENCODER_PATHS = ((ENCODER_ATTR,), ("towers", ENCODER_ATTR))
LAST, PATCH = "last", "patch"   # layer names besides "layer_k" (the module docstring)


def meta_from_config(config: ml_collections.ConfigDict, **provenance) -> dict:
  """encoder_config.json of a training config: what rebuilds its audio encoder (+ provenance: step, ...)."""
  return {"frontend": config.frontend.to_dict(), "audio": config.model.audio.to_dict(),
          "crop_seconds": config.data.crop_seconds, **provenance}


def is_export(enc_dir: str | os.PathLike) -> bool:
  return (epath.Path(enc_dir) / CONFIG_FILE).exists()


def read_meta(enc_dir: str | os.PathLike) -> dict:
  """ENC_DIR/encoder_config.json, with a clear error when ENC_DIR is not an exported encoder."""
  path = epath.Path(enc_dir) / CONFIG_FILE
  if not path.exists():
    olds = [] if paths.is_remote(enc_dir) or epath.Path(enc_dir).exists() else _siblings(epath.Path(enc_dir), _OLD)
    hint = (f"; an interrupted export left the previous one in {olds[-1]}: the next export to {enc_dir} puts it "
            f"back first, or rename it yourself" if olds else "")
    raise FileNotFoundError(f"{enc_dir} is not an exported encoder (no {CONFIG_FILE}); create one with "
                            f"`python -m alp_jax.export --workdir RUN --out {enc_dir}`{hint}")
  return json.loads(path.read_text())


def check_export_target(enc_dir: str | os.PathLike) -> None:
  """FileExistsError unless `enc_dir` is absent, empty, an earlier export or an interrupted one (only params*)."""
  enc_dir = epath.Path(enc_dir)
  if not enc_dir.exists():
    return
  if not enc_dir.is_dir():
    raise FileExistsError(f"{enc_dir} is a file, not a folder: choose a new or empty folder for the encoder")
  names = sorted(p.name for p in enc_dir.iterdir())
  if CONFIG_FILE in names or all(name.startswith((PARAMS_DIR, CONFIG_FILE)) for name in names):
    return
  raise FileExistsError(f"{enc_dir} is not empty and is not an exported encoder (no {CONFIG_FILE}; it holds "
                        f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}): nothing was written; choose "
                        f"a new or empty folder for the encoder")


def write_export(enc_dir: str | os.PathLike, meta: dict, params: dict) -> epath.Path:
  """Writes an export folder that `AudioEncoder.load` reads back: pure-dict `params` and `meta`.

  A non-empty folder that is not an export is refused (FileExistsError) untouched. A local ENC_DIR is written
  whole beside it and swapped in (the module docstring: the steps and what a crash leaves), so the previous
  export survives any crash; other files in an earlier export stay. A remote one is rewritten in place."""
  enc_dir = paths.resolve(enc_dir)
  check_export_target(enc_dir)
  if paths.is_remote(enc_dir):
    _write_export_files(enc_dir, meta, params)
    return enc_dir
  enc_dir = epath.Path(os.path.realpath(enc_dir))   # a symlinked ENC_DIR: swap the folder it points to
  enc_dir.parent.mkdir(parents=True, exist_ok=True)
  _finish_interrupted_exports(enc_dir)
  check_export_target(enc_dir)
  suffix = f"{os.getpid()}-{secrets.token_hex(4)}"
  staged = enc_dir.parent / f".{enc_dir.name}{_TMP}{suffix}"
  _write_export_files(staged, meta, params)
  old = None
  if enc_dir.exists():
    old = enc_dir.parent / f".{enc_dir.name}{_OLD}{suffix}"
    os.rename(enc_dir, old)
  os.rename(staged, enc_dir)
  if old is not None:
    _retire_old_export(old, enc_dir)
  return enc_dir


_TMP, _OLD = ".tmp-", ".old-"   # the sibling folders of write_export: .NAME.tmp-PID-HEX, .NAME.old-PID-HEX


def _write_export_files(enc_dir: epath.Path, meta: dict, params: dict) -> None:
  """encoder_config.json removed, params (Orbax) written, encoder_config.json written last."""
  enc_dir.mkdir(parents=True, exist_ok=True)
  (enc_dir / CONFIG_FILE).unlink(missing_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(enc_dir / PARAMS_DIR, params, force=True)
  paths.write_text_last(enc_dir / CONFIG_FILE, json.dumps(meta, indent=1))


def _only_export_files(folder: epath.Path) -> bool:
  """True when `folder` holds nothing but params* and encoder_config.json* (what write_export writes)."""
  return all(p.name.startswith((PARAMS_DIR, CONFIG_FILE)) for p in folder.iterdir())


def _siblings(enc_dir: epath.Path, kind: str) -> list[epath.Path]:
  """write_export's .NAME.tmp-PID-HEX or .NAME.old-PID-HEX folders beside `enc_dir`."""
  pattern = re.compile(re.escape(f".{enc_dir.name}{kind}") + r"(\d+)-[0-9a-f]{8}")
  if not enc_dir.parent.is_dir():
    return []
  return sorted(p for p in enc_dir.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def _pid_alive(pid: int) -> bool:
  if pid == os.getpid():
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _retire_old_export(old: epath.Path, enc_dir: epath.Path) -> None:
  """Moves the files of yours in a replaced export `old` into `enc_dir`, then deletes `old` if only the export's
  own files are left (else leaves it, with a warning)."""
  for entry in sorted(old.iterdir()):
    if not entry.name.startswith((PARAMS_DIR, CONFIG_FILE)) and not (enc_dir / entry.name).exists():
      os.rename(entry, enc_dir / entry.name)
  if _only_export_files(old):
    shutil.rmtree(old)
  else:
    print(f"[export] warning: kept {old}: it holds files that are also in {enc_dir}; merge or delete it yourself")


def _finish_interrupted_exports(enc_dir: epath.Path) -> None:
  """Finishes what a killed write_export to `enc_dir` left (the module docstring): a lone .NAME.old-* is the
  previous export when ENC_DIR is missing (renamed back), else retired; .NAME.tmp-* folders are deleted."""
  olds = _siblings(enc_dir, _OLD)
  if olds and not enc_dir.exists():
    if len(olds) > 1:
      raise FileExistsError(f"{enc_dir} is missing and {len(olds)} earlier exports wait beside it "
                            f"({', '.join(p.name for p in olds)}): rename the one to keep to {enc_dir.name}")
    os.rename(olds.pop(), enc_dir)
  for old in olds:
    _retire_old_export(old, enc_dir)
  for staged in _siblings(enc_dir, _TMP):
    pid = int(staged.name[len(f".{enc_dir.name}{_TMP}"):].split("-")[0])
    if not _pid_alive(pid) and _only_export_files(staged):
      shutil.rmtree(staged)


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


def layer_name(layer: int | str) -> str:
  """The out_dict name of a layer choice: 3, "3" or "layer_3" -> "layer_3"; "last" and "patch" stay."""
  if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
    return f"layer_{int(layer)}"
  text = str(layer).strip()
  return f"layer_{int(text)}" if re.fullmatch(r"-?\d+", text) else text


def _block_index(name: str) -> int | None:
  match = re.fullmatch(r"layer_(\d+)", name)
  return int(match.group(1)) if match else None


class AudioEncoder:

  def __init__(self, meta: dict, module: nnx.Module, *, windows_per_call: int = 8, layer: int | str = LAST):
    self.meta = meta
    self.frontend_cfg = ml_collections.FrozenConfigDict(meta["frontend"])
    self.window_samples = int(round(meta["crop_seconds"] * audio_io.TARGET_SAMPLE_RATE))
    self.windows_per_call = windows_per_call
    self.module = module
    graphdef, state = nnx.split(module)

    @functools.partial(jax.jit, static_argnames="names")
    def encode(state, audio, mask, names=(LAST,)):
      """-> ({name: (W,T',D) float32} for `names` (None: every layer), (W,T') frame mask)."""
      encoder = nnx.merge(graphdef, state)
      features, frame_mask = frontend.log_mel(audio, mask, self.frontend_cfg)  # (W,T,M)
      frames, out_dict = encoder(features, frame_mask, deterministic=True,
                                 keep_layers=names != (LAST,))                # (W,T',D)
      if names is None:
        names = [n for n in out_dict if n == PATCH or _block_index(n) is not None] + [LAST]
      return ({n: (frames if n == LAST else out_dict[n]).astype(jnp.float32) for n in names},
              out_dict["frame_mask"])

    @functools.partial(jax.jit, static_argnames=("name", "with_frames"))
    def encode_sums(state, audio, mask, name, with_frames):
      """-> {"sums": (W,D) sum of each window's valid frames, "counts": (W,)} (+ "frames" (W,T',D), "frame_mask"
      (W,T') when with_frames): a mean needs only the sums, so its frames never leave the device."""
      outputs, frame_mask = encode(state, audio, mask, names=(name,))
      frames = outputs[name]                                                        # (W,T',D)
      out = {"sums": jnp.sum(jnp.where(frame_mask[..., None], frames, 0.0), axis=1),  # (W,D)
             "counts": jnp.sum(frame_mask, axis=1)}                                 # (W,)
      if with_frames:
        out["frames"], out["frame_mask"] = frames, frame_mask
      return out

    # Shared with every view (at_layer): the parameters (sync) and the layer names found by tracing.
    self._shared = {"state": state, "layer_names": None}
    self._encode = encode
    self._encode_sums = encode_sums
    self.layer, self.layer_name = LAST, LAST
    if layer_name(layer) != LAST:
      self.layer, self.layer_name = self._check_layer(layer)

  @property
  def _state(self):
    return self._shared["state"]

  def sync(self) -> None:
    """Picks up parameters changed in place on `module` (nnx.update), keeping the compiled encode function; every
    view of this encoder (at_layer) sees them too."""
    self._shared["state"] = nnx.split(self.module)[1]

  @property
  def layer_names(self) -> tuple[str, ...]:
    """Every layer this encoder can embed with, input to output: ("patch", "layer_0", ..., "last")."""
    if self._shared["layer_names"] is None:
      window = jax.ShapeDtypeStruct((1, self.window_samples), jnp.float32)
      outputs, _ = jax.eval_shape(functools.partial(self._encode, names=None), self._state, window,
                                  jax.ShapeDtypeStruct(window.shape, bool))
      order = lambda n: (-1 if n == PATCH else 1 << 30 if n == LAST else _block_index(n))
      self._shared["layer_names"] = tuple(sorted(outputs, key=order))
    return self._shared["layer_names"]

  @property
  def num_layers(self) -> int:
    """Transformer blocks (depth): the int layers are 0 .. num_layers - 1."""
    return sum(_block_index(n) is not None for n in self.layer_names)

  def _check_layer(self, layer: int | str) -> tuple[int | str, str]:
    """-> (layer as an int or "last"/"patch", its out_dict name); ValueError naming the valid layers."""
    name = layer_name(layer)
    if name not in self.layer_names:
      extra = f", {PATCH!r} (patch embedding + positions)" if PATCH in self.layer_names else ""
      raise ValueError(f"layer {layer!r} is not a layer of this encoder: choose an int 0..{self.num_layers - 1} "
                       f"(block output), {LAST!r} (the encoder's output){extra}")
    index = _block_index(name)
    return (name if index is None else index), name

  def at_layer(self, layer: int | str) -> "AudioEncoder":
    """A view of this encoder that embeds with `layer` (module docstring); it shares the weights, `sync` and the
    compiled function."""
    view = copy.copy(self)
    view.layer, view.layer_name = (LAST, LAST) if layer_name(layer) == LAST else self._check_layer(layer)
    return view

  @property
  def output_dim(self) -> int:
    return int(self.module.output_dim)

  @classmethod
  def build(cls, meta: dict, *, seed: int = 0, layer: int | str = LAST) -> "AudioEncoder":
    """Fresh weights for the architecture in `meta` (the random-init baseline of an exported encoder)."""
    return cls(meta, models.encoder_from_config(ml_collections.ConfigDict(meta["audio"]), rngs=nnx.Rngs(seed)),
               layer=layer)

  @classmethod
  def load(cls, enc_dir: str | os.PathLike, *, layer: int | str = LAST) -> "AudioEncoder":
    enc_dir = paths.resolve(enc_dir)
    meta = read_meta(enc_dir)
    audio_cfg = ml_collections.ConfigDict(meta["audio"])
    abstract = nnx.eval_shape(lambda: models.encoder_from_config(audio_cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract_state.to_pure_dict())
    with ocp.StandardCheckpointer() as checkpointer:
      pure = checkpointer.restore(enc_dir / PARAMS_DIR, target)
    nnx.replace_by_pure_dict(abstract_state, pure)
    return cls(meta, nnx.merge(graphdef, abstract_state), layer=layer)

  def save(self, enc_dir: str | os.PathLike) -> epath.Path:
    """Writes an export folder that `load` reads back (`write_export`: replaces an earlier export, refuses a
    non-empty folder that is not one)."""
    return write_export(enc_dir, self.meta, self.encoder_params_pure())

  def encoder_params_pure(self) -> dict:
    return jax.tree.map(np.asarray, nnx.state(self.module, nnx.Param).to_pure_dict())

  def _windows(self, audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return windows_lib.split(audio16k, self.window_samples)

  def _encode_clip(self, waveform, sample_rate: int, names) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """-> ({name: (W*T', D) frames of every window}, (W*T',) frame mask) for one clip, window by window."""
    windows, masks = self._windows(windows_lib.mono_16k(waveform, sample_rate))
    outputs, frame_masks = {}, []
    for chunk, chunk_mask, n in windows_lib.chunks(windows, masks, self.windows_per_call):
      f, m = jax.device_get(self._encode(self._state, jnp.asarray(chunk), jnp.asarray(chunk_mask), names=names))
      for name, frames in f.items():
        outputs.setdefault(name, []).append(frames[:n].reshape(-1, frames.shape[-1]))
      frame_masks.append(m[:n].reshape(-1))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}, np.concatenate(frame_masks)

  def encode_windows(self, windows: np.ndarray, masks: np.ndarray, *, frames: bool) -> dict[str, np.ndarray]:
    """(W, S) windows of 16 kHz audio and their (W, S) sample masks, from any clips (one compiled shape per W) ->
    on the host "sums" (W, D) the sum of each window's valid frames of this encoder's layer and "counts" (W,);
    with frames=True also "frames" (W, T', D) and "frame_mask" (W, T'). A clip's mean is its windows' summed
    sums over their summed counts (alp_jax/evaluate/clip_batches.py batches windows across clips)."""
    return jax.device_get(self._encode_sums(self._state, jnp.asarray(windows), jnp.asarray(masks),
                                            name=self.layer_name, with_frames=frames))

  def embed(self, waveform, sample_rate: int) -> dict[str, np.ndarray]:
    """-> "frames" (T, D) valid frames of this encoder's layer (25 Hz for stack 4), "frame_mask" (T,) all True,
    "pooled" (D,) their mean."""
    outputs, frame_mask = self._encode_clip(waveform, sample_rate, (self.layer_name,))
    valid = outputs[self.layer_name][frame_mask]
    return {"frames": valid, "frame_mask": np.ones(len(valid), bool),
            "pooled": valid.mean(axis=0) if len(valid) else np.zeros(valid.shape[-1], np.float32)}

  def embed_layers(self, waveform, sample_rate: int) -> dict[str, np.ndarray]:
    """Every layer's valid frames from one forward pass: {"patch", "layer_0", ..., "last": (T, D)} in
    `layer_names` order; each equals `at_layer(name).embed(...)["frames"]`."""
    outputs, frame_mask = self._encode_clip(waveform, sample_rate, None)
    return {name: outputs[name][frame_mask] for name in self.layer_names}

  def embed_batch(self, waveforms, sample_rates) -> list[dict[str, np.ndarray]]:
    if np.isscalar(sample_rates):
      sample_rates = [sample_rates] * len(waveforms)
    return [self.embed(w, sr) for w, sr in zip(waveforms, sample_rates)]
