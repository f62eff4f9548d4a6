"""Speed of the hot paths, optionally side by side with the PyTorch reference, one JSON line per figure.

    python -m salt_jax.bench --model=model_34 --batch=16 [--dtype=bfloat16] [--vs-torch]
    python -m salt_jax.bench --model=model_34 --batch=16 --dtype=bfloat16 --data_dir=../shared/tgs --folds=2

Figures (after compilation; compile times are reported separately): training step images/s (on-device
augmentation, forward, backward, SGD; with --folds=F the fold-parallel step of F folds, each with its
own state and batch, vmapped or side by side as --fold_map says, and the figure is images/s over all
folds), flip-TTA inference images/s, Lovasz hinge forward+backward ms (batch 32 of 101x101 by default),
and the 80-threshold metric sweep over 3,600 tiles. Images enter the model at 128x128 (salt_jax.geometry).

FLOPs come from XLA's cost analysis of the lowered (pre-optimisation) program, which counts every
convolution; the compiled executable's count (`compiled_gflop_per_image`) leaves out library calls such as
cuDNN convolutions on GPU. On an accelerator the step's model FLOP utilisation is the lowered count over
time, divided by --peak_tflops.

With --data_dir the real training program (`python -m salt_jax.train`, a subprocess, started before this
process touches a device) trains the same model, batch, dtype and folds for a short schedule on the real
data, and three figures are read off its history.jsonl: epoch_images_per_s (images/s of the training steps
of the Lovasz epochs after the first; whole-epoch images/s including validation and checkpointing beside
it), loop_efficiency (that over the compiled step's images/s) and startup_s (process start to the end of
the first training step, as the program measures it; `process_s` beside it is the whole run's wall
time). The first epoch of each loss is left out: it includes compilation. JAX's persistent compilation
cache is off for that run unless --compilation_cache_dir is given, so start-up is a cold start.

--vs-torch runs ../shared/bench/torch_reference.py (eager PyTorch: the same --model at the same batch and
--input_size, and the Lovasz loss) in the same run and adds the ratio JAX/PyTorch to each figure (its
inference has no TTA, so it is run on 2x the batch and counted per original image); a model the reference
does not build is refused in one line. On a GPU it also runs the reference with bfloat16 autocast and
channels_last and compares with the faster of the two. --cpu_ynn_fusion compiles the train step as
config.cpu_ynn_fusion does (XLA:CPU's YNNPACK fusions; '' = XLA's default).
"""
import ast
import functools
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from salt_jax import configlib, errors, geometry, losses, metrics, models, parallel, repo, schedules
from salt_jax.inference import tta
from salt_jax.training import steps
from salt_jax.workdir import rundir

# Dense peak TFLOP/s by device kind and dtype, for the utilisation figure (vendor data sheets).
PEAK_TFLOPS = {("NVIDIA H100 80GB HBM3", "bfloat16"): 989.0, ("NVIDIA H100 80GB HBM3", "float32"): 494.0,
               ("NVIDIA H200", "bfloat16"): 989.0, ("NVIDIA H200", "float32"): 494.0}
# The defaults: files of this checkout, wherever the bench is started.
EPOCH_CONFIG = repo.ROOT / "configs" / "cpu_small.py"
TORCH_REFERENCE = repo.SHARED / "bench" / "torch_reference.py"
# What the PyTorch reference is run with: its default, and on a GPU what a PyTorch user would try for speed.
TORCH_VARIANTS = {"float32": [], "bfloat16_channels_last": ["--dtype", "bfloat16", "--channels_last"]}
FIGURES = ("train", "infer", "lovasz", "sweep", "epoch")


def timed(fn: Callable, args, steps_: int, warmup: int) -> float:
  """Seconds per call of an already compiled fn, after `warmup` calls (results blocked on)."""
  out = None
  for _ in range(warmup):
    out = fn(*args)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(steps_):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps_


def compile_timed(jitted, *args, options: Optional[Dict[str, str]] = None):
  """(lowered, compiled, seconds to lower and compile); options: XLA compiler options."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  compiled = lowered.compile(options)
  return lowered, compiled, time.perf_counter() - t0


def flops_of(stage) -> Optional[float]:
  """XLA's FLOP count of a Lowered (every op, convolutions included) or Compiled (what the backend
  reports: on GPU, cuDNN convolutions count 0) stage; None where the backend gives none."""
  cost = stage.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return float(cost["flops"]) if cost and cost.get("flops") else None


def fake_batch(batch: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """Random uint8 tiles and blob-like masks, a quarter of them empty (like the real data)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, *geometry.TILE_SHAPE), dtype=np.uint8)
  yy, xx = np.mgrid[:geometry.TILE, :geometry.TILE]
  cy, cx, r = rng.uniform(0, geometry.TILE, (3, batch, 1, 1))
  masks = (((yy - cy) ** 2 + (xx - cx) ** 2) < (r * 0.6) ** 2).astype(np.uint8)
  masks[: batch // 4] = 0
  return {"image": images, "mask": masks}


def train_setup(model, batch: int, *, canvas: int, folds: int = 1, fold_map: str = "auto"):
  """(jitted Lovasz train step, (state, batch, key)) on fake data; the state is donated.

  folds > 1: the folds' step as fold-parallel training runs it (`steps.fold_train_steps`, one step per
  call): F copies of the state, F different batches of a device-resident (F*B) sample set, one key;
  fold_map as config.fold_map ("auto": loop on CPU, vmap elsewhere); canvas: the padded input size.
  """
  faithful = configlib.sections(configlib.base_config())  # the faithful optimiser and loss weights
  tx = schedules.make_optimizer(faithful.optim, steps_per_epoch=1)
  state = jax.jit(functools.partial(steps.create_train_state, model, tx, image_size=canvas),
                  compiler_options=models.init_compiler_options())(jax.random.key(0))
  kwargs = dict(seg_loss="lovasz", loss_weights=configlib.loss_weights(faithful.loss), canvas=canvas)
  if folds == 1:
    step = functools.partial(steps.train_step, **kwargs)
    return jax.jit(step, donate_argnums=(0,)), (state, jax.tree.map(jnp.asarray, fake_batch(batch)),
                                                jax.random.key(1))
  state = jax.tree.map(lambda x: jnp.stack([x] * folds), state)
  data = jax.tree.map(jnp.asarray, fake_batch(folds * batch))
  rows = jnp.arange(folds * batch, dtype=jnp.int32).reshape(folds, 1, batch)
  fold_map = parallel.resolve_fold_map(fold_map, folds)
  step = functools.partial(steps.fold_train_steps, fold_map=fold_map, **kwargs)
  return jax.jit(lambda s, d, k: step(s, d, rows, k), donate_argnums=(0,)), (state, data, jax.random.key(1))


def bench_train(model, batch: int, steps_: int, warmup: int, *, canvas: int, folds: int = 1,
                fold_map: str = "auto", cpu_ynn_fusion: str = ""):
  """(images/s over all folds, compile s, lowered FLOPs, compiled FLOPs, s per step) of train_setup's step,
  compiled with steps.train_compiler_options(cpu_ynn_fusion)."""
  fn, (state, data, key) = train_setup(model, batch, canvas=canvas, folds=folds, fold_map=fold_map)
  lowered, compiled, compile_s = compile_timed(fn, state, data, key,
                                               options=steps.train_compiler_options(cpu_ynn_fusion))
  holder = [state]

  def run():
    holder[0], m = compiled(holder[0], data, key)
    return m["loss"]
  sec = timed(run, (), steps_, warmup)
  return folds * batch / sec, compile_s, flops_of(lowered), flops_of(compiled), sec


def bench_infer(model, batch: int, steps_: int, warmup: int, canvas: int):
  """Flip-TTA inference, (batch,canvas,canvas,3) inputs: (images/s, compile s, lowered FLOPs, s per batch)."""
  variables = models.init_variables(model, jax.random.key(0), size=canvas)
  images = jnp.asarray(fake_batch(batch)["image"])
  fn = jax.jit(lambda v, x: tta.tta_logits(model.apply, v, x, canvas))
  lowered, compiled, compile_s = compile_timed(fn, variables, images)
  sec = timed(compiled, (variables, images), steps_, warmup)
  return batch / sec, compile_s, flops_of(lowered), sec


def bench_lovasz(batch: int, size: int, steps_: int, warmup: int):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(batch, size, size)).astype(np.float32))
  labels = jnp.asarray((rng.random((batch, size, size)) > 0.6).astype(np.float32))
  fn = jax.jit(jax.value_and_grad(losses.lovasz_hinge))
  _, compiled, compile_s = compile_timed(fn, logits, labels)
  return timed(compiled, (logits, labels), steps_, warmup) * 1e3, compile_s


def bench_sweep(n: int = 3600, repeats: int = 3) -> float:
  truth = np.concatenate([fake_batch(400, seed=s)["mask"] for s in range(n // 400)])
  rng = np.random.default_rng(0)
  logits = (np.where(truth > 0, 2.0, -2.0) + rng.normal(size=truth.shape)).astype(np.float32)
  best = np.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    metrics.threshold_sweep(logits, truth)
    best = min(best, time.perf_counter() - t0)
  return best


def torch_models(reference: pathlib.Path) -> Tuple[str, ...]:
  """The models the PyTorch reference builds: the keys of its module-level `MODELS` dict, read from its
  source (nothing is imported or run)."""
  for node in ast.parse(reference.read_text()).body:
    if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODELS" for t in node.targets)
        and isinstance(node.value, ast.Dict)):
      return tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant))
  return ("model_34",)  # the reference before it took --model


def torch_figure(reference: pathlib.Path, what: str, batch: int, size: int, device: str, steps_: int,
                 warmup: int, extra_args: Sequence[str] = (), model: Optional[str] = None) -> float:
  """Runs the PyTorch reference in a subprocess; returns its images/s (train, infer) or ms (lovasz)."""
  cmd = [sys.executable, str(reference), "--what", what, "--batch", str(batch), "--size", str(size),
         "--steps", str(steps_), "--warmup", str(warmup), "--device", device, *extra_args]
  if model is not None:
    cmd += ["--model", model]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
  m = re.search(r"images_per_s=([\d.]+) ms_per_step=([\d.]+)", out)
  if not m:
    raise RuntimeError(f"unexpected output from {reference}: {out!r}")
  return float(m.group(2)) if what == "lovasz" else float(m.group(1))


def torch_best(reference: pathlib.Path, what: str, batch: int, size: int, device: str, steps_: int,
               warmup: int, model: Optional[str] = None):
  """(the faster PyTorch figure, {variant: figure}): on a GPU the model is also run with bfloat16
  autocast and channels_last; elsewhere, and for the Lovasz loss (no model), only the default."""
  variants = TORCH_VARIANTS if device.startswith("cuda") and what != "lovasz" else {"float32": []}
  runs = {name: torch_figure(reference, what, batch, size, device, steps_, warmup, args, model)
          for name, args in variants.items()}
  best = min(runs.values()) if what == "lovasz" else max(runs.values())
  return best, runs


def history_figures(histories: Dict[int, List[Dict]]) -> Dict:
  """Throughput and start-up read off the history.jsonl records of every fold of one run.

  histories: fold -> its records (one per epoch, as salt_jax.train writes them). Per loss ("bce_dice",
  "lovasz"), over the epochs after the first of that loss (the first includes compilation):
  "images_per_s", the training steps' images/s summed over folds (each fold's record counts its own
  images, images/s x training seconds); "whole_epoch_images_per_s", all folds' images over the epochs' wall
  time including validation and checkpointing; "epochs", how many epochs were used (None figures without
  any). "startup": the slowest fold's "startup" dict of its first record.
  """
  out = {}
  for loss in ("bce_dice", "lovasz"):
    by_epoch: Dict[int, List[Dict]] = {}
    for records in histories.values():
      for r in sorted((r for r in records if r["seg_loss"] == loss), key=lambda r: r["epoch"])[1:]:
        by_epoch.setdefault(r["epoch"], []).append(r)
    rates = [sum(r["images_per_s"] for r in rs) for rs in by_epoch.values()]
    images = [sum(round(r["images_per_s"] * r["seconds"]) for r in rs) for rs in by_epoch.values()]
    walls = [max(r["epoch_seconds"] for r in rs) for rs in by_epoch.values()]
    in_loop = sum(images) / sum(n / r for n, r in zip(images, rates)) if rates else None
    whole = sum(images) / sum(walls) if rates else None
    out[loss] = {"epochs": len(rates), "images_per_s": in_loop, "whole_epoch_images_per_s": whole}
  out["startup"] = max((h[0]["startup"] for h in histories.values()), key=lambda s: s["first_step"])
  return out


def read_histories(workdir, folds: Sequence[int]) -> Dict[int, List[Dict]]:
  run = rundir.RunDir(workdir)
  return {k: [json.loads(l) for l in run.history_jsonl(k).read_text().splitlines() if l.strip()]
          for k in folds}


def _absolute(path: str) -> str:
  """A path given on this command line, as the training run (started in repo.ROOT) must see it."""
  return str(pathlib.Path(path).expanduser().absolute()) if path else path


def train_command(a, workdir, folds: Sequence[int]) -> List[str]:
  """The training run behind the epoch figures, of the given folds (together when several):
  `a.epoch_warmup` BCE+Dice epochs, then one Lovasz cycle of `a.epoch_cycle` epochs validated once, at
  its end. Its paths are absolute: it runs in the repository root (run_training)."""
  cmd = [sys.executable, "-m", "salt_jax.train", f"--config={_absolute(a.epoch_config)}",
         f"--workdir={_absolute(str(workdir))}", f"--config.model={a.model}", f"--config.dtype={a.dtype}",
         f"--config.batch_size={a.batch}", f"--config.data_dir={_absolute(a.data_dir)}",
         f"--config.input_size={a.input_size}",
         f"--config.warmup_epochs={a.epoch_warmup}",
         "--config.cycle_num=1", f"--config.cycle_len={a.epoch_cycle}",
         f"--config.eval_start={a.epoch_cycle}", f"--config.eval_every={a.epoch_cycle}",
         f"--config.train_subset={a.train_subset}", f"--config.valid_subset={a.valid_subset}",
         f"--config.compilation_cache_dir={_absolute(a.compilation_cache_dir)}"]
  if a.cache_dir:
    cmd.append(f"--config.cache_dir={_absolute(a.cache_dir)}")
  if len(folds) > 1:
    cmd += [f"--config.folds={','.join(map(str, folds))}", f"--config.fold_map={a.fold_map}"]
  else:
    cmd.append(f"--config.fold={folds[0]}")
  return cmd


def run_training(a, folds: Optional[Sequence[int]] = None) -> Dict:
  """Runs the training program of `folds` (default: 0..a.folds-1, together) in a fresh workdir, in a
  subprocess started in the repository root (so it imports this checkout's package); history_figures of
  its run plus "process_s"."""
  folds = list(range(a.folds)) if folds is None else list(folds)
  workdir = pathlib.Path(a.epoch_workdir) if a.epoch_workdir else pathlib.Path(
      tempfile.mkdtemp(prefix="salt_bench_"))
  try:
    t0 = time.perf_counter()
    done = subprocess.run(train_command(a, workdir, folds), cwd=repo.ROOT, capture_output=True, text=True)
    process_s = time.perf_counter() - t0
    if done.returncode == 1:  # salt_jax.train refused its input: its one line says why
      last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
      raise errors.BadInput(f"the training run for the epoch figures was refused: {last}")
    if done.returncode != 0:
      raise RuntimeError(f"the training run for the epoch figures failed (exit {done.returncode}):\n"
                         + "\n".join(done.stderr.strip().splitlines()[-15:]))
    figures = history_figures(read_histories(workdir, folds))
  finally:
    if not a.epoch_workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  figures["process_s"] = process_s
  return figures


def run_sequential(a) -> List[float]:
  """process_s of each of the a.folds folds trained alone, one after the other (same schedule)."""
  return [run_training(a, [k])["process_s"] for k in range(a.folds)]


def emit(figure: str, value: float, unit: str, context: Dict, torch_value: Optional[float] = None,
         higher_is_better: bool = True, **extra) -> Dict:
  row = dict(figure=figure, value=round(value, 4), unit=unit, **context, **extra)
  if torch_value is not None:
    row["torch"] = round(torch_value, 4)
    row["ratio_vs_torch"] = round(value / torch_value if higher_is_better else torch_value / value, 3)
  print(json.dumps(row), flush=True)
  return row


def _rounded(x: Optional[float], digits: int = 2) -> Optional[float]:
  return None if x is None else round(x, digits)


def epoch_report(figures: Dict, train_ips: Optional[float], context: Dict, a) -> List[Dict]:
  """epoch_images_per_s, loop_efficiency (when the compiled step ran too) and startup_s rows."""
  lov, bce = figures["lovasz"], figures["bce_dice"]
  ctx = dict(context, folds=a.folds, train_subset=a.train_subset,
             schedule=f"{a.epoch_warmup} bce_dice + {a.epoch_cycle} lovasz epochs",
             compilation_cache=a.compilation_cache_dir or "off")
  rows = [emit("epoch_images_per_s", lov["images_per_s"], "images/s", ctx, loss="lovasz",
               epochs=lov["epochs"], whole_epoch_images_per_s=_rounded(lov["whole_epoch_images_per_s"]),
               bce_dice_epochs=bce["epochs"], bce_dice_images_per_s=_rounded(bce["images_per_s"]),
               bce_dice_whole_epoch_images_per_s=_rounded(bce["whole_epoch_images_per_s"]))]
  if train_ips:
    rows.append(emit("loop_efficiency", lov["images_per_s"] / train_ips, "epoch / compiled-step images/s",
                     ctx, train_images_per_s=round(train_ips, 4),
                     whole_epoch_efficiency=round(lov["whole_epoch_images_per_s"] / train_ips, 4)))
  startup = figures["startup"]
  rows.append(emit("startup_s", startup["first_step"], "s (process start to first step done)", ctx,
                   startup={k: _rounded(v) for k, v in startup.items()},
                   process_s=round(figures["process_s"], 2)))
  return rows


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  flags.DEFINE_enum("model", "model_34", sorted(models.MODELS), "Model variant.")
  flags.DEFINE_integer("batch", 16, "Batch per fold.", lower_bound=1)
  flags.DEFINE_integer("input_size", geometry.CANVAS, "Padded input size of the train, infer and epoch "
                       "figures (as config.input_size).", lower_bound=geometry.TILE)
  flags.DEFINE_enum("dtype", "float32", sorted(models.DTYPES), "Compute dtype.")
  flags.DEFINE_integer("folds", 1, "Folds trained together (fold-parallel step).", lower_bound=1)
  flags.DEFINE_enum("fold_map", "auto", list(configlib.FOLD_MAPS), "How the folds share the step "
                    "(config.fold_map; auto: loop on CPU, vmap elsewhere).")
  flags.DEFINE_string("cpu_ynn_fusion", "", "The train figure's XLA:CPU YNNPACK fusions, as config.cpu_ynn_fusion "
                      "('' = XLA's default, 'none', or a comma list; the epoch run keeps its config's).")
  flags.DEFINE_integer("steps", 5, "Timed calls per figure.", lower_bound=1)
  flags.DEFINE_integer("warmup", 1, "Untimed calls before them.", lower_bound=0)
  flags.DEFINE_integer("lovasz_batch", 32, "Batch of the Lovasz figure.", lower_bound=1)
  flags.DEFINE_integer("lovasz_size", geometry.TILE, "Tile size of the Lovasz figure.", lower_bound=1)
  flags.DEFINE_list("only", None, f"Figures to measure, of {','.join(FIGURES)} (default: all; epoch with "
                    "--data_dir).")
  flags.DEFINE_string("data_dir", None, "Real data for the epoch figures (Kaggle layout).")
  flags.DEFINE_string("epoch_config", str(EPOCH_CONFIG), "Config the epoch run starts from (model, dtype, "
                      "batch and schedule are overridden).")
  flags.DEFINE_integer("epoch_warmup", 2, "BCE+Dice epochs of the epoch run.", lower_bound=0)
  flags.DEFINE_integer("epoch_cycle", 3, "Lovasz epochs of the epoch run (its first is left out).",
                       lower_bound=2)
  flags.DEFINE_integer("train_subset", 0, "Epoch run: train on N tiles per fold (0 = all).", lower_bound=0)
  flags.DEFINE_integer("valid_subset", 0, "Epoch run: validate on N tiles (0 = all).", lower_bound=0)
  flags.DEFINE_string("cache_dir", "", "Epoch run: cache of the decoded data.")
  flags.DEFINE_bool("sequential", False, "Epoch run with --folds=F: also train each fold alone, one after "
                    "the other, and report fold_parallel_speedup (their wall time over the together run's).")
  flags.DEFINE_string("epoch_workdir", None, "Epoch run: keep its workdir here (new or empty).")
  flags.DEFINE_string("compilation_cache_dir", "", "Epoch run: JAX's persistent compilation cache (default "
                      "off: a cold start).")
  flags.DEFINE_bool("vs_torch", False, "Also time the PyTorch reference (one model: not with --folds > 1 "
                    "for training).")
  flags.DEFINE_alias("vs-torch", "vs_torch")
  flags.DEFINE_string("torch_reference", str(TORCH_REFERENCE), "The PyTorch reference script.")
  flags.DEFINE_string("device", None, "Torch device for --vs-torch (default: cuda if JAX has a GPU).")
  flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s for the utilisation figure (default: PEAK_TFLOPS).")


def figures_to_run(a) -> Set[str]:
  """The figures the flags `a` ask for; app.UsageError for flags that do not go together."""
  only = set(a.only or ["train", "infer", "lovasz", "sweep"] + (["epoch"] if a.data_dir else []))
  unknown = sorted(only - set(FIGURES))
  if unknown:
    raise app.UsageError(f"--only: unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
  if a.sequential and (a.folds < 2 or a.epoch_workdir):
    raise app.UsageError("--sequential compares --folds=F >= 2 trained together with each trained alone, in "
                         "fresh workdirs (not with --epoch_workdir)")
  if "epoch" in only:
    if not a.data_dir:
      raise app.UsageError("the epoch figures train on the real data: give --data_dir")
    if not pathlib.Path(a.epoch_config).is_file():
      raise app.UsageError(f"--epoch_config {a.epoch_config} not found")
    kept = pathlib.Path(a.epoch_workdir) if a.epoch_workdir else None
    if kept and kept.exists() and any(kept.iterdir()):
      raise app.UsageError(f"--epoch_workdir {a.epoch_workdir} is not empty (a finished run there would not "
                           "train)")
  configlib.KEYS["cpu_ynn_fusion"].check("cpu_ynn_fusion", a.cpu_ynn_fusion)
  if a.vs_torch and not pathlib.Path(a.torch_reference).exists():
    raise app.UsageError(f"--vs-torch: {a.torch_reference} not found (set --torch_reference)")
  if a.vs_torch and only & {"train", "infer"}:
    known = torch_models(pathlib.Path(a.torch_reference))
    if a.model not in known:
      raise app.UsageError(f"--vs-torch: the PyTorch reference does not build {a.model} (it builds "
                           f"{', '.join(known)}); leave out --vs-torch or use --only=lovasz,sweep")
  return only


def device_report(a, only: Set[str], context: Dict) -> Tuple[List[Dict], Optional[float]]:
  """The train, infer, lovasz and sweep rows that `only` asks for, and the training images/s (or None)."""
  rows, train_ips = [], None
  model = models.get_model(a.model, dtype=models.DTYPES[a.dtype])
  if "train" in only:
    row = train_row(a, model, context)
    rows.append(row)
    train_ips = row["value"]
  if "infer" in only:
    ips, compile_s, flops, sec = bench_infer(model, a.batch, a.steps, a.warmup, a.input_size)
    t, runs = torch_value(a, "infer", 2 * a.batch, context, size=a.input_size, model=a.model)
    extra = {"compile_s": round(compile_s, 2)}
    if flops:
      extra.update(gflop_per_image=round(flops / a.batch / 1e9, 3), tflops_per_s=round(flops / sec / 1e12, 3))
    if runs:
      extra["torch_runs"] = {k: round(v / 2, 4) for k, v in runs.items()}
    rows.append(emit("infer_tta_images_per_s", ips, "images/s", context, t / 2 if t else None, **extra))
  if "lovasz" in only:
    ms, compile_s = bench_lovasz(a.lovasz_batch, a.lovasz_size, a.steps, a.warmup)
    t, _ = torch_value(a, "lovasz", a.lovasz_batch, context, size=a.lovasz_size)
    rows.append(emit("lovasz_fwd_bwd_ms", ms, "ms/batch", dict(context, batch=a.lovasz_batch,
                     size=a.lovasz_size, dtype="float32"), t, higher_is_better=False,
                     compile_s=round(compile_s, 2)))
  if "sweep" in only:
    rows.append(emit("metric_sweep_s", bench_sweep(), "s (80 thresholds x 3,600 tiles)",
                     dict(backend="numpy", device="host CPU")))
  return rows, train_ips


def train_row(a, model, context: Dict) -> Dict:
  """The train_images_per_s row: images/s over all folds, compile time, FLOPs and utilisation."""
  ips, compile_s, flops, compiled_flops, sec = bench_train(
      model, a.batch, a.steps, a.warmup, canvas=a.input_size, folds=a.folds, fold_map=a.fold_map,
      cpu_ynn_fusion=a.cpu_ynn_fusion)
  images = a.folds * a.batch
  extra = {"folds": a.folds, "compile_s": round(compile_s, 2), "cpu_ynn_fusion": a.cpu_ynn_fusion}
  if a.folds > 1:
    extra["fold_map"] = parallel.resolve_fold_map(a.fold_map, a.folds)
  peak = a.peak_tflops or PEAK_TFLOPS.get((context["device"], a.dtype))
  if flops:
    extra.update(gflop_per_image=round(flops / images / 1e9, 3), tflops_per_s=round(flops / sec / 1e12, 3))
    if peak:
      extra["mfu_percent"] = round(100 * flops / sec / 1e12 / peak, 2)
  if compiled_flops:
    extra["compiled_gflop_per_image"] = round(compiled_flops / images / 1e9, 3)
  t, runs = (torch_value(a, "train", a.batch, context, size=a.input_size, model=a.model) if a.folds == 1
             else (None, None))
  if runs:
    extra["torch_runs"] = runs
  return emit("train_images_per_s", ips, "images/s", context, t, **extra)


def torch_value(a, what: str, batch: int, context: Dict, *, size: int, model: Optional[str] = None):
  """torch_best of the PyTorch reference with --vs-torch (on --device, default cuda on a GPU), else
  (None, None). model: the network of the train and infer figures (None for the Lovasz loss)."""
  if not a.vs_torch:
    return None, None
  device = a.device or ("cuda" if context["backend"] == "gpu" else "cpu")
  return torch_best(pathlib.Path(a.torch_reference), what, batch, size, device, a.steps, a.warmup, model)


def main(argv) -> List[Dict]:
  """Measures the figures the flags ask for; prints one JSON line per figure and returns the rows."""
  del argv
  only = figures_to_run(FLAGS)
  # Before this process touches a device: on a GPU the child would otherwise find its memory taken.
  epoch = run_training(FLAGS) if "epoch" in only else None
  sequential = run_sequential(FLAGS) if epoch is not None and FLAGS.sequential else None
  dev = jax.devices()[0]
  context = dict(model=FLAGS.model, batch=FLAGS.batch, size=FLAGS.input_size, dtype=FLAGS.dtype,
                 device=dev.device_kind, backend=dev.platform, n_devices=jax.device_count())
  rows, train_ips = device_report(FLAGS, only, context)
  if epoch is not None:
    rows.extend(epoch_report(epoch, train_ips, context, FLAGS))
  if sequential is not None:
    rows.append(emit("fold_parallel_speedup", sum(sequential) / epoch["process_s"],
                     "sequential / together wall time",
                     dict(context, folds=FLAGS.folds, train_subset=FLAGS.train_subset),
                     together_process_s=round(epoch["process_s"], 1),
                     sequential_process_s=[round(t, 1) for t in sequential]))
  return rows
