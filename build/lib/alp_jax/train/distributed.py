"""Multi-host initialisation, only when the config or the environment asks for it.

config.distributed.initialize: "auto" (default) initialises when the environment describes a multi-process job
(a coordinator address in ALP_COORDINATOR_ADDRESS / JAX_COORDINATOR_ADDRESS, SLURM with several tasks, or a
TPU pod's metadata via JAX's own cluster detection when ALP_DISTRIBUTED=1), True always, False never. A
single-host CPU run never calls it.
"""
from __future__ import annotations

import os

import jax

_initialized = False


def _env_wants_distributed() -> bool:
  if os.environ.get("ALP_DISTRIBUTED") == "1":
    return True
  if os.environ.get("ALP_COORDINATOR_ADDRESS") or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def maybe_initialize(cfg=None) -> bool:
  """Calls jax.distributed.initialize at most once; returns whether the job is multi-process."""
  global _initialized
  if _initialized:
    return True
  mode = (cfg.get("initialize", "auto") if cfg is not None else "auto")
  if mode is False or mode == "false" or (mode == "auto" and not _env_wants_distributed()):
    return False
  kwargs = {}
  address = (cfg.get("coordinator_address", "") if cfg is not None else "") or os.environ.get(
      "ALP_COORDINATOR_ADDRESS", "")
  if address:
    kwargs["coordinator_address"] = address
    kwargs["num_processes"] = int((cfg.get("num_processes", 0) if cfg is not None else 0)
                                  or os.environ["ALP_NUM_PROCESSES"])
    kwargs["process_id"] = int(os.environ["ALP_PROCESS_ID"]) if "ALP_PROCESS_ID" in os.environ else int(
        cfg.get("process_id", 0))
  jax.distributed.initialize(**kwargs)  # without kwargs: JAX's cluster detection (TPU pods, SLURM)
  _initialized = True
  return True
