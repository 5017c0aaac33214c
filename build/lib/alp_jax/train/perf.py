"""Step cost from the compiler and the device's measured matmul peak, for MFU."""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp


def _flops(cost_analysis) -> float:
  try:
    cost = cost_analysis()
  except Exception:  # some backends do not report costs
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost.get("flops", 0.0)) if cost else 0.0


def compiled_flops(compiled) -> float:
  """FLOPs of one compiled SPMD partition: per device. A scanned loop body is counted once."""
  return _flops(compiled.cost_analysis)


def lowered_flops(lowered) -> float:
  """FLOPs of a lowered (not yet partitioned) computation: the whole global step."""
  return _flops(lowered.cost_analysis)


def memory_summary(compiled) -> str:
  try:
    m = compiled.memory_analysis()
  except Exception:
    return "[train] memory analysis unavailable"
  if m is None:
    return "[train] memory analysis unavailable"
  gib = lambda b: b / 2**30
  return (f"[train] step memory per device: arguments {gib(m.argument_size_in_bytes):.3f} GiB, outputs "
          f"{gib(m.output_size_in_bytes):.3f} GiB, temporaries {gib(m.temp_size_in_bytes):.3f} GiB, "
          f"aliased {gib(m.alias_size_in_bytes):.3f} GiB")


@functools.lru_cache(maxsize=None)
def _measure_peak(n: int, dtype_name: str) -> float:
  dtype = jnp.dtype(dtype_name)
  device = jax.local_devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(3):
    t0 = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def peak_flops_per_device(configured: float = 0.0) -> float:
  """A configured peak, else one device's measured dense-matmul rate (float32 on CPU, bfloat16 elsewhere)."""
  if configured:
    return float(configured)
  platform = jax.devices()[0].platform
  return _measure_peak(1024 if platform == "cpu" else 8192, "float32" if platform == "cpu" else "bfloat16")
