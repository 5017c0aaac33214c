"""`field=value` overrides: what a sweep passes to `python -m alp_jax.train` as `--config.field=value`, applied
here to a loaded config as well so that the runner sees the batch size, crop and model the trainer will.

Values are read as Python literals where they parse (3, 1e-3, True, ('a', 'b')) and as text otherwise, then
cast to the type of the field they replace (an int field given 2.0 stays an int).
"""
from __future__ import annotations

import ast

import ml_collections


def parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def split(override: str, *, where: str) -> tuple[str, str]:
  field, eq, value = str(override).partition("=")
  if not eq or not field.strip():
    raise ValueError(f"{where}: override {override!r} is not field=value (e.g. batch_size=64, "
                     f"data.crop_seconds=2.0)")
  return field.strip(), value


def apply(config: ml_collections.ConfigDict, overrides, *, where: str, what: str = "the training config",
          open_fields: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """`config` with every 'dotted.field=value' of `overrides` set (in place; returned). An unknown field is a
  ValueError naming `where` (the sweep config) and the field, except new keys inside `open_fields` (maps)."""
  with config.unlocked():
    for override in overrides:
      field, text = split(override, where=where)
      *parents, last = field.split(".")
      node = config
      for part in parents:
        if part not in node:
          raise ValueError(f"{where}: override {override!r}: {what} has no field {field!r}")
        node = node[part]
      if last not in node and ".".join(parents) in open_fields:
        node[last] = parse_value(text)
        continue
      if last not in node:
        raise ValueError(f"{where}: override {override!r}: {what} has no field {field!r}")
      value, old = parse_value(text), node[last]
      if isinstance(old, bool):
        value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
      elif isinstance(old, int) and isinstance(value, (int, float)):
        value = int(value)
      elif isinstance(old, float) and isinstance(value, (int, float)):
        value = float(value)
      elif isinstance(old, str):
        value = text
      elif isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
      node[last] = value
  return config


def set_sweep_fields(config: ml_collections.ConfigDict, overrides, *, where: str) -> ml_collections.ConfigDict:
  """The sweep config with `--config.field=value` command-line overrides applied (same rules as `apply`)."""
  return apply(config, overrides, where=where, what="the sweep config", open_fields=("task_families",))
