"""Evaluator registry: an evaluator is found by its `type` name, so adding one touches no trainer code.

config.evaluators = {name: ConfigDict(type="...", every=N, ...)}. An evaluator class is registered with
`@register("type")`, built as cls(config, eval_cfg, graphdef=..., mesh=...), and `run(state)` yields
(metric_name, value) pairs. The trainer calls `run_all` every config.eval_every steps; the evaluation CLI uses
the same classes.
"""
from __future__ import annotations

import importlib
from typing import Callable, Iterator

_REGISTRY: dict[str, type] = {}
# Modules that register evaluators on import (type name -> module), imported on first use.
_MODULES = {
    "validation_loss": "alp_jax.evaluate.validation_loss",
    "probe": "alp_jax.evaluate.task_evaluators",
    "zero_shot": "alp_jax.evaluate.task_evaluators",
    "retrieval": "alp_jax.evaluate.task_evaluators",
    "captioning": "alp_jax.evaluate.task_evaluators",
}


def register(name: str) -> Callable[[type], type]:
  def wrap(cls):
    _REGISTRY[name] = cls
    return cls
  return wrap


def get(name: str) -> type:
  if name not in _REGISTRY and name in _MODULES:
    importlib.import_module(_MODULES[name])
  if name not in _REGISTRY:
    raise ValueError(f"unknown evaluator type {name!r}; known: {sorted(set(_REGISTRY) | set(_MODULES))}")
  return _REGISTRY[name]


def build_all(config, **kwargs) -> dict:
  evaluators = {}
  for name, eval_cfg in (config.get("evaluators") or {}).items():
    evaluators[name] = get(eval_cfg.type)(config, eval_cfg, **kwargs)
  return evaluators


def run_all(evaluators: dict, state, step: int) -> Iterator[tuple[str, float]]:
  for name, evaluator in evaluators.items():
    every = getattr(evaluator, "every", 1) or 1
    if step % every:
      continue
    for metric, value in evaluator.run(state):
      yield f"{name}/{metric}", float(value)
