"""A stand-in for `python -m alp_jax.{train,export,evaluate}` in the sweep tests: writes what each stage's
completion check reads (a checkpoint folder + compute.json, encoder_config.json, eval.json) in milliseconds.
An argument containing FAIL makes it fail like a bad config; STUB_SLEEP=S makes each stage take S seconds."""
import json
import os
import sys
import time


def main(argv):
  assert argv[0] == "-m", argv
  module, rest = argv[1], argv[2:]
  opt = lambda name: rest[rest.index(name) + 1]
  time.sleep(float(os.environ.get("STUB_SLEEP", "0")))
  print(f"stub {module} {' '.join(rest)}")
  if any("FAIL" in a for a in rest):
    print("error: optimizer.schedule must be cosine | constant_cooldown | constant, got 'FAIL'", file=sys.stderr)
    return 1
  if module == "alp_jax.train":
    workdir = opt("--workdir")
    steps = int(next(a.split("=", 1)[1] for a in rest if a.startswith("--config.total_steps=")))
    os.makedirs(os.path.join(workdir, "checkpoints", str(steps)), exist_ok=True)
    with open(os.path.join(workdir, "compute.json"), "w") as f:
      json.dump({"flops_per_step": 1e9, "xla_flops_per_step": 0, "batch_size": 8, "steps": steps,
                 "samples": 8 * steps, "flops": 1e9 * steps, "wall_seconds": 2.5, "per_source": {}}, f)
  elif module == "alp_jax.export":
    workdir, out = opt("--workdir"), opt("--out")
    step = max(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "encoder_config.json"), "w") as f:
      json.dump({"step": step}, f)
  elif module == "alp_jax.evaluate":
    tasks = [rest[i + 1] for i, a in enumerate(rest) if a == "--task-dir"]
    rows = [{"task": os.path.basename(t), "metric": "accuracy", "method": "mean", "value": 0.75,
             "interval": [0.6, 0.9], "probe": {}} for t in tasks]
    os.makedirs(os.path.dirname(opt("--out")), exist_ok=True)
    with open(opt("--out"), "w") as f:
      json.dump({"results": rows, "protocol": {}}, f)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
