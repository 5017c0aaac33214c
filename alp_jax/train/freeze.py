"""Frozen parameter groups (`config.optimizer.frozen`): named parts of the model that training never changes.

  config.optimizer.frozen = ("audio_encoder",)      # LiT: lock the audio tower, train the text side
  config.optimizer.frozen = ("towers/text_encoder", "decoder/blocks/0")   # any path prefixes

A name is a path prefix in the model's parameter tree, parts joined by "/": a top-level attribute
("audio_encoder", "decoder") or a deeper one ("towers/audio_encoder"). A bare name that is not at the
top level but names exactly one nested module is resolved to it, so "audio_encoder" also means the
hybrid's "towers/audio_encoder". A part "*" matches any one part ("decoder/blocks/*/mlp"), and a name
that starts with "!" is an exception: what it names stays trainable inside a frozen group, e.g. the
study's LiT captioning recipe (a pretrained decoder with only its cross-attention tuned):

  config.optimizer.frozen = ("audio_encoder", "decoder", "!decoder/blocks/*/cross_attention",
                             "!decoder/blocks/*/cross_attention_norm", "!decoder/audio_projection")

An unknown or ambiguous name is an error that lists the model's top-level attributes.

What freezing does (every piece is needed for "exactly unchanged"):
- optimizer (optimizer.make_optimizer): frozen leaves go through optax.set_to_zero inside a
  multi_transform, so they get zero updates, no weight decay and no Adam moments (less memory);
- update step (step.py): gradients are taken only w.r.t. the trainable leaves (`value_and_grad`), so
  no backward pass runs through a frozen part whose inputs carry no gradient (a wholly frozen audio
  encoder); frozen leaves keep their exact old values (no `p + 0` that would turn -0.0 into +0.0);
- model (`mark_frozen_modules`): a wholly frozen audio encoder runs in evaluation mode while training:
  no SpecAugment and no dropout, as LiT runs its locked tower (set optimizer.frozen_eval_mode=False to
  keep them as augmentation of a frozen encoder), and its outputs are wrapped in stop_gradient.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from alp_jax.encoder_api import ENCODER_ATTR

FROZEN, TRAINABLE = "frozen", "trainable"


def _part(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", key)))


def leaf_path(key_path) -> tuple[str, ...]:
  """A tree_flatten_with_path key path -> the module path of the parameter ("towers", "audio_encoder", ...)."""
  return tuple(p for p in map(_part, key_path) if p not in ("value", "raw_value"))


def names(frozen) -> tuple[str, ...]:
  """config.optimizer.frozen (a tuple/list of names, or one comma-separated string) -> a tuple of names."""
  if not frozen:
    return ()
  if isinstance(frozen, str):
    frozen = [n for n in frozen.split(",")]
  return tuple(n.strip().strip("/") for n in frozen if n and n.strip().strip("/"))


def _matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
  """Whether `pattern` ("*" = any one part) is a prefix of `path`."""
  return len(path) >= len(pattern) and all(w in ("*", p) for p, w in zip(path, pattern))


def resolve(paths: Sequence[tuple[str, ...]], frozen) -> tuple[tuple[tuple[str, ...], bool], ...]:
  """Frozen names -> (path pattern, is_exception) rules that each match at least one parameter; ValueError
  otherwise."""
  rules = []
  top = sorted({p[0] for p in paths if p})
  for name in names(frozen):
    exception = name.startswith("!")
    want = tuple(name.lstrip("!").strip("/").split("/"))
    if any(_matches(p, want) for p in paths):
      rules.append((want, exception))
      continue
    # A bare or partial name below the top level: the unique module path that ends with it.
    nested = sorted({p[:i + len(want)] for p in paths for i in range(1, len(p) - len(want) + 1)
                     if _matches(p[i:], want)})
    if len(nested) == 1:
      rules.append((nested[0], exception))
      continue
    where = (f"it matches several nested modules ({', '.join('/'.join(n) for n in nested[:6])}); name one"
             if nested else "no parameter lives under it")
    raise ValueError(f"config.optimizer.frozen: unknown parameter group {name!r}: {where}. The model's "
                     f"top-level attributes are {top}; use one of them or a path below one, parts joined by "
                     f"'/' (e.g. {top[0] + '/...' if top else 'audio_encoder'})")
  return tuple(rules)


def _is_frozen(path: tuple[str, ...], rules) -> bool:
  """Frozen: some name covers the path and no exception ("!name") does."""
  return (any(_matches(path, p) for p, exception in rules if not exception)
          and not any(_matches(path, p) for p, exception in rules if exception))


def frozen_mask(params, frozen) -> Any:
  """A tree of bools shaped like `params` (a params nnx.State or dict): True for frozen leaves."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  if not any(leaf_path(k) for k, _ in flat):
    # Not a parameter tree: optax.tree_map_params initialises the optimizer on a placeholder to find the
    # parameter-shaped parts of its state; label it trainable (state.py maps frozen parts to empty nodes).
    return jax.tree.map(lambda _: False, params)
  prefixes = resolve([leaf_path(k) for k, _ in flat], frozen)
  return jax.tree_util.tree_map_with_path(lambda k, _: _is_frozen(leaf_path(k), prefixes), params)


def labels(params, frozen) -> Any:
  """The optax.multi_transform label tree: "frozen" | "trainable" per leaf."""
  return jax.tree.map(lambda f: FROZEN if f else TRAINABLE, frozen_mask(params, frozen))


def count(params, frozen) -> tuple[int, int]:
  """(frozen, trainable) parameter counts."""
  sizes = [int(x.size) for x in jax.tree.leaves(params)]
  flags = jax.tree.leaves(frozen_mask(params, frozen))
  n_frozen = sum(n for n, f in zip(sizes, flags) if f)
  return n_frozen, sum(sizes) - n_frozen


def value_and_grad(fn: Callable, params, mask, *args, has_aux: bool = False, argnums_extra: bool = False):
  """jax.value_and_grad of fn(params, *args) w.r.t. the non-frozen leaves of `params` only.

  Frozen leaves enter as constants, so autodiff never linearises what depends on them alone (no backward
  pass through a wholly frozen encoder); their gradients are zeros. mask None (nothing frozen): plain
  value_and_grad. argnums_extra=True also differentiates w.r.t. every extra positional argument and returns
  (value, (param_grads, *arg_grads)).
  """
  argnums = tuple(range(1 + len(args))) if argnums_extra else 0
  if mask is None:
    return jax.value_and_grad(fn, argnums=argnums, has_aux=has_aux)(params, *args)
  leaves, treedef = jax.tree.flatten(params)
  frozen_leaves = treedef.flatten_up_to(mask)
  trainable_index = [i for i, f in enumerate(frozen_leaves) if not f]

  def on_trainable(trainable, *rest):
    full = list(leaves)
    for i, leaf in zip(trainable_index, trainable):
      full[i] = leaf
    return fn(treedef.unflatten(full), *rest)

  value, grads = jax.value_and_grad(on_trainable, argnums=argnums, has_aux=has_aux)(
      [leaves[i] for i in trainable_index], *args)
  trainable_grads = grads[0] if argnums_extra else grads
  full_grads = [jnp.zeros_like(x) for x in leaves]
  for i, g in zip(trainable_index, trainable_grads):
    full_grads[i] = g
  param_grads = treedef.unflatten(full_grads)
  return value, ((param_grads, *grads[1:]) if argnums_extra else param_grads)


def keep_frozen(new_params, old_params, mask):
  """new where trainable, old (bit for bit) where frozen."""
  if mask is None:
    return new_params
  return jax.tree.map(lambda n, o, f: o if f else n, new_params, old_params, mask)


def mark_frozen_modules(model, optimizer_cfg) -> None:
  """Sets `frozen = True` on an audio encoder that optimizer_cfg.frozen freezes entirely (when
  optimizer_cfg.frozen_eval_mode, the default): the models' encode path then runs it in evaluation mode
  (no SpecAugment, no dropout) and stops gradients at its outputs. A static attribute: part of the graphdef."""
  if optimizer_cfg is None or not names(optimizer_cfg.get("frozen", ())):
    return
  if not optimizer_cfg.get("frozen_eval_mode", True):
    return
  from flax import nnx
  params = nnx.state(model, nnx.Param)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  paths = [leaf_path(k) for k, _ in flat]
  prefixes = resolve(paths, optimizer_cfg.frozen)
  for path, module in nnx.iter_modules(model):
    if not path or str(path[-1]) != ENCODER_ATTR:
      continue
    module_path = tuple(map(str, path))
    below = [p for p in paths if p[:len(module_path)] == module_path]
    if below and all(_is_frozen(p, prefixes) for p in below):
      module.frozen = True
