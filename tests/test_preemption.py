"""alp_jax/train/preemption.py: the SIGTERM handler chains to the one it replaces (Python or native) and puts it
back; grain workers ignore SIGTERM. The multi-process agreement itself runs in tests/test_train_processes.py."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import grain
import jax
import ml_collections
import numpy as np
import pytest

from alp_jax.data import pipeline
from alp_jax.train import preemption

REPO = Path(__file__).resolve().parent.parent


def _one_device_mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))


def test_sigterm_sets_the_request_and_chains_to_the_python_handler():
  seen = []
  original = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
  try:
    stop = preemption.StopRequest(_one_device_mesh())
    assert not stop.poll()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.poll()  # one process: no collective, the local flag decides
    assert seen == [signal.SIGTERM]
    stop.restore()
    os.kill(os.getpid(), signal.SIGTERM)
    assert seen == [signal.SIGTERM, signal.SIGTERM]  # the previous handler is back
  finally:
    signal.signal(signal.SIGTERM, original)


def test_restore_puts_back_the_default_action():
  original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
  try:
    preemption.StopRequest(_one_device_mesh()).restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  finally:
    signal.signal(signal.SIGTERM, original)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaction layout checked on Linux")
def test_jax_preemption_notifier_still_hears_sigterm(tmp_path):
  """jax.distributed.initialize installs a native SIGTERM handler (the preemption service's notifier). Ours
  chains to it, so reached_preemption_sync_point still sees the signal, and restore() reinstalls it."""
  code = textwrap.dedent("""
      import ctypes, os, signal, socket, time
      import jax, numpy as np
      from jax.experimental import multihost_utils
      from alp_jax.train import preemption
      with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
      jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=1, process_id=0)
      native = preemption._native_handler(signal.SIGTERM)
      assert native is not None, "no native SIGTERM handler after jax.distributed.initialize"
      stop = preemption.StopRequest(jax.sharding.Mesh(np.array(jax.devices()), ("data",)))
      os.kill(os.getpid(), signal.SIGTERM)
      assert stop.requested
      deadline, step = time.monotonic() + 20, 0
      while not multihost_utils.reached_preemption_sync_point(step):
        assert time.monotonic() < deadline, "the preemption service never heard the SIGTERM"
        step += 1
        time.sleep(0.05)
      stop.restore()
      assert preemption._native_handler(signal.SIGTERM)[1].handler == native[1].handler
      print("notified at step", step)
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "notified at step" in result.stdout


def _sigterm_disposition(i):
  import signal as signal_lib
  return np.int64(signal_lib.getsignal(signal_lib.SIGTERM) == signal_lib.SIG_IGN)


def test_grain_worker_processes_ignore_sigterm():
  cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers are spawned: ship the map function
  try:
    cfg = ml_collections.ConfigDict(dict(num_threads=1, prefetch_buffer_size=1, worker_count=1))
    dataset = grain.MapDataset.range(2).map(_sigterm_disposition)
    assert [int(x) for x in pipeline.to_iterator(dataset, cfg)] == [1, 1]
  finally:
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
  assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # the main process keeps its own handler
