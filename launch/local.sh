#!/usr/bin/env bash
# Runs the trainer on this host, with the repo's venv and tcmalloc preloaded when present.
#
#   launch/local.sh CONFIG WORKDIR [--config.field=value ...]
#   launch/local.sh configs/clap.py:tiny runs/clap_tiny --config.data.corpus_dir=runs/demo/corpus
#
# It sets nothing distributed: a single host needs nothing, and launch/slurm_gpu.sbatch and launch/tpu_pod.sh
# run this script on every process with ALP_DISTRIBUTED=1 in the environment (alp_jax/train/distributed.py).
# Environment:
#   ALP_PYTHON     interpreter to use (default: <repo>/.venv/bin/python if it exists, else python3)
#   ALP_TCMALLOC   path of the tcmalloc library to preload, or 0 for none (default: the Debian/Ubuntu
#                  libtcmalloc_minimal.so.4 when installed; JAX steps on CPU are ~28% faster with it)
# CONFIG is a config module (alp_jax.configs.clap:tiny) or file (configs/clap.py:tiny; a relative path is tried
# from the working directory, then from the package). It prints the command, then replaces itself with it (the
# exit status and signals are the trainer's).
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  echo "  e.g. $0 configs/clap.py:tiny runs/clap_tiny --config.data.corpus_dir=runs/demo/corpus" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${ALP_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python=$repo/.venv/bin/python; else python=python3; fi
fi

tcmalloc=
case "${ALP_TCMALLOC-}" in
  0) ;;
  "")
    for candidate in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
                     /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
      if [ -f "$candidate" ]; then tcmalloc=$candidate; break; fi
    done ;;
  *)
    if [ ! -f "$ALP_TCMALLOC" ]; then
      echo "error: ALP_TCMALLOC=$ALP_TCMALLOC is not a file (set ALP_TCMALLOC=0 to run without tcmalloc)" >&2
      exit 2
    fi
    tcmalloc=$ALP_TCMALLOC ;;
esac
env_prefix=()
if [ -n "$tcmalloc" ] && [[ ":${LD_PRELOAD-}:" != *":$tcmalloc:"* ]]; then
  env_prefix=("LD_PRELOAD=$tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}")
fi

cmd=("$python" -m alp_jax.train --config "$config" --workdir "$workdir" "$@")
printed=$(printf '%q ' ${env_prefix[@]+"${env_prefix[@]}"} "${cmd[@]}")
echo "[launch] ${printed% }"
exec env ${env_prefix[@]+"${env_prefix[@]}"} "${cmd[@]}"
