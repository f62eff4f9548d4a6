"""Check a GPU or TPU host in one go and write what it measured as one markdown report.

    python -m salt_jax.accelerator_check --out=acc_report [--data_dir=../shared/tgs] [--budget_s=540]
    python -m salt_jax.accelerator_check --out=/tmp/acc --dry_run      # a rehearsal on any machine

Within --budget_s (default 9 minutes; a step that no longer fits is skipped and listed as not measured),
the most wanted first (`plan` has the order):

1. the devices JAX sees (kind, platform, memory);
2. the tests marked `accelerator` (pytest -m accelerator: dtype and TF32 tolerances, bfloat16 end to
   end, fold maps), which mean most on an accelerator;
3. BENCHMARKS.md's pending GPU rows, each a `python -m salt_jax.bench` run whose JSON lines are read
   back: the model_34 and model_50A train step in float32 and bfloat16 (images/s, model FLOP utilisation),
   the device-resident epoch loop against the compiled step (`loop_efficiency`, the whole epoch in one call
   as configs/gpu_quick.py runs it and one step per call), and fold-parallel training (10 folds in one
   step, vmapped and side by side; the targets are >= 4,000 images/s for model_34, >= 1,500 for model_50A);
4. the first epochs of `configs/gpu_quick.py` (`python -m salt_jax.train`, stopped after --quick_epochs
   epochs): loss, images/s and seconds per epoch, and the start-up phases.

Every figure is written beside the command that made it, to `<out>/report.md` (and machine-readable to
`<out>/report.json`); each step's full output is kept in `<out>/logs/`. The steps run as subprocesses, so
each gets the accelerator's memory to itself (the program keeps JAX from preallocating it in its own
process, which only lists the devices).

On a machine whose JAX sees only CPUs the command refuses in one line unless --dry_run, which runs the
same steps with tiny stand-ins (model_tiny at 104 px, batch 2, a few tiles, 2 folds, one step per call,
compilation without LLVM optimisation and a compilation cache shared by the steps): it checks the path,
not the figures. A step the stand-ins make the same command as an earlier one (model_50A's rows) is not run
again; it shows the earlier step's figures. Its time is XLA:CPU compiling model_tiny's steps in the steps'
own processes: 3.9 min of CPU time on 2 Zen 5 EPYC cores (11 min of wall time beside a training run).
"""
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
from absl import flags, logging

from salt_jax import configlib, errors, fileio, repo
from salt_jax.tools import bench


class CheckError(errors.BadInput):
  """The check cannot start: JAX sees no GPU or TPU (and no --dry_run), or --out is not a new folder."""


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What the bench and training steps run: the real figures, or the dry run's stand-ins."""
  models: Dict[str, str]        # the model of each row -> the model it runs
  batch: int
  input_size: int
  steps: int
  warmup: int
  folds: int                    # fold-parallel rows
  epoch_args: Sequence[str]     # the epoch run's schedule and subsets
  epoch_configs: Sequence[str]  # the configs/ the epoch runs start from (their steps_per_call differ)
  quick_overrides: Sequence[str]  # extra flags of the gpu_quick run
  quick_epochs: int


REAL = Sizes(models={"model_34": "model_34", "model_50A": "model_50A"}, batch=16, input_size=128, steps=20,
             warmup=3, folds=10, epoch_args=("--valid_subset=256", "--epoch_warmup=1", "--epoch_cycle=3"),
             epoch_configs=("gpu_quick", "cpu_small"), quick_overrides=(), quick_epochs=3)
DRY = Sizes(models={"model_34": "model_tiny", "model_50A": "model_tiny"}, batch=2, input_size=104, steps=2,
            warmup=1, folds=2,
            epoch_args=("--train_subset=8", "--valid_subset=8", "--epoch_warmup=0", "--epoch_cycle=2"),
            epoch_configs=("tiny",),  # one step per call: XLA:CPU compiles and runs a scanned epoch slowly
            quick_overrides=("--config.model=model_tiny", "--config.input_size=104", "--config.batch_size=2",
                             "--config.eval_batch_size=8", "--config.train_subset=8",
                             "--config.valid_subset=8", "--config.num_folds=4", "--config.steps_per_call=1"),
            quick_epochs=1)
FAST_COMPILE = "--xla_backend_optimization_level=0"  # the dry run's XLA flag: compile time, not speed


@dataclasses.dataclass
class Outcome:
  """What one step did: its command, its rows (bench JSON lines or history records), its status."""
  section: str
  name: str
  command: List[str]
  cap_s: float = 150.0          # the most this step may take
  status: str = "not run"       # ok, failed (exit N), timed out, skipped: ...
  seconds: float = 0.0
  rows: List[Dict] = dataclasses.field(default_factory=list)
  tail: str = ""


def shown(command: Sequence[str]) -> str:
  """A command as a person would type it (`python` for this interpreter)."""
  words = ["python" if w == sys.executable else w for w in command]
  return " ".join(shlex.quote(w) for w in words)


def bench_command(sizes: Sizes, model: str, dtype: str, only: str, data_dir: str, *extra: str) -> List[str]:
  return [sys.executable, "-m", "salt_jax.bench", f"--model={sizes.models[model]}", f"--batch={sizes.batch}",
          f"--input_size={sizes.input_size}", f"--dtype={dtype}", f"--only={only}", f"--steps={sizes.steps}",
          f"--warmup={sizes.warmup}", *([f"--data_dir={data_dir}"] if "epoch" in only else []), *extra]


def plan(sizes: Sizes, data_dir: str, out: pathlib.Path, dry_run: bool = False) -> List[Outcome]:
  """The steps after the devices, most wanted first; each Outcome holds its command. A dry run only
  collects the accelerator tests (running them is the accelerator's job)."""
  epoch = [*sizes.epoch_args, f"--cache_dir={out / 'cache'}"]
  tests = [sys.executable, "-m", "pytest", "-q", "-m", "accelerator", "-p", "no:cacheprovider",
           *(["--collect-only"] if dry_run else []), *map(str, accelerator_test_files())]
  rows = (("model_34", "float32"), ("model_34", "bfloat16"), ("model_50A", "bfloat16"),
          ("model_50A", "float32"))
  train = [Outcome("train step", f"{model} {dtype}", bench_command(sizes, model, dtype, "train", data_dir),
                   120) for model, dtype in rows]

  def epoch_loop(config: str) -> Outcome:
    path = repo.ROOT / "configs" / f"{config}.py"
    n = configlib.load_config_file(path).steps_per_call
    per_call = "whole epoch per call" if n == 0 else f"{n} step(s) per call"
    return Outcome("epoch loop", f"model_34 bfloat16, {per_call} (configs/{config}.py)",
                   bench_command(sizes, "model_34", "bfloat16", "train,epoch", data_dir, *epoch,
                                 f"--epoch_config={path}"))

  def fold_parallel(fold_map: str, model: str = "model_34") -> Outcome:
    return Outcome("fold-parallel", f"{model} bfloat16, {sizes.folds} folds, {fold_map}",
                   bench_command(sizes, model, "bfloat16", "train", data_dir, f"--folds={sizes.folds}",
                                 f"--fold_map={fold_map}"), 120)

  quick = Outcome("gpu_quick", f"configs/gpu_quick.py, first {sizes.quick_epochs} epoch(s)",
                  [sys.executable, "-m", "salt_jax.train",
                   f"--config={repo.ROOT / 'configs' / 'gpu_quick.py'}",
                   f"--workdir={out / 'gpu_quick'}", f"--config.data_dir={data_dir}",
                   f"--config.cache_dir={out / 'cache'}", "--config.compilation_cache_dir=",
                   *sizes.quick_overrides])
  first, *more = [epoch_loop(c) for c in sizes.epoch_configs]
  return [Outcome("tests", "pytest -m accelerator", tests), *train, first, fold_parallel("vmap"), quick,
          fold_parallel("loop"), fold_parallel("vmap", "model_50A"), *more]


def accelerator_test_files() -> List[pathlib.Path]:
  """The test files that mark tests `accelerator` (collecting only them skips importing the rest)."""
  return [p for p in sorted((repo.ROOT / "tests").glob("test_*.py"))
          if "mark.accelerator" in p.read_text() and p.name != "test_accelerator_check.py"]


def devices() -> Outcome:
  """The devices of this process's JAX (the backend is started here, without preallocation)."""
  outcome = Outcome("devices", "jax.devices()", ["python", "-c", "import jax; print(jax.devices())"])
  t0 = time.perf_counter()
  for d in jax.devices():
    stats = d.memory_stats() or {}
    memory = round(stats["bytes_limit"] / 2**30, 1) if "bytes_limit" in stats else None
    outcome.rows.append(dict(id=d.id, kind=d.device_kind, platform=d.platform, process=d.process_index,
                             memory_gib=memory))
  outcome.status, outcome.seconds = "ok", time.perf_counter() - t0
  return outcome


def _json_rows(text: str) -> List[Dict]:
  rows = []
  for line in text.splitlines():
    if line.startswith("{"):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return rows


def run_step(step: Outcome, timeout: float, env: Dict[str, str], logs: pathlib.Path,
             stop: Optional[Callable[[], bool]] = None) -> Outcome:
  """Runs the step's command (stdout and stderr to logs/<n>.log) until it exits, `timeout` passes or
  stop() says enough; bench JSON lines become its rows."""
  log = logs / f"{len(list(logs.iterdir())):02d}_{step.section.replace(' ', '_')}.log"
  t0 = time.perf_counter()
  with open(log, "w") as f:
    f.write(f"$ {shown(step.command)}\n")
    f.flush()
    proc = subprocess.Popen(step.command, stdout=f, stderr=subprocess.STDOUT, cwd=repo.ROOT, env=env,
                            start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _terminated)
    status = None
    try:
      while status is None:
        try:
          code = proc.wait(timeout=2)
          status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
          if stop is not None and stop():
            status = "ok (stopped)"
          elif time.perf_counter() - t0 > timeout:
            status = f"timed out after {timeout:.0f} s"
          if status is not None:
            _end(proc)
    except BaseException:  # Ctrl-C or kill: the step's processes go too
      _end(proc)
      raise
    finally:
      signal.signal(signal.SIGTERM, previous)
  step.seconds, step.status = time.perf_counter() - t0, status
  text = log.read_text()
  step.rows = _json_rows(text)
  step.tail = "\n".join(text.strip().splitlines()[-12:])
  return step


def _terminated(signum, frame) -> None:
  del frame
  raise SystemExit(128 + signum)


def _end(proc: subprocess.Popen) -> None:
  """Stops a step this process started (its whole process group: the bench's training child too)."""
  for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
    try:
      os.killpg(proc.pid, sig)
      proc.wait(timeout=wait)
      return
    except subprocess.TimeoutExpired:
      continue
    except ProcessLookupError:
      return


def quick_epochs_done(workdir: pathlib.Path, epochs: int) -> Callable[[], bool]:
  history = workdir / "fold_0" / "history.jsonl"
  return lambda: history.is_file() and len(history.read_text().splitlines()) >= epochs


def quick_rows(workdir: pathlib.Path, epochs: int) -> List[Dict]:
  """The gpu_quick run's history records of its first `epochs` epochs (bench.read_histories), fold 0. The
  run is stopped at the first poll after that many, so a fast machine may have recorded another since."""
  try:
    rows = bench.read_histories(workdir, [0])[0]
  except (OSError, ValueError):
    return []
  return [r for r in rows if r["epoch"] < epochs]


def check(out, data_dir: str, *, dry_run: bool = False, budget_s: float = 540.0,
          quick_epochs: Optional[int] = None, env: Optional[Dict[str, str]] = None) -> pathlib.Path:
  """Runs every step within budget_s and writes <out>/report.md (and report.json: every step's command,
  status and rows); returns the report's path. CheckError on a CPU-only JAX unless dry_run, and for an
  --out that is not a new or empty folder, before anything is written. env: the steps' environment
  (default this process's)."""
  t_start = time.perf_counter()
  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise CheckError(f"--out {out} is not a new or empty folder (the gpu_quick run would resume there)")
  if jax.default_backend() == "cpu" and not dry_run:
    raise CheckError(f"JAX sees no GPU or TPU here ({jax.device_count()} cpu device(s)); run it on an "
                     "accelerator host (jax[cuda13] or jax[tpu]), or pass --dry_run to rehearse with tiny "
                     "stand-in models")
  sizes = DRY if dry_run else REAL
  if quick_epochs is not None:
    sizes = dataclasses.replace(sizes, quick_epochs=quick_epochs)
  logs = out / "logs"
  logs.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo.ROOT), env.get("PYTHONPATH")]))
  if dry_run:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
    env.update(JAX_COMPILATION_CACHE_DIR=str(out / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  outcomes = [devices()]
  logging.info("devices: %s", ", ".join(f"{r['kind']} ({r['platform']})" for r in outcomes[0].rows))
  reserve = 5.0  # for the report
  ran: Dict[tuple, Outcome] = {}  # a dry run's stand-ins make some steps one command (model_50A's rows)
  for step in plan(sizes, data_dir, out, dry_run):
    left = budget_s - (time.perf_counter() - t_start) - reserve
    same = ran.get(tuple(step.command))
    if same is not None:
      step.status = f"{same.status} (the same command as {same.section}: {same.name})"
      step.rows, step.tail = same.rows, same.tail
      logging.info("%s: %s: %s", step.section, step.name, step.status)
    elif left < 20:
      step.status = f"skipped: {max(left, 0):.0f} s of the budget left"
    else:
      timeout = left if dry_run else min(left, step.cap_s)  # a dry run's stand-ins: only the budget
      logging.info("%s: %s (up to %.0f s)", step.section, step.name, timeout)
      stop = quick_epochs_done(out / "gpu_quick", sizes.quick_epochs) if step.section == "gpu_quick" else None
      run_step(step, timeout, env, logs, stop)
      if step.section == "gpu_quick":
        step.rows = quick_rows(out / "gpu_quick", sizes.quick_epochs)
      logging.info("%s: %s: %s in %.0f s", step.section, step.name, step.status, step.seconds)
      ran[tuple(step.command)] = step
    outcomes.append(step)
  seconds = time.perf_counter() - t_start
  fileio.write_json(out / "report.json", dict(dry_run=dry_run, budget_s=budget_s, seconds=round(seconds, 1),
                                              steps=[dataclasses.asdict(o) for o in outcomes]))
  path = out / "report.md"
  with fileio.atomic_path(path) as tmp:
    tmp.write_text(report(outcomes, dry_run=dry_run, budget_s=budget_s, seconds=seconds, sizes=sizes))
  return path


# The report.
def _cell(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
  return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
          *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)]


def _figure(outcome: Outcome, name: str) -> Dict:
  return next((r for r in outcome.rows if r.get("figure") == name), {})


def _step_lines(o: Outcome) -> List[str]:
  lines = [f"`{shown(o.command)}` — {o.status}" + (f", {o.seconds:.0f} s" if o.seconds else "")]
  if not o.status.startswith(("ok", "skipped")) and o.tail:
    lines += ["", "```", o.tail, "```"]
  return lines


def report(outcomes: List[Outcome], *, dry_run: bool, budget_s: float, seconds: float, sizes: Sizes) -> str:
  """The markdown report: every figure beside the command that made it."""
  dev = outcomes[0]
  kinds = sorted({f"{r['kind']} ({r['platform']})" for r in dev.rows})
  lines = [f"# Accelerator check, {datetime.date.today().isoformat()}", "",
           f"Host {platform.node()}: {len(dev.rows)} x {', '.join(kinds)}; JAX {jax.__version__}, Python "
           f"{platform.python_version()}. Wall time {seconds / 60:.1f} min of a {budget_s / 60:.1f} min "
           "budget.",
           ""]
  if dry_run:
    lines += ["**Dry run**: tiny stand-ins (" + ", ".join(f"{k} -> {v}" for k, v in sizes.models.items())
              + f", batch {sizes.batch}, {sizes.input_size} px, {sizes.folds} folds, a few tiles, compiled "
              "without LLVM optimisation): these figures check the path, they are not measurements.", ""]
  lines += ["## Devices", "", f"`{shown(dev.command)}`", "",
            *_table(["id", "kind", "platform", "process", "memory GiB"],
                    [[r[k] for k in ("id", "kind", "platform", "process", "memory_gib")] for r in dev.rows]),
            ""]
  by_section: Dict[str, List[Outcome]] = {}
  for o in outcomes[1:]:
    by_section.setdefault(o.section, []).append(o)
  for o in by_section.get("tests", []):
    summary = o.tail.splitlines()[-1] if o.tail else ""
    lines += ["## Tests marked accelerator", "", *_step_lines(o), "", f"Result: {summary}", ""]
  lines += ["## Train step (BENCHMARKS.md's pending GPU rows)", "",
            *_table(["row", "images/s", "MFU %", "TFLOP/s", "GFLOP/image", "compile s", "command"],
                    [[o.name, _figure(o, "train_images_per_s").get("value"),
                      _figure(o, "train_images_per_s").get("mfu_percent"),
                      _figure(o, "train_images_per_s").get("tflops_per_s"),
                      _figure(o, "train_images_per_s").get("gflop_per_image"),
                      _figure(o, "train_images_per_s").get("compile_s"),
                      f"`{shown(o.command)}` ({o.status})"] for o in by_section.get("train step", [])]), ""]
  rows = []
  for o in by_section.get("epoch loop", []):
    step, ep, loop = (_figure(o, n) for n in ("train_images_per_s", "epoch_images_per_s", "loop_efficiency"))
    start = _figure(o, "startup_s")
    rows.append([o.name, step.get("value"), ep.get("value"), loop.get("value"),
                 loop.get("whole_epoch_efficiency"), start.get("value"),
                 f"`{shown(o.command)}` ({o.status})"])
  lines += ["## Device-resident epoch loop", "",
            "Lovasz epochs after the first (the first compiles); `loop_efficiency` = epoch images/s over the "
            "compiled step's, `whole` includes validation and checkpointing.", "",
            *_table(["run", "step images/s", "epoch images/s", "loop_efficiency", "whole", "startup s",
                     "command"], rows), ""]
  single = {o.name.split(",")[0]: _figure(o, "train_images_per_s").get("value")
            for o in by_section.get("train step", [])}
  rows = []
  for o in by_section.get("fold-parallel", []):
    value, alone = _figure(o, "train_images_per_s").get("value"), single.get(o.name.split(",")[0])
    rows.append([o.name, value, value / alone if value and alone else None,
                 f"`{shown(o.command)}` ({o.status})"])
  lines += ["## Fold-parallel training", "",
            "Images/s over all folds of one step, and that over the one-fold bfloat16 step's images/s.", "",
            *_table(["run", "images/s (all folds)", "x one fold", "command"], rows), ""]
  for o in by_section.get("gpu_quick", []):
    startup = o.rows[0].get("startup", {}) if o.rows else {}
    lines += [f"## {o.name}", "", *_step_lines(o), "",
              *_table(["epoch", "loss", "seg loss", "images/s", "seconds", "epoch seconds", "val mAP"],
                      [[r.get(k) for k in ("epoch", "loss", "seg_loss", "images_per_s", "seconds",
                                           "epoch_seconds", "val_map")] for r in o.rows]), ""]
    if startup:
      lines += ["Start-up: " + ", ".join(f"{k} {_cell(v)} s" for k, v in startup.items()), ""]
  problems = [o for o in outcomes[1:] if not o.status.startswith("ok")]
  if problems:
    lines += ["## Not measured", ""]
    for o in problems:
      lines += [f"- {o.section}, {o.name}: " + "\n  ".join(_step_lines(o))]
    lines.append("")
  lines += ["Logs of every step: `logs/` beside this report."]
  return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  flags.DEFINE_string("out", None, "Folder for report.md, the steps' logs and the gpu_quick workdir.")
  flags.DEFINE_string("data_dir", str(repo.SHARED / "tgs"), "The Kaggle folder (epoch runs, "
                      "gpu_quick).")
  flags.DEFINE_bool("dry_run", False, "Tiny stand-in models: rehearse the path on any machine, CPU included.")
  flags.DEFINE_float("budget_s", 540.0, "Seconds for every step together; steps that no longer fit are "
                     "skipped and listed.", lower_bound=60.0)
  flags.DEFINE_integer("quick_epochs", None, "Epochs of configs/gpu_quick.py to run (default 3; 1 in a dry "
                       "run).", lower_bound=1)
  flags.mark_flags_as_required(["out"])


def main(argv) -> str:
  """Checks the accelerator as the flags say; prints the report's path."""
  del argv
  env = dict(os.environ)  # the steps keep JAX's default memory preallocation; this process, which only
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # lists the devices, takes none up front
  path = check(FLAGS.out, FLAGS.data_dir, dry_run=FLAGS.dry_run, budget_s=FLAGS.budget_s,
               quick_epochs=FLAGS.quick_epochs, env=env)
  print(path)
  return str(path)
