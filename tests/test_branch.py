"""Cooldown branches (train/branch.py): a branch forked from a constant-rate trunk is the run that would have
trained its budget from scratch; mismatched configs and schedules are refused."""
import json

import jax
import numpy as np
import pytest

from alp_jax.train import branch as branch_lib
from alp_jax.train import compute as compute_lib
from alp_jax.train import runs as runs_lib
from alp_jax.train import trainer

from conftest import make_test_config

TRUNK, BRANCH = 10, 6     # steps; constant_cooldown at 1/3: the 6-step run cools down over steps 5..6
FORK = BRANCH - round(BRANCH / 3)   # 4


def _config(corpus, total, **overrides):
  return make_test_config("clap", corpus, total_steps=total, checkpoint_every=100, mesh__num_devices=1,
                          optimizer__schedule="constant_cooldown", optimizer__cooldown_fraction=1 / 3,
                          optimizer__warmup_steps=2, **overrides)


def _losses(workdir):
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def _rates(workdir):
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return {r["step"]: r["learning_rate"] for r in rows if r["split"] == "train"}


def _params(workdir):
  _, _, state, step = runs_lib.restore(workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state["params"]))]


@pytest.fixture(scope="module")
def trunk_and_reference(tiny_corpus_dir, tmp_path_factory):
  trunk = tmp_path_factory.mktemp("trunk")
  trainer.train(_config(tiny_corpus_dir, TRUNK, keep_steps=(FORK,), keep_checkpoints=1), trunk)
  reference = tmp_path_factory.mktemp("reference")   # the branch's budget trained from scratch
  trainer.train(_config(tiny_corpus_dir, BRANCH), reference)
  return trunk, reference


def test_the_trunk_keeps_its_branch_point(trunk_and_reference):
  trunk, _ = trunk_and_reference
  kept = sorted(int(p.name) for p in (trunk / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == [FORK, TRUNK]   # keep_checkpoints=1 would have deleted step FORK
  assert str(FORK) in compute_lib.read(trunk)["history"]


def test_a_branch_equals_its_budget_trained_from_scratch(trunk_and_reference, tiny_corpus_dir, tmp_path):
  trunk, reference = trunk_and_reference
  assert branch_lib.cooldown_start(_config(tiny_corpus_dir, BRANCH).optimizer, BRANCH) == FORK
  workdir = tmp_path / "branch"
  summary = trainer.train(_config(tiny_corpus_dir, BRANCH, branch_from=f"{trunk}@{FORK}"), workdir)
  assert summary["start_step"] == FORK and summary["final_step"] == BRANCH
  ours, ref = _losses(workdir), _losses(reference)
  assert sorted(ours) == list(range(1, BRANCH + 1))   # the trunk's rows up to the fork, then its own
  np.testing.assert_allclose([ours[s] for s in range(1, BRANCH + 1)], [ref[s] for s in range(1, BRANCH + 1)],
                             rtol=1e-5)
  # The branch cooled down where the trunk kept its constant rate.
  assert _rates(workdir)[BRANCH] < 0.75 * _rates(trunk)[BRANCH]
  step_b, params_b = _params(workdir)
  step_r, params_r = _params(reference)
  assert step_b == step_r == BRANCH
  for a, b in zip(params_b, params_r):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  mine, theirs = compute_lib.read(workdir), compute_lib.read(reference)
  assert mine["branched_from"] == f"{trunk}@{FORK}"
  assert (mine["steps"], mine["samples"], mine["flops"]) == (theirs["steps"], theirs["samples"], theirs["flops"])
  assert mine["per_source"] == theirs["per_source"]   # the trunk's counts up to the fork, then the branch's


def test_mismatched_branches_are_refused(trunk_and_reference, tiny_corpus_dir, tmp_path):
  trunk, _ = trunk_and_reference
  with pytest.raises(ValueError, match="optimizer.learning_rate"):
    trainer.train(_config(tiny_corpus_dir, BRANCH, branch_from=f"{trunk}@{FORK}", optimizer__learning_rate=0.5),
                  tmp_path / "lr")
  # Forking one step after the branch's cooldown started: the trunk ran that step at the constant rate.
  with pytest.raises(ValueError, match="schedules .* differ before step 5"):
    trainer.train(_config(tiny_corpus_dir, BRANCH - 1, branch_from=f"{trunk}@{FORK + 1}"), tmp_path / "late")
  with pytest.raises(FileNotFoundError, match=r"holds steps \[4, 10\], not 2"):
    trainer.train(_config(tiny_corpus_dir, 3, branch_from=f"{trunk}@2"), tmp_path / "unkept")
  with pytest.raises(ValueError, match="TRUNK_WORKDIR@STEP"):
    branch_lib.parse(str(trunk))
