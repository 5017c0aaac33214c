"""Exports the audio encoder of a training run: an encoder-only Orbax checkpoint plus what rebuilds it.

  python -m alp_jax.export --workdir DIR --out ENC_DIR [--step N]

ENC_DIR/encoder_config.json holds the frontend settings, config.model.audio and provenance (workdir, step,
objective); ENC_DIR/params is the encoder's parameters (Orbax). Load with
`from alp_jax import AudioEncoder; AudioEncoder.load(ENC_DIR)`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from alp_jax import encoder_api
from alp_jax import sharding as sharding_lib
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import encoder_init
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import state as state_lib


def load_config(workdir) -> ml_collections.ConfigDict:
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} is not a training workdir (no config.json)")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_run(workdir, step: int | None = None, mesh=None):
  """-> (config, graphdef, state, step) restored onto `mesh` (default: all local devices, FSDP)."""
  workdir = Path(workdir)
  config = load_config(workdir)
  if mesh is None:
    mesh_cfg = sharding_lib.default_mesh_config()
    mesh = sharding_lib.mesh_from_config(mesh_cfg)
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  graphdef, abstract, shardings = state_lib.state_shardings(config, mesh, tx)
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet")
    if step not in checkpointer.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {workdir}/checkpoints "
                              f"(available: {checkpointer.all_steps()})")
    state = checkpointer.restore(step, ckpt_lib.abstract_with_shardings(abstract, shardings))
  finally:
    checkpointer.close()
  return config, graphdef, state, step


def _to_numpy_pure(tree) -> dict:
  from flax import nnx
  pure = nnx.State(tree).to_pure_dict() if not isinstance(tree, dict) else tree
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), pure)


def encoder_params_from_workdir(workdir, step: int | None = None) -> dict:
  _, _, state, _ = restore_run(workdir, step)
  return _to_numpy_pure(encoder_init.get_encoder(state["params"]))


def export(workdir, out, step: int | None = None, *, quiet: bool = False) -> dict:
  t0 = time.perf_counter()
  config, _, state, step = restore_run(workdir, step)
  params = _to_numpy_pure(encoder_init.get_encoder(state["params"]))
  out = Path(out).absolute()
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(out / encoder_api.PARAMS_DIR, params)
  meta = {
      "frontend": config.frontend.to_dict(), "audio": config.model.audio.to_dict(),
      "crop_seconds": config.data.crop_seconds, "source_workdir": str(Path(workdir).absolute()), "step": int(step),
      "model": config.model.name, "objective": config.loss.kind,
      "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
  }
  (out / encoder_api.CONFIG_FILE).write_text(json.dumps(meta, indent=1))
  if not quiet:
    print(f"[export] audio encoder of {workdir} at step {step} ({meta['num_params'] / 1e6:.2f}M params) -> {out} "
          f"in {time.perf_counter() - t0:.1f}s")
  return meta


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")
  args = parser.parse_args(argv)
  try:
    export(args.workdir, args.out, args.step)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
