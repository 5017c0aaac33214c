#!/usr/bin/env bash
# Trains on a Cloud TPU VM (a single host or a pod slice): the same command on every worker through
# `gcloud compute tpus tpu-vm ssh --worker=all`.
#
#   launch/tpu_pod.sh [--setup] TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
#   launch/tpu_pod.sh --setup my-v5e-32 us-west4-a configs/clap.py:base gs://my-bucket/runs/clap_base \
#       --config.data.corpus_dir=/mnt/corpus/cs
#
# Every worker runs `ALP_DISTRIBUTED=1 bash launch/local.sh CONFIG WORKDIR ...` in its copy of the repo:
# alp_jax/train/distributed.py calls jax.distributed.initialize() with no arguments and JAX finds the coordinator
# (worker 0), the process count and this worker's id from the TPU VM metadata. Each worker reads its own share of
# the data (grain per-process slicing), so the corpus must be readable from every worker.
# WORKDIR must be storage all workers share, normally a bucket path gs://BUCKET/...: every worker writes its
# shards of each checkpoint there, and rerunning with the same WORKDIR resumes from the last checkpoint. A local
# path only works on a single-host TPU VM (a warning is printed for relative paths).
# The workers' output streams here; the run stops if this terminal's ssh sessions end, so start long runs from
# tmux or screen.
#
# --setup (or ALP_SETUP=1) first brings the repo up to date on every worker: `git pull --ff-only` in an existing
# clone, else `git clone ALP_REPO_URL`; the system packages (best effort, with sudo when it needs no password:
# training needs none of them); `make venv`; then jax[tpu] (libtpu) at the jaxlib version pinned in
# requirements.txt, which pins the CPU build (the same as `ALP_ACCELERATOR=tpu make venv`).
# Environment:
#   ALP_REMOTE_DIR   the repo on each worker, relative to the worker's home or absolute (default: alp-jax)
#   ALP_REPO_URL     what --setup clones when ALP_REMOTE_DIR is not a clone yet (default: this clone's origin)
#   ALP_TPU_PROJECT  Google Cloud project of the TPU (default: gcloud's configured project)
set -euo pipefail

setup=${ALP_SETUP:-0}
if [ "${1-}" = --setup ]; then
  setup=1
  shift
fi
if [ $# -lt 4 ]; then
  echo "usage: $0 [--setup] TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]" >&2
  echo "  e.g. $0 --setup my-v5e-32 us-west4-a configs/clap.py:base gs://my-bucket/runs/clap_base" >&2
  exit 2
fi
tpu=$1
zone=$2
config=$3
workdir=$4
shift 4

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
remote_dir=${ALP_REMOTE_DIR:-alp-jax}
case $workdir in
  gs://* | /*) ;;
  *) echo "[tpu] warning: WORKDIR=$workdir is relative: on a pod each worker would write its own copy;" \
          "use gs://BUCKET/... (or a filesystem mounted on every worker)" >&2 ;;
esac

gcloud_args=(compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all)
if [ -n "${ALP_TPU_PROJECT-}" ]; then gcloud_args+=(--project="$ALP_TPU_PROJECT"); fi

if [ "$setup" = 1 ]; then
  repo_url=${ALP_REPO_URL:-$(git -C "$repo" remote get-url origin 2>/dev/null || true)}
  jax_version=$(sed -n 's/^jaxlib==//p' "$repo/requirements.txt")
  if [ -z "$jax_version" ]; then
    echo "error: no jaxlib==VERSION line in $repo/requirements.txt" >&2
    exit 2
  fi
  printf -v dir_q '%q' "$remote_dir"
  printf -v url_q '%q' "$repo_url"
  printf -v jax_q '%q' "jax[tpu]==$jax_version"
  setup_command="set -e; if [ -d $dir_q/.git ]; then git -C $dir_q pull --ff-only;"
  setup_command+=" elif [ -n $url_q ]; then git clone $url_q $dir_q;"
  setup_command+=" else echo 'error: no clone at '$dir_q' and no ALP_REPO_URL to clone' >&2; exit 1; fi;"
  setup_command+=" cd $dir_q; if sudo -n true 2>/dev/null; then sudo bash launch/install_system_packages.sh || true; fi;"
  setup_command+=" make venv; .venv/bin/python -m pip install -q $jax_q"
  echo "[tpu] setup on every worker of $tpu: $setup_command"
  gcloud "${gcloud_args[@]}" --command="$setup_command"
fi

printf -v train_command 'cd %q && ALP_DISTRIBUTED=1 bash launch/local.sh' "$remote_dir"
printf -v train_args ' %q' "$config" "$workdir" "$@"
train_command+=$train_args
echo "[tpu] on every worker of $tpu: $train_command"
exec gcloud "${gcloud_args[@]}" --command="$train_command"
