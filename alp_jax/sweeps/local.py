"""Runs a plan's stages on this machine: subprocesses, up to `parallel` at once, in dependency order.

Every stage whose output is complete (alp_jax/sweeps/stages.py) is skipped, so a killed sweep continues where it
stopped and a finished one does nothing. A stage's stdout and stderr go to RUN_DIR/logs/KIND.log (appended, so a
resumed training keeps its earlier lines). A stage that fails writes RUN_DIR/FAILED.json {"stage", "error" (the
log's last lines), "log", "time"}; the stages that need it are skipped as "blocked by" it and every other goes
on. SIGTERM or SIGINT to the runner is passed to the running stages (a training saves and exits 75) and the
runner stops; the next call resumes. Measured stage times accumulate in DIR/stage_times.jsonl for the ETA.
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from alp_jax.sweeps import plan as plan_lib
from alp_jax.sweeps import stages as stages_lib

FAILED_FILE = "FAILED.json"
TIMES_FILE = "stage_times.jsonl"
ERROR_LINES = 20
PREEMPTED = 75


@dataclasses.dataclass
class Summary:
  skipped: list[str] = dataclasses.field(default_factory=list)     # complete before this call
  done: list[str] = dataclasses.field(default_factory=list)
  failed: dict = dataclasses.field(default_factory=dict)           # stage id -> FAILED.json content
  blocked: dict = dataclasses.field(default_factory=dict)          # stage id -> the failed stage it needed
  interrupted: list[str] = dataclasses.field(default_factory=list)
  stopped: bool = False                                            # a signal, or max_stages, ended the call

  @property
  def nothing_to_do(self) -> bool:
    return not (self.done or self.failed or self.blocked or self.interrupted)


def _tail(path: str, lines: int = ERROR_LINES) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except OSError:
    return ""


def _fmt_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


class _Times:
  """Measured seconds of finished stages (this call and earlier ones): the ETA's cost model."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, TIMES_FILE)
    self.rows = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.rows = [json.loads(line) for line in f if line.strip()]

  def add(self, stage: stages_lib.Stage, seconds: float) -> None:
    row = {"stage": stage.id, "kind": stage.kind, "steps": stage.new_steps, "seconds": round(seconds, 2)}
    self.rows.append(row)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def estimate(self, stage: stages_lib.Stage) -> float | None:
    same = [r for r in self.rows if r["kind"] == stage.kind]
    if not same:
      return None
    if stage.kind == stages_lib.TRAIN:
      per_step = sum(r["seconds"] for r in same) / max(sum(r["steps"] for r in same), 1)
      return per_step * stage.new_steps
    return sum(r["seconds"] for r in same) / len(same)


COMPILATION_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
COMPILATION_CACHE_DIR = "jax_cache"


def run(plan: plan_lib.Plan, *, parallel: int = 1, python: str | None = None, log=print,
        max_stages: int | None = None, env: dict | None = None) -> Summary:
  """Runs the incomplete stages of `plan`; returns what happened. `max_stages` stops after starting that many
  (a staged run; tests use it to stop a sweep midway)."""
  parallel = max(1, int(parallel))
  # Stages of one objective and size compile the same programs: XLA's persistent cache (one per sweep, unless the
  # caller's environment names one) lets every stage after the first load them instead of compiling again.
  stage_env = {COMPILATION_CACHE_ENV: os.path.join(plan.workdir, COMPILATION_CACHE_DIR), **os.environ}
  summary = Summary()
  times = _Times(plan.workdir)
  status = {}   # stage id -> skipped | pending | running | done | failed | blocked
  for stage in plan.stages:
    status[stage.id] = "skipped" if stages_lib.is_complete(stage) else "pending"
  summary.skipped = [i for i, s in status.items() if s == "skipped"]
  by_id = {s.id: s for s in plan.stages}
  finished: queue.Queue = queue.Queue()
  running: dict[str, tuple[subprocess.Popen, float]] = {}
  started = 0
  stop = threading.Event()         # start nothing more
  signalled = threading.Event()    # a signal: stages ending now were interrupted, not failed

  def on_signal(signum, frame):
    del frame
    log(f"[sweep] signal {signum}: stopping the running stages (they save what they can); run the same "
        f"command again to continue")
    stop.set()
    signalled.set()
    for proc, _ in list(running.values()):
      try:
        os.killpg(proc.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass

  handlers = {}
  if threading.current_thread() is threading.main_thread():
    for signum in (signal.SIGTERM, signal.SIGINT):
      handlers[signum] = signal.signal(signum, on_signal)

  def progress():
    counts = {k: sum(1 for s in status.values() if s == k)
              for k in ("skipped", "done", "running", "failed", "blocked", "pending")}
    pending = [by_id[i] for i, s in status.items() if s in ("pending", "running")]
    estimates = [times.estimate(s) for s in pending]
    known = [e for e in estimates if e is not None]
    eta = f"ETA {_fmt_seconds(sum(known) / parallel)}" if known else "ETA unknown until a stage of each kind ends"
    if known and len(known) < len(estimates):
      eta += f" (+{len(estimates) - len(known)} stage(s) of a kind not measured yet)"
    log(f"[sweep] {counts['skipped'] + counts['done']}/{len(status)} done ({counts['skipped']} before this call), "
        f"{counts['running']} running, {counts['failed']} failed, {counts['blocked']} blocked, "
        f"{counts['pending']} pending; {eta if pending else 'nothing left'}")

  def launch(stage: stages_lib.Stage):
    os.makedirs(os.path.dirname(stage.log), exist_ok=True)
    with open(stage.log, "a") as f:
      f.write(f"\n[sweep] {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(stage.argv(python))}\n")
    out = open(stage.log, "a")
    proc = subprocess.Popen(stage.argv(python), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**stage_env, **(env or {})})
    out.close()
    running[stage.id] = (proc, time.monotonic())
    threading.Thread(target=lambda: finished.put((stage.id, proc.wait())), daemon=True).start()
    log(f"[sweep] start {stage.id} (log {stage.log})")

  def block_dependants(failed_id: str):
    for stage in plan.stages:
      if status[stage.id] == "pending" and any(
          d == failed_id or summary.blocked.get(d) == failed_id for d in stage.deps):
        status[stage.id] = "blocked"
        summary.blocked[stage.id] = failed_id
    # Blocks propagate transitively: repeat until nothing changes.
    changed = True
    while changed:
      changed = False
      for stage in plan.stages:
        if status[stage.id] == "pending" and any(status.get(d) == "blocked" for d in stage.deps):
          status[stage.id] = "blocked"
          summary.blocked[stage.id] = summary.blocked[next(d for d in stage.deps if status.get(d) == "blocked")]
          changed = True

  def finish(stage_id: str, code: int):
    stage = by_id[stage_id]
    proc, t0 = running.pop(stage_id)
    seconds = time.monotonic() - t0
    failed_path = os.path.join(stage.run_dir, FAILED_FILE)
    if code == 0 and stages_lib.is_complete(stage):
      status[stage_id] = "done"
      summary.done.append(stage_id)
      times.add(stage, seconds)
      if os.path.exists(failed_path) and json.load(open(failed_path)).get("stage") == stage_id:
        os.remove(failed_path)
      log(f"[sweep] done {stage_id} in {_fmt_seconds(seconds)}")
    elif signalled.is_set() or code == PREEMPTED or code == -signal.SIGTERM:
      status[stage_id] = "pending"
      summary.interrupted.append(stage_id)
      log(f"[sweep] interrupted {stage_id} (exit {code}): it resumes on the next call")
    else:
      why = f"exit status {code}" if code else "exit status 0 but its output is not complete"
      record = {"stage": stage_id, "error": f"{why}\n{_tail(stage.log)}", "log": stage.log,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
      with open(failed_path, "w") as f:
        json.dump(record, f, indent=1)
      status[stage_id] = "failed"
      summary.failed[stage_id] = record
      block_dependants(stage_id)
      log(f"[sweep] FAILED {stage_id} ({why}); log {stage.log}")
    progress()

  progress()
  try:
    while True:
      ready = [s for s in plan.stages if status[s.id] == "pending" and s.id not in running
               and all(status[d] in ("skipped", "done") for d in s.deps)]
      while ready and len(running) < parallel and not stop.is_set():
        if max_stages is not None and started >= max_stages:
          stop.set()
          summary.stopped = True
          log(f"[sweep] started {started} stage(s) (--max-stages): stopping after the running ones")
          break
        launch(ready.pop(0))
        started += 1
      if not running:
        break
      finish(*finished.get())
  finally:
    for signum, handler in handlers.items():
      signal.signal(signum, handler)
  summary.stopped = summary.stopped or stop.is_set()
  return summary
