"""The evaluator registry: what the trainer (and the evaluation CLI) know of an evaluator.

  config.evaluators.NAME = ConfigDict(type=TYPE, every=N, ...)

TYPE names a registered evaluator class. A type not registered yet is found by module name, as big_vision does:
`alp_jax.evaluate.evaluators.TYPE` (one file per evaluator), or any importable module path holding a class
registered under that name (`type="my_project.my_eval"`). So adding an evaluator is one file, and the trainer
never imports the evaluation package: it looks evaluators up here by name.

The contract the trainer uses: `cls.check_config(config, eval_cfg, name)` (optional) rejects bad options at
startup, before compiling; `cls(config, eval_cfg, graphdef=..., mesh=...)` builds one, its attribute `every`
says how often it runs (steps), and `run(state)` yields (metric_name, value). The evaluation CLI uses the same
classes through the richer contract of alp_jax/evaluate/evaluator.py (what each one needs, which suites it is in).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Iterator

PLUGIN_PACKAGE = "alp_jax.evaluate.evaluators"

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
  """Class decorator: `@register("probe") class ProbeEvaluator(...)`."""
  def wrap(cls):
    cls.name = name
    _REGISTRY[name] = cls
    return cls
  return wrap


def _import_quietly(module: str) -> bool:
  """Imports `module` if it exists; a missing module is False, an error inside an existing one propagates."""
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
      return False
    raise
  return True


def get(name: str) -> type:
  """The evaluator class registered as `name` (imported by module name on first use)."""
  if name not in _REGISTRY:
    _import_quietly(f"{PLUGIN_PACKAGE}.{name}") or ("." in name and _import_quietly(name))
  if name not in _REGISTRY:
    raise ValueError(f"unknown evaluator type {name!r}; known: {sorted(registered())} (a new one is a module "
                     f"{PLUGIN_PACKAGE}.NAME with a class decorated @register('NAME'))")
  return _REGISTRY[name]


def registered() -> dict[str, type]:
  """Every evaluator: those of the plugin package (all imported) plus any registered by other modules."""
  package = importlib.import_module(PLUGIN_PACKAGE)
  for info in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f"{PLUGIN_PACKAGE}.{info.name}")
  return dict(_REGISTRY)


def check_all(config) -> None:
  """Every configured evaluator's `check_config` (if it has one): bad options fail at startup, before compiling."""
  for name, eval_cfg in (config.get("evaluators") or {}).items():
    check = getattr(get(eval_cfg.type), "check_config", None)
    if check is not None:
      check(config, eval_cfg, name)


def build_all(config, **kwargs) -> dict:
  """{name: evaluator} for config.evaluators."""
  return {name: get(eval_cfg.type)(config, eval_cfg, **kwargs)
          for name, eval_cfg in (config.get("evaluators") or {}).items()}


def run_all(evaluators: dict, state, step: int) -> Iterator[tuple[str, float]]:
  """(NAME/metric, value) of every evaluator due at `step`."""
  for name, evaluator in evaluators.items():
    every = getattr(evaluator, "every", 1) or 1
    if step % every:
      continue
    for metric, value in evaluator.run(state):
      yield f"{name}/{metric}", float(value)
