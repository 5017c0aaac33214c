"""python -m alp_jax.train --config CONFIG[:variant] --workdir DIR [--config.field=value ...]   (or: alp-train ...)

CONFIG is a module name (alp_jax.configs.clap:tiny, works from any directory with the installed package) or a
config file (configs/clap.py:tiny; a relative path is tried from the working directory, then from the package
and the checkout).

Exit status: 0 done, 1 error, 75 preempted (SIGTERM on any process: every process saved the same step; run the
same command again to resume; see alp_jax/train/preemption.py and launch/README.md).
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from alp_jax.train import preemption
from alp_jax.train import runs
from alp_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "config module or file with get_config(arg), e.g. alp_jax.configs.clap:tiny or "
    "configs/clap.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder: checkpoints, metrics, config (resumes if present)")
flags.mark_flags_as_required(["config", "workdir"])


def resolve_config_argv(argv: list[str]) -> list[str]:
  """argv with the --config value made a file path (config_flags reads files only): a module name becomes its
  file, a relative path not found from the working directory becomes the package's or the checkout's file.
  A value that names nothing is left as it is, for config_flags to report."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith(("--config=", "-config=")):
      flag, _, value = arg.partition("=")
      try:
        out[i] = f"{flag}={runs.config_file(value)}"
      except FileNotFoundError:
        pass
    elif arg in ("--config", "-config") and i + 1 < len(out):
      try:
        out[i + 1] = runs.config_file(out[i + 1])
      except FileNotFoundError:
        pass
  return out


def config_error(argv: list[str]) -> str | None:
  """The config's own error (an unknown variant ...), so that the CLI prints one line instead of config_flags'
  traceback; None when the --config value loads or names no file (config_flags reports that)."""
  values = [a.partition("=")[2] for a in argv if a.startswith(("--config=", "-config="))]
  values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-config")]
  for value in values:
    try:
      runs.load_config(value)
    except FileNotFoundError:
      pass
    except ValueError as e:
      return str(e)
  return None


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    summary = trainer.train(_CONFIG.value, _WORKDIR.value)
  except (trainer.NonFiniteLossError, FileNotFoundError, ValueError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  # Preempted (SIGTERM): a checkpoint was saved on every process; 75 asks the launcher to start it again.
  return preemption.PREEMPTED_EXIT_CODE if summary.get("preempted") else 0


def run() -> None:
  """Entry point of `python -m alp_jax.train` and the `alp-train` console script."""
  if any(a in ("-h", "--help", "-help") for a in sys.argv[1:]):  # absl's --help exits 1; help is not an error
    print(__doc__)
    print(flags.FLAGS.module_help(sys.argv[0] if __name__ == "__main__" else __name__))
    sys.exit(0)
  argv = resolve_config_argv(sys.argv)
  problem = config_error(argv[1:])
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(1)
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
