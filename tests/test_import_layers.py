"""Dependencies point one way. The allowed order is written down here, once (docs/architecture.md explains it):

  audio, sharding -> data -> models, encoder_api -> losses -> objectives -> train, configs -> evaluate
      -> export, demo, sweeps, hear, benchmarks

The package root (alp_jax/__init__.py: the version, a lazy AudioEncoder) may be imported from anywhere.

A module may import modules of its own layer or of layers to its left, never to its right. Imports are read from
the source (module level and inside functions alike), so an import hidden inside a function to dodge a cycle is
caught too; and the module graph as a whole must have no cycle.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "alp_jax"

LAYERS = (
    ("alp_jax.audio", "alp_jax.sharding"),
    ("alp_jax.data",),
    ("alp_jax.models", "alp_jax.encoder_api"),
    ("alp_jax.losses",),
    ("alp_jax.objectives",),
    ("alp_jax.train", "alp_jax.configs"),
    ("alp_jax.evaluate",),
    ("alp_jax.export", "alp_jax.demo", "alp_jax.sweeps", "alp_jax.hear", "alp_jax.benchmarks"),
)
ROOT = "alp_jax"

# Imports inside functions that are deliberate, with the reason. Nothing else may import alp_jax in a function.
ALLOWED_LOCAL_IMPORTS = {
    # `from alp_jax import AudioEncoder` must not import jax for data-only commands (module __getattr__).
    ("alp_jax", "alp_jax.encoder_api"),
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
  if module == ROOT:
    return 0
  best, index = -1, None
  for i, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
        best, index = len(prefix), i
  assert index is not None, f"{module} is in no layer: add it to LAYERS"
  return index


def _imports(path: pathlib.Path):
  """-> [(imported alp_jax module, line, inside a function)] of one source file."""
  tree = ast.parse(path.read_text())
  local = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      local |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from alp_jax.x import y`: y may be a module (alp_jax.x.y) or a name in alp_jax.x.
      names = [f"{node.module}.{a.name}" if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).exists()
               or (PACKAGE.parent / (f"{node.module}.{a.name}".replace(".", "/") + ".py")).exists()
               else node.module for a in node.names]
    else:
      continue
    found += [(name, node.lineno, id(node) in local) for name in names if name.split(".")[0] == "alp_jax"]
  return found


def _graph():
  graph = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    graph[_module_name(path)] = (path, _imports(path))
  return graph


GRAPH = _graph()


def test_no_module_imports_from_a_layer_above_it():
  back_edges = [f"{path.relative_to(PACKAGE.parent)}:{line} ({module}, layer {_layer(module)}) imports {target} "
                f"(layer {_layer(target)})"
                for module, (path, imports) in GRAPH.items() for target, line, _ in imports
                if _layer(target) > _layer(module) and (module, target) not in ALLOWED_LOCAL_IMPORTS]
  assert not back_edges, "imports against the dependency order:\n" + "\n".join(back_edges)


def test_no_alp_jax_import_inside_functions_except_the_listed_ones():
  hidden = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            for module, (path, imports) in GRAPH.items() for target, line, local in imports
            if local and (module, target) not in ALLOWED_LOCAL_IMPORTS]
  assert not hidden, "alp_jax imports inside functions (move them to the module top):\n" + "\n".join(hidden)


def test_the_module_graph_has_no_cycle():
  edges = {m: {t for t, _, _ in imports if t in GRAPH and t != m} for m, (_, imports) in GRAPH.items()}
  # A package's __init__ importing its own submodules is not a cycle with a submodule that imports a sibling.
  state, stack = {}, []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for target in sorted(edges[module]):
      if state.get(target) == "open":
        cycle = stack[stack.index(target):] + [target]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if target not in state:
        visit(target)
    stack.pop()
    state[module] = "done"

  for module in sorted(edges):
    if module not in state:
      visit(module)


def test_the_checker_sees_a_back_edge_and_a_hidden_import(tmp_path):
  """The reader itself works: a planted upward import and a function-local one are both found."""
  planted = tmp_path / "planted.py"
  planted.write_text("from alp_jax.evaluate import probe\n\ndef f():\n  from alp_jax.train import trainer\n")
  found = _imports(planted)
  assert ("alp_jax.evaluate.probe", 1, False) in found and ("alp_jax.train.trainer", 4, True) in found
  assert _layer("alp_jax.evaluate.probe") > _layer("alp_jax.data.leakage")
