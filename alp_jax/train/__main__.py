"""python -m alp_jax.train --config configs/NAME.py[:variant] --workdir DIR [--config.field=value ...]"""
import sys

from absl import app, flags
from ml_collections import config_flags

from alp_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "config file with get_config(arg), e.g. configs/clap.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder: checkpoints, metrics, config (resumes if present)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    trainer.train(_CONFIG.value, _WORKDIR.value)
  except (trainer.NonFiniteLossError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  if any(a in ("-h", "--help", "-help") for a in sys.argv[1:]):  # absl's --help exits 1; help is not an error
    print(__doc__)
    print(flags.FLAGS.main_module_help())
    sys.exit(0)
  app.run(main)
