"""A training run on disk: its config, its tokenizer, its checkpoints and its exported encoder, in one place.

  WORKDIR/config.json        the run's config (`write_config`, `read_config`); a resume must match it except in
                             RESUME_MAY_CHANGE (`check_resume`)
  WORKDIR/config_history/    every earlier config.json that a start replaced (config-stepN-TIME.json)
  WORKDIR/tokenizer.model    the run's own copy of its tokenizer, made at the first start of training; its sha1 is
                             config.json's data.tokenizer_sha1
  WORKDIR/checkpoints/STEP   Orbax checkpoints (alp_jax/train/checkpoints.py)
  WORKDIR/metrics.jsonl, WORKDIR/tensorboard/   (alp_jax/train/metrics.py)

  config = runs.load_config("configs/clap.py:tiny")        # a config file and its variants, or by module name:
  config = runs.load_config("alp_jax.configs.clap:tiny")
  config, graphdef, state, step = runs.restore(WORKDIR)    # the latest (or a given) checkpoint
  tok = runs.tokenizer(WORKDIR, config)                    # the run's tokenizer, checked against config.json
  meta = runs.export_encoder(WORKDIR, ENC_DIR)             # its audio encoder as an exported encoder
  meta = runs.export_encoder(WORKDIR, ENC_DIR, averaged=True)   # ... from the parameter average (params_avg)

A run keeps its tokenizer so that resuming or evaluating it never depends on a corpus folder rebuilt since: the
corpus's tokenizer (`tokenizer.path_for(config.data)`) is copied once, at the first start, and the data pipeline
reads the copy. WORKDIR and ENC_DIR may be local or on any filesystem epath knows (gs://...).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pathlib
import re
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from alp_jax import encoder_api
from alp_jax import sharding as sharding_lib
from alp_jax.data import paths
from alp_jax.data import pipeline
from alp_jax.data import tokenizer as tokenizer_lib
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import state as state_lib

CONFIG_FILE = "config.json"
HISTORY_DIR = "config_history"
# The config fields a resume may change: they say how long the run goes, how often it logs, saves and evaluates,
# and where and how fast it runs, not what it computes. A name covers its whole subtree. Every other field must
# equal config.json's, compared after the trainer's derivations (data.tokenizer and data.tokenizer_sha1 point at
# the run's own tokenizer, model.vocab_size and model.num_classes come from it and the corpus), so those match.
RESUME_MAY_CHANGE = (
    "total_steps",                 # train longer or shorter (the learning-rate schedule follows the new total)
    "log_every", "tensorboard", "peak_flops_per_device",                      # logging, MFU
    "checkpoint_every", "keep_checkpoints", "keep_steps", "async_checkpoints",  # saving
    "eval_every", "evaluators", "best_metric", "best_mode",                  # evaluation, the best checkpoint
    "nonfinite",                   # stop or skip at a non-finite loss (a stopped run may go on with skip)
    "data.num_threads", "data.worker_count", "data.prefetch_buffer_size",   # data loading speed
    "mesh", "distributed",         # the devices and processes it runs on (checkpoints restore onto any mesh)
)
TOKENIZER_FILE = tokenizer_lib.MODEL_FILE
# Config files are Python source on this machine (not run data). A relative path is looked up from the working
# directory, then from the package folder (so "configs/clap.py" finds alp_jax/configs/clap.py in an installed
# package too), then from the repository root of a checkout.
_PACKAGE = pathlib.Path(__file__).resolve().parents[1]
_REPO = _PACKAGE.parent
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _is_module_name(path: str) -> bool:
  return bool(_MODULE_NAME.match(path)) and not path.endswith(".py")


def config_file(spec: str) -> str:
  """'alp_jax.configs.NAME[:variants]' or 'PATH.py[:variants]' -> 'ABSOLUTE_PATH.py[:variants]'.

  A module name is found with importlib (the installed package, or anything on sys.path); a relative path is
  tried from the working directory, then from the package folder, then from the repository root."""
  path, colon, arg = spec.partition(":")
  if _is_module_name(path):
    try:
      found_spec = importlib.util.find_spec(path)
    except ModuleNotFoundError:
      found_spec = None
    if found_spec is None or not found_spec.origin or not found_spec.origin.endswith(".py"):
      raise FileNotFoundError(f"config module {path!r} not found (e.g. alp_jax.configs.clap:tiny, or a file "
                              f"path such as configs/clap.py:tiny)")
    return f"{found_spec.origin}{colon}{arg}"
  candidates = [pathlib.Path(path)] + ([] if os.path.isabs(path) else [_PACKAGE / path, _REPO / path])
  found = next((p for p in candidates if p.is_file()), None)
  if found is None:
    where = f"in {os.getcwd()} and under {_PACKAGE} and {_REPO}" if len(candidates) > 1 else "there"
    raise FileNotFoundError(f"config file {path!r} not found (looked {where})")
  return f"{found.resolve()}{colon}{arg}"


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/NAME.py[:variants]' or 'alp_jax.configs.NAME[:variants]' -> get_config(variants).

  A module name is imported by name; a relative path is tried from the working directory, then from the package
  folder and the repository root (`config_file`)."""
  path, _, arg = spec.partition(":")
  if _is_module_name(path):
    config_file(spec)   # a clear FileNotFoundError when there is no such module
    return importlib.import_module(path).get_config(arg or None)
  found = pathlib.Path(config_file(path))
  module_spec = importlib.util.spec_from_file_location(f"alp_config_{found.stem}", found)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def write_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> epath.Path:
  """WORKDIR/config.json (the folder is made if needed). A config.json with other contents is kept first, as
  WORKDIR/config_history/config-stepN-TIME.json (N: the latest checkpoint's step), so none is ever lost."""
  workdir = paths.resolve(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / CONFIG_FILE
  if path.exists():
    previous = path.read_text()
    if config_differences(json.loads(previous), as_json(config)):
      _keep_in_history(workdir, previous)
  paths.write_text_last(path, config.to_json_best_effort(indent=1))
  return path


def _keep_in_history(workdir: epath.Path, text: str) -> epath.Path:
  steps = [int(p.name) for p in ckpt_lib.directory(workdir).iterdir() if p.name.isdigit()] \
      if ckpt_lib.has_checkpoint(workdir) else [0]
  stem = f"config-step{max(steps)}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
  history = workdir / HISTORY_DIR
  history.mkdir(parents=True, exist_ok=True)
  path, n = history / f"{stem}.json", 1
  while path.exists():
    path, n = history / f"{stem}-{n}.json", n + 1
  paths.write_text_last(path, text)
  return path


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{workdir} is not a training workdir (no {CONFIG_FILE})")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


# --- Resuming: the same config, but for RESUME_MAY_CHANGE.

_ABSENT = object()


def as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def show(value) -> str:
  return "(absent)" if value is _ABSENT else json.dumps(value)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
  """[(dotted field, old value, new value)] of two configs as JSON dicts; a field missing on one side has the
  value `_ABSENT` (shown as "(absent)"). NaN equals NaN."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_differences(a, b, f"{prefix}{key}.")
    elif a is _ABSENT or b is _ABSENT or json.dumps(a) != json.dumps(b):
      out.append((f"{prefix}{key}", a, b))
  return out


def may_change(field: str) -> bool:
  return any(field == f or field.startswith(f + ".") for f in RESUME_MAY_CHANGE)


def check_resume(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> list[str]:
  """On a start in a workdir with a checkpoint and a config.json, `config` (after the trainer's derivations:
  `start_tokenizer`, `set_data_sizes`) must equal config.json but for RESUME_MAY_CHANGE. Returns those changes as
  'field: old -> new' lines; any other difference is a ValueError naming each field. Reads only."""
  workdir = paths.resolve(workdir)
  path = workdir / CONFIG_FILE
  if not ckpt_lib.has_checkpoint(workdir) or not path.exists():
    return []
  changes = config_differences(json.loads(path.read_text()), as_json(config))
  refused = [c for c in changes if not may_change(c[0])]
  if refused:
    lines = "\n".join(f"  {field}: {show(a)} -> {show(b)}" for field, a, b in refused)
    absent = any(_ABSENT in (a, b) for _, a, b in refused)
    raise ValueError(
        f"{workdir} holds a run whose {CONFIG_FILE} differs from this config in field(s) a resume may not "
        f"change:\n{lines}\nTo train this config, give it a new --workdir; to resume the run, revert these "
        f"overrides (or variants). A resume may change only: {', '.join(RESUME_MAY_CHANGE)}."
        + (" A field absent on one side usually means another alp-jax version wrote the run; to resume it with "
           f"this config anyway, move {path} into {workdir / HISTORY_DIR}/ and start again." if absent else ""))
  return [f"{field}: {show(a)} -> {show(b)}" for field, a, b in changes]


# --- The run's tokenizer.


def _sha1_mismatch(run_copy: epath.Path, found: str, config_path: epath.Path, recorded: str) -> ValueError:
  return ValueError(f"{run_copy} has sha1 {found}, but {config_path} records data.tokenizer_sha1 {recorded}: the "
                    f"run's tokenizer was replaced after training started. Put the original back; token ids of "
                    f"another tokenizer do not match this run's embeddings")


def tokenizer(workdir: str | os.PathLike, config: ml_collections.ConfigDict | None = None, *,
              log: Callable[[str], None] | None = print) -> tokenizer_lib.Tokenizer:
  """The run's own tokenizer (WORKDIR/tokenizer.model), checked against data.tokenizer_sha1 of config.json.

  A run written before runs kept a copy falls back to `tokenizer.path_for(config.data)`, with a logged note."""
  workdir = paths.resolve(workdir)
  config = config if config is not None else read_config(workdir)
  run_copy = workdir / TOKENIZER_FILE
  recorded = config.data.get("tokenizer_sha1", "")
  if not run_copy.exists():
    if recorded:
      raise FileNotFoundError(f"{run_copy} is missing, and {workdir / CONFIG_FILE} records a run tokenizer with "
                              f"sha1 {recorded}: put the run's tokenizer.model back")
    source = tokenizer_lib.path_for(config.data)
    if log:
      log(f"[runs] {workdir} keeps no {TOKENIZER_FILE} (a run written before runs kept their own): using {source}")
    return tokenizer_lib.Tokenizer(source)
  tok = tokenizer_lib.Tokenizer(run_copy)
  if recorded and tok.sha1 != recorded:
    raise _sha1_mismatch(run_copy, tok.sha1, workdir / CONFIG_FILE, recorded)
  return tok


def start_tokenizer(workdir: str | os.PathLike, config: ml_collections.ConfigDict, *,
                    log: Callable[[str], None] | None = print) -> tokenizer_lib.Tokenizer:
  """The tokenizer a training run in `workdir` uses; points config.data.tokenizer at it and sets tokenizer_sha1.

  At the first start (no checkpoint yet) process 0 copies `tokenizer.path_for(config.data)` to
  WORKDIR/tokenizer.model. On resume the run's copy is used (checked against config.json); if the corpus's
  tokenizer changed since, one line says so and training goes on with the copy. A run written before runs kept
  a copy goes on with the corpus's tokenizer, with a note (config.data is left as it is)."""
  workdir = paths.resolve(workdir)
  source = tokenizer_lib.path_for(config.data)
  run_copy = workdir / TOKENIZER_FILE
  say = log or (lambda _: None)
  if not ckpt_lib.has_checkpoint(workdir):
    tok = tokenizer_lib.Tokenizer(source)
    if jax.process_index() == 0 and os.fspath(source) != os.fspath(run_copy):
      workdir.mkdir(parents=True, exist_ok=True)
      run_copy.write_bytes(epath.Path(source).read_bytes())
    if jax.process_count() > 1:   # the other processes read the copy (the workdir is shared, as Orbax needs)
      multihost_utils.sync_global_devices("alp_jax.train.runs: tokenizer copied")
  elif run_copy.exists():
    previous = read_config(workdir) if (workdir / CONFIG_FILE).exists() else config
    tok = tokenizer(workdir, previous, log=log)
    source_sha1 = paths.sha1(source) if source.exists() else None
    if os.fspath(source) != os.fspath(run_copy) and source_sha1 not in (None, tok.sha1):
      say(f"[train] the corpus tokenizer {source} changed since this run started (sha1 {source_sha1}, the run's "
          f"{tok.sha1}): training goes on with the run's copy {run_copy}")
  else:
    say(f"[train] {workdir} keeps no {TOKENIZER_FILE} (a run written before runs kept their own): going on with "
        f"{source}")
    return tokenizer_lib.Tokenizer(source)
  with config.unlocked():
    config.data.tokenizer = os.fspath(run_copy)
    config.data.tokenizer_sha1 = tok.sha1
  return tok


def set_data_sizes(config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """Sets the model sizes that come from the data: config.model.vocab_size (the tokenizer's, through
  `tokenizer.path_for(config.data)`) and, for tagging, config.model.num_classes. Returns the tokenizer."""
  tok = tokenizer_lib.Tokenizer(tokenizer_lib.path_for(config.data))
  with config.unlocked():
    if config.model.get("vocab_size") != tok.vocab_size:
      config.model.vocab_size = tok.vocab_size
    if config.data.get("label_task"):
      config.model.num_classes = len(pipeline.label_vocabulary(config.data))
  return tok


# --- Checkpoints and the exported encoder.


def restore(workdir: str | os.PathLike, step: int | None = None, mesh=None):
  """-> (config, graphdef, state, step) restored onto `mesh` (default: all local devices, FSDP)."""
  workdir = paths.resolve(workdir)
  config = read_config(workdir)
  if mesh is None:
    mesh = sharding_lib.mesh_from_config(sharding_lib.default_mesh_config())
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  graphdef, abstract, shardings = state_lib.state_shardings(config, mesh, tx)
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{checkpointer.directory} holds no checkpoint yet")
    if step not in checkpointer.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {checkpointer.directory} "
                              f"(available: {checkpointer.all_steps()})")
    state = checkpointer.restore(step, ckpt_lib.abstract_with_shardings(abstract, shardings))
  finally:
    checkpointer.close()
  return config, graphdef, state, step


def _to_numpy_pure(tree) -> dict:
  pure = nnx.State(tree).to_pure_dict() if not isinstance(tree, dict) else tree
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), pure)


class NoAverageError(ValueError):
  """The run's checkpoint holds no parameter average to use (see `check_average`)."""


def check_average(workdir, config: ml_collections.ConfigDict, step: int | None) -> dict:
  """What the parameter average of `step` covers: {period, first_step, last_step, snapshots}; NoAverageError
  when the run kept none (optimizer.average_period 0) or `step` comes before its first update."""
  period = optimizer_lib.average_period(config.optimizer)
  if period == 0:
    raise NoAverageError(f"{workdir} kept no parameter average ({CONFIG_FILE}: optimizer.average_period is 0 or "
                         f"absent): export without --averaged, or train with --config.optimizer.average_period=P")
  if step is not None and step < period:
    raise NoAverageError(f"the checkpoint of step {step} in {workdir} comes before the parameter average's first "
                         f"update (optimizer.average_period={period}): its average is still the initial "
                         f"parameters. Export a later step, or without --averaged")
  snapshots = (step or 0) // period
  return {"period": period, "first_step": period, "last_step": snapshots * period, "snapshots": snapshots}


def restore_encoder(workdir: str | os.PathLike, step: int | None = None, *,
                    averaged: bool = False) -> tuple[ml_collections.ConfigDict, dict, int]:
  """-> (config, the audio encoder's parameters as a pure dict of numpy arrays, step); with `averaged`, from
  the parameter average (params_avg, config.optimizer.average_period > 0) instead of the parameters."""
  if averaged:
    check_average(workdir, read_config(workdir), None)   # before restoring anything
  config, _, state, step = restore(workdir, step)
  if averaged:
    check_average(workdir, config, step)
  return config, _to_numpy_pure(encoder_api.get_encoder(state["params_avg" if averaged else "params"])), step


def export_encoder(workdir: str | os.PathLike, out: str | os.PathLike, step: int | None = None, *,
                   averaged: bool = False) -> dict:
  """Writes the run's audio encoder (latest or `step`) as an exported encoder in `out`; returns its metadata.
  With `averaged`, the encoder of the parameter average (encoder_config.json's "averaged" says which steps it
  covers; NoAverageError when the run kept none).

  `out` may hold an earlier export (replaced); any other non-empty folder is refused before any work
  (FileExistsError), so a mistyped --out never overwrites a run."""
  encoder_api.check_export_target(out)
  config, params, step = restore_encoder(workdir, step, averaged=averaged)
  meta = encoder_api.meta_from_config(
      config, source_workdir=os.fspath(paths.resolve(workdir)), step=int(step), model=config.model.name,
      objective=config.loss.kind, num_params=int(sum(np.size(x) for x in jax.tree.leaves(params))),
      **({"averaged": check_average(workdir, config, step)} if averaged else {}))
  encoder_api.write_export(out, meta, params)
  return meta
