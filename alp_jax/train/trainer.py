"""The trainer: one loop for every objective, on 1 CPU device, 8 fake devices or a multi-host pod.

  python -m alp_jax.train --config configs/clap.py:tiny --workdir DIR [--config.field=value ...]

Sections, top to bottom: distributed init, mesh, data, model + sharding, update step, checkpoint (resume),
evaluators, loop. The step compiles once per batch shape: one, or one per duration bucket (data.batch_seconds;
docs/data.md), each step running the executable of its batch's shape. Restarting with the same workdir resumes
exactly (parameters, optimizer, step, RNG and the grain iterator position, with the run's own copy of its
tokenizer: alp_jax/train/runs.py).
Preemption: SIGTERM on any process (one host of a pod, or all) stops every process at the same step
(alp_jax/train/preemption.py), all save that step together, and the command exits with status 75
(preemption.PREEMPTED_EXIT_CODE, EX_TEMPFAIL: "saved; start me again with the same workdir"; train() returns
summary["preempted"] = True). launch/slurm_gpu.sbatch requeues the job on it. A non-finite loss or gradient never
reaches the parameters: the update is rejected on device; with nonfinite="stop" the run stops at the next host
check naming the step (the last checkpoint stays intact), with nonfinite="skip" it continues and counts.
"""
from __future__ import annotations

import math
import os
import time

import jax
from jax.experimental import multihost_utils
import ml_collections

from alp_jax import models
from alp_jax import objectives
from alp_jax import sharding as sharding_lib
from alp_jax.data import paths
from alp_jax.data import pipeline
from alp_jax.train import evaluators as evaluator_registry
from alp_jax.train import flops as flops_lib
from alp_jax.train import branch as branch_lib
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import compute as compute_lib
from alp_jax.train import distributed
from alp_jax.train import encoder_init
from alp_jax.train import freeze
from alp_jax.train import metrics as metrics_lib
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import perf
from alp_jax.train import preemption as preemption_lib
from alp_jax.train import runs
from alp_jax.train import state as state_lib
from alp_jax.train import step as step_lib
from alp_jax.train import text_init


class NonFiniteLossError(RuntimeError):
  pass


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def _fmt_seconds(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def row_multiple(config, mesh) -> int:
  """What every global batch's rows must be a multiple of: the batch shards and the accumulation steps (the
  pipeline adds the process count)."""
  shards = math.prod(mesh.shape[a] for a in sharding_lib.BATCH_AXES)
  return math.lcm(shards, int(config.get("grad_accum_steps", 1) or 1))


def abstract_batches(config, mesh) -> list[dict[str, jax.ShapeDtypeStruct]]:
  """Every global batch the step compiles against (one, or one per duration bucket with data.batch_seconds):
  the pipeline's schemas, sharded over the batch axes."""
  sharding = sharding_lib.batch_sharding(mesh)
  specs = pipeline.batch_specs(config.data, config.batch_size, config.model.get("num_classes", 0),
                               row_multiple=row_multiple(config, mesh), process_count=jax.process_count())
  return [{k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in spec.items()}
          for spec in specs]


def abstract_batch(config, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch of a fixed-crop run (the first of `abstract_batches`)."""
  return abstract_batches(config, mesh)[0]


def shape_config(config, spec) -> ml_collections.ConfigDict:
  """config with batch_size and crop_seconds set to one batch shape (for the analytic FLOPs of that shape)."""
  rows, samples = spec["audio"].shape
  shaped = config.copy_and_resolve_references()
  shaped.batch_size, shaped.data.crop_seconds = rows, samples / pipeline.SAMPLE_RATE
  return shaped


def scanned_parts(model_cfg: ml_collections.ConfigDict) -> list[str]:
  """Sub-configs of config.model (towers, decoder ...) that compile their layers as one scanned layer."""
  return [name for name, part in model_cfg.items()
          if isinstance(part, ml_collections.ConfigDict) and part.get("scan_layers")]


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Runs (or resumes) training in `workdir` (local or gs://...); returns a summary dict."""
  started = time.monotonic()   # wall time of this start (compute.json sums it over restarts)
  workdir = paths.resolve(workdir)
  pipeline.check_corpus_dir(config.data)   # before anything starts: a non-tiny config names no corpus
  # --- Distributed and mesh.
  distributed.maybe_initialize(config.get("distributed"))
  mesh = sharding_lib.mesh_from_config(config.mesh, sharding_lib.devices_from_config(config.mesh))
  if not config.data.get("batch_seconds"):   # bucket rows are made multiples of the shards (row_multiple)
    sharding_lib.check_global_batch(config.batch_size, mesh)
  _log(f"[train] {jax.process_count()} process(es), {jax.device_count()} {jax.devices()[0].platform} device(s), "
       f"mesh {dict(mesh.shape)}")

  # --- Data: the run's own tokenizer (copied at the first start), sizes from the data, config.json.
  branch = None   # (trunk workdir, step): the first start of a cooldown branch (train/branch.py)
  if config.get("branch_from") and not ckpt_lib.has_checkpoint(workdir):
    branch = branch_lib.parse(config.branch_from)
    if (branch[0] / runs.TOKENIZER_FILE).exists():   # the trunk's own copy, not today's corpus tokenizer
      with config.unlocked():
        config.data.tokenizer = os.fspath(branch[0] / runs.TOKENIZER_FILE)
  runs.start_tokenizer(workdir, config, log=_log)
  runs.set_data_sizes(config)
  text_init.configure(config)   # a pretrained text side: its architecture into config.json, its tokenizer checked
  changed = runs.check_resume(workdir, config)   # a resume with another config is refused here, before any write
  if branch:
    branch_lib.check(config, *branch)   # the trunk's config but for the total steps; the same schedule until the fork
  if changed:
    _log(f"[train] resuming with changed settings (the previous config.json goes to {runs.HISTORY_DIR}/): "
         + "; ".join(changed))
  if jax.process_index() == 0:
    runs.write_config(workdir, config)
  process_index, process_count = jax.process_index(), jax.process_count()
  data_iter = pipeline.host_iterator(config.data, config.batch_size, process_index=process_index,
                                     process_count=process_count, row_multiple=row_multiple(config, mesh))

  # --- Model, optimizer, shardings.
  scanned = scanned_parts(config.model)
  if scanned and mesh.size > 1 and mesh.devices.flat[0].platform == "cpu":
    _log(f"[train] warning: scan_layers on {scanned} with {mesh.size} CPU devices: jaxlib 0.10.2's CPU "
         f"collectives inside scanned layers can deadlock (observed here); set scan_layers=False on CPU meshes")
  objective = objectives.get(config.loss)
  batch_specs = abstract_batches(config, mesh)
  objective.check(models.MODELS.get(config.model.name), tuple(batch_specs[0]), model_cfg=config.model)
  evaluator_registry.check_all(config)   # bad evaluator options fail here, before anything compiles
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  graphdef, abstract, shardings = state_lib.state_shardings(config, mesh, tx)
  problems = sharding_lib.sharding_report(abstract["params"], shardings["params"], mesh, config.mesh.rules,
                                          config.mesh.min_sharded_size)
  if problems:
    msg = "parameters that the rules shard are replicated:\n  " + "\n  ".join(problems[:20])
    if config.mesh.get("require_sharded", True):
      raise ValueError(msg + "\nchange config.mesh sizes or rules (or set config.mesh.require_sharded=False)")
    _log("[train] warning: " + msg)

  # --- Checkpoint: resume or fresh init.
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints, async_save=config.async_checkpoints,
                                       best_metric=config.get("best_metric") or None,
                                       best_mode=config.get("best_mode", "min"),
                                       keep_steps=config.get("keep_steps", ()))
  start_step = checkpointer.latest_step()
  restore_seconds = None
  inherited = None   # a branch's compute totals at its fork
  if start_step is not None:
    t0 = time.perf_counter()
    state = checkpointer.restore(start_step, ckpt_lib.abstract_with_shardings(abstract, shardings), data_iter)
    restore_seconds = time.perf_counter() - t0
    _log(f"[train] resumed from {checkpointer.directory}/{start_step} in {restore_seconds:.2f}s")
  elif branch:
    trunk_dir, start_step = branch
    t0 = time.perf_counter()
    trunk = ckpt_lib.Checkpointer(trunk_dir, read_only=True)
    try:
      if start_step not in trunk.all_steps():
        raise FileNotFoundError(
            f"branch_from={branch_lib.describe(*branch)}: {trunk.directory} holds steps {trunk.all_steps()}, not "
            f"{start_step}; train the trunk with --config.keep_steps including {start_step}")
      state = trunk.restore(start_step, ckpt_lib.abstract_with_shardings(abstract, shardings), data_iter)
    finally:
      trunk.close()
    restore_seconds = time.perf_counter() - t0
    inherited = branch_lib.inherited_compute(trunk_dir, start_step)
    copied = branch_lib.copy_metrics(trunk_dir, workdir, start_step) if jax.process_index() == 0 else 0
    _log(f"[train] cooldown branch of {branch_lib.describe(*branch)}: restored its state and data position in "
         f"{restore_seconds:.2f}s; {copied} metric rows and its compute totals carried over; training steps "
         f"{start_step + 1}..{config.total_steps}")
  else:
    state = state_lib.init_state(config, mesh, tx, shardings, config.seed)
    if config.get("model_init"):
      state = encoder_init.load_into_state(state, config.model_init, mesh)
      _log(f"[train] audio encoder initialised from {config.model_init}")
    state, lines = text_init.load_into_state(state, config)
    for line in lines:
      _log(f"[train] {line}")
    start_step = 0
  # Metrics logged past the restored step (a crash after the last checkpoint) are dropped: each step once.
  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.get("tensorboard", True), resume_step=start_step)
  if writer.dropped_rows:
    _log(f"[train] dropped {writer.dropped_rows} metrics.jsonl row(s) past step {start_step} (logged before the "
         f"restart; those steps run again)")
  n_params = state_lib.count_params(state["params"])
  _log(f"[train] {config.model.name}: {n_params / 1e6:.2f}M parameters, objective {config.loss.kind}")
  frozen = freeze.names(config.optimizer.get("frozen", ()))
  if frozen:
    n_frozen, n_trainable = freeze.count(state["params"], frozen)
    _log(f"[train] frozen {', '.join(frozen)}: {n_frozen / 1e6:.2f}M parameters never updated"
         f"{' (a frozen audio encoder runs in eval mode)' if config.optimizer.get('frozen_eval_mode', True) else ''}"
         f"; {n_trainable / 1e6:.2f}M trainable")

  if state_lib.keeps_average(config):
    _log(f"[train] parameter average (params_avg) updated every {config.optimizer.average_period} steps; "
         f"export it with python -m alp_jax.export --averaged")

  # --- Update step: compiled once per batch shape (one, or one per duration bucket), state donated.
  train_step = step_lib.make_train_step(graphdef, tx, schedule, config, mesh, shardings)
  peak = perf.peak_flops_per_device(config.get("peak_flops_per_device", 0.0))
  unrolled_step = None
  if scanned:  # the compiler counts a scanned layer once: count FLOPs on an unrolled lowering instead
    unrolled = config.copy_and_resolve_references()
    for k in scanned:
      unrolled.model[k].scan_layers = False
    g2, a2, s2 = state_lib.state_shardings(unrolled, mesh, tx)
    unrolled_step = (step_lib.make_train_step(g2, tx, schedule, unrolled, mesh, s2),
                     ckpt_lib.abstract_with_shardings(a2, s2))
  compiled, step_cost = {}, {}   # global audio shape -> executable; -> (XLA FLOPs per device, analytic FLOPs)
  for spec in batch_specs:
    key = spec["audio"].shape
    with jax.set_mesh(mesh):
      compiled[key] = train_step.lower(state, spec).compile()
    flops = perf.compiled_flops(compiled[key])
    if unrolled_step:
      with jax.set_mesh(mesh):
        flops = perf.lowered_flops(unrolled_step[0].lower(unrolled_step[1], spec)) / mesh.size
    model_flops = flops_lib.step_flops(shape_config(config, spec))
    step_cost[key] = (flops, model_flops)
    shape = f"batch {key[0]} x {key[1] / pipeline.SAMPLE_RATE:g} s: " if len(batch_specs) > 1 else ""
    _log(perf.memory_summary(compiled[key]) + (f" ({shape.rstrip(': ')})" if shape else ""))
    _log(f"[train] step: {shape}{flops * mesh.size / 1e9:.1f} GFLOP by XLA ({flops / 1e9:.2f} per device), "
         f"{model_flops / 1e9:.1f} GFLOP of model matmuls (analytic), device matmul peak {peak / 1e9:.0f} GFLOP/s"
         if flops else
         f"[train] step: {shape}{model_flops / 1e9:.1f} GFLOP of model matmuls (analytic; none from XLA)")
  # compute.json's per-step figures: the fixed shape's, or the largest bucket's (totals count each step's own)
  flops, model_flops = max(step_cost.values(), key=lambda c: c[1])
  ledger = compute_lib.Ledger(workdir, source_names=pipeline.source_names(config.data), batch_size=config.batch_size,
                              flops_per_step=model_flops, xla_flops_per_step=flops * mesh.size,
                              start_step=start_step, started=started, log=_log, inherited=inherited,
                              branched_from=branch_lib.describe(*branch) if branch else None,
                              keep_steps=checkpointer.keep_steps)

  # --- Evaluators.
  evaluators = evaluator_registry.build_all(config, graphdef=graphdef, mesh=mesh)

  # --- Loop.
  preemption = preemption_lib.StopRequest(mesh)  # SIGTERM handler (chained); all processes stop at one step
  pending = None  # (step, device metrics) of the last log step: fetched one step late
  rate = {"origin": None}
  done = {"samples": 0, "xla_flops": 0.0}   # since this start: real rows (this host's x processes), XLA FLOPs/device
  save_seconds: list[float] = []
  last_eval: dict[str, float] = {}
  loop_start = time.perf_counter()
  losses = {}
  step = start_step
  summary = {"workdir": str(workdir), "start_step": start_step}

  def flush(pending_item):
    log_step, device_metrics, log_done = pending_item
    m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    if m.get("nonfinite", 0) > 0 and config.nonfinite == "stop":
      raise NonFiniteLossError(f"non-finite loss or gradient at step {int(m['first_nonfinite_step'])}; the update "
                               f"was not applied and the last checkpoint in {checkpointer.directory} is intact. "
                               f"Lower the learning rate, check the data, or set --config.nonfinite=skip")
    now = time.perf_counter()
    # Averaged since the first log step (flushes are one step late and can bunch up around checkpoints);
    # the first window includes the slower first execution.
    origin_step, origin_time, origin_done = rate["origin"] or (start_step, loop_start,
                                                               {"samples": 0, "xla_flops": 0.0})
    elapsed = max(now - origin_time, 1e-9)
    steps_per_s = (log_step - origin_step) / elapsed
    if rate["origin"] is None:
      rate["origin"] = (log_step, now, dict(log_done))
    # Real (unpadded) rows per second; with duration buckets a step's rows and FLOPs depend on its bucket.
    m.update(steps_per_s=steps_per_s, samples_per_s=(log_done["samples"] - origin_done["samples"]) / elapsed)
    if flops and peak:  # compiled FLOPs are per device (one SPMD partition); so is the peak
      m["mfu"] = (log_done["xla_flops"] - origin_done["xla_flops"]) / elapsed / peak
    losses[log_step] = m["loss"]
    writer.write(log_step, m)
    eta = (config.total_steps - log_step) / max(steps_per_s, 1e-9)
    _log(f"[train] step {log_step}/{config.total_steps} loss {m['loss']:.4f} lr {m['learning_rate']:.2e} "
         f"{steps_per_s:.2f} steps/s {m['samples_per_s']:.1f} samples/s ETA {_fmt_seconds(eta)}"
         + (f" MFU {100 * m['mfu']:.1f}%" if "mfu" in m else "")
         + (f" skipped {int(m['nonfinite'])}" if m.get("nonfinite") else ""))

  try:
    with jax.set_mesh(mesh):
      while step < config.total_steps:
        local = next(data_iter)
        batch = sharding_lib.host_to_global(local, mesh)
        key = batch["audio"].shape
        state, metrics = compiled[key](state, batch)
        real_rows = ledger.count(local, flops=step_cost[key][1])   # host numpy, after the asynchronous dispatch
        done["samples"] += real_rows * process_count
        done["xla_flops"] += step_cost[key][0]
        step += 1
        stop = preemption.poll()  # the same answer on every process at this step
        if pending is not None:
          flush(pending)
          pending = None
        if step % config.log_every == 0 or step == config.total_steps:
          pending = (step, metrics, dict(done))
        if evaluators and config.eval_every and step % config.eval_every == 0:
          for name, value in evaluator_registry.run_all(evaluators, state, step):
            writer.write(step, {name: value}, prefix="eval")
            last_eval[name] = value
            _log(f"[eval] step {step} {name} {value:.4f}")
        save_now = (step % config.checkpoint_every == 0 or step == config.total_steps or stop
                    or step in checkpointer.keep_steps)
        if save_now:
          if pending is not None:  # never checkpoint a state that has seen a non-finite step unnoticed
            flush(pending)
            pending = None
          t_save = time.perf_counter()
          best = config.get("best_metric")
          checkpointer.save(step, state, data_iter, force=True,
                            metrics=dict(last_eval) if best and best in last_eval else None)
          ledger.save(step)
          save_seconds.append(time.perf_counter() - t_save)
        if stop and step < config.total_steps:  # at the last step the run is simply done
          _log(f"[train] SIGTERM: every process saved the checkpoint of step {step}; exiting with status "
               f"{preemption_lib.PREEMPTED_EXIT_CODE} (restart with the same workdir to resume)")
          summary["preempted"] = True
          break
      if pending is not None:
        flush(pending)
  finally:
    preemption.restore()
    checkpointer.close()
    writer.close()
  if summary.get("preempted") and jax.process_count() > 1:
    # No process exits (and, under srun --kill-on-bad-exit, gets the others killed) before all have saved.
    multihost_utils.sync_global_devices("alp_jax_preempted")
  step_lib.assert_single_trace(train_step, shapes=len(compiled))
  summary.update(final_step=step, losses=losses, params=n_params, checkpoint_dir=str(checkpointer.directory),
                 save_seconds=save_seconds, restore_seconds=restore_seconds)
  saves = (f"; {len(save_seconds)} checkpoint save(s), {sum(save_seconds) / len(save_seconds):.2f}s each"
           + (" (asynchronous: blocking part)" if checkpointer.async_save else "")) if save_seconds else ""
  _log(f"[train] done at step {step}: checkpoints in {checkpointer.directory}, metrics in {workdir}/metrics.jsonl"
       + saves)
  return summary
