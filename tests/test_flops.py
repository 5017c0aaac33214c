"""Analytic model FLOPs (alp_jax/train/flops.py) against XLA's cost analysis of the same unrolled training step.

XLA counts every operation of the step (norms, softmax, GELU, the log-mel frontend, the optimizer); the analytic
count is the matrix multiplications alone, so it must be a large, stable share of XLA's count, never more."""
import jax
import pytest

from alp_jax import sharding as sharding_lib
from alp_jax.train import checkpoints as ckpt_lib
from alp_jax.train import flops
from alp_jax.train import optimizer as optimizer_lib
from alp_jax.train import perf
from alp_jax.train import state as state_lib
from alp_jax.train import step as step_lib
from alp_jax.train import trainer

from conftest import load_config


def _xla_flops(config) -> float:
  mesh = sharding_lib.mesh_from_config(config.mesh, jax.devices()[:1])
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.total_steps)
  graphdef, abstract, shardings = state_lib.state_shardings(config, mesh, tx)
  step = step_lib.make_train_step(graphdef, tx, schedule, config, mesh, shardings)
  with jax.set_mesh(mesh):
    lowered = step.lower(ckpt_lib.abstract_with_shardings(abstract, shardings), trainer.abstract_batch(config, mesh))
  return perf.lowered_flops(lowered)


@pytest.mark.parametrize("name,frozen", [("clap", ()), ("cappa", ()), ("clap", ("audio_encoder",))])
def test_analytic_flops_are_the_matmul_share_of_xla_count(name, frozen):
  config = load_config(name, "tiny")
  config.model.vocab_size = 512
  config.optimizer.frozen = frozen
  analytic, xla = flops.step_flops(config), _xla_flops(config)
  # Measured here: 0.92-0.94 of XLA's count for every tiny model (the rest is elementwise work).
  assert 0.85 * xla < analytic < xla, (analytic, xla)


def test_flops_scale_with_batch_and_a_frozen_encoder_costs_one_forward():
  config = load_config("clap", "tiny")
  parts = flops.breakdown(config)
  config.batch_size *= 2
  doubled = flops.breakdown(config)
  for part, value in parts.items():   # the logits are B x B; every per-example part doubles
    assert doubled[part] == pytest.approx(value * (4 if part == "contrastive_logits" else 2))
  config.optimizer.frozen = ("audio_encoder",)
  frozen = flops.breakdown(config)
  assert frozen["audio_encoder"] == pytest.approx(doubled["audio_encoder"] / flops.BACKWARD_FACTOR)
  assert frozen["text_encoder"] == pytest.approx(doubled["text_encoder"])
