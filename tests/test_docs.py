"""The commands the documentation shows exist: every program, every flag it names and every config key.

How a command is read out of README.md, DEVELOPERS.md, BENCHMARKS.md and docs/*.md:

- A command is `python -m salt_jax.<program>` or `python scripts/<name>.py` (`python3` too, and after a
  word such as `time`), in a fenced code block or in an inline code span (which may wrap lines).
- In a fenced block, a line ending in `\\` goes on with the next line, and ` #` starts a shell comment.
  The command ends at the line's end or at shell syntax (`|`, `>`, `&&`, `;`).
- `[...]` marks an optional part: the brackets are dropped and what they hold is checked as the rest
  (`[--sections=both]` names a flag that must exist).
- Values are not checked, only the names: `--flag=VALUE`, `--flag VALUE`, a boolean's `--flag` and
  `--noflag`. A word `...` stands for more flags and is skipped; a program written with a placeholder
  (`salt_jax.<command>`, `salt_jax...`) is a pattern, not a command.
- A word that is not a flag is a command word (`jigsaw solve`): the program must take it. A program
  written alone (`python -m salt_jax.jigsaw`) is named, not run: only its existence is checked.
- `--config=FILE` must exist (a `...` value stands for any config), and every `--config.KEY` must be a
  key of the config the command loads: for `salt_jax.pipeline`, a path in the pipeline config's own
  tree, where what lies under a `*overrides` entry is a training key; for every other program a key of
  configlib.KEYS (every training config has exactly those keys).

The check parses, never runs: a program's flags come from its `define_flags` (found in its
`cli.run(main, define_flags, ...)` call), or from the `add_argument` calls of a program that uses
argparse; they are defined for the check and removed again.
"""
import ast
import importlib
import importlib.util
import pathlib
import re
import shlex
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

import ml_collections
import pytest
from absl import flags

from salt_jax import configlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = ("README.md", "DEVELOPERS.md", "BENCHMARKS.md", "docs/*.md")
COMMAND = re.compile(r"(?:^|\s)(python3? +(?:-m +salt_jax[\w.<>]*|scripts/[\w<>]+\.py)(?:\s.*)?)$")
SHELL_END = {"|", "||", ">", ">>", "&&", ";", "2>&1", "&"}


class Command(NamedTuple):
  source: str  # "<page>:<line>"
  words: Tuple[str, ...]  # the program ("salt_jax.train" or "scripts/x.py") and its arguments


def _strip_comment(line: str) -> str:
  return re.split(r"(?:^|\s)#", line, maxsplit=1)[0]


def _command_in(text: str, source: str) -> Optional[Command]:
  """The command in one logical line or code span, or None."""
  m = COMMAND.search(text.strip())
  if not m:
    return None
  text = m.group(1).replace("[", " ").replace("]", " ")
  try:
    words = shlex.split(text)
  except ValueError:  # an unpaired quote in prose around a pattern
    words = text.split()
  for i, w in enumerate(words):
    if w in SHELL_END:
      words = words[:i]
      break
  program = words[2] if words[1] == "-m" else words[1]
  return Command(source, (program, *[w for w in words[(3 if words[1] == "-m" else 2):] if w != "..."]))


def extract(text: str, page: str) -> List[Command]:
  """Every command of a markdown page, by the conventions above."""
  found, prose, lines = [], [], text.splitlines()
  fenced, i = False, 0
  while i < len(lines):
    line = lines[i]
    if line.lstrip().startswith("```"):
      fenced = not fenced
      prose.append("")
      i += 1
      continue
    if not fenced:
      prose.append(line)
      i += 1
      continue
    start, logical = i + 1, _strip_comment(line)
    while logical.rstrip().endswith("\\") and i + 1 < len(lines):
      i += 1
      logical = logical.rstrip()[:-1] + " " + _strip_comment(lines[i])
    command = _command_in(logical, f"{page}:{start}")
    if command:
      found.append(command)
    prose.append("")
    i += 1
  prose_text = "\n".join(prose)
  for m in re.finditer(r"`([^`]+)`", prose_text):
    line = prose_text.count("\n", 0, m.start()) + 1
    command = _command_in(m.group(1).replace("\n", " "), f"{page}:{line}")
    if command:
      found.append(command)
  return found


def documented_commands() -> List[Command]:
  pages = sorted({p for pattern in PAGES for p in REPO.glob(pattern)})
  return [c for p in pages for c in extract(p.read_text(), str(p.relative_to(REPO)))]


class Program(NamedTuple):
  flags: Dict[str, bool]  # flag name -> whether it is boolean
  commands: Tuple[str, ...]  # the command words it takes (none: it takes no positional argument)


def _module_path(program: str) -> pathlib.Path:
  if program.startswith("scripts/"):
    return REPO / program
  spec = importlib.util.find_spec(program)
  if spec is None:
    raise FileNotFoundError(program)
  if spec.submodule_search_locations:  # a package: python -m runs its __main__
    return pathlib.Path(spec.submodule_search_locations[0]) / "__main__.py"
  return pathlib.Path(spec.origin)


def _cli_run_call(tree: ast.Module) -> Optional[ast.Call]:
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "cli.run":
      return node
  return None


def _import(program: str, path: pathlib.Path):
  if not program.startswith("scripts/"):
    return importlib.import_module(program if path.name != "__main__.py" else program + ".__main__")
  spec = importlib.util.spec_from_file_location(f"docs_check_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # its __main__ block does not run
  return module


_PROGRAMS: Dict[str, Program] = {}


def program_flags(program: str) -> Program:
  """The flags and command words of a program (FileNotFoundError if there is no such program)."""
  if program in _PROGRAMS:
    return _PROGRAMS[program]
  path = _module_path(program)
  if not path.is_file():
    raise FileNotFoundError(path)
  tree = ast.parse(path.read_text())
  call = _cli_run_call(tree)
  if call is None:  # argparse: the names its add_argument calls declare
    names = {a.value[2:]: False for node in ast.walk(tree) if isinstance(node, ast.Call)
             and ast.unparse(node.func).endswith("add_argument") for a in node.args
             if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    found = Program(names, ())
  else:
    namespace = vars(_import(program, path))
    define = eval(compile(ast.Expression(call.args[1]), str(path), "eval"), namespace)  # noqa: S307
    words = next((k.value for k in call.keywords if k.arg == "commands"), None)
    commands = tuple(eval(compile(ast.Expression(words), str(path), "eval"), namespace)) if words else ()
    before = set(flags.FLAGS)
    try:
      define()
      found = Program({name: bool(flags.FLAGS[name].boolean) for name in flags.FLAGS}, commands)
    finally:
      for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)
  _PROGRAMS[program] = found
  return found


def _pipeline_key_problem(config: ml_collections.ConfigDict, key: str) -> Optional[str]:
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return f"--config.{key}: the pipeline config has no {'.'.join(parts[:i + 1])}"
    if part.endswith("overrides") and i + 1 < len(parts):
      rest = ".".join(parts[i + 1:])
      return None if rest in configlib.KEYS else f"--config.{key}: {rest} is not a training config key"
    node = node[part]
  return None


def problems(command: Command) -> List[str]:
  """What is wrong with a documented command (empty when the program, its flags and keys exist)."""
  program, *args = command.words
  if "<" in program or program.endswith("..."):
    return []
  try:
    known = program_flags(program)
  except (FileNotFoundError, ModuleNotFoundError):
    return [f"no program {program}"]
  found, config_file, keys, positional = [], None, [], []
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    if not arg.startswith("-"):
      positional.append(arg)
      continue
    name, has_value = arg.lstrip("-").split("=", 1)[0], "=" in arg
    if name.startswith("config."):
      keys.append(name[len("config."):])
      name = "config"
    elif name == "config" and has_value:
      config_file = arg.split("=", 1)[1]
    if name not in known.flags and name.startswith("no") and known.flags.get(name[2:]):
      continue
    if name not in known.flags:
      found.append(f"{program} has no flag --{name}")
    elif not has_value and not known.flags[name] and not name == "config":
      i += 1  # `--flag VALUE`
  if known.commands and args:
    if not positional or positional[0] not in known.commands:
      found.append(f"{program} takes a command word first, one of {', '.join(known.commands)}")
    positional = positional[1:]
  found += [f"{program} takes no argument {p}" for p in positional]
  if config_file and config_file != "..." and not (REPO / config_file.split(":", 1)[0]).is_file():
    found.append(f"--config={config_file}: no such file")
  elif keys and program == "salt_jax.pipeline":
    config = configlib.load_config_file(REPO / config_file) if config_file not in (None, "...") else None
    found += [p for k in keys for p in [_pipeline_key_problem(config, k) if config else None] if p]
  else:
    found += [f"--config.{k}: not a config key (configlib.KEYS)" for k in keys if k not in configlib.KEYS]
  return found


@pytest.fixture(scope="module")
def commands():
  return documented_commands()


def test_the_pages_show_commands_of_every_program(commands):
  programs = {c.words[0] for c in commands}
  assert {"salt_jax.train", "salt_jax.predict", "salt_jax.ensemble", "salt_jax.jigsaw", "salt_jax.pipeline",
          "salt_jax.segment", "salt_jax.bench", "salt_jax.data.tfds_tgs_salt",
          "scripts/load_data.py"} <= programs
  assert len(commands) > 60


def test_every_documented_command_names_a_program_flags_and_keys_that_exist(commands):
  wrong = [f"{c.source}: {p}  ({' '.join(c.words)})" for c in commands for p in problems(c)]
  assert wrong == [], "\n".join(wrong)


SNIPPET = """Text with `python -m salt_jax.models --input_size=104` inline.

```bash
python -m salt_jax.train --config=configs/tiny.py --workdir=runs/t \\
    --config.fold=1 [--config.folds=0,1]   # a comment --not_a_flag
time python scripts/load_data.py --data_dir=../shared/tgs | tail -1
python -m salt_jax.jigsaw solve --data_dir=d --out=m.csv
python -m salt_jax.pipeline --config=configs/pipeline_tiny.py --outdir=o --config.train_overrides.cycle_len=2
```
"""


def test_the_conventions_read_continuations_options_comments_and_pipes():
  got = extract(SNIPPET, "s.md")
  assert [c.words for c in got] == [
      ("salt_jax.train", "--config=configs/tiny.py", "--workdir=runs/t", "--config.fold=1",
       "--config.folds=0,1"),
      ("scripts/load_data.py", "--data_dir=../shared/tgs"),
      ("salt_jax.jigsaw", "solve", "--data_dir=d", "--out=m.csv"),
      ("salt_jax.pipeline", "--config=configs/pipeline_tiny.py", "--outdir=o",
       "--config.train_overrides.cycle_len=2"),
      ("salt_jax.models", "--input_size=104")]
  assert [c.source for c in got] == ["s.md:4", "s.md:6", "s.md:7", "s.md:8", "s.md:1"]
  assert [problems(c) for c in got] == [[]] * 5


@pytest.mark.parametrize("snippet, problem", [
    ("python -m salt_jax.train --config=configs/tiny.py --workdir=w --made_up_flag=3",
     "salt_jax.train has no flag --made_up_flag"),
    ("python -m salt_jax.train --config=configs/tiny.py --workdir=w --config.eval_evry=3",
     "--config.eval_evry: not a config key (configlib.KEYS)"),
    ("python -m salt_jax.predict --workdir=w --config.made_up=1", "--config.made_up: not a config key"),
    ("python -m salt_jax.pipeline --config=configs/pipeline_tiny.py --outdir=o --config.stage2.made_up=1",
     "--config.stage2.made_up: the pipeline config has no stage2.made_up"),
    ("python -m salt_jax.pipeline --config=configs/pipeline_tiny.py --outdir=o "
     "--config.train_overrides.eval_evry=1",
     "--config.train_overrides.eval_evry: eval_evry is not a training"),
    ("python -m salt_jax.train --config=configs/nowhere.py --workdir=w",
     "--config=configs/nowhere.py: no such"),
    ("python -m salt_jax.trian --workdir=w", "no program salt_jax.trian"),
    ("python scripts/nowhere.py --x=1", "no program scripts/nowhere.py"),
    ("python -m salt_jax.jigsaw solv --data_dir=d",
     "salt_jax.jigsaw takes a command word first, one of solve"),
    ("python -m salt_jax.segment --workdirs=w --input=s.png --out=o --nosave_prob",
     "has no flag --nosave_prob"),
    ("python -m salt_jax.data.tfds_tgs_salt --data_dir=d --out=o --made_up", "has no flag --made_up"),
])
def test_a_made_up_flag_key_program_or_command_word_is_found(snippet, problem):
  (command,) = extract(f"```bash\n{snippet}\n```\n", "s.md")
  found = problems(command)
  assert len(found) == 1 and problem in found[0], found
