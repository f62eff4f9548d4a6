"""The package's shape: no import cycle between its modules (imports inside functions included), no private
import of another library, no default canvas in a signature, and a config whose keys each belong to one
section that its component receives."""
import ast
import pathlib

import ml_collections
import pytest

from salt_jax import configlib, geometry

PACKAGE = pathlib.Path(configlib.__file__).parent


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
  return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.AST, known) -> set:
  """The package modules a module imports anywhere in its body (`from salt_jax import x` is module x)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in known)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        full = f"{node.module}.{a.name}"
        found.add(full if full in known else node.module)
  return {m for m in found if m in known}


def _graph():
  modules = _modules()
  return {name: _imports(tree, modules) - {name} for name, tree in modules.items()}


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      # a package's __init__ importing its own submodules is how a package is built, not a cycle
      if nxt.startswith(node + "."):
        continue
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_import_graph_has_no_cycle():
  graph = _graph()
  assert "salt_jax.models" in graph["salt_jax.configlib"]  # the graph sees real imports
  assert "salt_jax.configlib" not in graph["salt_jax.models"]
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the search finds one


def test_no_private_imports_and_no_default_canvas():
  for name, tree in _modules().items():
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] + ([node.module] if getattr(node, "module", None) else [])
        assert not [n for n in names if ("._" in n or n.startswith("_")) and n != "__future__"], (name, names)
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
        assert "CANVAS" not in {getattr(d, "attr", getattr(d, "id", None)) for d in defaults}, (name, node.name)


def test_every_key_is_in_one_section_and_sections_read_the_flat_config():
  config = configlib.base_config()
  by_section = {name: configlib.section_keys(name) for name in configlib.SECTIONS}
  keys = [k for ks in by_section.values() for k in ks]
  assert sorted(keys) == sorted(configlib.KEYS) == sorted(config.keys())  # each key in exactly one
  s = configlib.sections(config)
  assert s.optim.lr == config.lr and s.data.input_size == config.input_size == geometry.CANVAS
  assert set(s.model.keys()) == {"model", "dtype", "align_corners", "decoder_dropout", "head_dropout"}
  assert s.model.align_corners is None  # an option left unset: the variant's default applies
  with pytest.raises(AttributeError):
    s.optim.lr = 1.0  # a component cannot change the config it was handed
  with pytest.raises(ValueError, match="unknown config section 'optimizer'; sections: model, weights"):
    configlib.section(config, "optimizer")


def test_the_model_section_builds_the_network():
  from salt_jax import models
  config = configlib.load_config_file(PACKAGE.parent / "configs" / "model_101A.py")
  model = models.build(**configlib.section(config, "model"))
  assert isinstance(model, models.IBNDecoderUNet) and model.head_dropout == 0.5  # the variant's default
  config.head_dropout = 0.0
  assert models.build(**configlib.section(config, "model")).head_dropout == 0.0
  assert models.resolved_options(configlib.section(config, "model"))["align_corners"] is True
  assert isinstance(configlib.section(config, "model"), ml_collections.FrozenConfigDict)
