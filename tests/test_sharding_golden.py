"""Golden sharding dumps (as MaxText keeps): which parameter is sharded on which mesh axis, for the tiny and base
configs of every objective, on a (data 1, fsdp 4, tensor 2) mesh of the 8 test devices so both parameter axes show.

A change to the rules, a model's logical axis names or a config's sizes changes these files; when that is intended,
regenerate them and review the diff:

  ALP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_sharding_golden.py
"""
import json
import os
import pathlib

import jax
import pytest

from alp_jax import sharding as sharding_lib
from alp_jax.train import runs
from alp_jax.train import state as state_lib

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
CONFIGS = ("clap:tiny", "clap:base", "cappa:tiny", "cappa:base", "hybrid:base", "tagging:base")


def _dump(spec: str) -> dict[str, str]:
  name, _, variant = spec.partition(":")
  config = runs.load_config(f"configs/{name}.py:{variant}")
  if "num_classes" in config.model:
    config.model.num_classes = 10
  config.mesh.update(data=1, fsdp=4, tensor=2)
  mesh = sharding_lib.mesh_from_config(config.mesh)
  _, params, _ = state_lib.split_model(state_lib.build_abstract_model(config))
  shardings = sharding_lib.state_shardings(params, mesh, config.mesh.rules)
  flat = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]
  shapes = dict((jax.tree_util.keystr(p), tuple(x.shape)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0])
  return {jax.tree_util.keystr(path): f"{shapes[jax.tree_util.keystr(path)]} {s.spec}" for path, s in flat}


@pytest.mark.parametrize("spec", CONFIGS)
def test_parameter_shardings_match_the_golden_dump(spec):
  got = _dump(spec)
  path = GOLDEN / f"sharding_{spec.replace(':', '_')}.json"
  if os.environ.get("ALP_UPDATE_GOLDEN"):
    path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
  assert path.exists(), f"no golden dump {path}: create it with ALP_UPDATE_GOLDEN=1 (see the module docstring)"
  want = json.loads(path.read_text())
  changed = {k: (want.get(k), got.get(k)) for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)}
  assert not changed, (f"{spec}: {len(changed)} parameter shardings differ from {path.name} (golden, now):\n"
                       + "\n".join(f"  {k}: {a} -> {b}" for k, (a, b) in list(changed.items())[:30]))
  # Not vacuous: the large matrices of every config are split over both parameter axes somewhere.
  assert any("'fsdp'" in v for v in got.values()) and any("'tensor'" in v for v in got.values())
