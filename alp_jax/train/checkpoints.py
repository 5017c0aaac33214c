"""Orbax checkpoints of the whole training state plus the grain iterator state.

Layout: <workdir>/checkpoints/<step>/{state, data}. `state` is the train-state pytree (params, optimizer state,
step, base RNG key) saved with StandardSave (sharded arrays, each process writes its shards); `data` is the grain
iterator state, one JSON per process. Saves are asynchronous; the last N are kept, optionally the best by a metric.
Restoring takes an abstract target whose leaves carry concrete NamedShardings of the *current* mesh, so a
checkpoint written on 8 devices restores onto 1 and back. The workdir may be gs://...: Orbax gets it unchanged.
"""
from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies
from etils import epath

from alp_jax.data import paths

CHECKPOINTS_DIR = "checkpoints"


def directory(workdir: str | os.PathLike) -> epath.Path:
  """WORKDIR/checkpoints (a local workdir made absolute, a remote one unchanged)."""
  return paths.resolve(workdir) / CHECKPOINTS_DIR


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  """Whether WORKDIR/checkpoints holds a finished step (Orbax's unfinished saves are named STEP.orbax-...)."""
  folder = directory(workdir)
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


class Checkpointer:

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True, keep_steps=(), read_only: bool = False):
    """keep: the latest N (or best N by `best_metric`); keep_steps: steps also kept for good (a trunk's branch
    points, train/branch.py); read_only: restore only, never write or clean up (another run's checkpoints)."""
    self.directory = directory(workdir)
    self.best_metric = best_metric
    if jax.devices()[0].platform == "cpu":
      # Async saves run cross-device collectives (orbax's barrier) from a background thread; on CPU devices
      # they interleave with the train step's collectives and deadlock XLA's in-process rendezvous. CPU
      # checkpoints of CPU-sized models are quick to write synchronously.
      async_save = False
    self.async_save = async_save
    self.keep_steps = tuple(int(s) for s in keep_steps)
    if best_metric:
      latest = policies.BestN(get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min",
                              n=keep, keep_checkpoints_without_metrics=True)
    else:
      latest = policies.LatestN(n=keep)
    kept = [latest] + ([policies.CustomSteps(self.keep_steps)] if self.keep_steps else [])
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
        best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None, best_mode=best_mode,
        preservation_policy=policies.AnyPreservationPolicy(kept), cleanup_tmp_directories=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None, *, metrics: dict | None = None, force: bool = False) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """-> state; `data_iterator` (if given) is moved to the saved position in place."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(state, shardings):
  """ShapeDtypeStructs carrying concrete shardings (orbax cannot restore onto an AbstractMesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
