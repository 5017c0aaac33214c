"""Device mesh from config, logical-axis rules, and host batches -> global sharded arrays.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters and optimizer state sharded),
`tensor` (model parallel over heads / MLP / vocab). Batches are split over ("data", "fsdp").
Parameters carry logical names ("embed", "mlp", "heads", ...); `config.mesh.rules` maps each to a mesh axis (or
None). A dimension that a mesh axis does not divide stays replicated, and `sharding_report` says so.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("joint", "tensor"),
    ("mel", None),
    ("layers", None),
)


def default_mesh_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      data=1, fsdp=-1, tensor=1,       # sizes inside a slice/node; one may be -1 (fill with what is left)
      dcn_data=1, dcn_fsdp=1, dcn_tensor=1,  # sizes across slices/nodes (multi-slice TPU, multi-node GPU)
      rules=DEFAULT_RULES,
      min_sharded_size=2**14,          # params at least this big must end up sharded when their rule says so
      num_devices=0,                   # 0: all devices; n: the first n (debugging, tests)
  ))


def devices_from_config(cfg: ml_collections.ConfigDict):
  n = cfg.get("num_devices", 0)
  devices = jax.devices()
  if n and n > len(devices):
    raise ValueError(f"config.mesh.num_devices={n} but only {len(devices)} devices exist")
  return devices[:n] if n else devices


def _fill(sizes: Sequence[int], total: int, what: str) -> list[int]:
  sizes = list(sizes)
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one {what} mesh size may be -1, got {sizes}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if total % known:
      raise ValueError(f"{what} mesh sizes {sizes} do not divide the {total} devices")
    sizes[sizes.index(-1)] = total // known
  if math.prod(sizes) != total:
    raise ValueError(f"{what} mesh sizes {dict(zip(MESH_AXES, sizes))} multiply to {math.prod(sizes)}, but there "
                     f"are {total} devices; set one of config.mesh.data/fsdp/tensor to -1 to fill")
  return sizes


def mesh_from_config(cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  dcn = [cfg.get(f"dcn_{a}", 1) for a in MESH_AXES]
  ici = _fill([cfg.get(a, 1) for a in MESH_AXES], len(devices) // math.prod(dcn), "in-slice")
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if math.prod(dcn) > 1:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
  elif len(devices) == len(jax.devices()):
    return jax.make_mesh(tuple(ici), MESH_AXES, axis_types=axis_types)
  else:
    grid = np.asarray(devices).reshape(ici)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules) -> P:
  """Logical names -> PartitionSpec; a mesh axis is used once per array and only where it divides the dim."""
  rule_map = dict(rules)
  used: set[str] = set()
  out = []
  for name, dim in zip(names, shape):
    target = rule_map.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in axes)
    if not axes or dim % size:
      out.append(None)
      continue
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else axes)
  return P(*out)


def _names_of(leaf) -> tuple | None:
  spec = getattr(leaf, "out_sharding", None) or getattr(leaf, "sharding_names", None)
  return tuple(spec) if spec is not None else None


def state_shardings(abstract_state, mesh: Mesh, rules) -> Any:
  """A pytree of NamedSharding matching an abstract NNX state (Variables with logical names)."""
  from flax import nnx

  def one(variable):
    value = variable.get_value() if hasattr(variable, "get_value") else variable.value
    names = _names_of(variable)
    if names is None or len(names) != len(value.shape):
      return variable.replace(NamedSharding(mesh, P()))
    return variable.replace(NamedSharding(mesh, spec_for(names, value.shape, mesh, rules)))

  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def sharding_report(abstract_state, shardings, mesh: Mesh, rules, min_sharded_size: int) -> list[str]:
  """Parameters that a rule says to shard but that ended up replicated (too small mesh axis divides nothing)."""
  from flax import nnx
  rule_map = dict(rules)
  problems = []
  flat_state = nnx.to_flat_state(abstract_state)
  flat_shard = dict(nnx.to_flat_state(shardings))
  for path, variable in flat_state:
    value = variable.get_value() if hasattr(variable, "get_value") else variable.value
    names = _names_of(variable)
    if names is None or math.prod(value.shape) < min_sharded_size:
      continue
    wanted = [a for n in names for a in ((rule_map.get(n),) if isinstance(rule_map.get(n), str)
                                         else (rule_map.get(n) or ())) if a and mesh.shape[a] > 1]
    sharding = flat_shard[path]
    sharding = sharding.get_value() if hasattr(sharding, "get_value") else getattr(sharding, "value", sharding)
    if wanted and all(s is None for s in sharding.spec):
      problems.append(f"{'/'.join(map(str, path))} {tuple(value.shape)} names={names}: rules ask for {wanted} "
                      f"but no dimension is divisible; it is replicated")
  return problems


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if global_batch_size % shards:
    raise ValueError(f"batch size {global_batch_size} does not divide evenly over the {shards} batch shards of the "
                     f"mesh {dict(mesh.shape)} (axes {BATCH_AXES}); use a multiple of {shards}")


def host_to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Each process's rows -> one global jax.Array per key, split over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
