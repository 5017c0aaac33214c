"""Preemption on any number of hosts: SIGTERM on one process stops every process at the same step.

A scheduler (SLURM, a TPU VM's maintenance, Kubernetes) sends SIGTERM to some processes of a job, not
necessarily all, and not at the same step. If each process saved when its own flag was set, the signalled ones
would enter the checkpoint's barriers while the others entered the next step's collectives: the job hangs. So
the local flag is only a request; `StopRequest.poll()`, called once per step by every process, returns True on
all processes at the same step:

  * one process: the local flag, no collective;
  * several: every step each process contributes its flag to a tiny jitted max over a global array (one
    element per device); the result is read one step later, after the next step has been dispatched, so the host
    never waits on the device for it (as with the metrics). All processes read the same reduced value after the
    same step, so they agree: a SIGTERM seen on any process at step s stops all of them at step s+1 (or s+2).

Why not JAX's `multihost_utils.reached_preemption_sync_point` (or Orbax's `reached_preemption`, built on it):
it needs the coordination service's preemption notifier, a native SIGTERM handler that
jax.distributed.initialize installs, so it answers False on one process and as soon as any Python code (ours
included) installs a SIGTERM handler after it, the notifier never hears the signal; its listener polls once a
second, and the sync step is decided by a background protocol we cannot test deterministically. The all-reduce
is a plain collective that works the same on CPU (gloo), GPU and TPU, and the test in
tests/test_train_processes.py signals one of two real processes.

The handler chains: a previously installed Python handler is called, and so is a native one (the notifier
above: found with sigaction(2) and called through ctypes, since Python cannot see it), so JAX's preemption
service still learns of the signal; `restore()` puts the previous handler back. The default action (terminate)
is what this replaces, so it is not chained.

A run that stopped this way has saved a checkpoint on every process and exits with PREEMPTED_EXIT_CODE
(alp_jax/train/__main__.py): "saved, start me again with the same workdir" (launch/README.md).
"""
from __future__ import annotations

import ctypes
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np

# EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to retry". Distinct from success (0), from an
# error (1), and from a process killed by a signal (a shell reports 128 + signal: 137 SIGKILL, 143 SIGTERM), so a
# wrapper can requeue exactly the runs that saved a checkpoint and asked for it.
PREEMPTED_EXIT_CODE = 75

_SA_SIGINFO = 4


class _SigAction(ctypes.Structure):
  """glibc's struct sigaction, with room to spare: only the handler and the flags are read."""
  _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
              ("rest", ctypes.c_byte * 64)]


def _native_handler(signum: int):
  """(callable, struct) for a handler installed from C/C++ (not by Python, not SIG_DFL/SIG_IGN), else None."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    current = _SigAction()
    if libc.sigaction(signum, None, ctypes.byref(current)) != 0 or current.handler in (None, 0, 1):
      return None
  except (OSError, AttributeError):
    return None
  if current.flags & _SA_SIGINFO:
    info = (ctypes.c_byte * 128)()
    ctypes.c_int.from_buffer(info).value = signum  # si_signo
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(current.handler)
    return (lambda: fn(signum, ctypes.addressof(info), None)), current
  fn = ctypes.CFUNCTYPE(None, ctypes.c_int)(current.handler)
  return (lambda: fn(signum)), current


class StopRequest:
  """SIGTERM -> a local request; `poll()` -> whether every process stops after this step (see the module doc)."""

  def __init__(self, mesh: jax.sharding.Mesh, signum: int = signal.SIGTERM):
    self.requested = False
    self.signum = signum
    self._pending = None  # the reduced flag of the previous step, not yet read
    self._multi = jax.process_count() > 1
    if self._multi:  # one flag per device, sharded over every mesh axis; the max comes back replicated
      self._sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*mesh.axis_names))
      self._shape = mesh.devices.shape
      self._reduce = jax.jit(jnp.max, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    python_previous = signal.getsignal(signum)
    self._native = None if callable(python_previous) else _native_handler(signum)
    self._python_previous = python_previous
    signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    self.requested = True
    if callable(self._python_previous):
      self._python_previous(signum, frame)
    elif self._native is not None:
      self._native[0]()

  def poll(self) -> bool:
    """Call once per step on every process, after dispatching the step: True on all processes at the same step."""
    if not self._multi:
      return self.requested
    agreed = self._pending is not None and bool(jax.device_get(self._pending))
    self._pending = None
    if not agreed:
      flag = np.int32(self.requested)
      shards = [jax.device_put(np.full((1,) * len(self._shape), flag), d)
                for d in self._sharding.addressable_devices]
      self._pending = self._reduce(jax.make_array_from_single_device_arrays(self._shape, self._sharding, shards))
    return agreed

  def restore(self) -> None:
    """Puts the previous handler back (a native one through sigaction, as it was)."""
    if self._native is not None:
      signal.signal(self.signum, signal.SIG_DFL)  # Python's own record first, then the native handler itself
      ctypes.CDLL(None).sigaction(self.signum, ctypes.byref(self._native[1]), None)
    else:
      previous = self._python_previous
      signal.signal(self.signum, previous if previous is not None else signal.SIG_DFL)
