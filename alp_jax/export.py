"""Exports the audio encoder of a training run: an encoder-only Orbax checkpoint plus what rebuilds it.

  python -m alp_jax.export --workdir DIR --out ENC_DIR [--step N] [--averaged]

ENC_DIR/encoder_config.json holds the frontend settings, config.model.audio and provenance (workdir, step,
objective, and with --averaged the steps the average covers); ENC_DIR/params is the encoder's parameters (Orbax).
--averaged exports the parameter average the run kept (config.optimizer.average_period > 0, icefall's model_avg)
instead of the parameters; a run that kept none is an error (exit 2). Load with
`from alp_jax import AudioEncoder; AudioEncoder.load(ENC_DIR)`. DIR and ENC_DIR may be local or gs://...

An earlier export in ENC_DIR is replaced; any other non-empty ENC_DIR is refused (exit 2) and left as it is.
A local ENC_DIR is written whole beside it (.NAME.tmp-*) and swapped in, so a killed export leaves the previous
one intact (the states: `alp_jax/encoder_api.py`); on gs:// it is rewritten in place.
The work is `alp_jax.train.runs.export_encoder`; this is its command line.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from alp_jax.train import runs


def export(workdir: str | os.PathLike, out: str | os.PathLike, step: int | None = None, *,
           averaged: bool = False, quiet: bool = False) -> dict:
  """runs.export_encoder with a summary line; returns encoder_config.json's content."""
  t0 = time.perf_counter()
  meta = runs.export_encoder(workdir, out, step, averaged=averaged)
  if not quiet:
    avg = meta.get("averaged")
    what = (f"parameter average of steps {avg['first_step']}..{avg['last_step']} (every {avg['period']})"
            if avg else "parameters")
    print(f"[export] audio encoder of {workdir} at step {meta['step']} ({meta['num_params'] / 1e6:.2f}M params, "
          f"{what}) -> {out} in {time.perf_counter() - t0:.1f}s")
  return meta


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True, help="a new or empty folder, or an earlier export (replaced)")
  parser.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")
  parser.add_argument("--averaged", action="store_true",
                      help="export the run's parameter average (config.optimizer.average_period > 0)")
  args = parser.parse_args(argv)
  try:
    export(args.workdir, args.out, args.step, averaged=args.averaged)
  except (FileNotFoundError, FileExistsError, runs.NoAverageError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
