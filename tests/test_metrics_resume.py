"""Resume-safe metrics: a run that crashed after logging steps past its last checkpoint and then resumed has each
step once in metrics.jsonl, and its TensorBoard writer purges the repeated steps (alp_jax/train/metrics.py);
its compute.json continues from the restored step's totals, so no step's samples count twice
(alp_jax/train/compute.py)."""
import json
import shutil
import struct

from tensorboardX.proto import event_pb2

from alp_jax.train import metrics as metrics_lib
from alp_jax.train import trainer

from conftest import make_test_config


def _steps(workdir, split="train"):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["step"] for r in rows if r["split"] == split]


def _events(path):
  """The Event records of one TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
  data, events, i = path.read_bytes(), [], 0
  while i < len(data):
    (length,) = struct.unpack("<Q", data[i:i + 8])
    events.append(event_pb2.Event.FromString(data[i + 12:i + 12 + length]))
    i += 12 + length + 4
  return events


def test_a_resumed_run_logs_each_step_once(tiny_corpus_dir, tmp_path):
  workdir = tmp_path / "run"
  # The "crash": step 3 was logged, but only the checkpoint of step 2 survives.
  trainer.train(make_test_config("clap", tiny_corpus_dir, total_steps=3, tensorboard=True,
                                 mesh__num_devices=1), workdir)
  assert _steps(workdir) == [1, 2, 3]
  first = json.loads((workdir / "compute.json").read_text())
  assert first["steps"] == 3 and first["samples"] == 24 and sorted(first["history"]) == ["2", "3"]
  shutil.rmtree(workdir / "checkpoints" / "3")
  first_files = set((workdir / "tensorboard").iterdir())

  summary = trainer.train(make_test_config("clap", tiny_corpus_dir, total_steps=4, tensorboard=True,
                                           mesh__num_devices=1), workdir)
  assert summary["start_step"] == 2
  assert _steps(workdir) == [1, 2, 3, 4]
  # The resumed writer starts with purge_step 3: TensorBoard hides the first run's events of steps >= 3.
  (resumed_file,) = set((workdir / "tensorboard").iterdir()) - first_files
  starts = [e.step for e in _events(resumed_file) if e.HasField("session_log")]
  assert starts == [3]
  logged = sorted({e.step for e in _events(resumed_file) if e.HasField("summary")})
  assert logged == [3, 4]

  compute = json.loads((workdir / "compute.json").read_text())
  assert compute["steps"] == 4 and compute["samples"] == 32 and compute["flops"] == 4 * compute["flops_per_step"]
  # Steps 1-2 from the first start, 3-4 from the resumed one: every example counted once, none of the first
  # start's step 3.
  assert sum(s["samples"] for s in compute["per_source"].values()) == 32
  assert sum(s["samples"] for s in compute["history"]["2"]["per_source"].values()) == 16
  seconds = sum(s["audio_seconds"] for s in compute["per_source"].values())
  assert 0 < seconds <= 32 * 1.0   # unpadded audio of 32 one-second crops
  assert compute["wall_seconds"] > first["history"]["2"]["wall_seconds"] > 0


def test_truncate_keeps_rows_up_to_the_step_and_drops_a_torn_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "split": "train", "loss": 1.0} for s in (1, 2, 3)] + [{"step": 2, "split": "eval", "x": 0.5}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "spl')
  assert metrics_lib.truncate_jsonl(path, 2) == 2
  assert [json.loads(line) for line in path.read_text().splitlines()] == [rows[0], rows[1], rows[3]]
  assert metrics_lib.truncate_jsonl(path, 2) == 0
  assert metrics_lib.truncate_jsonl(tmp_path / "absent.jsonl", 0) == 0
