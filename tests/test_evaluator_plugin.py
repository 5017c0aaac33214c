"""One evaluator contract: an evaluator declared here, in a test file, is picked up by the trainer's evaluator
mechanism and by `python -m alp_jax.evaluate` without editing either, and its declarations drive the CLI's plan
("skipped, ..." reasons, errors when named explicitly)."""
import json

import ml_collections
import numpy as np
import pytest
import soundfile as sf

from alp_jax.audio import io as audio_io
from alp_jax.evaluate import evaluator
from alp_jax.evaluate.__main__ import main, suites
from alp_jax.models import encoders
from alp_jax.train import evaluators, runs
from alp_jax.train import state as state_lib
from alp_jax import sharding as sharding_lib
from alp_jax.train import optimizer as optimizer_lib

from conftest import make_test_config


@evaluators.register("pooled_norm")
class PooledNorm(evaluator.Evaluator):
  """Mean L2 norm of the pooled frames of each probe task's test clips (a stand-in for a new evaluation)."""
  task_kind = evaluator.PROBE
  suites = ("plugin_suite",)

  def rows(self, model, tasks):
    return [{"task": task.name, "metric": "norm", "method": "pooled", "value": _norm(model.encoder, task),
             "skipped_files": 0} for task in tasks]


@evaluators.register("needs_decoder")
class NeedsDecoder(PooledNorm):
  needs = frozenset({encoders.AUDIO_ENCODER, encoders.CAPTION_DECODER})
  suites = ("plugin_suite",)


def _norm(encoder, task) -> float:
  return float(np.mean([np.linalg.norm(encoder.embed(*audio_io.decode(e.path))["pooled"])
                        for e in task.splits["test"]]))


@pytest.fixture(scope="module")
def probe_task(tmp_path_factory):
  out = tmp_path_factory.mktemp("plugin_task")
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    lines = ["path,label"]
    for i in range(3):
      sf.write(out / f"{split}{i}.wav", (0.3 * rng.standard_normal(8000)).astype(np.float32), 16000)
      lines.append(f"{split}{i}.wav,{'ab'[i % 2]}")
    (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
  return out


def test_a_test_file_evaluator_runs_in_training(tiny_corpus_dir, probe_task):
  cfg = make_test_config("clap", tiny_corpus_dir, eval_every=2)
  cfg.evaluators.mine = ml_collections.ConfigDict(dict(type="pooled_norm", task_dirs=(str(probe_task),)))
  runs.set_data_sizes(cfg)
  mesh = sharding_lib.mesh_from_config(cfg.mesh)
  tx, _ = optimizer_lib.make_optimizer(cfg.optimizer, cfg.total_steps)
  graphdef, _, shardings = state_lib.state_shardings(cfg, mesh, tx)
  state = state_lib.init_state(cfg, mesh, tx, shardings, cfg.seed)
  built = evaluators.build_all(cfg, graphdef=graphdef, mesh=mesh)   # what the trainer calls
  assert isinstance(built["mine"], PooledNorm) and built["mine"].every == 2
  assert list(evaluators.run_all(built, state, step=1)) == []        # not due
  [(name, value)] = list(evaluators.run_all(built, state, step=2))
  assert name == f"mine/{probe_task.name}/pooled/norm"
  from alp_jax.evaluate.run_model import RunModel
  from alp_jax.evaluate.tasks import read_task
  want = _norm(RunModel.from_state(cfg, graphdef, state).encoder, read_task(probe_task))
  np.testing.assert_allclose(value, want, rtol=1e-6)
  assert value > 0


def test_a_test_file_evaluator_runs_in_the_cli(tmp_path, encoder_dir, probe_task, capsys):
  from alp_jax.encoder_api import AudioEncoder
  from alp_jax.evaluate.tasks import read_task
  assert set(suites()["plugin_suite"]) == {"pooled_norm", "needs_decoder"} and "pooled_norm" in suites()["all"]
  out = tmp_path / "r.json"
  assert main(["--encoder", str(encoder_dir), "--task-dir", str(probe_task), "--suite", "plugin_suite",
               "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "needs_decoder: skipped, needs --workdir of a run with a caption decoder" in printed
  [row] = json.loads(out.read_text())["results"]
  assert (row["task"], row["method"], row["metric"]) == (probe_task.name, "pooled", "norm")
  np.testing.assert_allclose(row["value"], _norm(AudioEncoder.load(encoder_dir), read_task(probe_task)), rtol=1e-6)
  # Named explicitly, an evaluation that cannot apply is an error with the reason.
  assert main(["--encoder", str(encoder_dir), "--task-dir", str(probe_task), "--suite", "needs_decoder",
               "--out", str(tmp_path / "x.json")]) == 2
  assert "caption decoder" in capsys.readouterr().err


def test_unknown_evaluator_type_names_the_known_ones():
  with pytest.raises(ValueError, match="pooled_norm") as info:
    evaluators.get("pooled_nrom")
  assert "probe" in str(info.value) and "validation_loss" in str(info.value)
