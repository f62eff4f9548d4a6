"""The package's shape: no import cycle between its modules (imports inside functions included), layers that
import only the layers below them, command modules that only start their program, no private import of
another library, no default canvas in a signature, and a config whose keys each belong to one section that
its component receives."""
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


# The layers. Foundations are the package's top-level library modules; each may import only the
# subpackages listed for it. A subpackage or top-level program may import the components it lists.
FOUNDATION_SUBPACKAGES = {"configlib": {"data", "models"}, "weights": {"models", "workdir"}}
BELOW = {
    "data": {"foundations"},
    "models": {"foundations"},
    "workdir": {"foundations", "data", "models"},
    "inference": {"foundations", "data", "models", "workdir"},
    "jigsaw": {"foundations", "data"},
    "training": {"foundations", "data", "models", "workdir", "inference"},  # validation runs inference.tta
    "seismic": {"foundations", "data", "models", "workdir", "inference", "jigsaw"},
    "pipeline": {"foundations", "data", "models", "workdir", "inference", "jigsaw", "training"},
    "tools": {"foundations", "data", "models", "workdir", "inference", "jigsaw", "training", "seismic"},
}
# `python -m salt_jax.<command>`: the module that starts it -> the module of its main and define_flags.
COMMANDS = {"train": "training.train", "predict": "inference.predict", "ensemble": "inference.ensemble",
            "segment": "seismic.segment", "bench": "tools.bench",
            "accelerator_check": "tools.accelerator_check"}


def _component(module: str) -> str:
  """'foundations', 'commands', 'pipeline' or the subpackage of a module name salt_jax.x[.y]."""
  parts = module.split(".")
  if (PACKAGE / parts[1]).is_dir():
    return parts[1]
  if parts[1] in COMMANDS:
    return "commands"
  return "pipeline" if parts[1] == "pipeline" else "foundations"


def _layer_violations(graph, component=_component):
  """(module, imported module) of each import that goes up or across the layers."""
  found = []
  for module, imported in sorted(graph.items()):
    if module == "salt_jax":
      continue
    mine = component(module)
    for other in sorted(imported):
      theirs = component(other)
      if theirs == mine:
        continue
      if mine == "foundations":
        ok = theirs == "foundations" or theirs in FOUNDATION_SUBPACKAGES.get(module.split(".")[1], set())
      elif mine == "commands":
        ok = other in ("salt_jax.cli", "salt_jax." + COMMANDS[module.split(".")[1]])
      else:
        ok = theirs in BELOW[mine]
      if not ok:
        found.append((module, other))
  return found


def test_each_layer_imports_only_the_layers_below_it():
  graph = _graph()
  assert _layer_violations(graph) == []
  assert {_component(m) for m in graph if m != "salt_jax"} - {"foundations", "commands"} == set(BELOW)
  # the check finds an import that goes up, across, or out of a command module
  up = {k: set(v) for k, v in graph.items()}
  up["salt_jax.inference.tta"].add("salt_jax.training.steps")
  up["salt_jax.geometry"].add("salt_jax.seismic.sections")
  up["salt_jax.predict"].add("salt_jax.inference.gating")
  assert _layer_violations(up) == [("salt_jax.geometry", "salt_jax.seismic.sections"),
                                   ("salt_jax.inference.tta", "salt_jax.training.steps"),
                                   ("salt_jax.predict", "salt_jax.inference.gating")]
  fake = {"salt_jax.a": {"salt_jax.b.x"}, "salt_jax.b.x": {"salt_jax.c.y"}, "salt_jax.c.y": set()}
  layers = {"salt_jax.a": "foundations", "salt_jax.b.x": "data", "salt_jax.c.y": "training"}
  assert _layer_violations(fake, layers.get) == [("salt_jax.a", "salt_jax.b.x"),
                                                 ("salt_jax.b.x", "salt_jax.c.y")]


def _is_command_block(node: ast.AST) -> bool:
  """`if __name__ == "__main__": cli.run(...)` and nothing else."""
  return (isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'" and not node.orelse
          and len(node.body) == 1 and isinstance(node.body[0], ast.Expr)
          and ast.unparse(node.body[0].value.func) == "cli.run")


def _command_logic(tree: ast.Module):
  """The statements of a command module that are not its docstring, an import or the __main__ block."""
  body = tree.body[1:] if ast.get_docstring(tree) else tree.body
  return [ast.unparse(n) for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))
          and not _is_command_block(n)]


def test_command_modules_only_start_their_program():
  modules = _modules()
  for name in COMMANDS:
    tree = modules[f"salt_jax.{name}"]
    assert _command_logic(tree) == [], name
    assert sum(map(_is_command_block, tree.body)) == 1, name
  assert _command_logic(ast.parse('"""doc"""\nfrom salt_jax import cli\nX = 1\nif __name__ == "__main__":\n'
                                  '  cli.run(main, define_flags, prog="p")\n')) == ["X = 1"]
  assert _command_logic(ast.parse('if __name__ == "__main__":\n  print(1)\n  cli.run(m, d, prog="p")\n'))


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
