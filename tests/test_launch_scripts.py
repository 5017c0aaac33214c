"""launch/ scripts, run with stub programs in place of python, srun and gcloud: the exact trainer command each
one assembles (argv as the trainer receives it, environment, tcmalloc preload), without a cluster or jax."""
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = ["local.sh", "slurm_gpu.sbatch", "tpu_pod.sh", "install_system_packages.sh"]
TCMALLOC_PATHS = ["/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"]
# A flag with a space, quotes and a glob character: quoting mistakes anywhere on the way change it.
ODD_FLAG = "--config.data.corpus_dir=/data/my corpus/'x'*"

# Records, per call in its own numbered file, the variables the launch scripts set (as the trainer would see
# them), an empty field, then its argv; fields are NUL-separated.
TRAINER_STUB = r"""#!/bin/bash
n=$(ls "$STUB_LOG" | grep -c '^trainer' || true)
{ printf 'PWD=%s\0' "$PWD"
  for v in LD_PRELOAD ALP_DISTRIBUTED JAX_LOCAL_DEVICE_IDS; do
    if [ -n "${!v+x}" ]; then printf '%s=%s\0' "$v" "${!v}"; else printf '%s=<unset>\0' "$v"; fi
  done
  printf '\0'
  printf '%s\0' "$@"
} > "$STUB_LOG/trainer$n"
"""
# Records its own options and the environment of the step, then runs the task once, as one srun task would.
SRUN_STUB = r"""#!/bin/bash
printf '%s\0' "$@" > "$STUB_LOG/srun"
while [[ $1 == -* ]]; do shift; done
exec "$@"
"""
# Records its argv (scontrol requeue JOBID).
SCONTROL_STUB = r"""#!/bin/bash
printf '%s\0' "$@" > "$STUB_LOG/scontrol"
"""
# A trainer that exits with STUB_EXIT, or runs until SIGTERM and then exits 75 as the real one does after saving.
TRAINER_EXIT_STUB = r"""#!/bin/bash
if [ -n "${STUB_EXIT-}" ]; then exit "$STUB_EXIT"; fi
trap 'echo sigterm >> "$STUB_LOG/events"; kill "$sleeper" 2>/dev/null; exit 75' TERM
sleep 60 &
sleeper=$!
echo started >> "$STUB_LOG/events"
wait "$sleeper"
"""
# Each call's argv in its own numbered file.
GCLOUD_STUB = r"""#!/bin/bash
n=$(ls "$STUB_LOG" | grep -c '^gcloud' || true)
printf '%s\0' "$@" > "$STUB_LOG/gcloud$n"
"""


def _write_exe(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return path


def _nul_fields(path: Path) -> list[str]:
  return path.read_bytes().decode().split("\0")[:-1]


def _trainer_calls(log: Path) -> list[tuple[dict, list[str]]]:
  """[(environment seen, argv)] per trainer stub call, in call order."""
  calls = []
  for i in range(len(list(log.glob("trainer*")))):
    fields = _nul_fields(log / f"trainer{i}")
    split = fields.index("")
    calls.append((dict(f.split("=", 1) for f in fields[:split]), fields[split + 1:]))
  return calls


@pytest.fixture
def sandbox(tmp_path):
  """(stub directory on PATH, log directory, base environment without SLURM or tcmalloc settings)."""
  bin_dir, log = tmp_path / "bin", tmp_path / "log"
  log.mkdir()
  _write_exe(bin_dir / "trainer_python", TRAINER_STUB)
  _write_exe(bin_dir / "srun", SRUN_STUB)
  _write_exe(bin_dir / "gcloud", GCLOUD_STUB)
  _write_exe(bin_dir / "scontrol", SCONTROL_STUB)
  env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "STUB_LOG": str(log),
         "ALP_PYTHON": str(bin_dir / "trainer_python"), "ALP_TCMALLOC": "0"}
  return bin_dir, log, env


def _run(args, env, cwd, check=True):
  result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def _trainer_argv(config, workdir, *flags):
  return ["-m", "alp_jax.train", "--config", config, "--workdir", workdir, *flags]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bash_syntax(script):
  result = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


# --- launch/local.sh


def test_local_command_with_explicit_tcmalloc(sandbox, tmp_path):
  bin_dir, log, env = sandbox
  fake_lib = tmp_path / "libtcmalloc_fake.so"
  fake_lib.write_bytes(b"")
  env.update(ALP_TCMALLOC=str(fake_lib), LD_PRELOAD="/opt/other.so")
  result = _run(["bash", str(LAUNCH / "local.sh"), "configs/clap.py:tiny", "runs/a b", ODD_FLAG], env, tmp_path)
  [(seen, argv)] = _trainer_calls(log)
  assert argv == _trainer_argv("configs/clap.py:tiny", "runs/a b", ODD_FLAG)
  assert seen["LD_PRELOAD"] == f"{fake_lib}:/opt/other.so"
  assert seen["ALP_DISTRIBUTED"] == "<unset>"
  assert seen["PWD"] == str(tmp_path)  # runs where it is called from
  # The printed line is a shell command that re-creates exactly this call.
  [line] = [l for l in result.stdout.splitlines() if l.startswith("[launch] ")]
  assert shlex.split(line[len("[launch] "):]) == [f"LD_PRELOAD={fake_lib}:/opt/other.so", env["ALP_PYTHON"],
                                                  *argv]


def test_local_tcmalloc_off_and_missing(sandbox, tmp_path):
  bin_dir, log, env = sandbox
  _run(["bash", str(LAUNCH / "local.sh"), "c.py", "w"], env, tmp_path)
  [(seen, argv)] = _trainer_calls(log)
  assert seen["LD_PRELOAD"] == "<unset>" and argv == _trainer_argv("c.py", "w")
  env["ALP_TCMALLOC"] = str(tmp_path / "absent.so")
  result = _run(["bash", str(LAUNCH / "local.sh"), "c.py", "w"], env, tmp_path, check=False)
  assert result.returncode == 2 and "ALP_TCMALLOC" in result.stderr
  assert len(_trainer_calls(log)) == 1  # the trainer did not start


def test_local_tcmalloc_detected_where_installed(sandbox, tmp_path):
  bin_dir, log, env = sandbox
  del env["ALP_TCMALLOC"]
  _run(["bash", str(LAUNCH / "local.sh"), "c.py", "w"], env, tmp_path)
  [(seen, _)] = _trainer_calls(log)
  installed = [p for p in TCMALLOC_PATHS if os.path.isfile(p)]
  assert seen["LD_PRELOAD"] == (installed[0] if installed else "<unset>")
  # Already preloaded (e.g. by the caller): not added twice.
  if installed:
    env["LD_PRELOAD"] = installed[0]
    _run(["bash", str(LAUNCH / "local.sh"), "c.py", "w"], env, tmp_path)
    assert _trainer_calls(log)[1][0]["LD_PRELOAD"] == installed[0]


def test_local_prefers_the_repo_venv(sandbox, tmp_path):
  bin_dir, log, env = sandbox
  del env["ALP_PYTHON"]
  fake_repo = tmp_path / "repo"
  (fake_repo / "launch").mkdir(parents=True)
  shutil.copy(LAUNCH / "local.sh", fake_repo / "launch" / "local.sh")
  _write_exe(bin_dir / "python3", TRAINER_STUB.replace('trainer', 'python3_'))
  _run(["bash", str(fake_repo / "launch" / "local.sh"), "c.py", "w"], env, tmp_path)
  assert (log / "python3_0").exists() and not _trainer_calls(log)  # no venv: python3 from PATH
  venv_python = _write_exe(fake_repo / ".venv" / "bin" / "python", TRAINER_STUB)
  result = _run(["bash", str(fake_repo / "launch" / "local.sh"), "c.py", "w"], env, tmp_path)
  assert _trainer_calls(log)[0][1] == _trainer_argv("c.py", "w")
  assert f"[launch] {venv_python} -m alp_jax.train" in result.stdout


def test_local_usage(sandbox, tmp_path):
  _, log, env = sandbox
  result = _run(["bash", str(LAUNCH / "local.sh"), "only_config.py"], env, tmp_path, check=False)
  assert result.returncode == 2 and "usage" in result.stderr and not _trainer_calls(log)


# --- launch/slurm_gpu.sbatch


def _sbatch_header() -> dict[str, str]:
  """#SBATCH options, checking they all precede the first command (sbatch stops reading there)."""
  options, seen_command = {}, False
  for line in (LAUNCH / "slurm_gpu.sbatch").read_text().splitlines()[1:]:
    if line.startswith("#SBATCH"):
      assert not seen_command, f"#SBATCH after the first command is ignored by sbatch: {line}"
      key, _, value = line.split()[1].partition("=")
      options[key] = value
    elif line.strip() and not line.startswith("#"):
      seen_command = True
  return options


def test_slurm_header():
  options = _sbatch_header()
  assert {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--cpus-per-task", "--time"} <= set(options)
  assert options["--ntasks-per-node"] == options["--gpus-per-node"]  # one process per GPU
  # Preemption: SIGTERM to the batch script (B:) 2 minutes before the limit, requeue allowed, the log appended to.
  assert options["--signal"] == "B:TERM@120" and "--requeue" in options and options["--open-mode"] == "append"


def _slurm_env(env, **extra):
  env = dict(env, SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="4", SLURM_CPUS_PER_TASK="6")
  env.update(extra)
  return env


def test_slurm_one_process_per_gpu(sandbox, tmp_path):
  _, log, env = sandbox
  result = _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "configs/clap.py:base", "/shared/runs/x",
                 "--config.batch_size=64", ODD_FLAG], _slurm_env(env), tmp_path)
  srun_args = _nul_fields(log / "srun")
  options = [a for a in srun_args if a.startswith("-") and srun_args.index(a) < srun_args.index("bash")]
  assert {"--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=6", "--kill-on-bad-exit=1"} <= set(options)
  assert not any(o.startswith(("--gpus-per-task", "--gpu-bind")) for o in options)
  assert srun_args[len(options):len(options) + 2] == ["bash", str(LAUNCH / "local.sh")]
  [(seen, argv)] = _trainer_calls(log)
  assert argv == _trainer_argv("configs/clap.py:base", "/shared/runs/x", "--config.batch_size=64", ODD_FLAG)
  assert seen["ALP_DISTRIBUTED"] == "1"
  assert seen["JAX_LOCAL_DEVICE_IDS"] == "<unset>"  # JAX picks GPU SLURM_LOCALID itself
  assert seen["PWD"] == str(REPO)  # config paths are relative to the repo
  assert "per_gpu" in result.stdout


def test_slurm_one_process_per_node_from_environment(sandbox, tmp_path):
  _, log, env = sandbox
  env = _slurm_env(env, ALP_SLURM_MODE="per_node", CONFIG="configs/cappa.py:base", WORKDIR="/shared/runs/y",
                   SLURM_SUBMIT_DIR=str(REPO))
  _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--config.seed=3"], env, tmp_path)
  srun_args = _nul_fields(log / "srun")
  assert {"--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=24"} <= set(srun_args)  # 4 GPUs x 6 cores
  [(seen, argv)] = _trainer_calls(log)
  assert argv == _trainer_argv("configs/cappa.py:base", "/shared/runs/y", "--config.seed=3")
  assert seen["ALP_DISTRIBUTED"] == "1"
  assert seen["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"  # all GPUs of the node, not just SLURM_LOCALID's


@pytest.mark.parametrize("extra, args, message", [
    (dict(ALP_SLURM_MODE="per_rack"), ["c.py", "w"], "ALP_SLURM_MODE"),
    (dict(ALP_REPO="/nonexistent"), ["c.py", "w"], "ALP_REPO"),
    ({}, ["--config.seed=1"], "usage"),
])
def test_slurm_errors(sandbox, tmp_path, extra, args, message):
  _, log, env = sandbox
  result = _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), *args], _slurm_env(env, **extra), tmp_path,
                check=False)
  assert result.returncode == 2 and message in result.stderr and not (log / "srun").exists()


def test_slurm_sigterm_is_forwarded_and_the_job_requeued(sandbox, tmp_path):
  """SLURM's lead-time SIGTERM reaches the batch script only: it passes it on to srun's tasks and, when the
  trainer exits 75 (saved), requeues the job."""
  bin_dir, log, env = sandbox
  env["ALP_PYTHON"] = str(_write_exe(bin_dir / "trainer_exit", TRAINER_EXIT_STUB))
  script = subprocess.Popen(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "c.py", "/shared/w"], env=_slurm_env(env),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  events = log / "events"
  deadline = time.monotonic() + 20
  while not (events.exists() and "started" in events.read_text()):
    assert time.monotonic() < deadline and script.poll() is None, script.communicate()
    time.sleep(0.05)
  script.send_signal(signal.SIGTERM)
  out, err = script.communicate(timeout=30)
  assert events.read_text().split() == ["started", "sigterm"]
  assert script.returncode == 75, err
  assert _nul_fields(log / "scontrol") == ["requeue", "4242"]
  assert "requeueing job 4242" in out


@pytest.mark.parametrize("exit_status, requeued", [(75, True), (0, False), (1, False)])
def test_slurm_requeues_only_a_preempted_trainer(sandbox, tmp_path, exit_status, requeued):
  bin_dir, log, env = sandbox
  env.update(ALP_PYTHON=str(_write_exe(bin_dir / "trainer_exit", TRAINER_EXIT_STUB)), STUB_EXIT=str(exit_status))
  result = _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "c.py", "w"], _slurm_env(env), tmp_path, check=False)
  assert result.returncode == exit_status, result.stderr
  assert (log / "scontrol").exists() == requeued


# --- launch/tpu_pod.sh


def _gcloud_calls(log: Path) -> list[list[str]]:
  return [_nul_fields(log / f"gcloud{i}") for i in range(len(list(log.glob("gcloud*"))))]


def _split_command(call: list[str]) -> tuple[list[str], str]:
  [command] = [a[len("--command="):] for a in call if a.startswith("--command=")]
  return [a for a in call if not a.startswith("--command=")], command


def test_tpu_pod_runs_the_trainer_on_every_worker(sandbox, tmp_path):
  _, log, env = sandbox
  env["ALP_REMOTE_DIR"] = str(REPO)  # the "worker" below runs in this checkout
  _run(["bash", str(LAUNCH / "tpu_pod.sh"), "my-pod", "us-west4-a", "configs/clap.py:base", "gs://bkt/runs/x",
        ODD_FLAG], env, tmp_path)
  [call] = _gcloud_calls(log)
  ssh_args, command = _split_command(call)
  assert ssh_args == ["compute", "tpus", "tpu-vm", "ssh", "my-pod", "--zone=us-west4-a", "--worker=all"]
  assert "ALP_DISTRIBUTED=1" in command and "configs/clap.py:base" in command and "gs://bkt/runs/x" in command
  # Run the worker command as a worker's shell would: the trainer gets the arguments unchanged.
  _run(["bash", "-c", command], env, tmp_path)
  [(seen, argv)] = _trainer_calls(log)
  assert argv == _trainer_argv("configs/clap.py:base", "gs://bkt/runs/x", ODD_FLAG)
  assert seen["ALP_DISTRIBUTED"] == "1" and seen["PWD"] == str(REPO)


def test_tpu_pod_project_and_relative_workdir_warning(sandbox, tmp_path):
  _, log, env = sandbox
  env["ALP_TPU_PROJECT"] = "my-project"
  result = _run(["bash", str(LAUNCH / "tpu_pod.sh"), "pod", "zone-a", "c.py", "runs/local"], env, tmp_path)
  [call] = _gcloud_calls(log)
  assert "--project=my-project" in call and "--worker=all" in call
  assert "warning" in result.stderr and "gs://" in result.stderr


def test_tpu_pod_setup_clones_installs_then_trains(sandbox, tmp_path):
  bin_dir, log, env = sandbox
  env.update(ALP_REPO_URL="https://example.org/alp-jax.git")
  _run(["bash", str(LAUNCH / "tpu_pod.sh"), "--setup", "pod", "zone-a", "c.py", "gs://b/w"], env, tmp_path)
  setup_call, train_call = _gcloud_calls(log)
  assert _split_command(setup_call)[0] == _split_command(train_call)[0]  # same workers
  assert "ALP_DISTRIBUTED=1" in _split_command(train_call)[1]
  # Execute the setup command on a fake worker: git, make, sudo and the venv's python are recorders.
  worker_home = tmp_path / "worker"
  worker_home.mkdir()
  recorder = 'printf "%s\\n" "$(basename "$0") $*" >> "$STUB_LOG/worker"\n'
  _write_exe(bin_dir / "make", "#!/bin/bash\n" + recorder)
  _write_exe(bin_dir / "sudo", "#!/bin/bash\nexit 1\n")  # sudo needs a password: no system packages
  _write_exe(bin_dir / "git", "#!/bin/bash\n" + recorder + (
      'if [ "$1" = clone ]; then mkdir -p "$3/.git" "$3/.venv/bin"; cp "$0.python" "$3/.venv/bin/python"; fi\n'))
  _write_exe(bin_dir / "git.python", "#!/bin/bash\n" + recorder)
  setup_command = _split_command(setup_call)[1]
  _run(["bash", "-c", setup_command], env, worker_home)
  jax_version = [l.split("==")[1] for l in (REPO / "requirements.txt").read_text().splitlines()
                 if l.startswith("jaxlib==")][0]
  assert (log / "worker").read_text().splitlines() == [
      "git clone https://example.org/alp-jax.git alp-jax", "make venv",
      f"python -m pip install -q jax[tpu]=={jax_version}"]
  # Second time: the clone exists, so it is updated instead.
  (log / "worker").unlink()
  _run(["bash", "-c", setup_command], env, worker_home)
  assert (log / "worker").read_text().splitlines()[0] == "git -C alp-jax pull --ff-only"
